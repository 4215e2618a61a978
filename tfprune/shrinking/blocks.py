"""Shrinking inside the blocks of a graph model (KerasHub's ``TransformerEncoder``, ``ViTEncoderBlock`` and
``GemmaDecoderBlock``, a user's block): dead attention heads and dead feed-forward units are cut out of the layers
nested in the blocks.

A block's ``call`` is its own Python code, so the graph walk of ``tfprune.shrinking.surgery`` cannot see which
nested layer reads which. Two cuts need no more than the layers themselves:

- **Heads.** An attention layer whose head has all-zero projections (queries, keys, values and its rows of the
  output projection: the registry's unit kernel) adds exactly 0 to its output; the head goes and the layer's output
  width stays, so nothing around it changes.
- **Feed-forward units.** A Dense unit whose kernel column and bias are 0, behind an activation with ``f(0) = 0``
  (ReLU, GELU, none), outputs exactly 0. When the block's next registered leaf after that Dense (its **consumer**)
  reads a vector of that Dense's width, the unit goes from the Dense and the matching input rows from the consumer.
  The consumer's output width stays (it is the block's hidden width, which the residual connections couple). A Dense
  (or an EinsumDense that is one, ``btd,df->btf``) between the two with the producer's own kernel shape is a
  **gate** reading the same input, multiplied in (Gemma's ``gelu(ffw_gating(x)) * ffw_gating_2(x)``): it loses the
  same units.

The consumer is found by order and width, not by reading ``call``, so every cut is **proven**: the model's outputs on
a probe batch before and after must agree to ``TOLERANCE`` (relative to the outputs' scale), or the cut is undone and
the reason noted. The cut layers are rebuilt smaller in place, inside the model given (``tfprune.layers.in_place``):
the blocks keep their objects, their configs still give the old sizes (BERT's and ViT's blocks derive each head's
width from ``hidden_dim // num_heads``, so no config of theirs says "fewer heads of the same width"); the shrunk
model is for running and exporting, its weights do not load into a model built from the old config. Where the
configs can say the new sizes (FFN units cut evenly), ``tfprune.shrinking.configs.rebuild_from_config`` rebuilds it.
"""

import dataclasses

import numpy as np

from tfprune.layers import in_place, nested, registry
from tfprune.shrinking import costs, dead_units
from tfprune.structure import graph

TOLERANCE = 1e-5  # largest |outputs after - outputs before| / max(1, max |outputs before|) a proven cut may leave
PROBE_LENGTH = 8  # positions a probe batch gets along an axis of unknown length


def _is_dense(layer):
    """A layer of a kind with a (inputs, units) kernel and an activation: Dense (subclasses included)."""
    kind = registry.kind_of(layer)
    return (kind is not None and not kind.internal_units and not kind.recurrent and kind.units_in(layer)
            and hasattr(layer, "activation") and len(registry.kernel_shape(layer)) == 2)


def _children(block):
    """The registered leaves held by ``block`` or by its non-leaf sublayers, in tracking order, each once."""
    return [leaf for leaf, _ in graph.nested_layers(block, nested.is_leaf) if nested.is_leaf(leaf)]


def _blocks(model):
    """Every block of graph ``model`` that holds leaves directly or through plain sublayers (nested blocks too)."""
    found = [block for block, _ in graph.block_leaves(model, nested.is_leaf)]
    inner = [layer for block in found for layer, _ in graph.nested_layers(block, nested.is_leaf)
             if graph.is_block(layer) and not nested.is_leaf(layer)]
    return found + inner


@dataclasses.dataclass(frozen=True)
class FeedForward:
    """A feed-forward pair nested in a block: ``producer`` makes the units, ``consumer`` reads them (its input rows),
    and each of ``gates`` makes the same units from the same input, multiplied in (Gemma's
    ``gelu(ffw_gating(x)) * ffw_gating_2(x)``): a unit of the producer that outputs 0 makes the product 0."""
    producer: object
    consumer: object
    gates: tuple = ()


def feed_forward_pairs(model):
    """[FeedForward]: each Dense (or Dense-like EinsumDense) nested in a block, with the first registered leaf after
    it in the same innermost block that is a Dense reading a vector of its width (``TransformerEncoder``'s
    intermediate and output dense, ViT's ``mlp.dense_1`` and ``mlp.dense_2``, Gemma's ``ffw_gating`` and
    ``ffw_linear``), and the Dense leaves between them of the producer's kernel shape as its gates."""
    pairs, seen = [], set()
    for block in reversed(_blocks(model)):  # innermost first: a pair belongs to the block that holds both
        children = [l for l in _children(block) if id(l) not in seen]
        seen.update(id(l) for l in children)
        gated = set()
        for i, producer in enumerate(children):
            if not _is_dense(producer) or id(producer) in gated:
                continue
            shape = tuple(registry.kernel_shape(producer))
            after = [(j, c) for j, c in enumerate(children[i + 1:], i + 1)
                     if _is_dense(c) and int(registry.kernel_shape(c)[0]) == shape[-1]]
            if not after:
                continue
            # A leaf of the producer's own kernel shape is rather a gate (the same input), unless it is the only one
            end, consumer = next(((j, c) for j, c in after if tuple(registry.kernel_shape(c)) != shape), after[0])
            gates = tuple(c for c in children[i + 1:end] if _is_dense(c) and tuple(registry.kernel_shape(c)) == shape)
            gated.update(id(g) for g in gates)
            pairs.append(FeedForward(producer, consumer, gates))
    return pairs


def _attention_leaves(model):
    return [leaf for block in _blocks(model) for leaf in _children(block)
            if registry.kind_of(leaf).internal_units and registry.kind_of(leaf).units_in(leaf)]


