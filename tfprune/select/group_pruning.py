"""Group pruning: the channels of each coupled group (``tfprune.select.groups``) ranked as one, and every weight of a
removed channel zeroed in all its members (DepGraph's group pruning, Fang et al., CVPR 2023).

Importance of channel ``i`` of a group, by method:

- ``group``: the L2 norm of all its weights: its sources' kernel columns (unit ``i`` of each), its consumers' input
  rows and its depthwise followers' kernel channel (a BatchNormalization's scale and shift are left out: they are
  not weights of the channel's connections);
- ``group_mean`` / ``group_max``: the mean / the largest of those members' own L2 norms.

Layer scope prunes exactly ``prune_count(s, size)`` channels of each selected group; global scope ranks the channels
of all selected groups together, each member's norm taken as its RMS (norm / sqrt(weights)), so wide and narrow
groups compare fairly, and prunes ``prune_count(s, total)`` of them, a group's strongest channel last (so no group
is cut through while others keep channels). Channels already dead (every source column masked) rank first and stay
dead: masks only shrink. A removed channel loses its sources' kernel columns and bias entries, its consumers' input
rows and its depthwise followers' kernel channel and bias entries, so nothing reads it any more and ``shrink`` cuts
it out with the outputs unchanged. A group is selected by its name (its first source layer's) or any of its
sources' names.
"""

import numpy as np

from tfprune.select import channel_rules
from tfprune.select import groups as groups_lib
from tfprune.select import masks as masks_lib
from tfprune.layers import registry
from tfprune import stacks
from tfprune.layers.layouts import multiplied
from tfprune.select.selection import select_layers

AGGREGATES = {"group": "l2", "group_mean": "mean", "group_max": "max"}


def _masked(layer, member):
    """Whether group pruning masks this member's weights of a channel: sources, consumers and the followers whose
    rule says so (a DepthwiseConv2D); other followers (BatchNormalization, PReLU...) are only sliced by ``shrink``."""
    return member.role != "follower" or channel_rules.rule_for(layer).masked


def _unusable(group, layers):
    """Why a prunable group cannot be masked in this model ('' when it can)."""
    for member in group.members:
        layer = layers[member.layer]
        if _masked(layer, member):
            if not registry.is_prunable(layer):
                return f"{member.layer} ({type(layer).__name__}) is not a prunable layer (call make_prunable first)"
    return ""


