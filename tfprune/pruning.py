"""Model-level pruning: make a model prunable, set its masks, strip it back to plain Keras, report sparsity.

Sparsity is a fraction in [0, 1) here (0.9 = 90 % of the weights or units zeroed).
"""

import dataclasses
import warnings

import numpy as np

from tfprune.calibration import data
from tfprune.calibration import reconstruction
from tfprune.calibration import statistics
from tfprune.structure import graph
from tfprune.select import group_pruning
from tfprune.layers import in_place as in_place_lib
from tfprune.layers import jax_masks
from tfprune.layers import nested
from tfprune.layers import separable as prunable_separable
from tfprune.select import masks as masks_lib
from tfprune.select import nm
from tfprune.layers import registry
from tfprune.select import scoring
from tfprune.select.selection import select_layers


def make_prunable(model, in_place=False, pruned_kernels=None):
    """Returns an equivalent model whose prunable layers (``tfprune.layers.registry.KINDS``: Dense, Conv2D...) are
    replaced by their masked twins (PrunableDense, PrunableConv2D...) with masks all ones.

    Works on Sequential and functional models of either Keras stack (tf_keras or Keras 3, any backend; the result
    is of the model's own stack); other layers are cloned unchanged and all weights are copied, so
    outputs are identical. Layers that already are prunable keep their masks. The result is not compiled.

    Args:
      in_place: convert the layers of ``model`` itself and return it (``tfprune.layers.in_place``). This is how a
        **subclassed** model is pruned (it cannot be cloned): its layers of registered kinds, found through its
        attributes recursively, become prunable, keeping their identity, weights and outputs. Their variables are
        new, so compile the model (again) before training it. ``prune``, the callbacks, ``sparsity_report`` and
        ``strip(model, in_place=True)`` work on it; ``shrink`` does not (it rebuilds the graph). Its masks save
        with ``model.save_weights`` and load into a new instance after ``make_prunable(new, in_place=True)``.
      pruned_kernels: which kernels of every SeparableConv1D/2D are pruned: ``"pointwise"`` (the default, as
        TF-MOT; unit pruning removes filters), ``"depthwise"`` or ``"both"`` (ranked together by |w|; these two
        are weight pruning only). Saved in the layer's config.

    Raises:
      ValueError: subclassed model without ``in_place``, no layer of a kind tfprune prunes (nothing to prune), or
      ``pruned_kernels`` not one of the choices.
    """
    options = {"pruned_kernels": None if pruned_kernels is None else
               prunable_separable.check_pruned_kernels(pruned_kernels)}
    if not in_place:
        graph.check_graph_model(model, "rewrites", hint="make_prunable(model, in_place=True) adds the masks to its "
                                                        "layers in place")
    layers = registry.model_layers(model)
    if not any(registry.convertible(l) or registry.is_prunable(l) for l in layers):
        kinds = sorted({type(l).__name__ for l in layers})
        raise ValueError(f"model {model.name!r} has no layer tfprune prunes ({registry.KIND_NAMES}; layers: "
                         f"{', '.join(kinds)})")
    if in_place:
        in_place_lib.make_prunable(model, options)
        nested.name_by_path(model)
        return jax_masks.hold_masks_in_optimizer(model)
    new_model = graph.clone(model, lambda layer: registry.to_prunable(layer, options))
    if nested.leaves(new_model):  # the cloned blocks' layers, plain from their configs, converted where they are
        in_place_lib.make_prunable(new_model, options)

    def copy(old, new):
        if nested.is_block(old):
            nested.copy_block(old, new)
        elif registry.is_prunable(new) and not registry.is_prunable(old):
            new.copy_plain(old)
        else:
            new.set_weights(old.get_weights())
    graph.copy_weights(model, new_model, copy)
    nested.name_by_path(new_model)
    return jax_masks.hold_masks_in_optimizer(new_model)


