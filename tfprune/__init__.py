"""tfprune: rank-based weight and unit pruning for Keras, side by side with TF-MOT, exported to TFLite.

Sparsity is a fraction in [0, 1) everywhere in this API; the command-line tools take a percent k.

Layers of the package (imports point one way: cli -> experiments -> tflite -> library):

- the pruning library, in tiers (each imports only the ones before it; docs/ARCHITECTURE.md): ``stacks`` (the two
  Keras stacks); ``structure`` (Keras graphs); ``layers`` (the prunable layers and the registry of layer types);
  ``select`` (masks, methods, blocks, the channel rules, coupled channel groups), ``outputs``, ``distribute``;
  ``pruning`` (``make_prunable``, ``prune``, ``strip``, the report), ``files`` (model files, atomic writes, locks);
  ``shrinking`` (``shrink``, costs), ``callbacks`` (schedules), ``quantization`` (sparsity-preserving QAT);
- ``tfprune.tflite``: conversion, LiteRT verification and artifacts;
- ``tfprune.experiments``: data, reference models, baselines, sweeps, comparisons and sensitivity scans;
- ``tfprune.cli``: flags and mains (the only code that reads absl flags).
"""

import importlib

from tfprune import _startup  # noqa: F401  (first: Ctrl-C while a command starts is one line, not a traceback)
from tfprune import _env  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from tfprune import callbacks
from tfprune.shrinking import surgery
from tfprune._version import __version__
from tfprune.select.channel_rules import ChannelRule, register_channel_rule
from tfprune.shrinking.costs import count_params_and_macs
from tfprune.select.groups import ChannelGroup, channel_groups, format_groups
from tfprune.layers.jax_masks import hold_masks_in_optimizer
from tfprune.layers import conv as _conv, dense as _dense, einsum as _einsum, embedding as _embedding
from tfprune.layers import rnn as _rnn
from tfprune.layers.attention import PrunableMultiHeadAttention
from tfprune.layers.custom import PrunableLayer
from tfprune.select.masks import global_unit_keeps, global_weight_masks, prune_count, unit_keep, unit_mask, weight_mask
from tfprune.pruning import (LayerSparsity, check_nm, format_report, make_prunable, overall_sparsity, prune,
                             sparsity_report, strip)
from tfprune.layers.registry import custom_objects
from tfprune.layers.registry import is_prunable as is_prunable_layer
from tfprune.shrinking.surgery import ShrinkReport, ShrinkResult, format_shrink_report, shrink
from tfprune.shrinking.blocks import inner_unit_layers
from tfprune.shrinking.configs import rebuild_from_config
from tfprune.select.scoring import block_scorer, nm_scorer
from tfprune.select.nm import NMCheck
from tfprune.calibration.data import Calibration
from tfprune.files.user_model import load_user_model

# The tf_keras prunable classes, by their names (Keras 3's are registered as tfprune>Prunable<Name> too).
PrunableDense = _dense.TF_KERAS["Dense"]
PrunableConv1D, PrunableConv2D, PrunableConv3D, PrunableDepthwiseConv2D = (
    _conv.TF_KERAS[n] for n in ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D"))
PrunableEinsumDense, PrunableEmbedding = _einsum.TF_KERAS["EinsumDense"], _embedding.TF_KERAS["Embedding"]
PrunableSimpleRNN, PrunableGRU, PrunableLSTM = (_rnn.TF_KERAS[n] for n in ("SimpleRNN", "GRU", "LSTM"))

# Loaded on first use (PEP 562), so that ``import tfprune`` brings in neither LiteRT, matplotlib, TFDS nor the
# experiments harness: public name -> (module, attribute; None for the module itself).
_LAZY = {
    "distribute": ("tfprune.distribute", None),
    "tflite": ("tfprune.tflite", None),
    "models": ("tfprune.experiments.models", None),
    "benchmark_tflite": ("tfprune.tflite", "benchmark_tflite"),
    "evaluate_tflite": ("tfprune.tflite", "evaluate_tflite"),
    "to_tflite": ("tfprune.tflite", "to_tflite"),
    "benchmark_compiled": ("tfprune.tflite.compiled", "benchmark_compiled"),
    "evaluate_compiled": ("tfprune.tflite.compiled", "evaluate_compiled"),
    "Baseline": ("tfprune.experiments.baseline", "Baseline"),
    "train_baseline": ("tfprune.experiments.baseline", "train_baseline"),
    "DatasetError": ("tfprune.experiments.data.builtin", "DatasetError"),
    "load_dataset": ("tfprune.experiments.data.builtin", "load_dataset"),
    "load_data": ("tfprune.experiments.data.sources", "load"),
    "ArraySplit": ("tfprune.experiments.data.dataset", "ArraySplit"),
    "Dataset": ("tfprune.experiments.data.dataset", "Dataset"),
    "StreamedSplit": ("tfprune.experiments.data.dataset", "StreamedSplit"),
    "quantization": ("tfprune.quantization", None),
    "quantize_aware": ("tfprune.quantization", "quantize_aware"),
    "qat_callbacks": ("tfprune.quantization", "zero_keepers"),
    "qat_inference_model": ("tfprune.quantization", "to_inference_model"),
}


def __getattr__(name):
    """Imports a lazily exported name (``_LAZY``) on first access and keeps it as a module attribute."""
    if name not in _LAZY:
        raise AttributeError(f"module 'tfprune' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ArraySplit", "Baseline", "Calibration", "ChannelGroup", "ChannelRule", "Dataset", "DatasetError", "LayerSparsity",
    "NMCheck", "PrunableConv1D", "PrunableConv2D", "PrunableConv3D", "PrunableDense", "PrunableDepthwiseConv2D",
    "PrunableEinsumDense", "PrunableEmbedding", "PrunableGRU", "PrunableLSTM", "PrunableLayer",
    "PrunableMultiHeadAttention", "PrunableSimpleRNN", "ShrinkReport", "ShrinkResult", "StreamedSplit",
    "benchmark_compiled", "benchmark_tflite", "block_scorer", "callbacks", "channel_groups", "check_nm",
    "count_params_and_macs", "custom_objects", "distribute", "evaluate_compiled", "evaluate_tflite", "format_groups",
    "format_report", "format_shrink_report", "global_unit_keeps", "global_weight_masks", "hold_masks_in_optimizer",
    "inner_unit_layers", "is_prunable_layer", "load_data", "load_dataset", "load_user_model", "make_prunable",
    "models", "nm_scorer",
    "overall_sparsity", "prune", "prune_count", "qat_callbacks", "qat_inference_model", "quantization",
    "quantize_aware", "rebuild_from_config", "register_channel_rule", "shrink", "sparsity_report", "strip",
    "surgery", "tflite", "to_tflite", "train_baseline", "unit_keep", "unit_mask", "weight_mask", "__version__",
]
