"""Physical shrinking of unit-pruned models: dead units are cut out, not just zeroed.

A unit (a Dense column or a Conv2D filter) is removable when its kernel column is all zero over the inputs that
are kept, so its output is the constant ``f(bias)``, and that constant is still exactly 0 where the next Dense or
Conv2D reads it (after the activations, BatchNormalization, pooling, dropout and Flatten in between). Then the next
layer does not depend on it: the unit's kernel column and bias entry go, and so do the next layer's matching input
rows (through Flatten a channel ``c`` of C is the block of inputs ``s * C + c``, channels-last) and the per-channel
parameters of the layers in between. Outputs stay identical up to float summation order.

Units that are dead but not provably zero downstream, or whose path to the next weight layer is not a plain chain
(residual Add/Concatenate, several consumers, a model output, a shared or unknown layer), are kept and the reason
is listed in ``ShrinkReport.kept``.
"""

import collections
import dataclasses

import numpy as np

from tfprune._env import keras, tf

L = keras.layers

# Activations computed element by element (so a unit's output depends on that unit only).
ELEMENTWISE_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "elu", "selu", "gelu", "tanh", "sigmoid", "hard_sigmoid", "swish", "silu",
    "softplus", "softsign", "exponential", "leaky_relu", "mish", "hard_silu", "hard_swish"})

# Layers that map channel c of their input (last axis) to channel c of their output and nothing else, at inference.
CHANNELWISE_TYPES = (
    L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.ThresholdedReLU, L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D,
    L.GaussianDropout, L.GaussianNoise, L.AlphaDropout, L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D,
    L.AveragePooling2D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D, L.ZeroPadding2D, L.Cropping2D, L.UpSampling2D, L.BatchNormalization)


# ---------------------------------------------------------------------------------------------------- costs

@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One layer: ``units`` = width of its output's last axis, ``params`` (masks excluded), ``macs`` per image."""
    name: str
    kind: str
    units: int
    params: int
    macs: int


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """Parameters and multiply-accumulates per inference (one image) of a whole model, with the per-layer rows."""
    params: int
    macs: int
    layers: tuple


def _is_weight_layer(layer):
    # Exact types: Conv2DTranspose subclasses Conv2D but its kernel is laid out differently.
    return type(layer) in (L.Dense, L.Conv2D) and getattr(layer, "groups", 1) == 1 and \
        getattr(layer, "data_format", "channels_last") == "channels_last"


def _network_nodes(model, layer):
    """The calls of ``layer`` that belong to ``model`` (a layer may also be called in other models)."""
    # pylint: disable=protected-access
    return [n for i, n in enumerate(layer._inbound_nodes) if f"{layer.name}_ib-{i}" in model._network_nodes]


def _layer_macs(model, layer):
    if not isinstance(layer, (L.Dense, L.Conv2D)) or isinstance(layer, L.Conv2DTranspose):
        return 0
    macs = 0
    for node in _network_nodes(model, layer):
        shape = tf.nest.flatten(node.outputs)[0].shape
        # Dense: in*out per position; Conv2D: H_out*W_out*kh*kw*(C_in/groups)*C_out; both = positions * kernel size.
        macs += int(np.prod(shape[1:-1], dtype=np.int64)) * int(np.prod(layer.kernel.shape, dtype=np.int64))
    return macs


def _layer_params(layer):
    masks = {id(getattr(layer, n)) for n in ("kernel_mask", "bias_mask") if getattr(layer, n, None) is not None}
    return sum(int(np.prod(w.shape, dtype=np.int64)) for w in layer.weights if id(w) not in masks)


