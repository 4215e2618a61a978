"""What a model costs: parameters and multiply-accumulates per inference, per layer and in total."""

import dataclasses

import numpy as np

from tfprune.structure import graph
from tfprune.layers import registry


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One layer: ``units`` = width of its output's last axis (heads for attention), ``params`` (masks excluded),
    ``macs`` per example."""
    name: str
    kind: str
    units: int
    params: int
    macs: int


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """Parameters and multiply-accumulates per inference (one example) of a whole model, with the per-layer rows."""
    params: int
    macs: int
    layers: tuple


@dataclasses.dataclass(frozen=True)
class LayerShrink:
    """Before/after figures of one layer (units = width of its output's last axis, heads for attention; MACs per
    image)."""
    name: str
    kind: str
    units_before: int
    units_after: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


def layer_macs(model, layer):
    """Multiply-accumulates of ``layer`` per example, summed over its calls in ``model`` (0 for unregistered
    layers: only the kernels of ``tfprune.layers.registry`` kinds are counted)."""
    kind = registry.kind_of(layer)
    if kind is None:
        return 0
    return sum(kind.count_macs(layer, shape) for shape in graph.output_shapes(model, layer))


def layer_params(layer):
    """Number of weights of ``layer`` (trainable or not), its tfprune masks excluded (a block's: those of the
    prunable layers inside it too)."""
    inside = [child for child, _ in graph.nested_layers(layer, registry.is_prunable)] if graph.is_block(layer) else []
    masks = set().union(*(registry.mask_weight_ids(l) for l in [layer] + inside))
    return sum(int(np.prod(w.shape, dtype=np.int64)) for w in layer.weights if id(w) not in masks)


def _units(model, layer):
    """The width of a layer's output's last axis; for a kind whose units are inside it (attention heads), those."""
    kind = registry.kind_of(layer)
    shape = registry.kernel_shape(layer) if kind is not None and kind.internal_units else None
    return int(shape[-1]) if shape is not None else int(graph.output_shapes(model, layer)[0][-1])


def count_params_and_macs(model):
    """Counts parameters and multiply-accumulates per inference of a built Sequential or functional model.

    Parameters are all weights (trainable or not, e.g. BatchNormalization statistics) except the masks of
    prunable layers, so a prunable model and its ``strip`` agree. MACs count the registry's kernels (Dense:
    positions * in * out; Conv2D: H_out * W_out * kh * kw * C_in * C_out), summed over their calls; other layers
    count 0.

    Returns:
      ``ModelCost`` with the totals and a ``LayerCost`` for every layer that has parameters or MACs.

    Raises:
      ValueError: not a built Sequential/functional tf_keras model.
    """
    graph.check_graph_model(model, "counts", built=True)
    rows = []
    for layer in model.layers:
        params, macs = layer_params(layer), layer_macs(model, layer)
        if params or macs:
            units = _units(model, layer)
            rows.append(LayerCost(layer.name, type(layer).__name__, units, params, macs))
    return ModelCost(sum(r.params for r in rows), sum(r.macs for r in rows), tuple(rows))


__all__ = ["LayerCost", "LayerShrink", "ModelCost", "count_params_and_macs", "layer_macs", "layer_params"]
