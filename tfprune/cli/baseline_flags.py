"""Flags of the reference model and its training recipe, and the ``BaselineConfig`` they make.

``--model``, ``--train_epochs``, ``--batch_size``, ``--learning_rate``, ``--train_size``, ``--cache_dir``; the data
flags come from ``data_flags``.
"""

import math

from absl import flags

from tfprune.cli import data_flags
from tfprune.experiments import models
from tfprune.experiments.config import BaselineConfig

MODEL = flags.DEFINE_enum("model", "fc_1000", list(models.MODEL_NAMES), "Reference model to prune.")
TRAIN_EPOCHS = flags.DEFINE_integer("train_epochs", 10, "Epochs of baseline training (Adam).", lower_bound=1)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Batch size of training and fine-tuning.", lower_bound=1)
LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (> 0).", lower_bound=0.0)
flags.register_validator("learning_rate", lambda v: math.isfinite(v) and v > 0,
                         message="--learning_rate must be a finite number > 0")
TRAIN_SIZE = flags.DEFINE_integer(
    "train_size", None, "Train the baseline, and fine-tune pruned models, on a reproducible random subset of this "
    "many training images (default: all of them). Test figures always use the whole test set.", lower_bound=1)
KERAS = flags.DEFINE_enum("keras", "2", ["2", "3"],
                          "Keras that builds the reference model: 2 (tf_keras) or 3 (Keras 3, on the backend "
                          "KERAS_BACKEND names). A --model_path file is loaded with the Keras that wrote it.")
CACHE_DIR = flags.DEFINE_string("cache_dir", None,
                                "Where trained baselines are cached (default $TFPRUNE_CACHE or ~/.cache/tfprune).")


def baseline_config(model_path=None, allow_unsafe=False, verbose=2):
    """The ``BaselineConfig`` of the data and baseline flags (``model_path``: the value of --model_path, for the
    mains that define it)."""
    return BaselineConfig(dataset=data_flags.DATASET.value, data_dir=data_flags.DATA_DIR.value, model=MODEL.value,
                          model_path=model_path, allow_unsafe=allow_unsafe, train_epochs=TRAIN_EPOCHS.value,
                          batch_size=BATCH_SIZE.value, learning_rate=LEARNING_RATE.value, seed=data_flags.SEED.value,
                          train_size=TRAIN_SIZE.value, cache_dir=CACHE_DIR.value, verbose=verbose,
                          keras=KERAS.value, data_memory_mib=data_flags.DATA_MEMORY_MIB.value)
