"""Coupled channel groups: the channels of a Keras graph model that must be pruned together, with every weight
they touch (a dependency graph in the manner of DepGraph, Fang et al., CVPR 2023).

``channel_groups(model)`` turns the classes of ``tfprune.select.coupling`` into groups. A **group** holds the classes
that share their source layers; channel ``i`` of a group is one class, made by unit ``sources[k].index[i]`` of each of
its source layers (a residual stage of a ResNet is one group: every convolution feeding its ``Add`` joins). Its
members are the **sources** (units), the **followers** (per-channel weights on the way: BatchNormalization,
DepthwiseConv2D; or a channel count: a Reshape) and the **consumers** (layers reading the channels: their input rows
``index[i, :]``, several per channel after a Flatten). A channel is one unit of each source, or ``k`` of them when
a GroupNormalization ties ``k`` channels into one (only its whole groups can go). Removing channel ``i`` removes it
from every member; once its consumers' rows are zero, no layer reads it any more, so removing it keeps the outputs.
A group is not prunable when any of its classes is blocked (``reasons``), or when it is irregular (a source gives
the channels varying numbers of units, or a member reads a channel at a varying number of positions).
"""

import collections
import dataclasses

import numpy as np

from tfprune.select import coupling
from tfprune.layers import registry


@dataclasses.dataclass(frozen=True)
class Member:
    """One layer's part in a group: ``role`` ``source`` / ``follower`` / ``consumer``; ``index`` (channels, k): the
    layer's units (sources), channels (followers) or input rows (consumers) of each channel of the group (k is 1 for
    a source unless a GroupNormalization ties channels)."""
    layer: str
    role: str
    index: np.ndarray


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Coupled channels: ``size`` of them, the ``members`` touching them, ``reasons`` why they cannot be pruned
    (empty when they can). ``name`` is its first source layer's."""
    name: str
    size: int
    members: tuple
    reasons: tuple

    @property
    def prunable(self):
        return not self.reasons

    def role(self, role):
        """The members of one role, in model order."""
        return [m for m in self.members if m.role == role]


def _group_sources(coupled):
    """The source layers joined into groups (lists, in model order): two sources join when a class holds units of
    both."""
    classes, by_root = coupled.classes, collections.defaultdict(list)
    sources = [use for use in coupled.uses if use.role == "source"]
    for use in sources:
        for unit, node in enumerate(use.ids):
            by_root[classes.find(int(node))].append((use.layer, unit))
    joined = coupling.Classes()
    index = {use.layer: i for i, use in enumerate(sources)}
    joined.new(len(sources))
    for members in by_root.values():
        for layer, _ in members[1:]:
            joined.union(index[members[0][0]], index[layer])
    components = collections.defaultdict(list)
    for use in sources:
        components[joined.find(index[use.layer])].append(use.layer)
    return list(components.values())


def _positions(use, roots, channel_of):
    """For a follower/consumer: {group channel: [its positions]} over the positions whose class is in ``roots``."""
    found = collections.defaultdict(list)
    for position, root in enumerate(roots):
        if root in channel_of:
            found[channel_of[root]].append(position)
    return found


def _source_units(use, classes, channel_of):
    """(units (channels, k): the units of a source making each group channel, None) when it gives every channel the
    same number k of units (k > 1 where a GroupNormalization ties channels), else (its first units, the problem)."""
    units = [[] for _ in channel_of]
    for unit, node in enumerate(use.ids):
        channel = channel_of.get(classes.find(int(node)))
        if channel is not None:
            units[channel].append(unit)
    counts = {len(u) for u in units}
    if len(counts) == 1 and 0 not in counts:
        return np.array(units, np.int64), None
    first = np.array([u[:1] or [-1] for u in units], np.int64)
    return first, ("does not make every channel of the group" if 0 in counts else
                   "gives the channels varying numbers of units")


def channel_groups(model):
    """The channel groups of a built Sequential or functional model (tf_keras or Keras 3), plain or prunable, in
    model order of their first source.

    Returns:
      list of ``ChannelGroup``: one per set of coupled source layers (a layer whose units feed nothing shared is a
      group of its own).

    Raises:
      ValueError: a subclassed model or an unbuilt Sequential.
    """
    coupled = coupling.couple(model)
    classes = coupled.classes
    components = _group_sources(coupled)
    roots = {use.layer: np.array([classes.find(int(i)) for i in use.ids], np.int64) for use in coupled.uses
             if use.role != "source"}
    groups = []
    for layers in components:
        first = next(u for u in coupled.uses if u.role == "source" and u.layer == layers[0])
        order = list(dict.fromkeys(classes.find(int(node)) for node in first.ids))  # one per class
        channel_of = {root: i for i, root in enumerate(order)}
        reasons = sorted({r for root in order for r in classes.blocked(root)})
        members, irregular = [], []
        for use in coupled.uses:
            if use.role == "source" and use.layer in layers:
                units, problem = _source_units(use, classes, channel_of)
                if problem:
                    irregular.append(f"{use.layer} {problem}")
                members.append(Member(use.layer, "source", units))
            elif use.role != "source":
                found = _positions(use, roots[use.layer], channel_of)
                if not found:
                    continue
                counts = {len(found.get(i, ())) for i in range(len(order))}
                if len(counts) != 1:
                    irregular.append(f"{use.layer} reads the channels at varying numbers of positions")
                    continue
                members.append(Member(use.layer, use.role, np.array([found[i] for i in range(len(order))],
                                                                   np.int64)))
        groups.append(ChannelGroup(layers[0], len(order), tuple(members), tuple(reasons + sorted(set(irregular)))))
    return groups


def consumer_rows(layer, member):
    """(axis, rows (channels, r)) of a consumer's unit kernel that read each channel of its group (its layout's
    ``input_rows``: one row per position for a Dense or convolution, ``m`` pointwise rows for a separable one)."""
    axis, rows = registry.kind_of(layer).layout.input_rows(layer, member.index.ravel())
    return axis, rows.reshape(len(member.index), -1)


def format_groups(groups, kept=None):
    """The groups as a fixed-width text table: channels (``kept``: {group name: channels left}, e.g.
    ``group_pruning.channels_kept(model)``, adds them), members by role, and why a group is not prunable."""
    width = max([8] + [len(g.name) + 2 for g in groups])
    channels = "channels" if kept is None else "channels (kept)"
    lines = [f"{'group':<{width}}{channels:>16}{'sources':>9}{'followers':>11}{'consumers':>11}  status"]
    for g in groups:
        status = "prunable" if g.prunable else "kept: " + "; ".join(g.reasons[:2]) + \
            (f" (+{len(g.reasons) - 2} more)" if len(g.reasons) > 2 else "")
        sources = g.role("source")
        joined = "" if len(sources) == 1 else f"  [{', '.join(m.layer for m in sources)}]"
        size = f"{g.size}" if kept is None else f"{g.size} ({kept.get(g.name, g.size)})"
        lines.append(f"{g.name:<{width}}{size:>16}{len(sources):>9}{len(g.role('follower')):>11}"
                     f"{len(g.role('consumer')):>11}  {status}{joined}")
    prunable = [g for g in groups if g.prunable]
    lines.append(f"{len(groups)} groups, {len(prunable)} prunable, {sum(g.size for g in prunable):,} of "
                 f"{sum(g.size for g in groups):,} channels in prunable groups"
                 + ("" if kept is None else f", {sum(kept.get(g.name, g.size) for g in groups):,} kept"))
    return "\n".join(lines)


__all__ = ["ChannelGroup", "Member", "channel_groups", "consumer_rows", "format_groups"]
