"""TFLite conversion of a (pruned) Keras model: builtin ops only, quantization variants, sparse encoding.

Variants are named ``<quantization>[+sparse]``: ``float`` (float32 weights), ``float16`` (float16 weights),
``dynamic`` (int8 weights, float activations), ``int8`` (full integer, int8 input and output, calibrated on a
representative dataset); ``+sparse`` also stores pruned weight matrices in TFLite's sparse format
(``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``), then settles each weight's encoding with
``tfprune.tflite.sparse.reencode_csr(keep_blocks=True)``: block-pruned Dense weights keep the converter's 1x4 (float)
or 1x16 (int8) block format, which LiteRT's sparse kernels compute; other float weights become plain CSR read
through a builtin DENSIFY op; other int8 weights are stored dense (CompiledModel cannot load an int8 DENSIFY). Only
TFLite builtin ops are allowed: a model that would need TF (Flex/Select) or custom ops is rejected.
"""

import contextlib
import re

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tfprune.structure import graph
from tfprune import pruning
from tfprune.layers import registry
from tfprune import stacks
from tfprune._env import keras3, tf
from tfprune.tflite import sparse as tflite_sparse

QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
_VARIANT_QUANTIZATION = {"float": "none", "float16": "float16", "dynamic": "dynamic", "int8": "int8"}
SPARSE_SUFFIX = "+sparse"
VARIANTS = tuple(list(_VARIANT_QUANTIZATION) + [v + SPARSE_SUFFIX for v in _VARIANT_QUANTIZATION])
_UNSUPPORTED_OP = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


def parse_variant(variant):
    """Splits a variant name into ``(quantization, sparse_encoding)``: ``"int8+sparse"`` -> ``("int8", True)``.

    Raises:
      ValueError: naming ``variant`` and listing ``VARIANTS`` when it is not one of them.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown TFLite variant {variant!r}; known variants: {', '.join(VARIANTS)}")
    sparse = variant.endswith(SPARSE_SUFFIX)
    return _VARIANT_QUANTIZATION[variant[:-len(SPARSE_SUFFIX)] if sparse else variant], sparse


plain_model = pruning.plain_model


def _is_recurrent(layer):
    layers = stacks.of(layer).keras.layers
    return isinstance(layer, (layers.RNN, layers.Bidirectional))


def _unrolled(config):
    """A layer config with every ``unroll`` flag in it (a wrapper's inner layers too) set to True."""
    if isinstance(config, dict):
        return {k: True if k == "unroll" else _unrolled(v) for k, v in config.items()}
    return config


def unrolled_model(model):
    """``model`` with its recurrent layers unrolled over their timesteps (else ``model`` itself).

    TensorFlow's converter turns a rolled Keras LSTM into TFLite's fused LSTM op, whose state lives in variable
    tensors that LiteRT carries from one invoke to the next (measured: the same input gives another output on its
    second run), and a rolled SimpleRNN/GRU into a WHILE loop that needs a static batch and whose int8 calibration
    crashes the converter (segmentation fault). Unrolled, each step is FULLY_CONNECTED and element-wise builtin ops:
    stateless, any batch, every quantization, the same weights (shared by the steps).

    Raises:
      ValueError: a recurrent layer whose number of timesteps is not fixed (it cannot be unrolled).
    """
    recurrent = [l for l in model.layers if _is_recurrent(l)]
    if not recurrent:
        return model
    for layer in recurrent:
        if graph.input_shape(layer)[1] is None:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) reads sequences of no fixed length "
                             f"(input shape {tuple(graph.input_shape(layer))}); TFLite export unrolls recurrent "
                             "layers, so the model's input needs a fixed number of timesteps")
    keras = stacks.of(model).keras
    unrolled = keras.models.clone_model(model, clone_function=lambda layer: type(layer).from_config(
        _unrolled(layer.get_config()) if _is_recurrent(layer) else layer.get_config()))
    unrolled.set_weights(model.get_weights())
    return unrolled


def _check_representative(model, data):
    data = np.asarray(data)
    data = data if data.dtype.kind in "iu" else data.astype(np.float32)  # token ids stay integers
    if data.ndim == 0 or len(data) == 0:
        raise ValueError("representative_data is empty; int8 calibration needs a few hundred training images")
    expected = graph.model_input_shape(model)[1:]
    if data.shape[1:] != expected:
        raise ValueError(f"representative_data has image shape {data.shape[1:]}, the model takes {expected}")
    return data


def _unsupported_ops_error(error):
    """A ValueError naming the TF ops that have no TFLite builtin kernel; None when ``error`` is about anything else."""
    text = str(error)
    ops = sorted(set(_UNSUPPORTED_OP.findall(text)))
    if not ops:
        return None
    return ValueError(f"the model needs TensorFlow op(s) with no TFLite builtin kernel: {', '.join(ops)}; tfprune "
                      "exports TFLite builtin ops only (no Flex/Select TF ops, no custom ops). Replace the layer(s) "
                      "using them (e.g. a Lambda layer) with builtin-compatible ops.")


