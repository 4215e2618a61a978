"""Flags every pruning study takes: ``--sparsities`` (percents k), ``--layers``, ``--calibration_size`` and the
required ``--output_dir``."""

import os

from absl import flags

from tfprune.cli import app
from tfprune.experiments import config

SPARSITIES = flags.DEFINE_list(
    "sparsities", [f"{k:g}" for k in config.DEFAULT_SPARSITIES],
    "Percent k of weights (or units) to prune, each in [0, 100), no repeats.")
app.register_list_validator("sparsities", lambda values: config.check_percents(values, "--sparsities"))
LAYERS = flags.DEFINE_list(
    "layers", None, "Layer names to prune (default: every Dense, Conv1D/2D/3D (transposed too), DepthwiseConv2D, "
    "Embedding, SimpleRNN, GRU and LSTM for weight pruning; for unit pruning all but the classifier and the "
    "depthwise layers).")
app.register_list_validator("layers", lambda values: config.check_unique(values, "--layers", noun="layer"))
CALIBRATION_SIZE = flags.DEFINE_integer(
    "calibration_size", config.DEFAULT_CALIBRATION_SIZE,
    "Training examples (a fixed subset of the train split; never the test split) that the calibration methods read "
    "(wanda, wanda_kernel, taylor, taylor_unit, sparsegpt, unit_refit).", lower_bound=1)
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder for the results (tables, JSON, PNG plots).")
flags.mark_flag_as_required("output_dir")


def _check_output_dir(path):
    """An output dir must be a folder (or creatable) and writable: checked before any work starts."""
    if path is None:
        return True
    if not path.strip():
        raise flags.ValidationError("--output_dir is empty; name a folder for the results")
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


flags.register_validator("output_dir", _check_output_dir)