def count_params_and_macs(model):
    """Counts parameters and multiply-accumulates per inference of a built Sequential or functional model.

    Parameters are all weights (trainable or not, e.g. BatchNormalization statistics) except the masks of
    prunable layers, so a prunable model and its ``strip`` agree. MACs count Dense (positions * in * out) and
    Conv2D (H_out * W_out * kh * kw * C_in/groups * C_out) layers, summed over their calls; other layers count 0.

    Returns:
      ``ModelCost`` with the totals and a ``LayerCost`` for every layer that has parameters or MACs.

    Raises:
      ValueError: not a built Sequential/functional tf_keras model.
    """
    _check_model(model)
    rows = []
    for layer in model.layers:
        params, macs = _layer_params(layer), _layer_macs(model, layer)
        if params or macs:
            units = int(tf.nest.flatten(_network_nodes(model, layer)[0].outputs)[0].shape[-1])
            rows.append(LayerCost(layer.name, type(layer).__name__, units, params, macs))
    return ModelCost(sum(r.params for r in rows), sum(r.macs for r in rows), tuple(rows))


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"expected a tf_keras Model, got {type(model).__name__}")
    if not getattr(model, "_is_graph_network", False):
        kind = "an unbuilt Sequential (give it an input shape)" if isinstance(model, keras.Sequential) else \
            f"a subclassed Model ({type(model).__name__})"
        raise ValueError(f"model {model.name!r} is {kind}; only built Sequential and functional models can be shrunk "
                         "or counted")


# ---------------------------------------------------------------------------------------------------- graph

@dataclasses.dataclass
class _Graph:
    """Who feeds whom inside one model: layer name -> inbound layer names / consumer names / number of calls."""
    inbound: dict
    consumers: dict
    calls: dict
    outputs: set


def _graph(model):
    inbound, consumers, calls = {}, collections.defaultdict(list), {}
    for layer in model.layers:
        nodes = _network_nodes(model, layer)
        calls[layer.name] = len(nodes)
        for node in nodes:
            parents = [history[0].name for history in node.iterate_inbound()]
            inbound[layer.name] = parents
            for parent in parents:
                consumers[parent].append(layer.name)
    outputs = {t._keras_history.layer.name for t in model.outputs}  # pylint: disable=protected-access
    return _Graph(inbound, consumers, calls, outputs)


def _positions(units, channels, blocks):
    """Indices along the last axis of unit indices ``units`` of ``channels``, repeated over ``blocks`` (Flatten)."""
    units = np.asarray(units, np.int64)
    return (np.arange(blocks, dtype=np.int64)[:, None] * channels + units[None, :]).ravel()


def _constant_through(layer, units, values, channels, blocks):
    """Feeds constant channels through a channel-wise layer at inference; returns their outputs or None if any
    of them stops being constant (e.g. zero padding around a non-zero constant)."""
    shape = layer.input_shape
    if any(d is None for d in shape[1:]):
        shape = (None,) + tuple(8 if d is None else d for d in shape[1:])
    x = np.zeros((1,) + tuple(shape[1:]), np.float32)
    x[..., _positions(units, channels, blocks)] = np.tile(values, blocks)
    y = np.asarray(layer(tf.constant(x), training=False))
    out = y[..., _positions(units, channels, blocks)].reshape(-1, blocks, len(units)).transpose(2, 0, 1)
    out = out.reshape(len(units), -1)
    return out[:, 0] if np.all(out == out[:, :1]) else None


def _activation_name(layer):
    return getattr(getattr(layer, "activation", None), "__name__", None)


