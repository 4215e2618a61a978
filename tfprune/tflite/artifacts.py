"""Exported TFLite artifacts: convert one variant, verify it in LiteRT, and write it with its labels and card."""

import gzip
import os
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tfprune import _version
from tfprune import graph
from tfprune import io_utils
from tfprune import pruning
from tfprune.tflite import convert
from tfprune.tflite import runtime


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


def export_variant(model, variant, x_eval, y_eval, representative_data=None, batch_size=256, num_threads=1,
                   bench_runs=100, bench_warmup=10, out_dir=None, labels=None, card_extra=None):
    """Converts ``model`` to one variant, verifies it in LiteRT on real images, times it; optionally writes it.

    Args:
      model: tf_keras model (plain, tfprune prunable, or TF-MOT wrapped).
      variant: one of ``VARIANTS`` (e.g. ``"float"``, ``"int8+sparse"``).
      x_eval, y_eval: evaluation images (N, *input shape) in [0, 1] and labels (N,).
      representative_data: calibration images, needed by ``int8`` variants.
      out_dir, labels: when ``out_dir`` is given, ``write_exported_model`` writes the model there.
      card_extra: more entries for the model card, e.g. ``{"data": Dataset.card()}`` (the data's name, digest,
        input shape and preprocessing: what an app must do to an image before it calls the model).

    Returns:
      flat dict: ``variant``, ``size_bytes``, ``gzip_size_bytes``, ``accuracy`` (0..1), ``loss``,
      ``latency_ms`` (median), ``latency_p90_ms``, ``path``, ``fallback_reason``, ``sparsity`` (fraction of zero
      kernel weights), ``convert_seconds``. ``variant_columns`` prefixes it for a results table.

    Raises:
      ValueError: unknown variant, int8 without representative data, unsupported ops, bad eval data.
    """
    quantization, sparse = convert.parse_variant(variant)
    model = convert.plain_model(model)
    start = time.perf_counter()
    model_bytes = convert.to_tflite(model, quantization, sparse, representative_data)
    convert_seconds = time.perf_counter() - start
    evaluation = runtime.evaluate_tflite(model_bytes, x_eval, y_eval, batch_size, num_threads)
    latency = runtime.benchmark_tflite(model_bytes, num_threads, bench_runs, bench_warmup)
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
                "path": evaluation["path"], "fallback_reason": evaluation["fallback_reason"], **(card_extra or {})}
        card = write_exported_model(out_dir, model_bytes, card, labels if labels is not None else
                                    [str(i) for i in range(int(graph.model_output_shape(model)[-1]))])
        figures["gzip_size_bytes"] = card["gzip_size_bytes"]
    return figures


def variant_columns(figures):
    """``export_variant`` figures as result columns: ``tflite_<variant>_<name>`` (``+`` -> ``_``)."""
    prefix = "tflite_" + figures["variant"].replace(convert.SPARSE_SUFFIX, "_sparse") + "_"
    return {prefix + key: value for key, value in figures.items() if key != "variant"}


__all__ = ["export_variant", "input_normalization", "variant_columns", "write_exported_model"]
