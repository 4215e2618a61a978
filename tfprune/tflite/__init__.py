"""TFLite for Android: convert a pruned Keras model, verify it in LiteRT, and write it with its labels and card.

- ``convert``: ``to_tflite`` (builtin ops only; float, float16, dynamic-range and full-int8 variants, optionally
  sparse-encoded), ``parse_variant``, ``plain_model``;
- ``runtime``: the LiteRT interpreter (XNNPACK first, builtin kernels when it fails), ``predict_tflite``,
  ``evaluate_tflite``, ``benchmark_tflite``;
- ``artifacts``: ``export_variant`` (convert + verify + time one variant) and ``write_exported_model``
  (``model.tflite``, ``labels.txt``, ``model_card.json``);
- ``compiled``: the same in LiteRT's CompiledModel API (``evaluate_compiled``, ``benchmark_compiled``);
- ``kernels``: which kernel runs each weighted operator (``model_kernels``, ``summary``);
- ``nm_check``: ``check_nm_tflite``, an N:M pattern checked on a file's decoded FULLY_CONNECTED / CONV_2D weights;
- ``sparse``, ``sparse_format``: each sparse weight's encoding settled (block format for LiteRT's sparse kernels,
  CSR + DENSIFY, or dense), and TFLite's sparse format decoded and encoded.

Depends on the pruning library only (``tfprune.pruning``, ``tfprune.layers.registry``), never on the experiments.
"""

from tfprune.tflite.artifacts import export_variant, input_normalization, variant_columns, write_exported_model
from tfprune.tflite.nm_check import TensorNMCheck, check_nm_tflite
from tfprune.tflite.convert import QUANTIZATIONS, SPARSE_SUFFIX, VARIANTS, parse_variant, plain_model, to_tflite
from tfprune.tflite.runtime import (LOSS_EPSILON, PATHS, benchmark_tflite, cross_entropy, evaluate_tflite,
                                    load_interpreter, predict_tflite)

__all__ = ["LOSS_EPSILON", "PATHS", "QUANTIZATIONS", "SPARSE_SUFFIX", "TensorNMCheck", "VARIANTS", "benchmark_tflite",
           "check_nm_tflite", "cross_entropy", "evaluate_tflite", "export_variant", "input_normalization",
           "load_interpreter", "parse_variant", "plain_model", "predict_tflite", "to_tflite", "variant_columns",
           "write_exported_model"]
