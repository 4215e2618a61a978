"""TFLite export: convert a (pruned) Keras model, run it in the LiteRT interpreter, time it, write it with a card.

Variants are named ``<quantization>[+sparse]``: ``float`` (float32 weights), ``float16`` (float16 weights),
``dynamic`` (int8 weights, float activations), ``int8`` (full integer, int8 input and output, calibrated on a
representative dataset); ``+sparse`` also stores pruned weight matrices in TFLite's sparse format
(``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``). The converter picks its 1x4 (float) or 1x16 (int8) block format
whenever block sparsity is close enough to element sparsity, which unstructured sparsity above ~96.5 % (float) or
~98.5 % (int8) passes by chance: about one 16-value block per nonzero weight. Such weights are then re-encoded as
plain CSR read through a builtin DENSIFY op (``tflite_sparse.reencode_csr``), the form the converter itself uses
below those sparsities; DENSIFY is a TFLite builtin that the stock runtimes (Android included) have. Only TFLite
builtin ops are allowed: a model that would need TF (Flex/Select) or custom ops is rejected.

LiteRT applies the XNNPACK delegate by default. Some models fail to prepare in it (on ai-edge-litert 2.3.0 a
sparse-encoded ``dynamic`` or ``int8`` Dense model does); they are then run with the builtin kernels and the
returned figures say which path ran (``"xnnpack"`` or ``"builtin"``) and why it fell back.
"""

import gzip
import os
import re
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import tfprune
from tfprune import io_utils, tflite_sparse
from tfprune._env import tf

QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
_VARIANT_QUANTIZATION = {"float": "none", "float16": "float16", "dynamic": "dynamic", "int8": "int8"}
SPARSE_SUFFIX = "+sparse"
VARIANTS = tuple(list(_VARIANT_QUANTIZATION) + [v + SPARSE_SUFFIX for v in _VARIANT_QUANTIZATION])
PATHS = ("xnnpack", "builtin")
LOSS_EPSILON = 1e-7  # Keras' epsilon: probabilities are clipped to [eps, 1 - eps] as in its cross-entropy

_RESOLVERS = {"xnnpack": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
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


def plain_model(model):
    """The model as plain Keras layers: tfprune masks baked in (``pruning.strip``), TF-MOT wrappers stripped.

    Models with neither are returned as they are (not copied).
    """
    if any(type(l).__name__ == "PruneLowMagnitude" and "tensorflow_model_optimization" in type(l).__module__
           for l in model.layers):
        import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
        model = tfmot.sparsity.keras.strip_pruning(model)
    if any(hasattr(l, "kernel_mask") for l in model.layers):
        from tfprune import pruning  # pylint: disable=g-import-not-at-top
        model = pruning.strip(model)
    return model


def _check_representative(model, data):
    data = np.asarray(data, np.float32)
    if data.ndim == 0 or len(data) == 0:
        raise ValueError("representative_data is empty; int8 calibration needs a few hundred training images")
    expected = tuple(model.input_shape[1:])
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
      model: tf_keras model with float32 input, e.g. images (N, 28, 28) in [0, 1]; tfprune prunable and TF-MOT
        wrapped models are stripped first (``plain_model``).
      quantization: ``none`` (float32), ``dynamic`` (int8 weights), ``float16`` (float16 weights) or ``int8``
        (full integer with int8 input and output).
      sparse_encoding: also store sparse weight tensors in TFLite's sparse format (the converter re-encodes only
        tensors at least 30 % zero, so a dense model's file is unchanged). Weights the converter stores in its
        block format are rewritten as plain CSR + builtin DENSIFY (``tflite_sparse.reencode_csr``): ~3 bytes per
        nonzero int8 weight instead of ~16 at 99 % unstructured sparsity, and computed right where LiteRT 2.3.0
        misreads the block form (float16, XNNPACK with dynamic range, blocks not dividing the input width, whose
        dropped weights are restored from a second conversion without sparse encoding). The file is smaller; at
        run time DENSIFY expands each such weight once to a dense tensor in memory and the dense kernels run.
      representative_data: float32 array (N, *input shape) of training images for int8 calibration (a few
        hundred is enough); required for ``int8``, ignored otherwise.

    Returns:
      the ``.tflite`` file contents (bytes).

    Raises:
      ValueError: unknown ``quantization`` (the message lists the valid ones); ``int8`` without, or with empty or
        wrongly shaped, representative data; a model needing ops that have no TFLite builtin (named).
      RuntimeError: with ``sparse_encoding``, the converter dropped weights (its blocks do not divide a kernel)
        that could not be restored: such a file would compute without them, so none is returned.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}; valid: {', '.join(QUANTIZATIONS)}")
    if quantization == "int8":
        if representative_data is None:
            raise ValueError("quantization 'int8' needs representative_data (a few hundred training images)")
        representative_data = _check_representative(model, representative_data)
    model = plain_model(model)
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
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        # Calibration keeps min/max per tensor: batches give the ranges of single images (to float rounding), faster.
        batch = 32 if model.input_shape[0] is None else 1

        def samples():
            for start in range(0, len(representative_data), batch):
                yield [representative_data[start:start + batch]]
        converter.representative_dataset = samples
    model_bytes = _convert(converter)
    return _reencode_blocks(converter, model_bytes) if sparse_encoding else model_bytes


