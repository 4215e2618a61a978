"""Which channels of a Keras graph model are coupled: the per-layer rules of the channel dependency graph.

A **channel** is one position of a tensor's last axis (channels-last). Every channel of every layer output gets a
node id; channels that must be removed together end in one **class** (a union-find over the ids):

- a layer with units of its own (a **source**: Dense, Conv1D/2D/3D, the filters of separable and transposed
  convolutions, recurrent layers, Embedding) makes new channels, one per unit; it **consumes** its input channels
  (its input rows);
- every other layer passes channels by its rule in ``tfprune.select.channel_rules`` (one table, read by shrinking too):
  one to one (activations, pooling, padding, dropout, BatchNormalization over the last axis, PReLU); a
  DepthwiseConv2D maps input channel c to its outputs c·m … c·m+m−1; ``Flatten`` lays channel c of C out as every
  input s·C + c of the next layer; the inputs of a merge (``Add``, ``Multiply``...) share each channel (their classes
  are merged) and ``Concatenate`` on the last axis places them side by side; a GroupNormalization ties the channels
  of each of its groups into one class (only whole groups can go). A layer with per-channel weights or a config
  naming the channel count (BatchNormalization, DepthwiseConv2D, a ``Reshape`` keeping the last axis) is a
  **follower**.

Group pruning zeroes a removed channel's weights in every source **and every consumer** (its input rows), so no
layer reads the channel any more and removing it keeps the outputs whatever value it holds (a BatchNormalization's
shift, a sigmoid's 0.5). A class is **blocked**, with the reasons, when that is not so: a model input or output, a
layer without a rule that applies (a ``LayerNormalization`` mixes the channels it normalizes; attention; a
user's layer until ``register_channel_rule``; a shared layer), or a source whose activation mixes its units
(softmax). ``couple(model)`` walks the model once, in order, and returns the ``Coupling``.
"""

import dataclasses

import numpy as np

from tfprune.select import channel_rules
from tfprune.structure import graph as graph_lib
from tfprune.layers import registry


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
                self.ids[parent] = self.classes.new(int(shape[-1] or 0), "a model input")  # or of unknown width
        if self.graph.calls.get(name, 0) != 1:
            return self._unknown(layer, parents, f"is shared ({self.graph.calls.get(name, 0)} calls)")
        kind = _source_kind(layer)
        if kind is not None and len(parents) == 1:
            return self._source(layer, kind, parents)
        rule, why = channel_rules.passes(layer, len(parents))
        if rule is None:
            return self._unknown(layer, parents, why)
        if rule.kind == channel_rules.MERGE:
            return self._merge(layer, parents)
        inputs = [self.ids[p] for p in parents]
        for channels in rule.tied(layer):  # channels that only go together (a GroupNormalization's groups)
            for other in channels[1:]:
                self.classes.union(inputs[0][channels[0]], inputs[0][other])
        if rule.follows(layer):  # per-channel weights, a config naming the channel count, or tied channels
            self.uses.append(Use(name, "follower", inputs[0]))
        self.ids[name] = rule.map_ids(layer, inputs)
        return None


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
