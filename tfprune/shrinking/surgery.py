"""Physical shrinking of pruned models: dead units and unread channels are cut out, not just zeroed. This is the one
shrinker; how a layer without units passes channels, and how its own weights are sliced, is the rule table of
``tfprune.select.channel_rules``.

**Coupled groups** first (``tfprune.select.groups``). A channel of a prunable group is **unread** when every consumer's
input rows for it are all zero (group pruning zeroes them, ``tfprune.select.group_pruning``). Its value then reaches no
output, whatever it is, so it is cut out of every member: its sources lose the unit, its followers
(BatchNormalization, DepthwiseConv2D, GroupNormalization, PReLU...: sliced by their rule) the channel, its consumers
the input rows, and the joins between (``Add``, ``Concatenate``...) simply get narrower.

**Plain chains** then. A unit (a Dense column or a Conv2D filter) is removable when its kernel column is all zero
over the inputs that are kept, so its output is the constant ``f(bias)``, and that constant is still exactly 0
where the next Dense or Conv2D reads it (after the layers in between, which must be of the rule kinds
``one_to_one`` or ``flatten``). Then the next layer does not depend on it: the unit's kernel column and bias entry
go, and so do the next layer's matching input rows (through Flatten a channel ``c`` of C is the block of inputs
``s * C + c``, channels-last) and the per-channel parameters of the layers in between. Outputs stay identical up to
float summation order.

Units that are dead but not provably zero downstream, or whose path to the next weight layer is not a plain chain
(residual Add/Concatenate, several consumers, a model output, a shared or unknown layer), are kept and the reason
is listed in ``ShrinkReport.kept``.
"""

import dataclasses

import numpy as np

from tfprune.select import channel_rules
from tfprune.shrinking import blocks, costs, dead_units
from tfprune.structure import graph as graph_lib
from tfprune.select import groups as groups_lib
from tfprune import pruning
from tfprune.layers import nested, registry
from tfprune import stacks


def _weight_kind(layer):
    """The registry kind of a plain layer whose units shrinking may remove, else None."""
    kind = registry.kind_of(layer)
    if kind is None or not kind.units_in(layer) or kind.unsupported(layer) is not None or not kind.shrinkable(layer):
        return None
    return kind


# ---------------------------------------------------------------------------------------------------- plan

def _positions(units, channels, blocks):
    """Indices along the last axis of unit indices ``units`` of ``channels``, repeated over ``blocks`` (Flatten)."""
    units = np.asarray(units, np.int64)
    return (np.arange(blocks, dtype=np.int64)[:, None] * channels + units[None, :]).ravel()


def _constant_through(layer, units, values, channels, blocks):
    """Feeds constant channels through a channel-wise layer at inference; returns their outputs or None if any
    of them stops being constant (e.g. zero padding around a non-zero constant)."""
    shape = graph_lib.input_shape(layer)
    if any(d is None for d in shape[1:]):
        shape = (None,) + tuple(8 if d is None else d for d in shape[1:])
    x = np.zeros((1,) + tuple(shape[1:]), np.float32)
    x[..., _positions(units, channels, blocks)] = np.tile(values, blocks)
    stack = stacks.of(layer)
    y = stack.to_numpy(layer(stack.to_tensor(x), training=False))
    out = y[..., _positions(units, channels, blocks)].reshape(-1, blocks, len(units)).transpose(2, 0, 1)
    out = out.reshape(len(units), -1)
    return out[:, 0] if np.all(out == out[:, :1]) else None


