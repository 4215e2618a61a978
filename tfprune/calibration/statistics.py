"""Calibration statistics of prunable layers, accumulated over the calibration batches, as NumPy float64.

``STATISTICS`` (what a ``Scorer`` may ask for in ``needs``), per layer:

- ``input_sq``: Σ x² of each input row of the kernel (shape ``kernel.shape[:-1]``): for a Dense layer per input
  feature, for a convolution per (tap, input channel) over its patches (padding zeros included, as it computes);
  Wanda's ``||X_i||²``.
- ``gram``: the Gram matrix of the layer's input rows with a ones column, ``[X, 1]ᵀ[X, 1]`` ((d + 1, d + 1),
  d = ``prod(kernel.shape[:-1])``; a DepthwiseConv2D: (channels, taps, taps), one per channel, no ones column):
  SparseGPT's Hessian and the refit's normal equations.
- ``grad_sq``: Σ over batches of the squared gradient of the loss with respect to the kernel (the kernel's shape).
- ``unit_taylor_sq``: Σ over batches of ``(Σ_i w_i g_i)²`` per output unit (units,).

Layer kinds: Dense (and an EinsumDense that is one along its input's last axis, ``btd,df->btf``: Gemma's
feed-forward projections), Conv1D/2D/3D (``groups`` 1, padding ``valid``/``same``) and DepthwiseConv2D, on both
stacks and every backend (gradients on JAX through ``stateless_call``); any other kind is one ValueError naming the
layer.
"""

import numpy as np

from tfprune import outputs
from tfprune import stacks
from tfprune.calibration import capture
from tfprune.layers import einsum, registry
from tfprune.select import patches

STATISTICS = ("input_sq", "gram", "grad_sq", "unit_taylor_sq")
KINDS = ("Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D")


def reads_like_dense(layer):
    """True for a Dense, or an EinsumDense that is one along its input's last axis (``einsum.dense_like``): its
    kernel is (inputs, units) and its input rows are the input's last axis."""
    kind = registry.kind_of(layer)
    return kind is not None and (kind.name == "Dense" or (kind.name == "EinsumDense" and einsum.dense_like(layer)))


def check_layer(layer, method):
    """Raises a ValueError naming ``layer`` when ``method``'s statistics cannot be taken on it."""
    kind = registry.kind_of(layer)
    name = None if kind is None else kind.name
    if name not in KINDS and not reads_like_dense(layer):
        raise ValueError(f"method {method!r} reads the inputs of Dense (EinsumDense along the last axis), "
                         f"Conv1D/2D/3D and DepthwiseConv2D layers; layer {layer.name!r} is "
                         f"{name or type(layer).__name__}: leave it out of layers=[...]")
    if name.startswith("Conv") and (getattr(layer, "groups", 1) != 1 or layer.padding not in ("valid", "same")):
        raise ValueError(f"method {method!r}: layer {layer.name!r} has groups={layer.groups}, padding="
                         f"{layer.padding!r}; only groups=1 and padding valid/same are read")


def _conv_args(layer):
    return dict(kernel_size=tuple(layer.kernel_size), strides=tuple(layer.strides), padding=layer.padding,
                dilation_rate=tuple(layer.dilation_rate))


def _is_depthwise(layer):
    return registry.kind_of(layer).name == "DepthwiseConv2D"


def _input_sq(layer, x):
    """Σ x² per input row of the kernel: Dense (in,); a convolution's patch columns, also a DepthwiseConv's
    (``patches.conv_input_sq_sums``), as ``kernel.shape[:-1]``."""
    if reads_like_dense(layer):
        x = np.asarray(x, np.float64)
        return np.square(x.reshape(-1, x.shape[-1])).sum(axis=0)
    return patches.conv_input_sq_sums(np.asarray(x, np.float64), **_conv_args(layer)).reshape(
        tuple(layer.kernel_size) + (-1,))


def _gram(layer, x):
    if _is_depthwise(layer):
        return patches.depthwise_gram(np.asarray(x, np.float64), **_conv_args(layer))
    if reads_like_dense(layer):  # one batch's sum in float32 (BLAS sgemm), the total in float64
        rows = np.asarray(x, np.float32).reshape(-1, np.shape(x)[-1])
        ones = np.concatenate([rows, np.ones((len(rows), 1), np.float32)], axis=1)
        return (ones.T @ ones).astype(np.float64)
    return patches.conv_gram(x, augmented=True, fast=True, **_conv_args(layer))


_INPUT_STATISTICS = {"input_sq": _input_sq, "gram": _gram}


