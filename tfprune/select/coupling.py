"""Which channels of a Keras graph model are coupled: the per-layer rules of the channel dependency graph.

A **channel** is one position of a tensor's last axis (channels-last). Every channel of every layer output gets a
node id; channels that must be removed together end in one **class** (a union-find over the ids):

- a layer with units of its own (a **source**: Dense, Conv1D/2D/3D, the filters of separable and transposed
  convolutions, recurrent layers, Embedding) makes new channels, one per unit; it **consumes** its input channels
  (its input rows);
- a channel-wise layer (activations, pooling, padding, dropout, BatchNormalization over the last axis, a
  ``Reshape`` that keeps the last axis) maps channel c to c; BatchNormalization and DepthwiseConv2D are
  **followers** (per-channel weights), and so is such a Reshape (its target shape names the channel count); a
  DepthwiseConv2D maps input channel c to its outputs c·m … c·m+m−1;
- ``Flatten`` lays channel c of C out as every input s·C + c of the next layer;
- the inputs of ``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Maximum``, ``Minimum`` share each channel
  (their classes are merged), and ``Concatenate`` on the last axis places its inputs' channels side by side.

Group pruning zeroes a removed channel's weights in every source **and every consumer** (its input rows), so no
layer reads the channel any more and removing it keeps the outputs whatever value it holds (a BatchNormalization's
shift, a sigmoid's 0.5). A class is **blocked**, with the reasons, when that is not so: a model input or output, a
layer whose channel mapping tfprune does not know (a ``LayerNormalization`` mixes the channels it normalizes;
attention; a shared layer), or a source whose activation mixes its units (softmax). ``couple(model)`` walks the
model once, in order, and returns the ``Coupling``.
"""

import dataclasses

import numpy as np

from tfprune.structure import graph as graph_lib
from tfprune.layers import registry
from tfprune._env import keras, keras3

_MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")


class Classes:
    """A union-find over channel node ids, each class with the set of reasons it is blocked (empty: prunable)."""

    def __init__(self):
        self.parent, self.reasons = [], {}

    def new(self, count, reason=None):
        """``count`` new ids (an int array), blocked for ``reason`` when given."""
        ids = np.arange(len(self.parent), len(self.parent) + count, dtype=np.int64)
        self.parent.extend(ids.tolist())
        if reason:
            for i in ids.tolist():
                self.reasons[i] = {reason}
        return ids

    def find(self, i):
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a, b):
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra != rb:
            self.parent[rb] = ra
            merged = self.reasons.pop(rb, set())
            if merged:
                self.reasons.setdefault(ra, set()).update(merged)

    def block(self, ids, reason):
        for root in {self.find(int(i)) for i in np.ravel(ids)}:
            self.reasons.setdefault(root, set()).add(reason)

    def blocked(self, i):
        """The reasons the class of id ``i`` is blocked (sorted; empty when it is not)."""
        return sorted(self.reasons.get(self.find(int(i)), ()))


@dataclasses.dataclass(frozen=True)
class Use:
    """How one layer takes part in the channels: ``role`` ``source`` (``ids[u]`` is the node of its unit ``u``),
    ``follower`` (``ids[c]`` is the node of its channel ``c``) or ``consumer`` (``ids[r]`` the node of its input row
    ``r``)."""
    layer: str
    role: str
    ids: np.ndarray


@dataclasses.dataclass
class Coupling:
    """The classes and every layer's ``Use`` of them, in model order."""
    classes: Classes
    uses: list


def _width(model, layer):
    return int(graph_lib.output_shapes(model, layer)[0][-1])


def _is(layer, *names):
    return type(layer).__name__ in names and isinstance(layer, (keras.layers.Layer, keras3.layers.Layer))


def _source_kind(layer):
    """The registry kind when ``layer`` makes channels tfprune can remove (units of its own), else None."""
    kind = registry.kind_of(layer)
    if kind is None or not kind.units_in(layer) or kind.internal_units or kind.unsupported(layer) is not None \
            or not kind.shrinkable(layer):
        return None
    return kind