def inner_unit_layers(model):
    """Names of the layers nested in the blocks of graph ``model`` whose units ``shrink`` cuts out without touching
    the blocks' hidden width: every attention layer (its units are heads) and every feed-forward producer
    (``feed_forward_pairs``). Pass them as ``layers=`` to ``tfprune.prune(model, sparsity, "unit")`` to prune heads
    and feed-forward units only."""
    names = {l.name for l in _attention_leaves(model)} | {f.producer.name for f in feed_forward_pairs(model)}
    return [l.name for l in registry.model_layers(model) if l.name in names]


def _zero_units(layer):
    """Units of a plain leaf that output exactly 0: all-zero unit kernel and, for a Dense, f(bias) = 0 (read through
    the activation as if element-wise, as KerasHub's ``gelu_approximate`` is: the probe proves it)."""
    kind = registry.kind_of(layer)
    units = dead_units.zero_columns(layer, kind)
    if kind.internal_units:
        return units
    values, _ = dead_units.constant_outputs(layer, kind, units, elementwise_only=False)
    return units[values == 0]


def _rebuild(layer, width, in_keep=None, out_keep=None, input_width=None):
    """Replaces ``layer`` in place by a twin of ``width`` units whose input's last axis is ``input_width`` (None:
    unchanged), holding the sliced weights. Returns a function undoing it."""
    kind = registry.kind_of(layer)
    weights = kind.slice(layer.get_weights(), in_keep, out_keep)
    twin = registry.with_width(layer, width)
    config = None
    if input_width is not None:
        config = layer.get_build_config()
        config = {**config, "input_shape": list(config["input_shape"])[:-1] + [int(input_width)]}
    return in_place.replace(layer, twin, weights, config)


def probe_batch(model):
    """A fixed batch of 2 for ``model``'s inputs: uniform [0, 1) floats, 0/1 integers (token ids any vocabulary
    has)."""
    rng = np.random.default_rng(0)
    batch = []
    for tensor in model.inputs:
        shape = (2,) + tuple(PROBE_LENGTH if d is None else int(d) for d in tensor.shape[1:])
        dtype = np.dtype(getattr(tensor.dtype, "name", tensor.dtype))
        batch.append(rng.integers(0, 2, shape).astype(dtype) if dtype.kind in "iu" else rng.random(shape, np.float32))
    return batch if len(batch) > 1 else batch[0]


def outputs_on(model, batch):
    """``model``'s outputs on ``batch`` (inference), as a list of NumPy arrays."""
    out = model(batch, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def same_outputs(before, after):
    """True when the output lists agree to ``TOLERANCE``, relative to ``max(1, max |before|)``."""
    scale = max(1.0, max(float(np.abs(b).max()) for b in before))
    return max(float(np.abs(a - b).max()) for a, b in zip(after, before)) <= TOLERANCE * scale


def _kept(units, width):
    """The indices of ``width`` units kept when ``units`` are dead: all others, and at least one."""
    keep = np.setdiff1d(np.arange(width), units)
    return keep if len(keep) else np.arange(1)


def shrink_blocks(model):
    """Cuts the dead heads and feed-forward units out of the blocks of plain graph ``model``, in place (module
    docstring), each cut proven on a probe batch.

    Returns:
      ([costs.LayerShrink] for the layers cut, in model order (MACs 0: not counted inside blocks), [notes on cuts
      undone, with the reason]).
    """
    batch = probe_batch(model)
    reference = outputs_on(model, batch)
    cuts, notes = [], []

    def attempt(layers, make):
        params = [costs.layer_params(l) for l in layers]
        undo = make()
        try:
            reason = None if same_outputs(reference, outputs_on(model, batch)) else "the outputs changed"
        except Exception as error:  # pylint: disable=broad-except (a wrong consumer fails in the block's own code)
            reason = f"the model no longer runs ({type(error).__name__})"
        if reason is None:
            return params
        for step in reversed(undo):
            step()
        notes.append(f"{layers[0].name}: cut undone: {reason}; {layers[-1].name} is not the only reader of its units")
        return None

    for layer in _attention_leaves(model):
        heads = int(registry.kernel_shape(layer)[-1])
        keep = _kept(_zero_units(layer), heads)
        if len(keep) < heads:
            params = attempt([layer], lambda: [_rebuild(layer, len(keep), out_keep=keep)])
            if params:
                cuts.append(costs.LayerShrink(layer.name, type(layer).__name__, heads, len(keep), params[0],
                                costs.layer_params(layer), 0, 0))
    for pair in feed_forward_pairs(model):
        producer, consumer = pair.producer, pair.consumer
        width = int(registry.kernel_shape(producer)[-1])
        keep = _kept(_zero_units(producer), width)
        if len(keep) == width:
            continue
        out_width = int(registry.kernel_shape(consumer)[-1])
        cut = [producer, *pair.gates, consumer]
        params = attempt(cut, lambda: [_rebuild(l, len(keep), out_keep=keep) for l in (producer, *pair.gates)] + [
            _rebuild(consumer, out_width, in_keep=keep, input_width=len(keep))])
        if params:
            cuts += [costs.LayerShrink(l.name, type(l).__name__, width, len(keep), p, costs.layer_params(l), 0, 0)
                     for l, p in zip(cut[:-1], params)]
            cuts.append(costs.LayerShrink(consumer.name, type(consumer).__name__, out_width, out_width, params[-1],
                                          costs.layer_params(consumer), 0, 0))
    order = {l.name: i for i, l in enumerate(registry.model_layers(model))}
    return sorted(cuts, key=lambda c: order[c.name]), notes


__all__ = ["FeedForward", "PROBE_LENGTH", "TOLERANCE", "feed_forward_pairs", "inner_unit_layers", "outputs_on",
           "probe_batch", "same_outputs", "shrink_blocks"]
