"""Which channels of the coupled groups (``tfprune.select.groups``) shrinking removes: those no layer reads any more.

A channel of a prunable group is **unread** when every consumer's input rows for it are all zero (group pruning
zeroes them, ``tfprune.select.group_pruning``). Its value then reaches no output, whatever it is, so it can be cut out
of every member: its sources lose the unit, its followers (BatchNormalization, DepthwiseConv2D) the channel, its
consumers the input rows, and the joins between (``Add``, ``Concatenate``...) simply get narrower. A group keeps at
least one channel (a Keras layer needs a unit).
"""

import numpy as np

from tfprune.structure import graph as graph_lib
from tfprune.select import groups as groups_lib
from tfprune.layers import registry


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


def plan(model):
    """({source layer: kept units}, {follower or consumer: kept positions along its input's last axis}, notes) for
    the unread channels of the prunable groups of a plain graph model."""
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
        for member in group.members:
            layer = layers[member.layer]
            if member.role == "source":
                width = int(registry.kernel_shape(layer)[-1])
                out_keep[member.layer] = np.setdiff1d(out_keep.get(member.layer, np.arange(width)),
                                                      member.index[unread, 0])
            else:
                width = int(graph_lib.input_shape(layer)[-1])
                in_keep[member.layer] = np.setdiff1d(in_keep.get(member.layer, np.arange(width)),
                                                     member.index[unread].ravel())
    return out_keep, in_keep, notes


__all__ = ["plan", "unread_channels"]
