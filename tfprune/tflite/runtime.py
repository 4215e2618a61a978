"""Running a TFLite model in LiteRT: interpreter with XNNPACK or builtin kernels, predictions, accuracy, latency.

LiteRT applies the XNNPACK delegate by default. Some models fail to prepare in it (on ai-edge-litert 2.3.0 a
sparse-encoded ``dynamic`` or ``int8`` Dense model does); they are then run with the builtin kernels and the
returned figures say which path ran (``"xnnpack"`` or ``"builtin"``) and why it fell back.
"""

import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tfprune import outputs

PATHS = ("xnnpack", "builtin")
LOSS_EPSILON = 1e-7  # Keras' epsilon: probabilities are clipped to [eps, 1 - eps] as in its cross-entropy

_RESOLVERS = {"xnnpack": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


def _interpreter(model_bytes, batch, num_threads, path):
    interpreter = Interpreter(model_content=model_bytes, num_threads=num_threads,
                              experimental_op_resolver_type=_RESOLVERS[path])
    details = interpreter.get_input_details()
    if len(details) != 1 or len(interpreter.get_output_details()) != 1:
        raise ValueError(f"the TFLite model has {len(details)} inputs and {len(interpreter.get_output_details())} "
                         "outputs; tfprune runs single-input single-output classifiers")
    if details[0]["shape"][0] != batch and details[0]["shape_signature"][0] == -1:  # a fixed batch stays as it is
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

    A model converted with a fixed batch keeps its own batch.

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


def quantize(x, details):
    """Input -> the input tensor's dtype (int8: round(x / scale) + zero_point, saturated; an integer input that is
    not quantized, such as an Embedding's token ids, as it is)."""
    if np.issubdtype(details["dtype"], np.floating):
        return x.astype(details["dtype"])
    scale, zero_point = details["quantization"]
    if not scale:
        return x.astype(details["dtype"])
    info = np.iinfo(details["dtype"])
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(details["dtype"])


def dequantize(q, details):
    if np.issubdtype(details["dtype"], np.floating):
        return q.astype(np.float32)
    scale, zero_point = details["quantization"]
    return (q.astype(np.float32) - zero_point) * scale


def model_inputs(x, details):
    """``x`` (N, *input shape) as the input tensor ``details`` takes it: integer token ids stay integers for an
    integer input, anything else becomes float32 (``quantize`` then scales it for an int8 input).

    Raises:
      ValueError: the image shape is not the model's.
    """
    x = np.asarray(x)
    x = x if x.dtype.kind in "iu" and np.issubdtype(details["dtype"], np.integer) else x.astype(np.float32)
    if x.shape[1:] != tuple(details["shape"][1:]):
        raise ValueError(f"images have shape {x.shape[1:]}, the TFLite model takes {tuple(details['shape'][1:])}")
    return x


def check_labeled(x, y):
    """``y`` as int64 after checking ``x`` and ``y`` hold the same positive number of examples (ValueError)."""
    y = np.asarray(y).astype(np.int64)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"x has {len(x)} images and y {len(y)} labels; need the same positive number")
    return y


def classification_figures(probs, y, from_logits=False):
    """``{"accuracy": fraction, "loss": cross-entropy, "images": N}`` of a classifier's outputs (N, classes) for
    labels y: probabilities, or logits with ``from_logits`` (the loss is then taken on their softmax, as Keras'
    ``from_logits=True`` does).

    Raises:
      ValueError: labels outside the model's classes.
    """
    if y.min() < 0 or y.max() >= probs.shape[1]:
        raise ValueError(f"labels span [{y.min()}, {y.max()}], the model has {probs.shape[1]} classes")
    loss = float(-outputs.log_softmax(probs)[np.arange(len(y)), y].mean()) if from_logits else cross_entropy(probs, y)
    return {"accuracy": float(np.mean(probs.argmax(axis=1) == y)), "loss": loss, "images": len(y)}


