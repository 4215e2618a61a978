"""Exported TFLite artifacts: convert one variant, verify it in LiteRT, and write it with its labels and card."""

import gzip
import os
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tfprune import _version
from tfprune.structure import graph
from tfprune.files import io_utils
from tfprune import outputs
from tfprune import pruning
from tfprune.tflite import compiled
from tfprune.tflite import convert
from tfprune.tflite import kernels
from tfprune.tflite import nm_check
from tfprune.tflite import runtime

# How far LiteRT's probabilities may be from Keras' on the same images: float32 files differ in summation order
# only (~1e-6), quantized and float16 ones by their rounding. A misread weight (NaN, or outputs off by ~0.9 as
# XNNPACK gives for block-sparse dynamic-range weights) is far outside both.
FLOAT_MAX_ABS_DIFF = 1e-3
QUANTIZED_MEAN_ABS_DIFF = 0.05


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
                tfprune_version=_version.__version__, model_file="model.tflite", labels_file="labels.txt")
    io_utils.write_bytes_atomic(os.path.join(out_dir, "model.tflite"), model_bytes)
    io_utils.write_text_atomic(os.path.join(out_dir, "labels.txt"), "\n".join(labels) + "\n")
    io_utils.write_json_atomic(os.path.join(out_dir, "model_card.json"), card)
    return card


def check_outputs(probs, keras_probs, quantization, api, kind=outputs.PROBABILITIES):
    """The largest and mean absolute difference of LiteRT's probabilities to Keras' on the same images (``kind``
    ``"logits"``: both are outputs of a logits model, compared after a softmax so that one tolerance serves both).

    Raises:
      RuntimeError: NaN outputs, or a difference beyond ``FLOAT_MAX_ABS_DIFF`` (float32 files: the largest) or
        ``QUANTIZED_MEAN_ABS_DIFF`` (quantized and float16 files: the mean), naming ``api``: the file computes
        something other than the model, and no figure of it may be reported.
    """
    diff = np.abs(outputs.as_probabilities(np.asarray(probs, np.float64), kind)
                  - outputs.as_probabilities(np.asarray(keras_probs, np.float64), kind))
    largest, mean = float(np.max(diff)), float(np.mean(diff))
    ok = largest <= FLOAT_MAX_ABS_DIFF if quantization == "none" else mean <= QUANTIZED_MEAN_ABS_DIFF
    if not ok:  # also NaN
        limit = (f"max {FLOAT_MAX_ABS_DIFF:g}" if quantization == "none" else f"mean {QUANTIZED_MEAN_ABS_DIFF:g}")
        raise RuntimeError(f"LiteRT {api} outputs differ from the Keras model's by up to {largest:.3g} (mean "
                           f"{mean:.3g}, allowed {limit}) on {len(diff)} images: the file computes something else; "
                           "not exporting it")
    return largest, mean


def _run_compiled(model_bytes, x_eval, y_eval, keras_probs, quantization, kind, num_threads, bench_runs,
                  bench_warmup):
    """CompiledModel's figures of the file, checked against Keras; ``{"error": ...}`` when LiteRT cannot load it."""
    try:
        evaluation = compiled.evaluate_compiled(model_bytes, x_eval, y_eval, num_threads, kind == outputs.LOGITS)
        latency = compiled.benchmark_compiled(model_bytes, num_threads, bench_runs, bench_warmup)
    except RuntimeError as e:
        return {"error": str(e)}
    largest, _ = check_outputs(evaluation["probs"], keras_probs, quantization, compiled.API, kind)
    return {"accuracy": evaluation["accuracy"], "latency_ms": latency["median_ms"],
            "fully_accelerated": evaluation["fully_accelerated"], "keras_max_abs_diff": largest}