def strip(model, in_place=False, into=None):
    """Returns a plain model of the same Keras stack (every prunable layer back to its registered plain class:
    Dense, Conv2D, LSTM, MultiHeadAttention...) with the masks baked in: pruned weights are stored zeros.

    This is what gets exported. A model without prunable layers is cloned unchanged.

    Args:
      in_place: turn the layers of ``model`` itself back into plain layers and return it (how a subclassed model,
        made prunable in place, is stripped; it then saves as the user's own model does).
      into: a plain model of the same graph (an earlier ``strip`` of a model of this architecture, its layers named
        alike) that takes the weights instead of a new clone, and is returned: no graph is rebuilt, and a compiled
        ``into`` keeps its traced functions.

    Raises:
      ValueError: subclassed model without ``in_place``; ``into`` with other weight shapes.
    """
    if in_place:
        in_place_lib.strip(model)
        return model
    graph.check_graph_model(model, "rewrites", hint="strip(model, in_place=True) strips its layers in place")
    new_model = graph.clone(model, registry.to_plain) if into is None else into

    def copy(old, new):
        if nested.is_block(old):
            nested.copy_block(old, new)
        elif registry.is_prunable(old):
            new.set_weights(registry.masked_weights(old))
        else:
            new.set_weights(old.get_weights())
    graph.copy_weights(model, new_model, copy)
    nested.name_by_path(new_model)
    return new_model


def plain_model(model):
    """The model as plain Keras layers: tfprune masks baked in (``strip``), TF-MOT pruning wrappers stripped
    (``strip_pruning``). Models with neither are returned as they are (not copied)."""
    if any(registry.is_tfmot_wrapper(l) for l in model.layers):
        import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top (TF-MOT is heavy)
        model = tfmot.sparsity.keras.strip_pruning(model)
    if any(registry.is_prunable(l) for l in registry.model_layers(model)):
        model = strip(model)
    return model


def _kind_layers(layers):
    return [l for l in layers if registry.kind_of(l) is not None]


def output_layer_names(model):
    """Names of the layers whose outputs are model outputs (their units are the classes: never unit-pruned).

    Raises:
      ValueError: a subclassed model that cannot be run to find them (not built on one input shape).
    """
    names = graph.output_layer_names(model, _kind_layers(registry.model_layers(model)))
    if names is None:
        raise ValueError(f"cannot tell which layers give the outputs of subclassed model {model.name!r} (it was not "
                         "built on one input shape, so tfprune cannot run it to see); name the layers to unit-prune "
                         "with layers=[...]")
    return names


def default_layers(model, method):
    """Prunable layers pruned by default: all for weight pruning; for unit pruning all but the output layers and
    the layers without units of their own (DepthwiseConv2D: its channels follow its input); for an N:M method the
    layers whose kernel has an inputs axis (``LayerKind.has_inputs_axis``: not DepthwiseConv2D, recurrent or
    attention layers).

    Raises:
      ValueError: unit pruning of a subclassed model whose output layers cannot be found (``output_layer_names``).
    """
    scorer = scoring.check_method(method)
    names = [l.name for l in registry.model_layers(model) if registry.is_prunable(l)
             and (registry.kind_of(l).units_in(l) or not scorer.ranks_units)
             and (registry.kind_of(l).has_inputs_axis(l) or scorer.pattern is None)]
    if not scorer.prunes_outputs:
        outputs = output_layer_names(model)
        names = [n for n in names if n not in outputs]
    return names