def _reencode_blocks(converter, model_bytes):
    """``model_bytes`` with the converter's block-sparse weights as CSR + DENSIFY (``tflite_sparse``)."""
    csr_bytes, report = tflite_sparse.reencode_csr(model_bytes)
    if not any(entry["truncated"] for entry in report):
        return csr_bytes
    # The converter dropped the weights past its last whole block: take them from a conversion without sparsity.
    converter.optimizations = [o for o in converter.optimizations if o != tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    csr_bytes, report = tflite_sparse.reencode_csr(model_bytes, _convert(converter))
    lost = [f"{e['name']} ({e['reason']})" for e in report if e["truncated"] and not e["rewritten"]]
    if lost:  # such a model computes without some of its weights: never hand it out
        raise RuntimeError("the TFLite converter's sparse encoding dropped weights that tfprune could not restore "
                           f"from a conversion without sparsity: {'; '.join(lost)}; export without +sparse")
    return csr_bytes


def _convert(converter):
    """``converter.convert()``, with a model needing non-builtin ops as a ValueError naming them."""
    try:
        return converter.convert()
    except Exception as e:  # ConverterError is not exported under tf.lite
        error = _unsupported_ops_error(e)
        if error is None:
            raise
        raise error from None


def _interpreter(model_bytes, batch, num_threads, path):
    interpreter = Interpreter(model_content=model_bytes, num_threads=num_threads,
                              experimental_op_resolver_type=_RESOLVERS[path])
    details = interpreter.get_input_details()
    if len(details) != 1 or len(interpreter.get_output_details()) != 1:
        raise ValueError(f"the TFLite model has {len(details)} inputs and {len(interpreter.get_output_details())} "
                         "outputs; tfprune runs single-input single-output classifiers")
    if details[0]["shape"][0] != batch:
        interpreter.resize_tensor_input(details[0]["index"], [batch] + list(details[0]["shape"][1:]))
    interpreter.allocate_tensors()
    zeros = np.zeros(interpreter.get_input_details()[0]["shape"], details[0]["dtype"])
    interpreter.set_tensor(details[0]["index"], zeros)
    interpreter.invoke()  # a delegate can also fail at the first invoke: find out before any figure is taken
    ops = interpreter._get_ops_details()  # pylint: disable=protected-access
    delegated = any(op["op_name"] == "DELEGATE" for op in ops)
    return interpreter, "xnnpack" if path == "xnnpack" and delegated else "builtin"


def load_interpreter(model_bytes, batch=1, num_threads=1, prefer_xnnpack=True):
    """A LiteRT interpreter with input batch ``batch``, allocated and invoked once, and the path that ran.

    Tries the default XNNPACK delegate first (when ``prefer_xnnpack``); if it fails to prepare or to invoke, loads
    the model again with builtin kernels only.

    Returns:
      ``(interpreter, info)``; ``info`` is ``{"path": "xnnpack"|"builtin", "fallback_reason": str}`` (reason
      empty when no fallback happened; path "builtin" also when XNNPACK was applied but took no node).

    Raises:
      ValueError: bad batch/num_threads, or a model that is not single-input single-output.
      RuntimeError: the model runs on neither path (both errors in the message).
    """
    if batch < 1 or num_threads < 1:
        raise ValueError(f"batch {batch} and num_threads {num_threads} must be at least 1")
    paths = PATHS if prefer_xnnpack else ("builtin",)
    errors = []
    for path in paths:
        try:
            interpreter, ran = _interpreter(model_bytes, batch, num_threads, path)
        except RuntimeError as e:
            errors.append(f"{path}: {str(e).strip()}")
            continue
        return interpreter, {"path": ran, "fallback_reason": "; ".join(errors)}
    raise RuntimeError("the TFLite model runs on no LiteRT path: " + "; ".join(errors))


def _quantize(x, details):
    """Float input -> the input tensor's dtype (int8: round(x / scale) + zero_point, saturated)."""
    if np.issubdtype(details["dtype"], np.floating):
        return x.astype(details["dtype"])
    scale, zero_point = details["quantization"]
    info = np.iinfo(details["dtype"])
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(details["dtype"])


def _dequantize(q, details):
    if np.issubdtype(details["dtype"], np.floating):
        return q.astype(np.float32)
    scale, zero_point = details["quantization"]
    return (q.astype(np.float32) - zero_point) * scale


def predict_tflite(interpreter, x):
    """Class probabilities (N, classes) float32 for float images ``x`` (N, *input shape), in interpreter batches.

    The last partial batch is zero-padded, so the interpreter is never re-allocated.
    """
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    batch = int(inp["shape"][0])
    x = np.asarray(x, np.float32)
    if x.shape[1:] != tuple(inp["shape"][1:]):
        raise ValueError(f"images have shape {x.shape[1:]}, the TFLite model takes {tuple(inp['shape'][1:])}")
    probs = np.empty((len(x), int(out["shape"][-1])), np.float32)
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        padded = np.zeros((batch,) + chunk.shape[1:], np.float32)
        padded[:len(chunk)] = chunk
        interpreter.set_tensor(inp["index"], _quantize(padded, inp))
        interpreter.invoke()
        probs[start:start + len(chunk)] = _dequantize(interpreter.get_tensor(out["index"]), out)[:len(chunk)]
    return probs


def cross_entropy(probs, y):
    """Mean sparse categorical cross-entropy of probabilities (N, classes) as Keras computes it (renormalized,
    clipped to [1e-7, 1 - 1e-7])."""
    sums = probs.sum(axis=1, keepdims=True)
    probs = np.clip(probs / np.where(sums > 0, sums, 1.0), LOSS_EPSILON, 1 - LOSS_EPSILON)
    return float(-np.log(probs[np.arange(len(y)), y]).mean())


def evaluate_tflite(model_bytes, x, y, batch_size=256, num_threads=1, prefer_xnnpack=True):
    """Accuracy and loss of a TFLite classifier in the LiteRT interpreter.

    Args:
      model_bytes: ``.tflite`` contents whose output is softmax probabilities (float or int8 quantized).
      x: float32 images (N, *input shape) normalized as for the Keras model (here [0, 1]).
      y: int labels (N,).
      batch_size: images per invoke (the input is resized to it once).

    Returns:
      dict with ``accuracy`` (fraction 0..1), ``loss`` (mean cross-entropy), ``images``, ``path``
      (``"xnnpack"``/``"builtin"``), ``fallback_reason``.

    Raises:
      ValueError: empty or mismatched ``x``/``y``, wrong image shape, bad batch size.
      RuntimeError: the model runs on no path.
    """
    y = np.asarray(y).astype(np.int64)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"x has {len(x)} images and y {len(y)} labels; need the same positive number")
    interpreter, info = load_interpreter(model_bytes, min(batch_size, len(x)), num_threads, prefer_xnnpack)
    probs = predict_tflite(interpreter, x)
    if y.min() < 0 or y.max() >= probs.shape[1]:
        raise ValueError(f"labels span [{y.min()}, {y.max()}], the model has {probs.shape[1]} classes")
    accuracy = float(np.mean(probs.argmax(axis=1) == y))
    return {"accuracy": accuracy, "loss": cross_entropy(probs, y), "images": len(x), **info}


