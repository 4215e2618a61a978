"""Layer-wise reconstruction methods, run layer by layer in model order so that later layers see pruned inputs.

- ``sparsegpt`` (``method="sparsegpt"``, arXiv 2301.00774): each layer's calibration inputs are taken with the
  layers before it already pruned; ``importance.obs_prune`` prunes its kernel from their Gram matrix and updates the
  remaining weights so that its outputs are reconstructed. A DepthwiseConv2D is pruned channel by channel (each
  channel's filters read only that channel's taps).
- ``unit_refit`` (``method="unit_refit"``): units ranked by L2 norm as ``unit`` ranks them, then each layer that
  reads the removed units (the consumers of its channel group: Dense or convolutions, through activations,
  BatchNormalization, DepthwiseConv2D...) is refitted by least squares (``importance.refit_from_gram``) on its
  kept input rows to reproduce its original outputs on the calibration inputs. The removed rows become zeros.
"""

import numpy as np

from tfprune import stacks
from tfprune.calibration import statistics
from tfprune.layers import registry
from tfprune.select import groups as groups_lib
from tfprune.select import importance
from tfprune.select import scoring

# One block per layer: the mask is chosen once, from every row's OBS saliency, then the rows are fixed in order.
# SparseGPT's 128-row blocks (made for LLM layers of 4k+ inputs) force each block to the same sparsity: on fc_1000
# (Fashion-MNIST, fc1-fc4 one-shot) they give 79.06 % at 95 % where one block per layer gives 84.75 %.
BLOCK_SIZE = None
DAMP = 0.01


def _in_model_order(model, plan):
    return [l for l in registry.model_layers(model) if l.name in plan]


def _assign(variable, value):
    variable.assign(np.asarray(value).astype(np.dtype(getattr(variable.dtype, "name", variable.dtype))))


def _gram(model, layer, calibration):
    return statistics.input_statistics(model, [layer], ["gram"], calibration)[layer.name]["gram"]


def _obs_layer(layer, gram, sparsity, block_size, damp):
    """(new kernel, keep mask) of one layer pruned by ``obs_prune``."""
    kernel, keep = registry.effective_kernel(layer), registry.kernel_mask(layer)
    block_size = block_size or int(np.prod(kernel.shape[:-1]))  # None: the whole layer
    if registry.kind_of(layer).name == "DepthwiseConv2D":
        taps, channels, multiplier = int(np.prod(kernel.shape[:-2])), kernel.shape[-2], kernel.shape[-1]
        new, kept = np.empty(kernel.shape), np.empty(kernel.shape, bool)
        for c in range(channels):
            w, k = importance.obs_prune(kernel[..., c, :].reshape(taps, multiplier), gram[c], sparsity, block_size,
                                        damp, keep=keep[..., c, :].reshape(taps, multiplier))
            new[..., c, :], kept[..., c, :] = w.reshape(kernel.shape[:-2] + (multiplier,)), k.reshape(
                kernel.shape[:-2] + (multiplier,))
        return new, kept
    rows = int(np.prod(kernel.shape[:-1]))
    new, kept = importance.obs_prune(kernel.reshape(rows, -1), gram[:rows, :rows], sparsity, block_size, damp,
                                     keep=keep.reshape(rows, -1))
    return new.reshape(kernel.shape), kept.reshape(kernel.shape)


def sparsegpt(model, plan, calibration, block_size=BLOCK_SIZE, damp=DAMP, progress=None):
    """Prunes the layers of ``plan`` ({name: sparsity}) one after the other, in model order, by SparseGPT.

    ``block_size``: rows per block of ``importance.obs_prune`` (None: the whole layer, one block); ``damp``: its
    damping. ``progress``: optional ``(layer name, layers done, layers in all) -> None``. Returns the model.

    Raises:
      ValueError: a layer kind whose inputs are not read (``statistics.check_layer``), a Gram that is not positive
        definite after damping.
    """
    layers = _in_model_order(model, plan)
    for layer in layers:
        statistics.check_layer(layer, "sparsegpt")
    for index, layer in enumerate(layers):
        if plan[layer.name] > 0:  # at 0: nothing to prune, nothing to reconstruct; the layer stays as it is
            new, keep = _obs_layer(layer, _gram(model, layer, calibration), plan[layer.name], block_size, damp)
            _assign(statistics.kernel_variable(layer), new)
            layer.set_masks(keep, None)
        if progress is not None:
            progress(layer.name, index + 1, len(layers))
    return model