def _follow(model, graph, start, units, values):
    """Walks from weight layer ``start`` to the next Dense/Conv2D, tracking the constant outputs of ``units``.

    Returns:
      (removable units, [(layer name, Flatten blocks at its input)] for the layers in between and the consumer,
      reason why units are kept or None).
    """
    channels, blocks, name, chain = int(model.get_layer(start).output_shape[-1]), 1, start, []
    while True:
        if name in graph.outputs:
            return units[:0], [], f"{name} is a model output"
        if len(graph.consumers[name]) != 1:
            consumers = graph.consumers[name]
            return units[:0], [], f"{name} feeds {len(consumers)} layers ({', '.join(consumers)})"
        name = graph.consumers[name][0]
        layer = model.get_layer(name)
        if graph.calls[name] != 1 or len(graph.inbound[name]) != 1:
            what = "joins several inputs" if graph.calls[name] == 1 else f"is shared ({graph.calls[name]} calls)"
            return units[:0], [], f"{name} ({type(layer).__name__}) {what}"
        chain.append((name, blocks))
        if _is_weight_layer(layer) and not (isinstance(layer, L.Conv2D) and blocks != 1):
            zero = values == 0
            reason = None if zero.all() else (f"{int((~zero).sum())} of them reach {name} as non-zero constants "
                                              f"(e.g. {values[~zero][0]:.4g})")
            return units[zero], chain, reason
        if type(layer) is L.Flatten and layer.data_format == "channels_last":
            blocks *= int(np.prod(layer.input_shape[1:-1], dtype=np.int64))
            continue
        channelwise = isinstance(layer, CHANNELWISE_TYPES) and \
            getattr(layer, "data_format", "channels_last") == "channels_last"
        if isinstance(layer, L.Activation):
            channelwise = _activation_name(layer) in ELEMENTWISE_ACTIVATIONS
        if isinstance(layer, L.BatchNormalization):
            channelwise = list(layer.axis) == [len(layer.input_shape) - 1]
        if not channelwise:
            return units[:0], [], f"{name} ({type(layer).__name__}) is not known to keep channels apart"
        values = _constant_through(layer, units, values, channels, blocks)
        if values is None:
            return units[:0], [], f"their outputs are no longer constant after {name}"


def _dead_units(layer, in_keep):
    """Units whose kernel column is zero over the kept inputs, and their constant outputs f(bias) (None when the
    activation is not element-wise, e.g. softmax)."""
    weights = layer.get_weights()
    kernel = weights[0] if in_keep is None else np.take(weights[0], in_keep, axis=-2)
    units = np.flatnonzero(~kernel.reshape(-1, kernel.shape[-1]).any(axis=0))
    pre = weights[1][units] if layer.use_bias else np.zeros(len(units), np.float32)
    if _activation_name(layer) not in ELEMENTWISE_ACTIVATIONS:
        return units, None
    return units, np.asarray(layer.activation(tf.constant(pre[None], tf.float32)))[0]


def plan_removal(model):
    """Decides which units of a plain model go. Returns ({weight layer: kept output units},
    {layer: kept indices along its input's last axis}, [kept-for-safety notes])."""
    graph = _graph(model)
    out_keep, in_keep, notes = {}, {}, []
    for layer in model.layers:
        if not _is_weight_layer(layer):
            continue
        units, values = _dead_units(layer, in_keep.get(layer.name))
        if not len(units):
            continue
        if values is None:
            removable, chain, reason = units[:0], [], f"activation {_activation_name(layer)!r} is not element-wise"
        else:
            removable, chain, reason = _follow(model, graph, layer.name, units, values)
        width = int(layer.kernel.shape[-1])
        if len(removable) == width:  # Keras layers need at least one unit: keep the first one (its output is 0).
            removable = removable[1:]
            notes.append(f"{layer.name}: 1 dead unit kept: every unit is dead and a layer needs at least one")
        if reason:
            notes.append(f"{layer.name}: {len(units) - len(removable)} dead unit(s) kept: {reason}")
        if len(removable):
            kept = np.setdiff1d(np.arange(width), removable)
            out_keep[layer.name] = kept
            for name, blocks in chain:
                in_keep[name] = _positions(kept, width, blocks)
    return out_keep, in_keep, notes


# ---------------------------------------------------------------------------------------------------- rebuild

def _sliced_weights(layer, in_keep, out_keep):
    weights = layer.get_weights()
    if _is_weight_layer(layer):
        if in_keep is not None:
            weights[0] = np.take(weights[0], in_keep, axis=-2)
        if out_keep is not None:
            weights = [np.take(w, out_keep, axis=-1) for w in weights]
        return weights
    if in_keep is not None:  # a channel-wise layer on a shrunk path: its per-channel parameters follow
        return [np.take(w, in_keep, axis=-1) for w in weights]
    return weights


