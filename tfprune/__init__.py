"""tfprune: rank-based weight and unit pruning for Keras, side by side with TF-MOT, exported to TFLite.

Sparsity is a fraction in [0, 1) everywhere in this API; the command-line tools take a percent k.
"""

from tfprune import _env  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from tfprune import callbacks
from tfprune import models
from tfprune.baseline import Baseline, train_baseline
from tfprune.data import DatasetError, load_dataset
from tfprune.layers import PrunableConv2D, PrunableDense, custom_objects, is_prunable_layer
from tfprune.masks import global_unit_keeps, global_weight_masks, prune_count, unit_keep, unit_mask, weight_mask
from tfprune.pruning import (LayerSparsity, format_report, make_prunable, overall_sparsity, prune, sparsity_report,
                             strip)

__version__ = "0.1.0"

__all__ = [
    "Baseline", "DatasetError", "LayerSparsity", "PrunableConv2D", "PrunableDense", "callbacks", "custom_objects",
    "format_report", "global_unit_keeps", "global_weight_masks", "is_prunable_layer", "load_dataset",
    "make_prunable", "models", "overall_sparsity", "prune", "prune_count", "sparsity_report", "strip",
    "train_baseline", "unit_keep", "unit_mask", "weight_mask", "__version__",
]
