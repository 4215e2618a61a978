"""TensorFlow import with the environment tfprune needs.

TF-MOT 0.8 works only with Keras 2 (``tf_keras``), so ``TF_USE_LEGACY_KERAS=1`` must be in force before
TensorFlow is first imported. Every tfprune module imports TensorFlow and both Keras stacks from here, never
directly: ``keras`` is tf_keras (Keras 2), ``keras3`` is Keras 3 (``import keras``, on the backend that
``KERAS_BACKEND`` names: TensorFlow, JAX or PyTorch).
"""

import os
import sys

if "tensorflow" not in sys.modules:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
elif os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    # TensorFlow was imported first by the caller: tf.keras may then be Keras 3, but tfprune and TF-MOT use
    # tf_keras explicitly, so everything below still works. Set the variable for any child process.
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import keras as keras3  # noqa: E402  (Keras 3, whatever TF_USE_LEGACY_KERAS says; its backend: KERAS_BACKEND)

__all__ = ["tf", "keras", "keras3"]