def _to_plain(model):
    if any(hasattr(l, "kernel_mask") for l in model.layers):
        from tfprune import pruning  # pylint: disable=import-outside-toplevel
        return pruning.strip(model)
    return model


@dataclasses.dataclass(frozen=True)
class LayerShrink:
    """Before/after figures of one layer (units = width of its output's last axis; MACs per image)."""
    name: str
    kind: str
    units_before: int
    units_after: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


@dataclasses.dataclass(frozen=True)
class ShrinkReport:
    """What ``shrink`` did: per-layer rows, totals, and notes on dead units kept for safety (with the reason)."""
    layers: tuple
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    kept: tuple

    @property
    def units_removed(self):
        """Dense units and Conv2D filters removed in all (channel-wise layers in between are not counted again)."""
        return sum(r.units_before - r.units_after for r in self.layers if r.kind in ("Dense", "Conv2D"))


@dataclasses.dataclass(frozen=True)
class ShrinkResult:
    model: keras.Model
    report: ShrinkReport


def _report(before, after, notes):
    rows = {r.name: r for r in after.layers}
    layers = tuple(LayerShrink(b.name, b.kind, b.units, rows[b.name].units, b.params, rows[b.name].params, b.macs,
                               rows[b.name].macs) for b in before.layers)
    return ShrinkReport(layers, before.params, after.params, before.macs, after.macs, tuple(notes))


def shrink(model):
    """Returns a smaller plain tf_keras model computing the same outputs, with every removable dead unit cut out.

    Args:
      model: a built Sequential or functional model, plain or prunable (prunable layers are ``strip``-ed first).
        It is not modified.

    Returns:
      ``ShrinkResult(model, report)``: the new (uncompiled) model with the same layer names, and a
      ``ShrinkReport``. Output layers never lose units.

    Raises:
      ValueError: not a tf_keras Model, a subclassed model, or an unbuilt Sequential.
    """
    _check_model(model)
    plain = _to_plain(model)
    out_keep, in_keep, notes = plan_removal(plain)

    def clone(layer):
        config = layer.get_config()
        if layer.name in out_keep:
            config["units" if isinstance(layer, L.Dense) else "filters"] = len(out_keep[layer.name])
        return type(layer).from_config(config)

    new_model = keras.models.clone_model(plain, clone_function=clone)
    for old in plain.layers:
        new_model.get_layer(old.name).set_weights(
            _sliced_weights(old, in_keep.get(old.name), out_keep.get(old.name)))
    return ShrinkResult(new_model, _report(count_params_and_macs(plain), count_params_and_macs(new_model), notes))


def format_shrink_report(report):
    """The report as a fixed-width text table: one line per layer, the totals, then the kept-for-safety notes."""
    def pair(a, b, width):
        return f"{a:,}->{b:,}".rjust(width)
    lines = [f"{'layer':<14}{'kind':<20}{'units':>12}{'params':>22}{'MACs':>26}"]
    for r in report.layers:
        lines.append(f"{r.name:<14}{r.kind:<20}{pair(r.units_before, r.units_after, 12)}"
                     f"{pair(r.params_before, r.params_after, 22)}{pair(r.macs_before, r.macs_after, 26)}")
    lines.append(f"{'total':<14}{f'{report.units_removed:,} units removed':>32}"
                 f"{pair(report.params_before, report.params_after, 22)}"
                 f"{pair(report.macs_before, report.macs_after, 26)}")
    lines += [f"kept: {note}" for note in report.kept]
    return "\n".join(lines)


__all__ = ["LayerCost", "LayerShrink", "ModelCost", "ShrinkReport", "ShrinkResult", "count_params_and_macs",
           "format_shrink_report", "plan_removal", "shrink"]
