"""Layers nested in the blocks of a graph model (KerasHub's ``TransformerEncoder``, a user's custom block): named by
path, and a block's weights moved to its clone.

A functional model whose layers are custom blocks (a class of neither Keras package holding layers) is cloned
block by block: Keras rebuilds each block from its config, with the plain layers its own code makes. So
``make_prunable`` converts the registered layers inside the cloned blocks in place (``tfprune.layers.in_place``),
``strip`` gets plain blocks back, and in both the weights go over with ``copy_block``. The leaves' own names repeat
from block to block (``query`` in every attention), so each is renamed to its path
(``transformer_layer_0.feedforward_intermediate_dense``, ``graph.name_by_path``): prune plans, reports and records
name it so.
"""

from tfprune import stacks
from tfprune.layers import registry
from tfprune.structure import graph


def leaves(model):
    """[(block, [(leaf, path name)])]: the registered layers nested in each block of graph ``model``."""
    return graph.block_leaves(model, is_leaf)


def is_leaf(layer):
    """True for a layer of a registered kind: what the block walks stop at (never looked inside)."""
    return registry.kind_of(layer) is not None


def name_by_path(model):
    """Renames each registered layer nested in a block of graph ``model`` to its path name; returns the names."""
    return graph.name_by_path(model, is_leaf)


def is_block(layer):
    """True for a block holding registered layers, as ``graph.block_leaves`` finds them: a layer of a registered kind
    (a custom layer that opts in) is a leaf, copied as one, even when it holds layers."""
    return not is_leaf(layer) and graph.is_block(layer) and any(is_leaf(l) for l, _ in
                                                                graph.nested_layers(layer, is_leaf))


def _prunable_leaves(block):
    return [leaf for leaf, _ in graph.nested_layers(block, is_leaf) if registry.is_prunable(leaf)]


def _mask_ids(leaves):
    return set().union(*(registry.mask_weight_ids(leaf) for leaf in leaves))


def computed_weights(block):
    """The block's weights as it computes with them (masks applied), masks left out, in ``weights`` order (NumPy):
    what its plain clone holds."""
    leaves = _prunable_leaves(block)
    masks = {id(v): m for leaf in leaves for v, m in leaf.variable_masks()}
    skip = _mask_ids(leaves)
    to_numpy = stacks.of(block).to_numpy
    return [to_numpy(w) * to_numpy(masks[id(w)]) if id(w) in masks else to_numpy(w)
            for w in block.weights if id(w) not in skip]


def copy_block(old, new):
    """Copies block ``old``'s weights into its clone ``new`` (the same class and config; either may hold prunable
    layers): the computed weights, then the masks of each leaf prunable in both.

    Raises:
      ValueError: the blocks' weights differ in number or shape.
    """
    skip = _mask_ids(_prunable_leaves(new))
    targets = [w for w in new.weights if id(w) not in skip]
    values = computed_weights(old)
    if len(targets) != len(values) or any(tuple(t.shape) != v.shape for t, v in zip(targets, values)):
        raise ValueError(f"block {old.name!r} ({type(old).__name__}) and its clone hold different weights: "
                         f"{[v.shape for v in values]} vs {[tuple(t.shape) for t in targets]}")
    for target, value in zip(targets, values):
        target.assign(value)
    old_leaves = [l for l, _ in graph.nested_layers(old, is_leaf) if is_leaf(l)]
    new_leaves = [l for l, _ in graph.nested_layers(new, is_leaf) if is_leaf(l)]
    for a, b in zip(old_leaves, new_leaves):
        if registry.is_prunable(a) and registry.is_prunable(b):
            for (_, mask_a), (_, mask_b) in zip(a.variable_masks(), b.variable_masks()):
                mask_b.assign(stacks.of(a).to_numpy(mask_a))


__all__ = ["computed_weights", "copy_block", "is_block", "is_leaf", "leaves", "name_by_path"]