def _follow(model, graph, start, units, values):
    """Walks from weight layer ``start`` to the next Dense/Conv2D, tracking the constant outputs of ``units``.

    Returns:
      (removable units, [(layer name, Flatten blocks at its input)] for the layers in between and the consumer,
      reason why units are kept or None).
    """
    channels = int(graph_lib.output_shapes(model, model.get_layer(start))[0][-1])
    blocks, name, chain = 1, start, []
    while True:
        if name in graph.outputs:
            return units[:0], [], f"{name} is a model output"
        consumers = graph.consumers.get(name, [])
        if len(consumers) != 1:
            return units[:0], [], f"{name} feeds {len(consumers)} layers ({', '.join(consumers)})"
        name = consumers[0]
        layer = model.get_layer(name)
        if graph.calls[name] != 1 or len(graph.inbound.get(name, ())) != 1:
            what = "joins several inputs" if graph.calls[name] == 1 else f"is shared ({graph.calls[name]} calls)"
            return units[:0], [], f"{name} ({type(layer).__name__}) {what}"
        chain.append((name, blocks))
        kind = _weight_kind(layer)
        if kind is not None and (blocks == 1 or kind.flat_input):
            zero = values == 0
            reason = None if zero.all() else (f"{int((~zero).sum())} of them reach {name} as non-zero constants "
                                              f"(e.g. {values[~zero][0]:.4g})")
            return units[zero], chain, reason
        rule, _ = channel_rules.passes(layer)
        if rule is not None and rule.kind == channel_rules.FLATTEN:
            blocks *= channel_rules.flatten_blocks(layer)
            continue
        if rule is None or not rule.walkable:
            return units[:0], [], (f"{name} ({type(layer).__name__}) is not known to keep channels apart"
                                   + channel_rules.hint(layer))
        values = _constant_through(layer, units, values, channels, blocks)
        if values is None:
            return units[:0], [], f"their outputs are no longer constant after {name}"


_RECURRENT_STEPS = 3  # steps simulated to prove a dead recurrent unit stays at 0 (a fixed point: see below)


def _recurrent_outputs(layer, units):
    """Outputs of the dead ``units`` of a recurrent layer (both directions of a Bidirectional) over
    ``_RECURRENT_STEPS`` steps of zero input, or None when they are not all exactly 0.

    A dead unit's gates see only their biases, so its state evolves on its own from the zero initial state: when one
    step leaves the state at 0, 0 is a fixed point and the unit outputs 0 at every step of any input. (For an LSTM
    the output is 0 exactly when the cell state is, the output gate being positive.)"""
    steps = np.zeros((1, _RECURRENT_STEPS, int(graph_lib.input_shape(layer)[-1])), np.float32)
    stack = stacks.of(layer)
    directions = (layer.forward_layer, layer.backward_layer) if hasattr(layer, "forward_layer") else (layer,)
    for direction in directions:
        config = {**direction.get_config(), "return_sequences": True, "go_backwards": False, "stateful": False}
        twin = type(direction).from_config(config)
        twin(stack.to_tensor(steps))
        twin.set_weights(direction.get_weights())
        if stack.to_numpy(twin(stack.to_tensor(steps)))[0][:, units].any():
            return None
    return np.zeros(len(units), np.float32)


def _dead_units(layer, kind, in_keep):
    """Units whose unit-kernel column is zero over the kept inputs, and their constant outputs (f(bias) through an
    element-wise activation; 0 for an Embedding), or None with the reason they are not constant."""
    units = dead_units.zero_columns(layer, kind, in_keep)
    if kind.recurrent:
        values = _recurrent_outputs(layer, units) if len(units) else np.zeros(0, np.float32)
        return units, values, None if values is not None else "their outputs are not 0 (biases left non-zero)"
    values, reason = dead_units.constant_outputs(layer, kind, units)
    return units, values, reason


def _channels_of(layer, kind, units):
    """The output channels of ``units`` (unit ``j`` is channel ``j`` unless the kind says otherwise)."""
    return np.asarray(units, np.int64) if kind.unit_channels is None else kind.unit_channels(layer, units)


