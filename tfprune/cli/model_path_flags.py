"""Flags of a user's own trained model file: ``--model_path`` and ``--allow_unsafe_deserialization``."""

import os

from absl import flags

MODEL_PATH = flags.DEFINE_string(
    "model_path", None, "A trained Keras model file (.keras or .h5) to prune or export instead of a reference "
    "model; loaded in Keras safe mode (see --allow_unsafe_deserialization).")
ALLOW_UNSAFE = flags.DEFINE_bool(
    "allow_unsafe_deserialization", False, "Load --model_path even when it holds code (Lambda layers, modules "
    "outside Keras/tfprune/TF-MOT, SavedModel graphs). Only for files you trust.")
flags.register_validator("model_path", lambda p: p is None or os.path.exists(p),
                         message="--model_path must name an existing .keras/.h5 file (or a SavedModel folder)")