def to_tflite(model, quantization="none", sparse_encoding=False, representative_data=None):
    """Converts a Keras model to a TFLite flatbuffer that uses TFLite builtin ops only.

    Args:
      model: Keras model (tf_keras, or Keras 3 on the TensorFlow backend) with float32 input, e.g. images
        (N, 28, 28) in [0, 1]; tfprune prunable and TF-MOT
        wrapped models are stripped first (``plain_model``).
      quantization: ``none`` (float32), ``dynamic`` (int8 weights), ``float16`` (float16 weights) or ``int8``
        (full integer with int8 input and output).
      sparse_encoding: also store sparse weight tensors in TFLite's sparse format (the converter encodes only
        tensors at least 30 % zero, so a dense model's file is unchanged). Block-pruned FULLY_CONNECTED weights
        (``method="block_1x4"`` for float, ``"block_1x16"`` for int8 and dynamic range) keep the block format and
        run LiteRT's sparse kernels: smaller and faster. Other sparse float weights are stored as plain CSR +
        builtin DENSIFY (smaller file; DENSIFY expands them once at load and the dense kernels run); other int8
        weights are stored dense, as an int8 weight behind DENSIFY does not load in CompiledModel. Weights the
        converter dropped past its last whole block are restored from a second conversion without sparse
        encoding, which also gives operators no longer reading a sparse weight their plain version (see
        ``tflite_sparse.reencode_csr`` for every LiteRT 2.3.0 failure this avoids).
      representative_data: float32 array (N, *input shape) of training images for int8 calibration (a few
        hundred is enough); required for ``int8``, ignored otherwise.

    Returns:
      the ``.tflite`` file contents (bytes).

    Raises:
      ValueError: unknown ``quantization`` (the message lists the valid ones); ``int8`` without, or with empty or
        wrongly shaped, representative data; a recurrent layer without a fixed number of timesteps
        (``unrolled_model``); a model needing ops that have no TFLite builtin (named).
      RuntimeError: with ``sparse_encoding``, the converter dropped weights (its blocks do not divide a kernel)
        that could not be restored: such a file would compute without them, so none is returned.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}; valid: {', '.join(QUANTIZATIONS)}")
    stack = stacks.of(model)
    if stack.backend != "tensorflow":
        raise ValueError(f"TFLite export needs the TensorFlow backend; this Keras 3 model runs on {stack.backend}: "
                         "save it (model.save('pruned.keras')) and export it from a process with "
                         "KERAS_BACKEND=tensorflow, e.g. python -m tfprune.export_main --model_path=pruned.keras")
    if quantization == "int8":
        if representative_data is None:
            raise ValueError("quantization 'int8' needs representative_data (a few hundred training images)")
        representative_data = _check_representative(model, representative_data)
    model = unrolled_model(plain_model(model))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = [] if quantization == "none" else [tf.lite.Optimize.DEFAULT]
    if sparse_encoding:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not tf.as_dtype(model.inputs[0].dtype).is_integer:  # token ids (an Embedding's input) stay int32
            converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        # Calibration keeps min/max per tensor: batches give the ranges of single images (to float rounding), faster.
        batch = 32 if graph.model_input_shape(model)[0] is None else 1

        def samples():
            for start in range(0, len(representative_data), batch):
                yield [representative_data[start:start + batch]]
        converter.representative_dataset = samples
    model_bytes = _convert(converter)
    return _reencode_blocks(converter, model_bytes) if sparse_encoding else model_bytes


def _needs_reencoding(model_bytes):
    """True when the file has a block-encoded tensor or an int8 sparse one (``tflite_sparse`` rewrites those)."""
    for details in Interpreter(model_content=model_bytes).get_tensor_details():
        sparsity = details.get("sparsity_parameters") or {}
        if sparsity and (len(np.ravel(sparsity.get("block_map", ()))) or np.dtype(details["dtype"]) == np.int8):
            return True
    return False


def _reencode_blocks(converter, model_bytes):
    """``model_bytes`` with the converter's block-sparse weights as CSR + DENSIFY (``tflite_sparse``), but for
    those LiteRT's sparse block kernels compute right. The same conversion without sparsity supplies the weights
    the converter dropped past its last whole block and the operator versions of weights no longer sparse."""
    if not _needs_reencoding(model_bytes):
        return model_bytes  # nothing block-encoded and no int8 CSR: the converter's file as it is
    converter.optimizations = [o for o in converter.optimizations if o != tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    csr_bytes, report = tflite_sparse.reencode_csr(model_bytes, _convert(converter), keep_blocks=True)
    lost = [f"{e['name']} ({e['reason']})" for e in report if e["truncated"] and not (e["rewritten"] or e["kept"])]
    if lost:  # such a model computes without some of its weights: never hand it out
        raise RuntimeError("the TFLite converter's sparse encoding dropped weights that tfprune could not restore "
                           f"from a conversion without sparsity: {'; '.join(lost)}; export without +sparse")
    return csr_bytes


@contextlib.contextmanager
def _quiet_keras3_export():
    """The converter exports a Keras 3 model through ``keras.export.ExportArchive``, which prints its endpoints to
    stdout; with Keras' interactive logging off that goes to absl's log instead."""
    config = keras3.config
    was = config.is_interactive_logging_enabled()
    config.disable_interactive_logging()
    try:
        yield
    finally:
        if was:
            config.enable_interactive_logging()


def _convert(converter):
    """``converter.convert()``, with a model needing non-builtin ops as a ValueError naming them."""
    try:
        with _quiet_keras3_export():
            return converter.convert()
    except Exception as e:  # ConverterError is not exported under tf.lite
        error = _unsupported_ops_error(e)
        if error is None:
            raise
        raise error from None


__all__ = ["QUANTIZATIONS", "SPARSE_SUFFIX", "VARIANTS", "parse_variant", "plain_model", "to_tflite",
           "unrolled_model"]