def _follow_units(model, graph, layer, kind, units, values):
    """``_follow`` for the channels of ``units``; a unit is removable when all its channels are."""
    channels = _channels_of(layer, kind, units)
    removable, chain, reason = _follow(model, graph, layer.name, channels,
                                       np.tile(values, len(channels) // max(len(units), 1)))
    gone = set(removable.tolist())
    keep = [all(c in gone for c in _channels_of(layer, kind, [u])) for u in units]
    return units[np.asarray(keep, bool)], chain, reason


# ---------------------------------------------------------------------------------------------------- groups

def unread_channels(group, layers):
    """Bool (size,): the channels of ``group`` every consumer's rows of which are zero (False for all when the group
    has no consumer). ``layers``: {name: plain layer}."""
    consumers = group.role("consumer")
    unread = np.full(group.size, bool(consumers))
    for member in consumers:
        layer = layers[member.layer]
        kernel = np.asarray(registry.kind_of(layer).layout.unit_kernel(layer.get_weights()))
        axis, rows = groups_lib.consumer_rows(layer, member)
        axis %= kernel.ndim
        read = (kernel != 0).any(axis=tuple(a for a in range(kernel.ndim) if a != axis))
        unread &= ~read[rows].any(axis=1)
    return unread


def plan_groups(model):
    """({source layer: kept units}, {follower or consumer: kept positions along its input's last axis}, notes) for
    the unread channels of the prunable groups of a plain graph model: every member loses them (module docstring);
    a group keeps at least one channel (a Keras layer needs a unit)."""
    layers = {l.name: l for l in model.layers}
    out_keep, in_keep, notes = {}, {}, []
    for group in groups_lib.channel_groups(model):
        if not group.prunable:
            continue
        unread = unread_channels(group, layers)
        if unread.all():
            unread[np.flatnonzero(unread)[0]] = False
            notes.append(f"group {group.name}: 1 unread channel kept: a layer needs at least one unit")
        if not unread.any():
            continue
        for member in group.members:  # sources lose units, followers and consumers positions of their input
            layer, source = layers[member.layer], member.role == "source"
            width = int(registry.kernel_shape(layer)[-1] if source else graph_lib.input_shape(layer)[-1])
            keep = out_keep if source else in_keep
            keep[member.layer] = np.setdiff1d(keep.get(member.layer, np.arange(width)), member.index[unread].ravel())
    return out_keep, in_keep, notes


def plan_removal(model):
    """Decides which units of a plain model go: first the unread channels of coupled groups (``plan_groups``),
    then the dead units of plain chains. Returns ({weight layer: kept output units}, {layer: kept indices along its
    input's last axis}, [kept-for-safety notes])."""
    graph = graph_lib.layer_graph(model)
    out_keep, in_keep, notes = plan_groups(model)
    for layer in model.layers:
        kind = _weight_kind(layer)
        if kind is None:
            continue
        if kind.recurrent and len(graph.inbound.get(layer.name, ())) != 1:
            continue  # called with initial states: its dead units need not start at 0
        units, values, reason = _dead_units(layer, kind, in_keep.get(layer.name))
        width = int(registry.kernel_shape(layer)[-1])
        present = out_keep.get(layer.name, np.arange(width))
        if len(units) and len(present) < width:  # some already go with their group
            still = np.isin(units, present)
            units, values = units[still], None if values is None else values[still]
        if not len(units):
            continue
        if kind.internal_units:  # attention heads: the layer's output width, and so its consumers, stay
            removable, chain, reason = units, [], None
        elif values is None:
            removable, chain = units[:0], []
        else:
            removable, chain, reason = _follow_units(model, graph, layer, kind, units, values)
        if len(removable) == len(present):  # Keras layers need at least one unit: keep the first (its output is 0)
            removable = removable[1:]
            notes.append(f"{layer.name}: 1 dead unit kept: every unit is dead and a layer needs at least one")
        if reason:
            notes.append(f"{layer.name}: {len(units) - len(removable)} dead unit(s) kept: {reason}")
        if len(removable):
            kept = np.setdiff1d(present, removable)
            out_keep[layer.name] = kept
            channels = int(graph_lib.output_shapes(model, layer)[0][-1])
            for name, spans in chain:
                positions = _positions(np.sort(_channels_of(layer, kind, kept)), channels, spans)
                in_keep[name] = positions if name not in in_keep else np.intersect1d(in_keep[name], positions)
    return out_keep, in_keep, notes


# ---------------------------------------------------------------------------------------------------- rebuild

def _sliced_weights(layer, in_keep, out_keep):
    kind = _weight_kind(layer)
    if kind is not None:
        return kind.slice(layer.get_weights(), in_keep, out_keep)
    if in_keep is not None:  # a follower on a shrunk path: its rule slices its per-channel weights
        return channel_rules.rule_for(layer).sliced(layer, in_keep)
    return layer.get_weights()


def _is_prunable(model):
    return any(registry.is_prunable(l) for l in registry.model_layers(model))


def _to_plain(model):
    return pruning.strip(model) if _is_prunable(model) else model


LayerShrink = costs.LayerShrink


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
        kinds = {k.name for k in registry.KINDS}
        return sum(r.units_before - r.units_after for r in self.layers if r.kind in kinds)


@dataclasses.dataclass(frozen=True)
class ShrinkResult:
    model: object  # a Keras model of the input's stack
    report: ShrinkReport


def _report(before, after, notes, cuts=()):
    rows = {r.name: r for r in after.layers}
    layers = tuple(LayerShrink(b.name, b.kind, b.units, rows[b.name].units, b.params, rows[b.name].params, b.macs,
                               rows[b.name].macs) for b in before.layers)
    return ShrinkReport(layers + tuple(cuts), before.params, after.params, before.macs, after.macs, tuple(notes))


def shrink(model, in_place=False):
    """Returns a smaller plain model (of the input's Keras stack) computing the same outputs, with every removable
    dead unit cut out: in the model's own layers (module docstring), and inside its blocks the dead attention heads
    and feed-forward units (``tfprune.shrinking.blocks``: KerasHub's transformer blocks).

    Args:
      model: a built Sequential or functional model, plain or prunable (prunable layers are ``strip``-ed first).
        It is not modified, unless ``in_place``.
      in_place: strip and shrink ``model`` itself, for a model whose layers cannot be rebuilt from their configs
        (KerasHub's ViT): only the cuts inside its blocks are made; removable units of its own layers are listed in
        the report's notes.

    Returns:
      ``ShrinkResult(model, report)``: the new (uncompiled) model with the same layer names (or ``model``), and a
      ``ShrinkReport``; its rows for the layers cut inside blocks count 0 MACs (the totals count the model's own
      layers). Output layers never lose units.

    Raises:
      ValueError: not a tf_keras Model, a subclassed model, or an unbuilt Sequential; a model whose layers cannot
        be rebuilt from their configs, without ``in_place`` (the message names the layer).
    """
    graph_lib.check_graph_model(model, "shrinks", built=True)
    if in_place:
        new_model = pruning.strip(model, in_place=True) if _is_prunable(model) else model
        before = costs.count_params_and_macs(new_model)  # the rows name the plain layers' kinds
        out_keep, _, notes = plan_removal(new_model)
        if out_keep:
            notes.append(f"in place, the dead units of {', '.join(sorted(out_keep))} stay: shrink(model) rebuilds "
                         "the model to remove them")
    else:
        plain = _to_plain(model)
        out_keep, in_keep, notes = plan_removal(plain)
        new_model = _rebuilt(plain, out_keep, in_keep)
        before = costs.count_params_and_macs(plain)
    cuts, block_notes = blocks.shrink_blocks(new_model)
    return ShrinkResult(new_model, _report(before, costs.count_params_and_macs(new_model), notes + block_notes, cuts))


def _rebuilt(plain, out_keep, in_keep):
    """``plain`` rebuilt with the kept units and input positions of ``plan_removal``, weights sliced."""
    def clone(layer):
        if layer.name in out_keep:
            return registry.with_width(layer, len(out_keep[layer.name]))
        if layer.name in in_keep and _weight_kind(layer) is not None:  # its width stays, its input changes
            return registry.with_width(layer, int(registry.kernel_shape(layer)[-1]))
        if layer.name in in_keep:  # a follower: its rule gives the config (a Reshape's target shape...)
            return type(layer).from_config(channel_rules.rule_for(layer).config(layer, in_keep[layer.name]))
        return type(layer).from_config(layer.get_config())

    new_model = graph_lib.clone(plain, clone)
    graph_lib.copy_weights(plain, new_model, lambda old, new: new.set_weights(
        _sliced_weights(old, in_keep.get(old.name), out_keep.get(old.name))))
    nested.name_by_path(new_model)  # blocks rebuilt from their configs name their layers afresh
    return new_model


def format_shrink_report(report):
    """The report as a fixed-width text table: one line per layer, the totals, then the kept-for-safety notes."""
    def pair(a, b, width):
        return f"{a:,}->{b:,}".rjust(width)
    width = max([14] + [len(r.name) + 2 for r in report.layers])  # path names of layers inside blocks are long
    lines = [f"{'layer':<{width}}{'kind':<20}{'units':>12}{'params':>22}{'MACs':>26}"]
    for r in report.layers:
        lines.append(f"{r.name:<{width}}{r.kind:<20}{pair(r.units_before, r.units_after, 12)}"
                     f"{pair(r.params_before, r.params_after, 22)}{pair(r.macs_before, r.macs_after, 26)}")
    lines.append(f"{'total':<{width}}{f'{report.units_removed:,} units removed':>32}"
                 f"{pair(report.params_before, report.params_after, 22)}"
                 f"{pair(report.macs_before, report.macs_after, 26)}")
    lines += [f"kept: {note}" for note in report.kept]
    return "\n".join(lines)


__all__ = ["LayerShrink", "ShrinkReport", "ShrinkResult", "format_shrink_report", "plan_groups", "plan_removal",
           "shrink", "unread_channels"]
