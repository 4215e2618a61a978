"""The data a study runs on, real and validated: ``builtin`` (MNIST/Fashion-MNIST searched in ``--data_dir``, the
Keras cache and system folders, then downloaded; ``data_digest``), ``files`` (strict IDX/npz readers), ``sources``
(what ``--dataset`` names: built-ins, ``npz:``, ``images:``, ``tfds:``, ``cifar10``), ``checks`` (a user's arrays
checked), ``images``, ``cifar``, ``tfds`` (one reader each) and ``dataset`` (``Dataset`` and its splits, in memory or
streamed through ``tf.data``)."""
