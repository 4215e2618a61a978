"""Flags shared by the tfprune command-line mains (dataset, model, training recipe, seed).

Each main calls ``define_common()`` once at import; library code never reads FLAGS.
"""

from absl import flags

from tfprune import data as data_lib
from tfprune import models

FLAGS = flags.FLAGS


def _define_once(define, name, *args, **kwargs):
    if name not in FLAGS:
        define(name, *args, **kwargs)


def define_common():
    """Defines --dataset, --data_dir, --model, --train_epochs, --batch_size, --learning_rate, --seed, --cache_dir."""
    _define_once(flags.DEFINE_enum, "dataset", "fashion_mnist", sorted(data_lib.DATASETS),
                 "Dataset to train and evaluate on.")
    _define_once(flags.DEFINE_string, "data_dir", None,
                 "Folder searched first for the dataset (IDX .gz files or Keras' mnist.npz); then the Keras cache, "
                 "system dataset folders, and last a download.")
    _define_once(flags.DEFINE_enum, "model", "fc_1000", list(models.MODEL_NAMES), "Reference model to prune.")
    _define_once(flags.DEFINE_integer, "train_epochs", 10, "Epochs of baseline training (Adam).", lower_bound=1)
    _define_once(flags.DEFINE_integer, "batch_size", 128, "Batch size of training and fine-tuning.", lower_bound=1)
    _define_once(flags.DEFINE_float, "learning_rate", 1e-3, "Adam learning rate.", lower_bound=0.0)
    _define_once(flags.DEFINE_integer, "seed", 0, "Random seed: the same seed gives the same masks and accuracy.")
    _define_once(flags.DEFINE_integer, "train_size", None,
                 "Train the baseline, and fine-tune pruned models, on a reproducible random subset of this many "
                 "training images (default: all 60,000). Test figures always use the whole test set.",
                 lower_bound=1)
    _define_once(flags.DEFINE_string, "cache_dir", None,
                 "Where trained baselines are cached (default $TFPRUNE_CACHE or ~/.cache/tfprune).")


DEFAULT_SPARSITIES = ["0", "25", "50", "60", "70", "80", "90", "95", "97", "99"]


def define_pruning_common():
    """Defines --sparsities (validated percent list), --layers and the required --output_dir, once."""
    from tfprune import cli  # pylint: disable=g-import-not-at-top
    if "sparsities" not in FLAGS:
        flags.DEFINE_list("sparsities", DEFAULT_SPARSITIES, "Percent k of weights (or units) to prune, each in "
                          "[0, 100), no repeats.")
        cli.register_list_validator("sparsities", cli.parse_percents)
    _define_once(flags.DEFINE_list, "layers", None,
                 "Layer names to prune (default: every Dense/Conv2D for weight pruning; all but the classifier for "
                 "unit pruning).")
    if "output_dir" not in FLAGS:
        flags.DEFINE_string("output_dir", None, "Folder for the results (tables, JSON, PNG plots).")
        flags.mark_flag_as_required("output_dir")
        flags.register_validator("output_dir", _check_output_dir)


def define_model_path():
    """Defines --model_path (a user's trained model file) and --allow_unsafe_deserialization, once."""
    _define_once(flags.DEFINE_string, "model_path", None,
                 "A trained Keras model file (.keras or .h5) to prune or export instead of a reference model; loaded "
                 "in Keras safe mode (see --allow_unsafe_deserialization).")
    _define_once(flags.DEFINE_bool, "allow_unsafe_deserialization", False,
                 "Load --model_path even when it holds code (Lambda layers, modules outside Keras/tfprune/TF-MOT, "
                 "SavedModel graphs). Only for files you trust.")


def make_strategy():
    """The ``tf.distribute`` strategy of ``--distribution_strategy``, ``--num_gpus`` and ``--cpu_devices``, after
    applying ``--threads``.

    For mains that called ``distribute.define_flags()``. Call it once, after flag parsing and before anything runs
    a TensorFlow op (it splits the CPU into logical devices, and a multi-worker strategy must exist before the
    first op).

    Raises:
      app.UsageError: naming the problem (more GPUs than visible, malformed TF_CONFIG, ...).
    """
    from absl import app  # pylint: disable=g-import-not-at-top
    from tfprune import distribute  # pylint: disable=g-import-not-at-top
    try:
        distribute.set_threads(FLAGS.threads)
        distribute.split_cpu(FLAGS.cpu_devices)
        return distribute.get_strategy(FLAGS.distribution_strategy, FLAGS.num_gpus)
    except ValueError as e:
        raise app.UsageError(str(e)) from None


def _check_output_dir(path):
    """An output dir must be a folder (or creatable) and writable: checked before any work starts."""
    import os  # pylint: disable=g-import-not-at-top
    if path is None:
        return True
    if os.path.exists(path) and not os.path.isdir(path):
        raise flags.ValidationError(f"--output_dir {path!r} exists and is not a folder")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise flags.ValidationError(f"--output_dir {path!r} cannot be created: {probe!r} is not a folder")
    if not os.access(probe, os.W_OK):
        raise flags.ValidationError(f"--output_dir {path!r} is not writable ({probe!r} is read-only)")
    return True