def input_statistics(model, layers, names, calibration, progress=None):
    """{layer name: {statistic: array}} of the input statistics ``names`` (of ``input_sq``, ``gram``) of ``layers``,
    over every calibration batch (one pass of the model). A layer called twice in a batch adds both calls."""
    totals = {layer.name: {} for layer in layers}

    def record(layer, x):
        for name in names:
            value = _INPUT_STATISTICS[name](layer, x)
            held = totals[layer.name]
            held[name] = value if name not in held else held[name] + value
    capture.run(model, calibration, layers, record, progress)
    missing = [layer.name for layer in layers if not totals[layer.name]]
    if missing:
        raise ValueError(f"layer(s) {', '.join(map(repr, missing))} never ran on the calibration inputs")
    return totals


def _cross_entropy(model, stack):
    from_logits = outputs.output_kind(model) == outputs.LOGITS
    losses, keras = stack.keras.losses, stack.keras

    def loss(y, prediction):
        if len(y.shape) == len(prediction.shape):
            values = losses.categorical_crossentropy(y, prediction, from_logits=from_logits)
        else:
            values = losses.sparse_categorical_crossentropy(y, prediction, from_logits=from_logits)
        return keras.ops.mean(values) if stack is stacks.KERAS3 else stack.keras.backend.mean(values)
    return loss


def kernel_variable(layer):
    """The variable holding a Dense/convolution layer's kernel (the first of its masked variables)."""
    return layer.variable_masks()[0][0]


def _tape_gradients(model, variables, loss):
    """A traced ``(x, y) -> [dL/dv for v in variables]`` (``tf.function``: the tape runs as a graph)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=False))
        return tape.gradient(value, variables)
    return step


def _jax_gradients(model, variables, loss):
    """A jitted ``(x, y) -> [dL/dv for v in variables]`` through ``stateless_call``, at the variables' values now."""
    import jax  # pylint: disable=g-import-not-at-top
    trainable, frozen = model.trainable_variables, model.non_trainable_variables
    where = [next(i for i, v in enumerate(trainable) if v is variable) for variable in variables]

    def value(trainable_values, frozen_values, x, y):
        prediction, _ = model.stateless_call(trainable_values, frozen_values, x, training=False)
        return loss(y, prediction)
    grad = jax.jit(jax.grad(value))
    trainable_values, frozen_values = [v.value for v in trainable], [v.value for v in frozen]

    def step(x, y):
        grads = grad(trainable_values, frozen_values, x, y)
        return [grads[i] for i in where]
    return step


def gradient_statistics(model, layers, names, calibration, progress=None):
    """{layer name: {statistic: array}} of the gradient statistics ``names`` (of ``grad_sq``, ``unit_taylor_sq``),
    the loss's gradient taken on each calibration batch (inference mode: dropout off).

    Raises:
      ValueError: calibration without labels.
    """
    if calibration.y is None:
        raise ValueError(f"statistics {', '.join(names)} take the loss's gradient: the calibration data needs labels")
    stack = stacks.of(model)
    loss = calibration.loss or _cross_entropy(model, stack)
    variables = [kernel_variable(layer) for layer in layers]
    gradients = (_jax_gradients if stack.backend == "jax" else _tape_gradients)(model, variables, loss)
    kernels = [registry.effective_kernel(layer) for layer in layers]
    totals = {layer.name: {n: 0.0 for n in names} for layer in layers}
    count = -(-len(calibration) // int(calibration.batch_size))
    for index, (x, y) in enumerate(calibration.batches()):
        grads = gradients(stack.to_tensor(x), stack.to_tensor(y))
        for layer, kernel, grad in zip(layers, kernels, grads):
            grad = np.asarray(stack.to_numpy(grad), np.float32).reshape(kernel.shape)
            held = totals[layer.name]
            if "grad_sq" in held:
                held["grad_sq"] = held["grad_sq"] + np.square(grad, dtype=np.float64)
            if "unit_taylor_sq" in held:
                held["unit_taylor_sq"] = held["unit_taylor_sq"] + np.square(
                    (kernel * grad).reshape(-1, kernel.shape[-1]).sum(axis=0))
        if progress is not None:
            progress(index + 1, count)
    return totals


def collect(model, layers, names, calibration, method, progress=None):
    """{layer name: {statistic: array}} of the statistics ``names`` (of ``STATISTICS``) of ``layers``.

    Raises:
      ValueError: an unknown statistic, a layer whose kind is not read (``check_layer``), labels missing.
    """
    unknown = [n for n in names if n not in STATISTICS]
    if unknown:
        raise ValueError(f"unknown statistic(s) {unknown}; known: {STATISTICS}")
    for layer in layers:
        check_layer(layer, method)
    found = {layer.name: {} for layer in layers}
    inputs = [n for n in names if n in _INPUT_STATISTICS]
    grads = [n for n in names if n not in _INPUT_STATISTICS]
    for part, fn in ((inputs, input_statistics), (grads, gradient_statistics)):
        if part:
            for name, values in fn(model, layers, part, calibration, progress).items():
                found[name].update(values)
    return found


__all__ = ["KINDS", "STATISTICS", "check_layer", "collect", "gradient_statistics", "input_statistics",
           "kernel_variable", "reads_like_dense"]
