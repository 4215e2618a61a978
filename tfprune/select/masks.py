"""Mask arithmetic: which weights or units to keep, as pure NumPy functions.

Definitions (what users rely on):

- **Weight pruning** at sparsity ``s`` (fraction in [0, 1)) of a kernel with ``n`` weights zeroes exactly
  ``prune_count(s, n) = floor(s·n + 1/2)`` weights: the smallest by |w|.
- **Unit pruning** zeroes exactly ``prune_count(s, units)`` output units (last kernel axis: Dense columns
  ``kernel[:, j]``, Conv2D filters ``kernel[..., j]``), the ones of smallest L2 norm.
- **Ties** are broken deterministically: among equal scores, the lower flat index is pruned first. The count is
  therefore exact even when many weights are equal (e.g. already zero).
- **Already pruned** entries (``current`` mask False) rank below every live one and stay pruned, so masks only
  shrink: when the new count is at least the old one it is still exact; when it is lower, the mask is unchanged.
- **Global scope** ranks the entries of several kernels together: weights by |w|; units by L2 norm divided by
  sqrt(fan-in), i.e. the RMS of the unit's incoming weights, so that wide and narrow layers compare fairly (a raw
  norm grows with sqrt(fan-in) and would always prune the narrow layers first).

Selection is O(n) (``np.partition``), not a full sort, and runs over the live entries only.
"""

import numpy as np

def check_sparsity(sparsity, what="sparsity"):
    """Returns ``sparsity`` as a float after checking it is a finite fraction in [0, 1).

    Raises:
      ValueError: naming the value when it is not a number, NaN, or outside [0, 1).
    """
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {sparsity!r} is not a number; expected a fraction in [0, 1)") from None
    if not 0.0 <= value < 1.0:  # also rejects NaN
        raise ValueError(f"{what} {sparsity!r} is outside [0, 1) (a fraction: 0.9 means 90 % pruned)")
    return value


def prune_count(sparsity, n):
    """Number of entries to prune: round(sparsity·n), halves rounded up (0.5·3 → 2)."""
    return int(np.floor(check_sparsity(sparsity) * n + 0.5))


def _check_kernel(kernel, name="kernel"):
    kernel = np.asarray(kernel)
    if kernel.ndim < 1 or kernel.size == 0:
        raise ValueError(f"{name} has shape {kernel.shape}; expected a non-empty array")
    if not np.issubdtype(kernel.dtype, np.floating) and not np.issubdtype(kernel.dtype, np.integer):
        raise ValueError(f"{name} has dtype {kernel.dtype}; expected a real number type")
    if not np.all(np.isfinite(kernel)):
        bad = int(np.size(kernel) - np.count_nonzero(np.isfinite(kernel)))
        raise ValueError(f"{name} of shape {kernel.shape} holds {bad} NaN/inf values; cannot rank it")
    return kernel


def _check_current(current, shape, name):
    if current is None:
        return np.ones(shape, bool)
    current = np.asarray(current, bool)
    if current.shape != tuple(shape):
        raise ValueError(f"current mask of {name} has shape {current.shape}, expected {tuple(shape)}")
    return current


def select_smallest(scores, count):
    """Boolean array, True at the ``count`` smallest scores (ties: lower flat index first). O(n).

    Args:
      scores: 1-D real array; floating scores are compared in their own dtype, others as float64.
      count: 0 <= count <= len(scores).
    """
    scores = np.asarray(scores).ravel()
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    pruned = np.zeros(scores.shape, bool)
    if count <= 0:
        return pruned
    if count >= scores.size:
        pruned[:] = True
        return pruned
    threshold = np.partition(scores, count - 1)[count - 1]
    below = scores < threshold
    pruned |= below
    ties = np.flatnonzero(scores == threshold)
    pruned[ties[: count - int(below.sum())]] = True
    return pruned


def smallest_per_column(scores, count):
    """Bool (rows, cols): True at the ``count`` smallest ``scores`` of each column (ties: lower row first)."""
    pruned = np.zeros(np.shape(scores), bool)
    if count > 0:
        order = np.argsort(scores, axis=0, kind="stable")[:count]
        np.put_along_axis(pruned, order, True, axis=0)
    return pruned


def _prune_live(scores, current, count):
    """Flat bool array of the entries pruned in all: the already-pruned ones (``current`` False) first, then the
    smallest live ``scores`` (ties: lower flat index) until ``count`` are pruned; nothing new when ``count`` does not
    exceed the already-pruned ones (masks only shrink). Equivalent to ranking pruned entries below every live one,
    but the O(n) selection only runs over the live entries."""
    current = np.asarray(current, bool).ravel()
    pruned = ~current
    extra = count - int(pruned.sum())
    if extra > 0:
        scores = np.asarray(scores).ravel()
        if pruned.any():
            live = np.flatnonzero(current)
            pruned[live[select_smallest(scores[live], extra)]] = True
        else:
            pruned = select_smallest(scores, extra)
    return pruned


def weight_scores(kernel):
    """|w| per weight, kernel shape: in the kernel's own dtype when it is floating (exact), else float64."""
    kernel = np.asarray(kernel)
    return np.abs(kernel if np.issubdtype(kernel.dtype, np.floating) else kernel.astype(np.float64))


def unit_norms(kernel):
    """L2 norm of each output unit's incoming weights: shape (units,) = kernel.shape[-1]."""
    kernel = np.asarray(kernel, np.float64)
    return np.sqrt(np.square(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0))


