"""Pruning methods as data: a ``Scorer`` says how a kernel is cut into groups and how each group is ranked.

Every method and every scope runs through one selection, ``masks.keep_live``: the groups of a kernel (single
weights, whole units...) get a score, the lowest-scoring live groups are pruned until exactly
``prune_count(sparsity, groups)`` are dead. Scope is separate from scoring:

- ``layer`` scope ranks the groups of each kernel on their own, at that kernel's sparsity;
- ``global`` scope ranks the groups of all selected kernels together, by ``global_scores``, which are made
  comparable across layers of different width.

A new method (blocks, channel groups, a custom importance) is one ``Scorer`` in ``SCORERS``; nothing else
dispatches on the method's name.
"""

import dataclasses
from typing import Callable

import numpy as np

from tfprune import masks


@dataclasses.dataclass(frozen=True)
class Scorer:
    """One pruning method.

    name: the method name users pass (``method="weight"``).
    scores: kernel -> 1-D scores, one per group, for layer scope (lowest pruned first).
    global_scores: kernel -> 1-D scores comparable across kernels, for global scope.
    alive: current kernel keep-mask (bool, kernel shape) -> 1-D bool, True for groups with a kept weight.
    kernel_keep: (group keep vector, current kernel keep-mask) -> new kernel keep-mask (bool, kernel shape).
    prunes_bias: whether a pruned group also zeroes its bias entries (unit methods: one bias per unit).
    prunes_outputs: whether it may prune the model's output layers (a unit method would remove classes).
    ranks_units: whether its groups are the kernel's output units (last axis): such a method cannot prune a layer
      without units of its own (``LayerKind.has_units`` False, e.g. DepthwiseConv2D).
    couples_channels: a group method: it ranks the coupled channel groups of the whole model
      (``tfprune.group_pruning``), not one kernel at a time; its ``layers`` are group names.
    """
    name: str
    scores: Callable
    global_scores: Callable
    alive: Callable
    kernel_keep: Callable
    prunes_bias: bool = False
    prunes_outputs: bool = True
    ranks_units: bool = False
    couples_channels: bool = False

    def bias_keep(self, keep):
        """The bias keep-vector (units,) for a group keep vector, or None when the bias is left as it is."""
        return keep if self.prunes_bias else None


def _weight_scores(kernel):
    return masks.weight_scores(kernel).ravel()


WEIGHT = Scorer(
    name="weight", scores=_weight_scores, global_scores=_weight_scores,
    alive=lambda current: np.asarray(current, bool).ravel(),
    kernel_keep=lambda keep, current: keep.reshape(np.shape(current)) & current)

UNIT = Scorer(
    name="unit", scores=masks.unit_norms, global_scores=masks.unit_rms, alive=masks.units_alive,
    kernel_keep=lambda keep, current: current & keep, prunes_bias=True, prunes_outputs=False,
    ranks_units=True)



def _whole_model(kernel):
    raise ValueError("a group method ranks a model's channel groups, not one kernel (tfprune.group_pruning)")


GROUPS = tuple(Scorer(name=name, scores=_whole_model, global_scores=_whole_model, alive=_whole_model,
                      kernel_keep=_whole_model, prunes_bias=True, prunes_outputs=False, ranks_units=True,
                      couples_channels=True) for name in ("group", "group_mean", "group_max"))

SCORERS = {s.name: s for s in (WEIGHT, UNIT) + GROUPS}
METHODS = tuple(SCORERS)
SCOPES = ("layer", "global")


def check_method(method):
    """The ``Scorer`` named ``method``.

    Raises:
      ValueError: naming ``method`` and listing ``METHODS``.
    """
    if method not in SCORERS:
        raise ValueError(f"method {method!r} is not one of {METHODS}")
    return SCORERS[method]


def removes_units(method):
    """True for a tfprune method whose pruned models ``shrink`` makes smaller (it removes whole units or channels):
    ``unit`` and the group methods; False for ``weight`` and for names that are not tfprune methods (``tfmot``)."""
    return method in SCORERS and SCORERS[method].ranks_units


def check_scope(scope):
    """Returns ``scope`` after checking it is one of ``SCOPES``.

    Raises:
      ValueError: naming ``scope`` and listing ``SCOPES``.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {SCOPES}")
    return scope


def select(scorer, kernels, sparsities, currents, scope="layer", names=None):
    """New keep-masks for several kernels: the masks of ``prune`` without touching any layer.

    Args:
      scorer: a ``Scorer`` (``check_method``).
      kernels: list of kernels (any shapes, last axis = units), as the layers compute with them.
      sparsities: list of fractions in [0, 1), one per kernel (global scope: all equal).
      currents: list of current bool keep-masks, one per kernel (kernel shape).
      scope: ``layer`` or ``global``.
      names: optional layer names, for error messages.

    Returns:
      list of ``(kernel_keep, bias_keep or None)``: bool arrays of the kernel's shape and (units,).

    Raises:
      ValueError: bad scope or sparsity; NaN/inf in a kernel; global scope with differing sparsities.
    """
    check_scope(scope)
    names = names or [f"kernel {i}" for i in range(len(kernels))]
    kernels = [masks.check_kernel(k, f"{name} kernel") for k, name in zip(kernels, names)]
    alives = [scorer.alive(c) for c in currents]
    if scope == "global":
        values = set(sparsities)
        if len(values) > 1:
            raise ValueError(f"global scope ranks all layers against one sparsity; got per-layer values "
                             f"{sorted(values)}")
        keeps = masks.keep_live_together([scorer.global_scores(k) for k in kernels], alives, values.pop())
    else:
        keeps = [masks.keep_live(scorer.scores(k), a, s) for k, a, s in zip(kernels, alives, sparsities)]
    return [(scorer.kernel_keep(keep, current), scorer.bias_keep(keep)) for keep, current in zip(keeps, currents)]


__all__ = ["GROUPS", "METHODS", "SCOPES", "SCORERS", "Scorer", "UNIT", "WEIGHT", "check_method", "check_scope",
           "removes_units", "select"]
