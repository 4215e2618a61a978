"""N:M sparsity as pure NumPy: in every group of M consecutive inputs of one output unit, N weights are kept.

Layout. A unit kernel has shape ``(..., inputs, units)`` (Dense ``(in, units)``, Conv2D ``(kh, kw, cin, cout)``):
the group ``g`` of unit ``j`` at tap ``p`` is inputs ``g·M ... g·M + M - 1``, i.e.
``kernel.reshape(-1, inputs // M, M, units)[p, g, :, j]``. TFLite stores a Dense kernel as (units, in) and a Conv2D
kernel as (cout, kh, kw, cin), so a group is M consecutive values of TFLite's innermost axis: a convolution's groups
run along its input channels at each tap, as TF-MOT's ``sparsity_m_by_n`` and 2:4 sparse kernels (Ampere's sparse
tensor cores, cuSPARSELt) read them.

Naming. tfprune's ``nm_<n>x<m>`` keeps N of every M: ``nm_2x4`` is 2:4 (50 % sparse), ``nm_1x4`` keeps one of four
(75 %). TF-MOT's ``sparsity_m_by_n=(a, b)`` counts *zeros* instead: "a zeros out of b consecutive elements"
(``prune_low_magnitude``'s docstring; ``pruning_utils.generate_m_by_n_mask`` keeps ``b - a`` of every ``b`` by
``top_k`` of |w|, and ``is_pruned_m_by_n`` allows ``b - a`` non-zeros per group). So ``nm_<n>x<m>`` is TF-MOT's
``sparsity_m_by_n=(m - n, m)``; the two spellings agree at 2:4 only.

Selection (``nm_keep``) follows ``masks``: dead weights are pruned first, then the lowest scores, ties by position
(lower input first). Every group of a kernel loses exactly M - N, so a second selection on the kept mask prunes
nothing new: the pattern is frozen once applied, as TF-MOT freezes it after its first pruning step.
"""

import dataclasses

import numpy as np

from tfprune.select import masks


def _check_groups(shape, n, m, layer):
    if not 1 <= n < m:
        raise ValueError(f"N:M pattern {n}:{m} for {layer} of shape {shape} must keep 1 <= N < M weights of every M")
    if len(shape) < 2:
        raise ValueError(f"{layer} has shape {shape}: an N:M pattern needs a kernel with an inputs axis (axis -2) "
                         "and a units axis (rank >= 2)")


def check_pattern(shape, n, m, layer="kernel"):
    """Checks that an ``n``:``m`` pattern can cut a unit kernel of ``shape`` (units last, inputs on axis -2).

    Raises:
      ValueError: naming ``layer`` and its shape: not ``1 <= n < m``; a kernel without an inputs axis (rank < 2);
        ``m`` not dividing its inputs (axis -2).
    """
    n, m, shape = int(n), int(m), tuple(int(d) for d in shape)
    _check_groups(shape, n, m, layer)
    if shape[-2] % m:
        raise ValueError(f"N:M pattern {n}:{m} does not divide {layer} of shape {shape}: its {shape[-2]} inputs "
                         f"(axis -2) are not a multiple of {m}")


def _columns(array, m):
    """``array`` (..., inputs, units) as (m, groups): one column per group, its m inputs in order."""
    grouped = array.reshape(-1, array.shape[-2] // m, m, array.shape[-1])
    return np.moveaxis(grouped, 2, 0).reshape(m, -1)


def _uncolumns(columns, shape, m):
    """The inverse of ``_columns`` for a kernel of ``shape``."""
    grouped = columns.reshape(m, -1, shape[-2] // m, shape[-1])
    return np.moveaxis(grouped, 0, 2).reshape(shape)


def nm_keep(scores, alive, n, m):
    """The N:M keep-mask: in every group, the ``n`` highest ``scores`` among its alive weights.

    Args:
      scores: real array of the unit kernel's shape (e.g. |w|), finite; lowest pruned first.
      alive: bool array of the same shape, the current keep-mask: dead weights (False) are pruned first.
      n, m: the pattern (``check_pattern``).

    Returns:
      bool array of the kernel's shape, True where kept: exactly ``n`` in every group holding at least ``n`` alive
      weights; a group with fewer keeps just those (never revives a weight). Ties: the lower input is pruned first.
      Because every group's count is fixed, ``nm_keep(scores, nm_keep(scores, alive, n, m), n, m)`` is the same
      mask, whatever the scores then.

    Raises:
      ValueError: ``check_pattern``; ``alive`` of another shape.
    """
    scores, alive = np.asarray(scores), np.asarray(alive, bool)
    check_pattern(scores.shape, n, m)
    if alive.shape != scores.shape:
        raise ValueError(f"alive mask has shape {alive.shape}, expected {scores.shape}")
    # float64 holds float16/32 scores exactly, so their order is kept; -inf ranks dead weights below every live one.
    ranked = np.where(alive, scores.astype(np.float64), -np.inf)
    pruned = masks.smallest_per_column(_columns(ranked, m), m - n)
    return _uncolumns(~pruned, scores.shape, m) & alive


@dataclasses.dataclass(frozen=True)
class NMCheck:
    """Whether a kernel holds an N:M pattern: ``violations`` of its ``groups`` hold more than ``n`` non-zeros.

    shape: the unit kernel's shape; max_nonzeros: the most non-zeros in one group (``ok`` when at most ``n``).
    """
    n: int
    m: int
    shape: tuple
    groups: int
    violations: int
    max_nonzeros: int

    @property
    def ok(self):
        return self.violations == 0


def check_nm(kernel, n=2, m=4):
    """Checks a unit kernel (..., inputs, units) against an ``n``:``m`` pattern: every group of ``m`` consecutive
    inputs of one unit at one tap holds at most ``n`` non-zeros. A group with fewer (a dead unit) satisfies it.

    This is TF-MOT's rule (``pruning_utils.is_pruned_m_by_n(kernel, (m - n, m))``, which
    ``tools/check_sparsity_m_by_n.py`` runs on a TFLite file's tensors): the same groups, "at least m - n zeros" in
    each, and where ``m`` does not divide the inputs, each row's last, shorter group is held to the same ``n``.

    Returns:
      ``NMCheck``.

    Raises:
      ValueError: not ``1 <= n < m``; a kernel of rank < 2 (no inputs axis).
    """
    kernel, n, m = np.asarray(kernel), int(n), int(m)
    _check_groups(kernel.shape, n, m, "kernel")
    tail = -kernel.shape[-2] % m
    padded = np.pad(kernel != 0, [(0, 0)] * (kernel.ndim - 2) + [(0, tail), (0, 0)])  # the padding holds zeros
    counts = _columns(padded, m).sum(axis=0)
    return NMCheck(n, m, tuple(kernel.shape), int(counts.size), int(np.count_nonzero(counts > n)), int(counts.max()))


__all__ = ["NMCheck", "check_nm", "check_pattern", "nm_keep"]