def check_runs(runs, warmup):
    """ValueError unless runs >= 1 and warmup >= 0."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs {runs} must be at least 1 and warmup {warmup} at least 0")


def time_runs(run, runs, warmup):
    """Calls ``run()`` ``warmup`` times untimed, then ``runs`` times timed; returns ``median_ms``, ``p90_ms``,
    ``mean_ms``, ``min_ms``, ``runs`` and ``warmup``."""
    for _ in range(warmup):
        run()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter_ns()
        run()
        times[i] = (time.perf_counter_ns() - start) / 1e6
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(times.mean()), "min_ms": float(times.min()), "runs": runs, "warmup": warmup}


def predict_tflite(interpreter, x):
    """Class probabilities (N, classes) float32 for inputs ``x`` (N, *input shape): float images, or integer token
    ids for a model that takes them; in interpreter batches.

    The last partial batch is zero-padded, so the interpreter is never re-allocated.
    """
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    batch = int(inp["shape"][0])
    x = model_inputs(x, inp)
    probs = np.empty((len(x), int(out["shape"][-1])), np.float32)
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        padded = np.zeros((batch,) + chunk.shape[1:], x.dtype)
        padded[:len(chunk)] = chunk
        interpreter.set_tensor(inp["index"], quantize(padded, inp))
        interpreter.invoke()
        probs[start:start + len(chunk)] = dequantize(interpreter.get_tensor(out["index"]), out)[:len(chunk)]
    return probs


def cross_entropy(probs, y):
    """Mean sparse categorical cross-entropy of probabilities (N, classes) as Keras computes it (renormalized,
    clipped to [1e-7, 1 - 1e-7])."""
    sums = probs.sum(axis=1, keepdims=True)
    probs = np.clip(probs / np.where(sums > 0, sums, 1.0), LOSS_EPSILON, 1 - LOSS_EPSILON)
    return float(-np.log(probs[np.arange(len(y)), y]).mean())


def evaluate_tflite(model_bytes, x, y, batch_size=256, num_threads=1, prefer_xnnpack=True, return_probs=False,
                    from_logits=False):
    """Accuracy and loss of a TFLite classifier in the LiteRT interpreter.

    Args:
      model_bytes: ``.tflite`` contents whose output is softmax probabilities, or logits with ``from_logits``
        (float or int8 quantized).
      x: float32 images (N, *input shape) normalized as for the Keras model (here [0, 1]).
      y: int labels (N,).
      batch_size: images per invoke (the input is resized to it once).
      return_probs: also return the outputs (N, classes: probabilities or logits, as the file gives) as ``probs``.

    Returns:
      dict with ``accuracy`` (fraction 0..1), ``loss`` (mean cross-entropy), ``images``, ``path``
      (``"xnnpack"``/``"builtin"``), ``fallback_reason``.

    Raises:
      ValueError: empty or mismatched ``x``/``y``, wrong image shape, bad batch size.
      RuntimeError: the model runs on no path.
    """
    y = check_labeled(x, y)
    interpreter, info = load_interpreter(model_bytes, min(batch_size, len(x)), num_threads, prefer_xnnpack)
    probs = predict_tflite(interpreter, x)
    result = {**classification_figures(probs, y, from_logits), **info}
    return dict(result, probs=probs) if return_probs else result


def benchmark_tflite(model_bytes, num_threads=1, runs=100, warmup=10, prefer_xnnpack=True, seed=0):
    """Single-image latency of ``interpreter.invoke()`` (input copy excluded), after ``warmup`` invokes.

    The input is a fixed random image in [0, 1] (quantized for int8 models).

    Returns:
      dict with ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms`` (milliseconds), ``runs``, ``warmup``,
      ``num_threads``, ``path``, ``fallback_reason``.

    Raises:
      ValueError: runs < 1, warmup < 0 or num_threads < 1.
    """
    check_runs(runs, warmup)
    interpreter, info = load_interpreter(model_bytes, 1, num_threads, prefer_xnnpack)
    inp = interpreter.get_input_details()[0]
    image = np.random.default_rng(seed).random(inp["shape"], dtype=np.float32)
    interpreter.set_tensor(inp["index"], quantize(image, inp))
    return {**time_runs(interpreter.invoke, runs, warmup), "num_threads": num_threads, **info}


__all__ = ["LOSS_EPSILON", "PATHS", "benchmark_tflite", "check_labeled", "check_runs", "classification_figures",
           "cross_entropy", "dequantize", "evaluate_tflite", "load_interpreter", "model_inputs", "predict_tflite",
           "quantize", "time_runs"]
