"""Pruning methods as data: a ``Scorer`` says how a kernel is cut into groups and how each group is ranked.

Every method and every scope runs through one selection, ``select``: the groups of a kernel (single weights, whole
units...) get a score, the lowest-scoring live groups are pruned until exactly ``prune_count(sparsity, groups)`` are
dead (``masks.keep_live``; an N:M method keeps N of every M weights instead, ``tfprune.select.nm``). Scope is separate
from scoring:

- ``layer`` scope ranks the groups of each kernel on their own, at that kernel's sparsity;
- ``global`` scope ranks the groups of all selected kernels together, by ``global_scores``, which are made
  comparable across layers of different width.

A new method (a block shape, channel groups, a custom importance) is one ``Scorer`` in ``SCORERS``; nothing else
dispatches on the method's name.
"""

import dataclasses
import functools
import re
from typing import Callable

import numpy as np

from tfprune.select import blocks
from tfprune.select import importance
from tfprune.select import masks
from tfprune.select import nm


@dataclasses.dataclass(frozen=True)
class Scorer:
    """One pruning method.

    name: the method name users pass (``method="weight"``).
    scores: kernel -> 1-D scores, one per group, for layer scope (lowest pruned first); an N:M method's are of the
      kernel's shape, as its ``alive`` and ``keep`` read them.
    global_scores: kernel -> 1-D scores comparable across kernels, for global scope.
    alive: current kernel keep-mask (bool, kernel shape) -> 1-D bool, True for groups with a kept weight.
    kernel_keep: (group keep vector, current kernel keep-mask) -> new kernel keep-mask (bool, kernel shape).
    prunes_bias: whether a pruned group also zeroes its bias entries (unit methods: one bias per unit).
    prunes_outputs: whether it may prune the model's output layers (a unit method would remove classes).
    ranks_units: whether its groups are the kernel's output units (last axis): such a method cannot prune a layer
      without units of its own (``LayerKind.has_units`` False, e.g. DepthwiseConv2D).
    couples_channels: a group method: it ranks the coupled channel groups of the whole model
      (``tfprune.select.group_pruning``), not one kernel at a time; its ``layers`` are group names.
    block: a block method's block ``(units, inputs)`` in TFLite's weight layout (``tfprune.select.blocks``), else None.
    pattern: an N:M method's ``(n, m)``: it keeps ``n`` of every ``m`` consecutive inputs of each unit
      (``tfprune.select.nm``), so it prunes only layers whose unit kernel has an inputs axis
      (``LayerKind.has_inputs_axis``), at one sparsity (``check_sparsity``); else None.
    keep: optional ``(scores, alive, sparsity) -> keep`` that selects in layer scope instead of ``masks.keep_live``.
    layer_only: why the method cannot rank in global scope (``check_scope`` refuses it), or None when it can.
    check: optional ``(kernel shape, layer name) -> None`` raising a ValueError for a kernel it cannot cut.
    needs: the calibration statistics its scores read (``tfprune.calibration.statistics.STATISTICS``: ``input_sq``,
      ``grad_sq``, ``unit_taylor_sq``); when not empty, ``scores``/``global_scores`` take ``(kernel, stats)``,
      ``stats`` one layer's {statistic: array}.
    per_output: in layer scope, each output unit (column of the kernel reshaped to (-1, units)) keeps its own
      exact share, as Wanda ranks (global scope ranks all weights together).
    reconstructs: ``"obs"`` (SparseGPT: each layer pruned and its remaining weights updated to reconstruct its
      outputs) or ``"refit"`` (units removed, then the next layer refitted by least squares), done layer by layer
      by ``tfprune.calibration.reconstruction``; None for a method that only sets masks.
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
    block: tuple = None
    check: Callable = None
    needs: tuple = ()
    per_output: bool = False
    reconstructs: str = None
    pattern: tuple = None
    keep: Callable = None
    layer_only: str = None

    def bias_keep(self, keep):
        """The bias keep-vector (units,) for a group keep vector, or None when the bias is left as it is."""
        return keep if self.prunes_bias else None

    @property
    def fixed_sparsity(self):
        """The one sparsity an N:M method prunes to, ``1 - n/m``; None for the other methods."""
        return None if self.pattern is None else 1.0 - self.pattern[0] / self.pattern[1]

    def check_sparsity(self, value, what="sparsity"):
        """``value`` as the fraction this method prunes to (``masks.check_sparsity``). An N:M method prunes its whole
        pattern or nothing: None and ``fixed_sparsity`` (to 1e-6) give ``fixed_sparsity``, 0 gives 0.

        Raises:
          ValueError: ``masks.check_sparsity``; for an N:M method any other value, naming the method, the value and
            the sparsity the method fixes.
        """
        fixed = self.fixed_sparsity
        if fixed is None or value is None:
            return masks.check_sparsity(value, what) if fixed is None else fixed
        value = masks.check_sparsity(value, what)
        if value == 0.0 or abs(value - fixed) <= 1e-6:
            return fixed if value else 0.0
        raise ValueError(f"{what} {value!r} does not fit method {self.name!r}: it keeps {self.pattern[0]} of every "
                         f"{self.pattern[1]} weights, sparsity {fixed:g} exactly; pass {fixed:g} or None (or 0: "
                         "nothing pruned)")

    def check_scope(self, scope):
        """Returns ``scope`` after checking it is one of ``SCOPES`` and that this method can rank in it.

        Raises:
          ValueError: naming ``scope`` (and listing ``SCOPES``), or global scope for a ``layer_only`` method, with
            the reason.
        """
        check_scope(scope)
        if scope == "global" and self.layer_only:
            raise ValueError(f"method {self.name!r} {self.layer_only}: scope 'layer' only")
        return scope


def _weight_scores(kernel):
    return masks.weight_scores(kernel).ravel()


WEIGHT = Scorer(
    name="weight", scores=_weight_scores, global_scores=_weight_scores,
    alive=lambda current: np.asarray(current, bool).ravel(),
    kernel_keep=lambda keep, current: keep.reshape(np.shape(current)) & current)

LAMP = Scorer(  # Lee et al., arXiv 2010.07611: magnitude within a layer, LAMP scores to compare across layers
    name="lamp", scores=_weight_scores, global_scores=lambda kernel: importance.lamp_scores(kernel).ravel(),
    alive=WEIGHT.alive, kernel_keep=WEIGHT.kernel_keep)

UNIT = Scorer(
    name="unit", scores=masks.unit_norms, global_scores=masks.unit_rms, alive=masks.units_alive,
    kernel_keep=lambda keep, current: current & keep, prunes_bias=True, prunes_outputs=False,
    ranks_units=True)



def _wanda(kernel, stats):  # Sun et al., arXiv 2306.11695: |W_ij|·||X_i||
    return importance.wanda_scores(kernel, np.sqrt(stats["input_sq"])).ravel()


def _taylor(kernel, stats):  # first-order Taylor |w·g|, per batch, summed in squares: |w|·sqrt(Σ_b g_b²)
    return importance.taylor_scores(kernel, np.sqrt(stats["grad_sq"])).ravel()


def _taylor_units(kernel, stats):  # group Taylor (Molchanov et al. 2019): sqrt(Σ_b (Σ_i w_i g_b,i)²) per unit
    return np.sqrt(np.asarray(stats["unit_taylor_sq"], np.float64))


WANDA = Scorer(name="wanda", scores=_wanda, global_scores=_wanda, alive=WEIGHT.alive, kernel_keep=WEIGHT.kernel_keep,
               needs=("input_sq",), per_output=True)
WANDA_KERNEL = dataclasses.replace(WANDA, name="wanda_kernel", per_output=False)
TAYLOR = Scorer(name="taylor", scores=_taylor, global_scores=_taylor, alive=WEIGHT.alive,
                kernel_keep=WEIGHT.kernel_keep, needs=("grad_sq",))
TAYLOR_UNIT = dataclasses.replace(UNIT, name="taylor_unit", scores=_taylor_units, global_scores=_taylor_units,
                                  needs=("unit_taylor_sq",))
SPARSEGPT = dataclasses.replace(WEIGHT, name="sparsegpt", reconstructs="obs", layer_only=(
    "prunes each layer to its own sparsity (for a global allocation use 'lamp', 'taylor' or 'wanda' with scope "
    "'global')"))
UNIT_REFIT = dataclasses.replace(UNIT, name="unit_refit", reconstructs="refit")
STATISTIC_METHODS = (WANDA, WANDA_KERNEL, TAYLOR, TAYLOR_UNIT, SPARSEGPT, UNIT_REFIT)


def _whole_model(kernel):
    raise ValueError("a group method ranks a model's channel groups, not one kernel (tfprune.select.group_pruning)")


GROUPS = tuple(Scorer(name=name, scores=_whole_model, global_scores=_whole_model, alive=_whole_model,
                      kernel_keep=_whole_model, prunes_bias=True, prunes_outputs=False, ranks_units=True,
                      couples_channels=True) for name in ("group", "group_mean", "group_max"))

_BLOCK_NAME = re.compile(r"block(?:_(l1|l2))?_([1-9][0-9]*)x([1-9][0-9]*)")


def block_scorer(units, inputs, norm="l2"):
    """The ``Scorer`` of block pruning in ``units x inputs`` blocks (TFLite's layout: ``1x4`` = four consecutive
    inputs of one unit) ranked by ``norm`` (``l2``: RMS of the block, ``l1``: mean |w|); named ``block_1x4``
    (``block_l1_1x4`` for L1); one object per shape and norm. See ``tfprune.select.blocks`` for ragged tails."""
    return _block_scorer(int(units), int(inputs), norm)


@functools.lru_cache(maxsize=None)
def _block_scorer(units, inputs, norm):
    block = (units, inputs)
    name = f"block_{'l1_' if norm == 'l1' else ''}{block[0]}x{block[1]}"
    return Scorer(name=name, scores=lambda kernel: blocks.scores(kernel, block, norm),
                  global_scores=lambda kernel: blocks.scores(kernel, block, norm),
                  alive=lambda current: blocks.alive(current, block),
                  kernel_keep=lambda keep, current: blocks.expand(keep, np.shape(current), block) & current,
                  block=block, check=lambda shape, layer: blocks.check_block(shape, block, layer))


BLOCKS = (block_scorer(1, 4), block_scorer(1, 16), block_scorer(1, 4, "l1"), block_scorer(1, 16, "l1"))
_NM_NAME = re.compile(r"nm_([1-9][0-9]*)x([1-9][0-9]*)")


def nm_scorer(n, m):
    """The ``Scorer`` of N:M sparsity ``nm_<n>x<m>``: in every group of ``m`` consecutive inputs of one unit (TFLite's
    layout, ``tfprune.select.nm``), the ``n`` weights of largest |w| are kept. Layer scope only; its one sparsity is
    ``1 - n/m`` (``Scorer.check_sparsity``). One object per pattern.

    Raises:
      ValueError: not ``1 <= n < m``.
    """
    n, m = int(n), int(m)
    if not 1 <= n < m:
        raise ValueError(f"method 'nm_{n}x{m}': an N:M pattern keeps 1 <= N < M weights of every M")
    return _nm_scorer(n, m)


@functools.lru_cache(maxsize=None)
def _nm_scorer(n, m):
    return Scorer(name=f"nm_{n}x{m}", scores=masks.weight_scores, global_scores=masks.weight_scores,
                  alive=lambda current: np.asarray(current, bool), kernel_keep=lambda keep, current: keep & current,
                  pattern=(n, m), check=lambda shape, layer: nm.check_pattern(shape, n, m, layer),
                  keep=lambda scores, alive, sparsity: nm.nm_keep(scores, alive, n, m) if sparsity else alive,
                  layer_only=f"keeps {n} of every {m} consecutive inputs of each unit, a fixed pattern in every layer "
                             "with no allocation across layers")


NM = (nm_scorer(2, 4), nm_scorer(1, 4))
SCORERS = {s.name: s for s in (WEIGHT, UNIT, LAMP) + STATISTIC_METHODS + BLOCKS + NM + GROUPS}
METHODS = tuple(SCORERS)  # the named methods; check_method also takes any block shape (block_2x8) and N:M (nm_1x8)
SCOPES = ("layer", "global")


def check_method(method):
    """The ``Scorer`` named ``method``: one of ``METHODS``, a block method of any shape, ``block_<units>x<inputs>``
    or ``block_l1_<units>x<inputs>`` (e.g. ``block_2x8``), or any N:M pattern ``nm_<n>x<m>`` (e.g. ``nm_1x8``).

    Raises:
      ValueError: naming ``method`` and listing ``METHODS``; an N:M name that is not ``1 <= n < m``.
    """
    if method in SCORERS:
        return SCORERS[method]
    nm_match = _NM_NAME.fullmatch(str(method))
    if nm_match is not None:
        return nm_scorer(*nm_match.groups())
    match = _BLOCK_NAME.fullmatch(str(method))
    if match is None:
        raise ValueError(f"method {method!r} is not one of {METHODS} (or block_<units>x<inputs>, e.g. block_2x8, or "
                         "nm_<n>x<m>, e.g. nm_1x8)")
    return block_scorer(int(match.group(2)), int(match.group(3)), match.group(1) or "l2")


def is_method(method):
    """True when ``check_method`` takes ``method``."""
    try:
        check_method(method)
    except ValueError:
        return False
    return True


def needs_calibration(method):
    """True for a method that reads calibration data (statistics or reconstruction: ``wanda``, ``taylor``,
    ``sparsegpt``, ``unit_refit``...), False for the others and for names that are not tfprune methods."""
    if not is_method(method):
        return False
    scorer = check_method(method)
    return bool(scorer.needs or scorer.reconstructs)


def removes_units(method):
    """True for a tfprune method whose pruned models ``shrink`` makes smaller (it removes whole units or channels):
    ``unit`` and the group methods; False for ``weight``, the block methods and for names that are not tfprune
    methods (``tfmot``)."""
    return is_method(method) and check_method(method).ranks_units


def check_scope(scope):
    """Returns ``scope`` after checking it is one of ``SCOPES``.

    Raises:
      ValueError: naming ``scope`` and listing ``SCOPES``.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {SCOPES}")
    return scope