def resolve_plan(model, sparsity, method="weight", layers=None):
    """Turns (sparsity, layers) into an ordered {layer name: sparsity} plan, validating everything.

    Args:
      sparsity: fraction in [0, 1) for every selected layer (may be None when ``layers`` is a dict, or for an N:M
        method: its one sparsity, ``Scorer.check_sparsity``).
      layers: None (defaults, see ``default_layers``), a list of layer names, or a dict name -> sparsity.

    Raises:
      ValueError: unknown method, bad sparsity (for an N:M method anything but 0 and ``1 - n/m``), unknown layer
      name, a layer that cannot be pruned, unit pruning of an output layer, an N:M method on a layer without an
      inputs axis, a kernel the method cannot cut (``Scorer.check``: a block wider than it, an N:M pattern not
      dividing its inputs; naming the layer and its shape), a model with no prunable layer.
    """
    scorer = scoring.check_method(method)
    if scorer.couples_channels:
        return group_pruning.resolve(model, sparsity, layers)[0]
    model_layers = registry.model_layers(model)
    all_prunable = [l.name for l in model_layers if registry.is_prunable(l)]
    if not all_prunable:
        hint = " (call tfprune.make_prunable(model) first)" if any(registry.convertible(l) for l in model_layers) \
            else ""
        raise ValueError(f"model {model.name!r} has no prunable layer{hint}")
    plan = select_layers(model, default_layers(model, method) if layers is None else layers, sparsity)
    known = {l.name: l for l in model_layers}
    outputs = graph.output_layer_names(model, _kind_layers(model_layers)) or set()
    for name, value in plan.items():
        if name not in known:
            raise ValueError(f"layer {name!r} does not exist in model {model.name!r}; prunable layers: "
                             f"{', '.join(all_prunable)}")
        if not registry.is_prunable(known[name]):
            raise ValueError(f"layer {name!r} ({type(known[name]).__name__}) cannot be pruned; prunable layers: "
                             f"{', '.join(all_prunable)}")
        kind = registry.kind_of(known[name])
        if scorer.ranks_units and not kind.units_in(known[name]):
            raise ValueError(f"layer {name!r} ({kind.name}) has no units of its own (its channels follow its "
                             f"input); prune it with method='weight', or unit-prune the layer that feeds it")
        if not scorer.prunes_outputs and name in outputs:
            raise ValueError(f"layer {name!r} is a model output: its units are the classes and are never "
                             "unit-pruned")
        if scorer.pattern is not None and not kind.has_inputs_axis(known[name]):
            raise ValueError(f"layer {name!r} ({kind.name}) has no inputs axis in its kernel for method "
                             f"{scorer.name!r}'s groups of consecutive inputs; prune it with another method")
        shape = registry.kernel_shape(known[name])
        if scorer.check is not None and shape is not None:
            scorer.check(shape, f"layer {name!r} kernel")
        plan[name] = scorer.check_sparsity(value, f"sparsity of layer {name!r}")
    return plan


def _new_masks(model, plan, method, scope, calibration=None):
    """Computes {name: (kernel_keep, bias_keep or None)} without touching the model."""
    known = {l.name: l for l in registry.model_layers(model)}
    layers = [known[n] for n in plan]
    scorer = scoring.check_method(method)
    found = None
    if scorer.needs:
        found = statistics.collect(model, layers, scorer.needs, data.as_calibration(calibration, method), method)
        found = [found[l.name] for l in layers]
    keeps = scoring.select(scorer, [registry.effective_kernel(l) for l in layers],
                           [plan[l.name] for l in layers], [registry.kernel_mask(l) for l in layers], scope,
                           names=[repr(l.name) for l in layers], statistics=found)
    return {l.name: keep for l, keep in zip(layers, keeps)}


def _reconstruct(model, plan, scorer, scope, calibration):
    calibration = data.as_calibration(calibration, scorer.name)
    if scorer.reconstructs == "obs":
        return reconstruction.sparsegpt(model, plan, calibration)
    skipped = reconstruction.unit_refit(model, plan, calibration, scope)
    if skipped:
        warnings.warn("unit_refit pruned without a refit: " + "; ".join(f"{name!r} ({why})" for name, why in
                                                                   skipped.items()), stacklevel=3)
    return model