def _consumers(groups, known, layer):
    """(the group's source member, [(consumer layer, its ``consumer_rows``)]) of the layers reading ``layer``'s
    units, or a reason string. ``groups``: the model's ``channel_groups``; ``known``: {name: layer}."""
    found = [g for g in groups if any(m.layer == layer.name for m in g.role("source"))]
    if not found or len(found[0].role("source")) != 1:
        return f"its units are coupled with other layers' ({found[0].name if found else '?'})"
    group = found[0]
    consumers = []
    for member in group.role("consumer"):
        consumer = known[member.layer]
        kind = registry.kind_of(consumer)
        if kind is None or kind.name not in statistics.KINDS or kind.name == "DepthwiseConv2D":
            return f"its consumer {member.layer!r} is not a Dense or convolution"
        consumers.append((consumer, groups_lib.consumer_rows(consumer, member)))
    return group.role("source")[0], consumers


def _refit(model, consumer, rows, removed, calibration, damp):
    """Refits ``consumer`` with the input rows of the ``removed`` channels dropped."""
    axis, channel_rows = rows
    kernel = registry.effective_kernel(consumer)
    keep = np.ones(kernel.shape[:-1], bool)
    index = [slice(None)] * keep.ndim
    index[axis + 1 if axis < 0 else axis] = channel_rows[removed].ravel()  # the unit kernel's axis, without units
    keep[tuple(index)] = False
    pairs = consumer.variable_masks()
    bias = pairs[1][0] if len(pairs) > 1 else None
    rows_in = int(np.prod(kernel.shape[:-1]))
    gram = _gram(model, consumer, calibration)
    if bias is None:
        gram = np.pad(gram[:rows_in, :rows_in], ((0, 1), (0, 1)))
    old_bias = None if bias is None else consumer.bias_mask * stacks.of(consumer).to_numpy(bias)
    new, new_bias = importance.refit_from_gram(gram, kernel.reshape(rows_in, -1), old_bias, keep.ravel(), damp)
    _assign(pairs[0][0], new.reshape(kernel.shape) * registry.kernel_mask(consumer))
    if bias is not None:
        _assign(bias, new_bias)


def unit_refit(model, plan, calibration, scope="layer", damp=DAMP, progress=None):
    """Unit-prunes the layers of ``plan`` ({name: sparsity}) in model order, refitting their consumers each time.

    In layer scope each layer's units are ranked when its turn comes (after its own refit as a consumer); in global
    scope all are ranked together first. A layer whose consumers cannot be refitted (coupled units, a consumer of
    another kind) is pruned without refit; the reasons are returned.

    Returns:
      {layer name: reason} of the layers pruned without refit (empty when every one was refitted).

    Raises:
      ValueError: a subclassed model (channel groups need the graph).
    """
    layers = _in_model_order(model, plan)
    scorer = scoring.check_method("unit")
    up_front = None
    if scope == "global":
        up_front = dict(zip([l.name for l in layers], scoring.select(
            scorer, [registry.effective_kernel(l) for l in layers], [plan[l.name] for l in layers],
            [registry.kernel_mask(l) for l in layers], "global")))
    skipped = {}
    groups = groups_lib.channel_groups(model)  # the groups do not change as masks change
    known = {l.name: l for l in registry.model_layers(model)}
    for index, layer in enumerate(layers):
        kernel_keep, bias_keep = up_front[layer.name] if up_front else scoring.select(
            scorer, [registry.effective_kernel(layer)], [plan[layer.name]], [registry.kernel_mask(layer)])[0]
        consumers = _consumers(groups, known, layer)
        if isinstance(consumers, str):
            skipped[layer.name] = consumers
        else:
            source, consumers = consumers
            removed = ~np.asarray(bias_keep, bool)[source.index[:, 0]]  # per channel of the group
            for consumer, rows in consumers if removed.any() else ():
                _refit(model, consumer, rows, removed, calibration, damp)
        layer.set_masks(kernel_keep, bias_keep)
        if progress is not None:
            progress(layer.name, index + 1, len(layers))
    return skipped


__all__ = ["BLOCK_SIZE", "DAMP", "sparsegpt", "unit_refit"]
