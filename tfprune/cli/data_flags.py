"""Flags naming the data: ``--dataset``, ``--data_dir``, ``--data_memory_mib`` and ``--seed`` (every main that
reads data imports this)."""

from absl import flags

from tfprune.experiments.data import sources as data_sources

DATASET = flags.DEFINE_string(
    "dataset", "fashion_mnist",
    "Data to train, fine-tune, choose and evaluate on (and to verify and calibrate exports): mnist, fashion_mnist, "
    "cifar10, cifar100 (from --data_dir, the Keras cache, system folders, or a download); tfds:NAME, a TensorFlow "
    "Datasets dataset prepared in --data_dir (never downloaded; options ?size=HxW&image=KEY&label=KEY&train=SPLIT&"
    "test=SPLIT&val=SPLIT); npz:PATH, a NumPy "
    "archive of x_train, y_train, x_test, y_test (any input shape, integer labels; optional x_val, y_val, "
    "class_names; options ?scale=auto|255|none&range=LO,HI); images:DIR, an image folder DIR/train/<class>/*.png|"
    "jpg, DIR/test/<class>/..., optional DIR/val/<class>/... (options ?size=HxW&color=grayscale|rgb|rgba; default "
    "the first training image's). Example: --dataset='images:photos?size=96x96&color=rgb'.")


def _check_dataset(value):
    try:
        data_sources.parse(value)
    except ValueError as e:  # DatasetError: names the bad value and the forms accepted
        message, prefix = str(e), f"--dataset {value!r}: "  # absl's line names flag and value already
        raise flags.ValidationError(message[len(prefix):] if message.startswith(prefix) else message) from None
    return True


flags.register_validator("dataset", _check_dataset)
DATA_DIR = flags.DEFINE_string("data_dir", None,
                               "Folder searched first for mnist/fashion_mnist (IDX .gz files or Keras' mnist.npz) or "
                               "cifar10/cifar100 (the python batches); then the Keras cache, system dataset folders, "
                               "and last a download. For tfds: TFDS' data folder. npz: and images: name their files "
                               "themselves.")
DATA_MEMORY_MIB = flags.DEFINE_integer(
    "data_memory_mib", 4096, "Image folders and TFDS datasets whose decoded float32 inputs take more than this many "
    "MiB stream from their files through tf.data (shuffled, decoded in parallel, prefetched) instead of being held in "
    "memory.",
    lower_bound=1)
SEED = flags.DEFINE_integer("seed", 0, "Random seed: the same seed gives the same masks, subsets and accuracy.",
                            lower_bound=0, upper_bound=2**32 - 1)  # NumPy's seed range