def prune(model, sparsity=None, method="weight", scope="layer", layers=None, calibration=None):
    """Sets the masks of a prunable model in place (see ``tfprune.select.masks`` for the exact definitions).

    Args:
      model: a model from ``make_prunable`` (or any model holding tfprune's prunable layers).
      sparsity: fraction in [0, 1) of weights (``method="weight"``), output units (``"unit"``) or blocks to zero.
      method: ``"weight"`` ranks single weights by |w|; ``"unit"`` ranks output units by L2 norm and also zeroes
        their biases; ``"block_1x4"`` (``"block_1x16"``, any ``"block_<units>x<inputs>"``; ``"block_l1_1x4"`` by
        mean |w|) ranks blocks of consecutive inputs of one unit by RMS (``tfprune.select.blocks``: TFLite's sparse
        kernels compute 1x4 float and 1x16 int8 blocks; a block wider than a kernel is a ValueError naming the layer and
        its shape); ``"group"`` (``"group_mean"``, ``"group_max"``) ranks the channels of each coupled channel
        group (``tfprune.select.groups``: the convolutions joined by a residual ``Add``, their BatchNorm and depthwise
        followers, the layers reading them) and zeroes every weight of a removed channel in all of them
        (``tfprune.select.group_pruning``), so ``shrink`` removes it everywhere. ``"nm_2x4"`` (``"nm_1x4"``, any
        ``"nm_<n>x<m>"``) keeps the ``n`` largest |w| of every ``m`` consecutive inputs of each unit
        (``tfprune.select.nm``; TFLite's layout, a convolution's groups along its input channels at each tap), in
        every layer whose kernel has an inputs axis: ``sparsity`` is None or ``1 - n/m`` (0: nothing pruned), scope
        ``"layer"``, and ``m`` must divide each layer's inputs (else a ValueError naming the layer and its shape).
      scope: ``"layer"`` ranks within each layer (group); ``"global"`` ranks all selected layers (groups) together.
        Methods that read calibration data (``calibration``): ``"wanda"`` ranks |w|·||x_i|| (the weight times the
        L2 norm of its input over the calibration inputs) within each output unit, as Wanda does
        (``"wanda_kernel"``: within the whole kernel); ``"taylor"`` ranks |w|·sqrt(Σ_batches g²) (first-order
        Taylor, the loss's gradient per batch) and ``"taylor_unit"`` ranks units by sqrt(Σ_batches (Σ_i w_i g_i)²);
        ``"sparsegpt"`` prunes layer by layer and updates each layer's remaining weights to reconstruct its outputs
        (``tfprune.calibration.reconstruction``); ``"unit_refit"`` removes units as ``"unit"`` does, then refits
        the layers that read them by least squares. These read Dense, Conv1D/2D/3D and DepthwiseConv2D layers.
      layers: None (weight: every prunable layer; unit: all but the output layers; group: every prunable group), a
        list of names (group methods: group or source layer names), or a dict name -> sparsity (a per-layer plan;
        ``sparsity`` is then ignored).
      calibration: for the methods above: a ``tfprune.Calibration``, ``(x, y)`` or ``x`` — a few hundred training
        examples (labels needed by the Taylor methods), never the test split.

    Masks only shrink: weights pruned before stay pruned. Returns the model.

    Raises:
      ValueError: (see ``resolve_plan``), NaN/inf in a kernel, global scope with per-layer values or for a method
      that ranks in layer scope only (``sparsegpt``, the N:M methods), a calibration method without ``calibration``
      or on a layer kind it does not read. Nothing is modified when it raises
      (the reconstruction methods check every layer first).
    """
    scorer = scoring.check_method(method)
    scorer.check_scope(scope)
    if scorer.couples_channels:
        return group_pruning.prune(model, sparsity, method, scope, layers)
    plan = resolve_plan(model, sparsity, method, layers)
    if scorer.reconstructs:
        return _reconstruct(model, plan, scorer, scope, calibration)
    try:
        new = _new_masks(model, plan, method, scope, calibration)
    except ValueError as e:
        raise ValueError(f"cannot prune model {model.name!r}: {e}") from None
    known = {l.name: l for l in registry.model_layers(model)}
    for name, (kernel_keep, bias_keep) in new.items():
        known[name].set_masks(kernel_keep, bias_keep)
    return model