def fan_in(kernel):
    """Incoming weights per output unit (product of all kernel axes but the last)."""
    shape = np.shape(kernel)
    return int(np.prod(shape[:-1])) if len(shape) > 1 else 1


def keep_live(scores, alive, sparsity):
    """The one selection every method and scope uses: of ``n`` groups (weights, units...) with ``scores`` (1-D),
    keeps all but ``prune_count(sparsity, n)``: those already dead (``alive`` False) first, then the smallest live
    scores (ties: lower index). Returns a bool vector (n,), True where kept; never revives a dead group."""
    scores = np.asarray(scores).ravel()
    alive = np.asarray(alive, bool).ravel()
    return ~_prune_live(scores, alive, prune_count(sparsity, scores.size)) & alive


def weight_mask(kernel, sparsity, current=None):
    """Keeps all but the ``prune_count(sparsity, kernel.size)`` smallest-|w| weights.

    Args:
      kernel: array of any shape (Dense (in, out), Conv2D (kh, kw, in, out)), finite values.
      sparsity: fraction in [0, 1) of the weights to prune.
      current: optional bool mask of the kernel's shape (True = kept); entries already False stay False.

    Returns:
      bool array of ``kernel.shape``, True where the weight is kept.

    Raises:
      ValueError: sparsity outside [0, 1), NaN/inf or empty kernel, mask of the wrong shape.
    """
    kernel = _check_kernel(kernel)
    current = _check_current(current, kernel.shape, "kernel")
    return keep_live(weight_scores(kernel), current, sparsity).reshape(kernel.shape)


def unit_keep(kernel, sparsity, current=None):
    """Keeps all but the ``prune_count(sparsity, units)`` output units of smallest L2 norm.

    Returns:
      bool vector of shape (units,) = (kernel.shape[-1],), True where the unit is kept.
    """
    kernel = _check_kernel(kernel)
    current = _check_current(current, (kernel.shape[-1],), "units")
    return keep_live(unit_norms(kernel), current, sparsity)


def unit_mask(kernel, sparsity, current=None):
    """Like ``unit_keep`` but broadcast to a bool mask of ``kernel.shape`` (whole columns / filters).

    Args:
      current: optional bool vector (units,) of units still alive.

    Raises:
      ValueError: as ``weight_mask``.
    """
    keep = unit_keep(kernel, sparsity, current)
    return np.broadcast_to(keep, np.shape(kernel)).copy()


def units_alive(mask):
    """Bool vector (units,): True for units with at least one kept weight in ``mask`` (kernel shape)."""
    mask = np.asarray(mask, bool)
    return mask.reshape(-1, mask.shape[-1]).any(axis=0)


def split(flat, sizes):
    """``flat`` (1-D) cut into consecutive pieces of the given sizes."""
    return np.split(np.asarray(flat), np.cumsum(sizes)[:-1])


def keep_live_together(scores, alives, sparsity):
    """``keep_live`` over several score vectors ranked as one (global scope): exactly
    ``prune_count(sparsity, total)`` pruned in all; returns one keep vector per input, in order."""
    # np.concatenate promotes the scores to one dtype exactly (float16 -> float32 -> float64), so ranks are kept.
    sizes = [np.size(s) for s in scores]
    keep = keep_live(np.concatenate([np.ravel(s) for s in scores]),
                     np.concatenate([np.ravel(a) for a in alives]), sparsity)
    return split(keep, sizes)


def global_weight_masks(kernels, sparsity, currents=None):
    """Weight masks for several kernels ranked together by |w|: exactly ``prune_count(sparsity, total)`` pruned.

    Args:
      kernels: list of arrays; currents: optional list of bool masks of the same shapes.

    Returns:
      list of bool arrays, one per kernel, True where kept.
    """
    kernels = [_check_kernel(k, f"kernel {i}") for i, k in enumerate(kernels)]
    currents = currents or [None] * len(kernels)
    currents = [_check_current(c, k.shape, f"kernel {i}") for i, (k, c) in enumerate(zip(kernels, currents))]
    keeps = keep_live_together([weight_scores(k) for k in kernels], currents, sparsity)
    return [keep.reshape(k.shape) for keep, k in zip(keeps, kernels)]


def global_unit_keeps(kernels, sparsity, currents=None):
    """Unit keep-vectors for several kernels ranked together by norm / sqrt(fan-in) (RMS of incoming weights).

    Returns:
      list of bool vectors (units_i,), True where the unit is kept; exactly
      ``prune_count(sparsity, sum(units_i))`` units are pruned in all.
    """
    kernels = [_check_kernel(k, f"kernel {i}") for i, k in enumerate(kernels)]
    currents = currents or [None] * len(kernels)
    currents = [_check_current(c, (k.shape[-1],), f"units {i}") for i, (k, c) in enumerate(zip(kernels, currents))]
    return keep_live_together([unit_rms(k) for k in kernels], currents, sparsity)


def unit_rms(kernel):
    """Unit score comparable across layers: L2 norm / sqrt(fan-in), the RMS of each unit's incoming weights."""
    return unit_norms(kernel) / np.sqrt(fan_in(kernel))


def check_kernel(kernel, name="kernel"):
    """``kernel`` as an array after checking it is a non-empty, finite real array.

    Raises:
      ValueError: naming ``name`` and the problem (empty, not real, NaN/inf with their count).
    """
    return _check_kernel(kernel, name)