def _per_output_keep(scores, alive, sparsity, units):
    """Each output unit (column of (-1, units)) keeps its own share (``masks.keep_live`` per column)."""
    scores, alive = np.reshape(scores, (-1, units)), np.reshape(alive, (-1, units))
    return np.stack([masks.keep_live(scores[:, j], alive[:, j], sparsity) for j in range(units)], axis=1).ravel()


def select(scorer, kernels, sparsities, currents, scope="layer", names=None, statistics=None):
    """New keep-masks for several kernels: the masks of ``prune`` without touching any layer.

    Args:
      scorer: a ``Scorer`` (``check_method``).
      kernels: list of kernels (any shapes, last axis = units), as the layers compute with them.
      sparsities: list of fractions in [0, 1), one per kernel (global scope: all equal); an N:M method's are
        checked by ``Scorer.check_sparsity`` (``tfprune.pruning.resolve_plan`` does), non-zero applies its pattern.
      currents: list of current bool keep-masks, one per kernel (kernel shape).
      scope: ``layer`` or ``global``.
      names: optional layer names as they appear in error messages (quoted: ``"'fc1'"``).
      statistics: for a scorer that ``needs`` them, one {statistic: array} per kernel.

    Returns:
      list of ``(kernel_keep, bias_keep or None)``: bool arrays of the kernel's shape and (units,).

    Raises:
      ValueError: bad scope or sparsity; a scope the method refuses (``Scorer.check_scope``); NaN/inf in a kernel;
        global scope with differing sparsities; a scorer that needs statistics without them; a kernel the method
        cannot cut (``Scorer.check``).
    """
    scorer.check_scope(scope)
    if scorer.needs and (statistics is None or len(statistics) != len(kernels)):
        raise ValueError(f"method {scorer.name!r} ranks by calibration statistics {scorer.needs}: one per kernel")
    names = names or [f"kernel {i}" for i in range(len(kernels))]
    kernels = [masks.check_kernel(k, f"{name} kernel") for k, name in zip(kernels, names)]
    if scorer.check is not None:
        for kernel, name in zip(kernels, names):
            scorer.check(np.shape(kernel), f"layer {name} kernel")
    alives = [scorer.alive(c) for c in currents]
    if scope == "global":
        values = set(sparsities)
        if len(values) > 1:
            raise ValueError(f"global scope ranks all layers against one sparsity; got per-layer values "
                             f"{sorted(values)}")
        keeps = masks.keep_live_together([scorer.global_scores(*args) for args in _score_args(scorer, kernels,
                                                                                              statistics)],
                                         alives, values.pop())
    elif scorer.per_output:
        keeps = [_per_output_keep(scorer.scores(*args), a, s, np.shape(args[0])[-1])
                 for args, a, s in zip(_score_args(scorer, kernels, statistics), alives, sparsities)]
    else:
        keep = scorer.keep or masks.keep_live
        keeps = [keep(scorer.scores(*args), a, s)
                 for args, a, s in zip(_score_args(scorer, kernels, statistics), alives, sparsities)]
    return [(scorer.kernel_keep(keep, current), scorer.bias_keep(keep)) for keep, current in zip(keeps, currents)]


def _score_args(scorer, kernels, statistics):
    return [(k, s) for k, s in zip(kernels, statistics)] if scorer.needs else [(k,) for k in kernels]


__all__ = ["BLOCKS", "GROUPS", "LAMP", "METHODS", "NM", "SCOPES", "SCORERS", "SPARSEGPT", "STATISTIC_METHODS",
           "Scorer", "TAYLOR", "TAYLOR_UNIT", "UNIT", "UNIT_REFIT", "WANDA", "WANDA_KERNEL", "WEIGHT", "block_scorer",
           "check_method", "check_scope", "is_method", "needs_calibration", "nm_scorer", "removes_units", "select"]