def _sums(layer, member):
    """((channels,) sums of squares, (channels,) weight counts) of one member's weights per group channel."""
    if not _masked(layer, member):  # BatchNormalization: not counted
        return None
    square = np.square(registry.effective_kernel(layer).astype(np.float64))
    units = member.index.shape[1]  # per channel: 1, or the units a GroupNormalization ties
    if member.role == "source":
        per_unit = square.reshape(-1, square.shape[-1]).sum(axis=0)
        return per_unit[member.index].sum(axis=1), np.full(len(member.index), units * square.size // square.shape[-1])
    if member.role == "consumer":
        axis, rows = groups_lib.consumer_rows(layer, member)
        axis %= square.ndim
        per_row = square.sum(axis=tuple(a for a in range(square.ndim) if a != axis))
        return per_row[rows].sum(axis=1), np.full(len(rows), rows.shape[1] * (square.size // square.shape[axis]))
    per_channel = square.sum(axis=tuple(range(square.ndim - 2)) + (square.ndim - 1,))  # depthwise (k..., C, m)
    return per_channel[member.index].sum(axis=1), np.full(len(member.index), units * square.size // square.shape[-2])


def channel_scores(group, layers, method="group", normalized=False):
    """Importance of each channel of ``group`` (``method``: ``group``, ``group_mean``, ``group_max``; ``normalized``:
    each member's RMS instead of its norm, for global scope). Shape (size,)."""
    sums = [s for s in (_sums(layers[m.layer], m) for m in group.members) if s is not None]
    squares, counts = np.stack([s for s, _ in sums]), np.stack([c for _, c in sums]).astype(np.float64)
    if AGGREGATES[method] == "l2":
        return np.sqrt(squares.sum(axis=0) / (counts.sum(axis=0) if normalized else 1.0))
    norms = np.sqrt(squares / counts if normalized else squares)
    return norms.mean(axis=0) if AGGREGATES[method] == "mean" else norms.max(axis=0)


def channels_alive(group, layers):
    """Bool (size,): True for channels with a kept weight in one of their sources' kernel columns."""
    alive = np.zeros(group.size, bool)
    for member in group.role("source"):
        alive |= masks_lib.units_alive(registry.kernel_mask(layers[member.layer]))[member.index].any(axis=1)
    return alive


def channels_kept(model):
    """{group name: channels with a kept weight in their sources} of a prunable graph model (for ``format_groups``)."""
    layers = {l.name: l for l in model.layers}
    return {g.name: int(channels_alive(g, layers).sum()) for g in groups_lib.channel_groups(model)
            if all(registry.is_prunable(layers[m.layer]) for m in g.role("source"))}


def resolve(model, sparsity, layers=None):
    """(``{group name: sparsity}``, {name: group}, {layer name: layer}) for the groups to prune.

    Args:
      layers: None (every prunable group of ``model``), a list of group or source layer names, or a dict name ->
        sparsity.

    Raises:
      ValueError: unknown name, a group that cannot be pruned (naming why), bad sparsity, nothing to prune.
    """
    known = {l.name: l for l in model.layers}
    found = groups_lib.channel_groups(model)
    by_name = {g.name: g for g in found}
    of_layer = {m.layer: g.name for g in found for m in g.role("source")}
    usable = [g.name for g in found if g.prunable and not _unusable(g, known)]
    if not usable:
        raise ValueError(f"model {model.name!r} has no channel group tfprune can prune (call make_prunable first; "
                         f"groups: {', '.join(by_name) or 'none'})")
    chosen = select_layers(model, usable if layers is None else layers, sparsity)
    plan = {}
    for name, value in chosen.items():
        if name not in of_layer:
            raise ValueError(f"{name!r} is not a channel group or a layer making one in model {model.name!r}; "
                             f"groups: {', '.join(usable)}")
        group = by_name[of_layer[name]]
        why = "; ".join(group.reasons) or _unusable(group, known)
        if why:
            raise ValueError(f"channel group {group.name!r} cannot be pruned: {why}")
        plan[group.name] = masks_lib.check_sparsity(value, f"sparsity of group {group.name!r}")
    return plan, by_name, known


def group_masks(model, plan, by_name, layers, method="group", scope="layer"):
    """{layer name: (kernel keep, bias keep or None)} for the groups of ``plan`` pruned at their sparsities, from
    the layers' current masks; nothing is modified."""
    selected = [by_name[name] for name in plan]
    alives = [channels_alive(g, layers) for g in selected]
    if scope == "global":
        values = set(plan.values())
        if len(values) > 1:
            raise ValueError(f"global scope ranks all groups against one sparsity; got per-group values "
                             f"{sorted(values)}")
        scores = [channel_scores(g, layers, method, True) for g in selected]
        for score, alive in zip(scores, alives):  # each group keeps its strongest live channel
            if alive.any():
                score[np.flatnonzero(alive)[np.argmax(score[alive])]] = np.inf
        keeps = masks_lib.keep_live_together(scores, alives, values.pop())
    else:
        keeps = [masks_lib.keep_live(channel_scores(g, layers, method), alive, plan[g.name])
                 for g, alive in zip(selected, alives)]
    kernels, biases, sources = {}, {}, set()
    for group, keep in zip(selected, keeps):
        removed = ~keep
        for member in group.members:
            layer = layers[member.layer]
            if not _masked(layer, member):
                continue  # BatchNormalization: sliced by shrink, nothing to mask
            kernel = kernels.setdefault(member.layer, registry.kernel_mask(layer).copy())
            if member.role == "source":
                kernel[..., member.index[removed].ravel()] = False
                sources.add(member.layer)
            elif member.role == "consumer":
                axis, rows = groups_lib.consumer_rows(layer, member)
                index = [slice(None)] * kernel.ndim
                index[axis] = rows[removed].ravel()
                kernel[tuple(index)] = False
            else:  # a depthwise follower: its kernel (k..., C, m) channel and its bias entries c * m + j
                channels = member.index[removed].ravel()
                kernel[..., channels, :] = False
                if getattr(layer, "bias_mask", None) is not None:
                    bias = biases.setdefault(member.layer, stacks.of(layer).to_numpy(layer.bias_mask) > 0.5)
                    bias[multiplied(channels, kernel.shape[-1])] = False
    return {name: (kernel, masks_lib.units_alive(kernel) if name in sources else biases.get(name))
            for name, kernel in kernels.items()}


def prune(model, sparsity=None, method="group", scope="layer", layers=None):
    """Group-prunes a prunable graph model in place (see the module docstring); returns the model.

    Raises:
      ValueError: as ``resolve``; global scope with per-group values. Nothing is modified when it raises.
    """
    plan, by_name, known = resolve(model, sparsity, layers)
    for name, (kernel_keep, bias_keep) in group_masks(model, plan, by_name, known, method, scope).items():
        known[name].set_masks(kernel_keep, bias_keep)
    return model


__all__ = ["AGGREGATES", "channel_scores", "channels_alive", "channels_kept", "group_masks", "prune", "resolve"]