class _Walk:
    """One pass over a model's layers in order: ``ids[name]`` are the nodes of a layer's output channels."""

    def __init__(self, model):
        self.model, self.graph = model, graph_lib.layer_graph(model)
        self.classes, self.uses, self.ids = Classes(), [], {}

    def _unknown(self, layer, parents, why):
        for parent in parents:
            self.classes.block(self.ids[parent], f"{layer.name} ({type(layer).__name__}) {why}")
        self.ids[layer.name] = self.classes.new(_width(self.model, layer), f"made by {layer.name} "
                                                f"({type(layer).__name__}), whose channels tfprune does not map")

    def _source(self, layer, kind, parents):
        if kind.name != "Embedding":  # an Embedding reads token ids, not channels
            self.uses.append(Use(layer.name, "consumer", self.ids[parents[0]]))
        units = int(registry.kernel_shape(layer)[-1])
        nodes = self.classes.new(units)
        self.uses.append(Use(layer.name, "source", nodes))
        ids = np.empty(_width(self.model, layer), np.int64)
        for unit in range(units):
            channels = [unit] if kind.unit_channels is None else kind.unit_channels(layer, [unit])
            ids[np.asarray(channels, np.int64)] = nodes[unit]
        self.ids[layer.name] = ids
        if hasattr(layer, "activation") and not kind.recurrent and not registry.is_elementwise(layer):
            self.classes.block(nodes, f"{layer.name}'s activation {registry.activation_name(layer)!r} mixes its "
                                      "units")

    def _merge(self, layer, parents):
        widths = {len(self.ids[p]) for p in parents}
        if len(widths) != 1:
            return self._unknown(layer, parents, f"joins inputs of different widths {sorted(widths)}")
        first = self.ids[parents[0]]
        for parent in parents[1:]:
            for a, b in zip(first, self.ids[parent]):
                self.classes.union(a, b)
        self.ids[layer.name] = first
        return None

    def visit(self, layer):
        name, parents = layer.name, self.graph.inbound.get(layer.name, [])
        if not parents:  # an input layer
            self.ids[name] = self.classes.new(_width(self.model, layer), "a model input")
            return None
        for parent, shape in zip(parents, graph_lib.input_shapes(layer)):
            if parent not in self.ids:  # a Sequential's input layer is not among its layers
                self.ids[parent] = self.classes.new(int(shape[-1]), "a model input")
        if self.graph.calls.get(name, 0) != 1:
            return self._unknown(layer, parents, f"is shared ({self.graph.calls.get(name, 0)} calls)")
        kind = _source_kind(layer)
        if kind is not None and len(parents) == 1:
            return self._source(layer, kind, parents)
        if len(parents) > 1:
            if _is(layer, *_MERGES):
                return self._merge(layer, parents)
            if _is(layer, "Concatenate") and layer.axis in (-1, len(graph_lib.output_shapes(self.model, layer)[0]) - 1):
                self.ids[name] = np.concatenate([self.ids[p] for p in parents])
                return None
            return self._unknown(layer, parents, "joins several inputs in a way tfprune does not map")
        parent = parents[0]
        kind = registry.kind_of(layer)
        if kind is not None and kind.name == "DepthwiseConv2D" and kind.unsupported(layer) is None \
                and getattr(layer, "data_format", "channels_last") == "channels_last":
            self.uses.append(Use(name, "follower", self.ids[parent]))
            self.ids[name] = np.repeat(self.ids[parent], int(layer.depth_multiplier))
            return None
        blocks = registry.flatten_blocks(layer)
        if blocks is not None:
            self.ids[name] = np.tile(self.ids[parent], blocks)
            return None
        reshape = _is(layer, "Reshape") and _width(self.model, layer) == len(self.ids[parent])
        if registry.is_channelwise(layer) or reshape:
            if layer.weights or reshape:  # per-channel weights, or a target shape naming the channel count
                self.uses.append(Use(name, "follower", self.ids[parent]))
            self.ids[name] = self.ids[parent]
            return None
        why = "normalizes across the channels" if _is(layer, "LayerNormalization") else \
            "reads them in a way tfprune does not map"
        return self._unknown(layer, parents, why)


def couple(model):
    """The ``Coupling`` of a built Sequential or functional model (tf_keras or Keras 3), plain or prunable.

    Raises:
      ValueError: a subclassed model or an unbuilt Sequential (no graph to walk).
    """
    graph_lib.check_graph_model(model, "groups channels of", built=True)
    walk = _Walk(model)
    for layer in model.layers:
        walk.visit(layer)
    for name in walk.graph.outputs:
        walk.classes.block(walk.ids[name], "a model output (its channels are the classes)")
    return Coupling(walk.classes, walk.uses)


__all__ = ["Classes", "Coupling", "Use", "couple"]