def export_variant(model, variant, x_eval, y_eval, representative_data=None, batch_size=256, num_threads=1,
                   bench_runs=100, bench_warmup=10, out_dir=None, labels=None, card_extra=None,
                   append_softmax=False, nm=None):
    """Converts ``model`` to one variant, verifies it in both LiteRT APIs on real images, times it; optionally
    writes it.

    The file runs in the Interpreter (XNNPACK first, builtin kernels when it fails) and in CompiledModel (CPU
    accelerator); each one's probabilities on ``x_eval`` are checked against the Keras model's (``check_outputs``).
    A file CompiledModel cannot load is still exported, with ``apis`` saying so and the card giving LiteRT's error.
    A model that outputs logits is exported as it is (its loss taken on their softmax), or with ``append_softmax``
    ending in a softmax; the card's ``outputs`` says which the file gives and ``softmax_appended`` whether tfprune
    added it.

    Args:
      model: tf_keras model (plain, tfprune prunable, or TF-MOT wrapped).
      variant: one of ``VARIANTS`` (e.g. ``"float"``, ``"int8+sparse"``).
      x_eval, y_eval: evaluation images (N, *input shape) in [0, 1] and labels (N,).
      representative_data: calibration images, needed by ``int8`` variants.
      out_dir, labels: when ``out_dir`` is given, ``write_exported_model`` writes the model there.
      append_softmax: a logits model's file ends in a softmax (probabilities out); no effect on one that already
        outputs probabilities.
      card_extra: more entries for the model card, e.g. ``{"data": Dataset.card()}`` (the data's name, digest,
        input shape and preprocessing: what an app must do to an image before it calls the model).
      nm: ``(n, m)`` for a model pruned N:M (``nm_2x4``): the written card's ``nm`` says ``"2:4 kept ..."`` and
        whether the file's weights of the layers holding it in Keras hold it too (``nm_check.card_entry``, decoded
        from the file by ``nm_check.check_nm_tflite``).

    Returns:
      flat dict: ``variant``, ``size_bytes``, ``gzip_size_bytes``, ``accuracy`` (0..1), ``loss``,
      ``latency_ms`` (median), ``latency_p90_ms``, ``path``, ``fallback_reason``, ``sparsity`` (fraction of zero
      kernel weights), ``convert_seconds`` (Interpreter figures), ``apis`` (``interpreter,compiled_model``, or
      ``interpreter`` alone), ``compiled_latency_ms`` (None when CompiledModel cannot load it), ``kernels`` (which
      kernel runs the weighted operators, ``kernels.summary``) and ``keras_max_abs_diff`` (Interpreter vs Keras).
      ``variant_columns`` prefixes it for a results table.

    Raises:
      ValueError: unknown variant, int8 without representative data, unsupported ops, bad eval data.
      RuntimeError: an API's outputs differ from the Keras model's (``check_outputs``), or no Interpreter path runs
        the file.
    """
    quantization, sparse = convert.parse_variant(variant)
    model = convert.plain_model(model)
    kind = outputs.output_kind(model, x_eval[:16])
    appended = append_softmax and kind == outputs.LOGITS
    if appended:
        model, kind = outputs.with_softmax(model), outputs.PROBABILITIES
    start = time.perf_counter()
    model_bytes = convert.to_tflite(model, quantization, sparse, representative_data)
    convert_seconds = time.perf_counter() - start
    keras_probs = model.predict(x_eval, batch_size=batch_size, verbose=0)
    evaluation = runtime.evaluate_tflite(model_bytes, x_eval, y_eval, batch_size, num_threads, return_probs=True,
                                         from_logits=kind == outputs.LOGITS)
    largest, _ = check_outputs(evaluation["probs"], keras_probs, quantization, "Interpreter", kind)
    latency = runtime.benchmark_tflite(model_bytes, num_threads, bench_runs, bench_warmup)
    on_compiled = _run_compiled(model_bytes, x_eval, y_eval, keras_probs, quantization, kind, num_threads,
                                bench_runs, bench_warmup)
    operators = kernels.model_kernels(model_bytes, evaluation["path"])
    figures = {
        "variant": variant, "size_bytes": len(model_bytes), "accuracy": evaluation["accuracy"],
        "loss": evaluation["loss"], "latency_ms": latency["median_ms"], "latency_p90_ms": latency["p90_ms"],
        "path": evaluation["path"], "fallback_reason": evaluation["fallback_reason"],
        "sparsity": pruning.overall_sparsity(pruning.sparsity_report(model)), "convert_seconds": convert_seconds,
        "apis": "interpreter" if "error" in on_compiled else "interpreter,compiled_model",
        "compiled_latency_ms": on_compiled.get("latency_ms"), "kernels": kernels.summary(operators),
        "keras_max_abs_diff": largest,
    }
    if out_dir is None:
        # Level 9 as the sweep's gzip_size_bytes; it takes seconds on a sparse float model, so it is done once.
        figures["gzip_size_bytes"] = len(gzip.compress(model_bytes, 9))
    else:
        card = {"variant": variant, "quantization": quantization, "sparse_encoding": sparse,
                "sparsity": figures["sparsity"], "accuracy": evaluation["accuracy"], "loss": evaluation["loss"],
                "eval_images": evaluation["images"], "latency_median_ms": latency["median_ms"],
                "latency_p90_ms": latency["p90_ms"], "latency_num_threads": num_threads,
                "path": evaluation["path"], "fallback_reason": evaluation["fallback_reason"],
                "keras_max_abs_diff": largest, "apis": figures["apis"], "compiled_model": on_compiled,
                "operators": operators, "outputs": kind, "softmax_appended": appended, **(card_extra or {})}
        if nm is not None:
            held = [name for name, c in pruning.check_nm(model, *nm).items() if c.ok]
            card["nm"] = nm_check.card_entry(nm_check.check_nm_tflite(model_bytes, *nm), *nm, held)
        card = write_exported_model(out_dir, model_bytes, card, labels if labels is not None else
                                    [str(i) for i in range(int(graph.model_output_shape(model)[-1]))])
        figures["gzip_size_bytes"] = card["gzip_size_bytes"]
    return figures


def variant_columns(figures):
    """``export_variant`` figures as result columns: ``tflite_<variant>_<name>`` (``+`` -> ``_``)."""
    prefix = "tflite_" + figures["variant"].replace(convert.SPARSE_SUFFIX, "_sparse") + "_"
    return {prefix + key: value for key, value in figures.items() if key != "variant"}


__all__ = ["FLOAT_MAX_ABS_DIFF", "QUANTIZED_MEAN_ABS_DIFF", "check_outputs", "export_variant", "input_normalization",
           "variant_columns", "write_exported_model"]
