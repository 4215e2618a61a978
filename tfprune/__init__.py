"""tfprune: rank-based weight and unit pruning for Keras, side by side with TF-MOT, exported to TFLite.

Sparsity is a fraction in [0, 1) everywhere in this API; the command-line tools take a percent k.
"""

from tfprune import _env  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from tfprune import callbacks
from tfprune import distribute
from tfprune import export
from tfprune import models
from tfprune import surgery
from tfprune.baseline import Baseline, train_baseline
from tfprune.data import DatasetError, load_dataset
from tfprune.export import benchmark_tflite, evaluate_tflite, to_tflite
from tfprune.layers import PrunableConv2D, PrunableDense, custom_objects, is_prunable_layer
from tfprune.masks import global_unit_keeps, global_weight_masks, prune_count, unit_keep, unit_mask, weight_mask
from tfprune.pruning import (LayerSparsity, format_report, make_prunable, overall_sparsity, prune, sparsity_report,
                             strip)
from tfprune.surgery import ShrinkReport, ShrinkResult, count_params_and_macs, format_shrink_report, shrink
from tfprune.user_model import load_user_model

__version__ = "0.1.0"

__all__ = [
    "Baseline", "DatasetError", "LayerSparsity", "PrunableConv2D", "PrunableDense", "ShrinkReport", "ShrinkResult",
    "benchmark_tflite", "callbacks", "count_params_and_macs", "custom_objects", "distribute", "evaluate_tflite",
    "export", "format_report", "format_shrink_report", "global_unit_keeps", "global_weight_masks",
    "is_prunable_layer", "load_dataset", "load_user_model", "make_prunable", "models", "overall_sparsity", "prune",
    "prune_count", "shrink", "sparsity_report", "strip", "surgery", "to_tflite", "train_baseline", "unit_keep",
    "unit_mask", "weight_mask", "__version__",
]