def benchmark_tflite(model_bytes, num_threads=1, runs=100, warmup=10, prefer_xnnpack=True, seed=0):
    """Single-image latency of ``interpreter.invoke()`` (input copy excluded), after ``warmup`` invokes.

    The input is a fixed random image in [0, 1] (quantized for int8 models).

    Returns:
      dict with ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms`` (milliseconds), ``runs``, ``warmup``,
      ``num_threads``, ``path``, ``fallback_reason``.

    Raises:
      ValueError: runs < 1, warmup < 0 or num_threads < 1.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs {runs} must be at least 1 and warmup {warmup} at least 0")
    interpreter, info = load_interpreter(model_bytes, 1, num_threads, prefer_xnnpack)
    inp = interpreter.get_input_details()[0]
    image = np.random.default_rng(seed).random(inp["shape"], dtype=np.float32)
    interpreter.set_tensor(inp["index"], _quantize(image, inp))
    for _ in range(warmup):
        interpreter.invoke()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter_ns()
        interpreter.invoke()
        times[i] = (time.perf_counter_ns() - start) / 1e6
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(times.mean()), "min_ms": float(times.min()), "runs": runs, "warmup": warmup,
            "num_threads": num_threads, **info}


def input_normalization(model_bytes):
    """The input contract as text, e.g. ``float32 in [0,1], 28x28`` (+ the int8 quantization for int8 models)."""
    details = Interpreter(model_content=model_bytes).get_input_details()[0]
    text = "float32 in [0,1], " + "x".join(str(d) for d in details["shape"][1:])
    if not np.issubdtype(details["dtype"], np.floating):
        scale, zero_point = details["quantization"]
        sign = "-" if zero_point < 0 else "+"
        text += (f"; fed as {np.dtype(details['dtype']).name}: q = round(x / {scale:.9g}) {sign} {abs(zero_point)}, "
                 "saturated")
    return text


def write_exported_model(out_dir, model_bytes, card, labels):
    """Writes ``model.tflite``, ``labels.txt`` (one label a line) and ``model_card.json`` atomically to ``out_dir``.

    The card written is ``card`` plus the facts taken from the file itself: ``size_bytes``, ``gzip_size_bytes``
    (level 9), ``input_shape``, ``input_normalization``, ``num_classes``, ``tfprune_version`` and file names.

    Returns:
      the card as written (dict).

    Raises:
      ValueError: ``labels`` count differs from the model's classes, or a label is empty or has a line break.
    """
    interpreter = Interpreter(model_content=model_bytes)
    shape = [int(d) for d in interpreter.get_input_details()[0]["shape"][1:]]
    num_classes = int(interpreter.get_output_details()[0]["shape"][-1])
    labels = [str(label) for label in labels]
    if len(labels) != num_classes:
        raise ValueError(f"{len(labels)} labels given, the model has {num_classes} classes")
    bad = [label for label in labels if not label.strip() or "\n" in label or "\r" in label]
    if bad:
        raise ValueError(f"labels must be non-empty single lines; bad: {bad!r}")
    card = dict(card, size_bytes=len(model_bytes), gzip_size_bytes=len(gzip.compress(model_bytes, 9)),
                input_shape=shape, input_normalization=input_normalization(model_bytes), num_classes=num_classes,
                tfprune_version=tfprune.__version__, model_file="model.tflite", labels_file="labels.txt")
    io_utils.write_bytes_atomic(os.path.join(out_dir, "model.tflite"), model_bytes)
    io_utils.write_text_atomic(os.path.join(out_dir, "labels.txt"), "\n".join(labels) + "\n")
    io_utils.write_json_atomic(os.path.join(out_dir, "model_card.json"), card)
    return card


def export_variant(model, variant, x_eval, y_eval, representative_data=None, batch_size=256, num_threads=1,
                   bench_runs=100, bench_warmup=10, out_dir=None, labels=None):
    """Converts ``model`` to one variant, verifies it in LiteRT on real images, times it; optionally writes it.

    Args:
      model: tf_keras model (plain, tfprune prunable, or TF-MOT wrapped).
      variant: one of ``VARIANTS`` (e.g. ``"float"``, ``"int8+sparse"``).
      x_eval, y_eval: evaluation images (N, *input shape) in [0, 1] and labels (N,).
      representative_data: calibration images, needed by ``int8`` variants.
      out_dir, labels: when ``out_dir`` is given, ``write_exported_model`` writes the model there.

    Returns:
      flat dict: ``variant``, ``size_bytes``, ``gzip_size_bytes``, ``accuracy`` (0..1), ``loss``,
      ``latency_ms`` (median), ``latency_p90_ms``, ``path``, ``fallback_reason``, ``sparsity`` (fraction of zero
      kernel weights), ``convert_seconds``. ``variant_columns`` prefixes it for a results table.

    Raises:
      ValueError: unknown variant, int8 without representative data, unsupported ops, bad eval data.
    """
    quantization, sparse = parse_variant(variant)
    from tfprune import pruning  # pylint: disable=g-import-not-at-top
    model = plain_model(model)
    start = time.perf_counter()
    model_bytes = to_tflite(model, quantization, sparse, representative_data)
    convert_seconds = time.perf_counter() - start
    evaluation = evaluate_tflite(model_bytes, x_eval, y_eval, batch_size, num_threads)
    latency = benchmark_tflite(model_bytes, num_threads, bench_runs, bench_warmup)
    figures = {
        "variant": variant, "size_bytes": len(model_bytes), "accuracy": evaluation["accuracy"],
        "loss": evaluation["loss"], "latency_ms": latency["median_ms"], "latency_p90_ms": latency["p90_ms"],
        "path": evaluation["path"], "fallback_reason": evaluation["fallback_reason"],
        "sparsity": pruning.overall_sparsity(pruning.sparsity_report(model)), "convert_seconds": convert_seconds,
    }
    if out_dir is None:
        # Level 9 as the sweep's gzip_size_bytes; it takes seconds on a sparse float model, so it is done once.
        figures["gzip_size_bytes"] = len(gzip.compress(model_bytes, 9))
    else:
        card = {"variant": variant, "quantization": quantization, "sparse_encoding": sparse,
                "sparsity": figures["sparsity"], "accuracy": evaluation["accuracy"], "loss": evaluation["loss"],
                "eval_images": evaluation["images"], "latency_median_ms": latency["median_ms"],
                "latency_p90_ms": latency["p90_ms"], "latency_num_threads": num_threads,
                "path": evaluation["path"], "fallback_reason": evaluation["fallback_reason"]}
        card = write_exported_model(out_dir, model_bytes, card, labels if labels is not None else
                                    [str(i) for i in range(int(model.output_shape[-1]))])
        figures["gzip_size_bytes"] = card["gzip_size_bytes"]
    return figures


def variant_columns(figures):
    """``export_variant`` figures as result columns: ``tflite_<variant>_<name>`` (``+`` -> ``_``)."""
    prefix = "tflite_" + figures["variant"].replace(SPARSE_SUFFIX, "_sparse") + "_"
    return {prefix + key: value for key, value in figures.items() if key != "variant"}