@dataclasses.dataclass(frozen=True)
class LayerSparsity:
    """Sparsity of one prunable kernel: ``weights`` in the kernel, ``zeros`` among them, output units."""
    name: str
    kind: str
    weights: int
    zeros: int
    units: int
    units_kept: int

    @property
    def sparsity(self):
        return self.zeros / self.weights


def sparsity_report(model):
    """Per-layer sparsity of every prunable kernel (prunable or plain, e.g. stripped or TF-MOT-stripped).

    Returns:
      list of ``LayerSparsity`` in model order; ``overall_sparsity(report)`` gives the fraction over all of them.
    """
    report = []
    for layer in registry.kernel_layers(model):
        kernel = registry.effective_kernel(layer)
        alive = masks_lib.units_alive(kernel != 0)
        report.append(LayerSparsity(layer.name, registry.kind_of(layer).name, int(kernel.size),
                                    int(kernel.size - np.count_nonzero(kernel)), int(kernel.shape[-1]),
                                    int(alive.sum())))
    return report


def check_nm(model_or_kernel, n=2, m=4):
    """Checks an N:M pattern (``n`` non-zeros at most in every group of ``m`` consecutive inputs of one unit, TFLite's
    layout; TF-MOT's ``sparsity_m_by_n=(m - n, m)``), as TF-MOT's ``check_sparsity_m_by_n`` tool does.

    Args:
      model_or_kernel: a unit kernel (array (..., inputs, units): Dense (in, units), Conv2D (kh, kw, cin, cout)), or a
        Keras model (either stack; prunable, stripped or plain): each layer tfprune prunes whose kernel has an inputs
        axis (``LayerKind.has_inputs_axis``) is checked on its effective kernel (``registry.effective_kernel``: as it
        computes, masks applied); the others (DepthwiseConv2D, recurrent, attention) are left out.

    Returns:
      ``tfprune.select.nm.NMCheck`` for a kernel (``.ok``, ``.violations`` of ``.groups``); for a model
      {layer name: NMCheck}, in model order.

    Raises:
      ValueError: not ``1 <= n < m``; a kernel of rank < 2.
    """
    if not hasattr(model_or_kernel, "layers"):
        return nm.check_nm(model_or_kernel, n, m)
    return {l.name: nm.check_nm(registry.effective_kernel(l), n, m) for l in registry.kernel_layers(model_or_kernel)
            if registry.kind_of(l).has_inputs_axis(l)}


def overall_sparsity(report):
    """Fraction of zero weights over all layers of a ``sparsity_report``."""
    weights = sum(r.weights for r in report)
    return sum(r.zeros for r in report) / weights if weights else 0.0


def format_report(report):
    """The report as a fixed-width text table (one line per layer, then the total)."""
    name_width = max([14] + [len(r.name) + 2 for r in report])
    kind_width = max([8] + [len(r.kind) + 2 for r in report])
    lines = [f"{'layer':<{name_width}}{'kind':<{kind_width}}{'weights':>11}{'zeros':>11}{'sparsity':>10}"
             f"{'units kept':>14}"]
    for r in report:
        lines.append(f"{r.name:<{name_width}}{r.kind:<{kind_width}}{r.weights:>11,}{r.zeros:>11,}"
                     f"{100 * r.sparsity:>9.2f}%{r.units_kept:>7}/{r.units:<6}")
    total = sum(r.weights for r in report)
    zeros = sum(r.zeros for r in report)
    lines.append(f"{'total':<{name_width + kind_width}}{total:>11,}{zeros:>11,}"
                 f"{100 * overall_sparsity(report):>9.2f}%")
    return "\n".join(lines)


__all__ = ["LayerSparsity", "check_nm", "default_layers", "format_report", "make_prunable", "overall_sparsity",
           "output_layer_names", "plain_model", "prune", "resolve_plan", "select_layers", "sparsity_report", "strip"]
