"""Importance beyond magnitude, as pure NumPy functions: gradient, activation and second-order scores.

Layout (what every function here assumes): a layer's kernel is a Keras Dense kernel ``W`` of shape ``(in, units)``,
inputs on axis 0 (rows) and output units on the last axis (columns); calibration inputs ``X`` are ``(n, in)`` (or
``(..., in)``, flattened to rows) and the layer computes ``Y = X @ W``.

- **Taylor** (first order): ``|w·g|`` per weight, and ``|Σ_i w_i g_i|`` per output unit (Molchanov et al. 2019,
  group Taylor). Accumulating gradients over batches is the caller's business.
- **Wanda** (arXiv 2306.11695): ``|W_ij|·||X_i||₂``, ranked per output unit (``per_output_masks``).
- **SparseGPT / OBS** (arXiv 2301.00774): ``obs_prune`` prunes a layer and updates its remaining weights to
  reconstruct ``X @ W`` from the Gram matrix ``XᵀX``.
- **Refit**: ``refit_next_layer`` solves the next layer's weights by least squares after units were removed.
- **LAMP** (arXiv 2010.07611): layer-adaptive magnitude scores, comparable across layers.

Statistics accumulate across batches by summing: ``gram`` and ``input_sq_sums`` of two batches add up to those of
the two stacked (``input_norms`` is the square root of the summed ``input_sq_sums``). Ties break by position, as in
``masks``: among equal scores the lower row (lower flat index) is pruned first.
"""

import numpy as np

from tfprune.select import masks


def _float(array, name):
    """``array`` as a finite float64 array (``masks.check_kernel``'s checks: non-empty, real, no NaN/inf)."""
    return np.asarray(masks.check_kernel(array, name), np.float64)


def _same_shape(kernel, other, name):
    kernel, other = _float(kernel, "kernel"), _float(other, name)
    if kernel.shape != other.shape:
        raise ValueError(f"{name} has shape {other.shape} but kernel has shape {kernel.shape}; expected equal")
    return kernel, other


def _dense(kernel):
    kernel = _float(kernel, "kernel")
    if kernel.ndim != 2:
        raise ValueError(f"kernel has shape {kernel.shape}; expected a Dense kernel (in, units)")
    return kernel


def _rows(x, name="x"):
    """``x`` (..., in) as float64 rows (n, in)."""
    x = _float(x, name)
    if x.ndim < 2:
        raise ValueError(f"{name} has shape {x.shape}; expected calibration inputs (n, in)")
    return x.reshape(-1, x.shape[-1])


def taylor_scores(kernel, grad):
    """First-order Taylor importance ``|w·g|`` per weight: float64, the kernel's shape (any rank).

    Raises:
      ValueError: naming both shapes when ``grad`` is not the kernel's shape; NaN/inf or empty arrays.
    """
    kernel, grad = _same_shape(kernel, grad, "grad")
    return np.abs(kernel * grad)


def taylor_unit_scores(kernel, grad):
    """Group Taylor importance of each output unit, ``|Σ_i w_i·g_i|`` over its incoming weights (all axes but the
    last): float64 vector (units,) = (kernel.shape[-1],).

    Raises:
      ValueError: as ``taylor_scores``.
    """
    kernel, grad = _same_shape(kernel, grad, "grad")
    return np.abs((kernel * grad).reshape(-1, kernel.shape[-1]).sum(axis=0))


def input_sq_sums(x):
    """Σ_n x² per input feature: float64 (in,) for inputs ``x`` (n, in). Sums of batches add up."""
    return np.square(_rows(x)).sum(axis=0)


def input_norms(x):
    """L2 norm of each input feature over the samples, ``sqrt(input_sq_sums(x))``: float64 (in,). Over several
    batches: ``np.sqrt(sum of their input_sq_sums)``."""
    return np.sqrt(input_sq_sums(x))


def wanda_scores(kernel, input_norms):
    """Wanda importance ``|W_ij|·||X_i||₂``: float64 of the kernel's shape.

    Args:
      kernel: a kernel (..., in, units): a Dense kernel (in, units), or a convolution's (taps..., in, units) whose
        input rows are its patch rows (``patches``).
      input_norms: ``kernel.shape[:-1]``, the L2 norm of each input row over the calibration samples
        (``input_norms``; for a convolution ``sqrt(patches.conv_input_sq_sums)``), broadcast over the units.

    Raises:
      ValueError: naming the shapes when the kernel has fewer than 2 axes or ``input_norms`` is not
        ``kernel.shape[:-1]``; negative norms.
    """
    kernel = _float(kernel, "kernel")
    if kernel.ndim < 2:
        raise ValueError(f"kernel has shape {kernel.shape}; expected a kernel (..., in, units)")
    norms = _float(input_norms, "input_norms")
    if norms.shape != kernel.shape[:-1]:
        raise ValueError(f"input_norms has shape {norms.shape}; expected {kernel.shape[:-1]} for kernel of shape "
                         f"{kernel.shape}")
    if np.any(norms < 0):
        raise ValueError(f"input_norms holds {int((norms < 0).sum())} negative values; norms are >= 0")
    return np.abs(kernel) * norms[..., None]


def per_output_masks(scores, sparsity):
    """Wanda's per-output selection: in each output unit (column) on its own, prunes exactly
    ``prune_count(sparsity, in)`` of its scores, the smallest (ties: lower row first).

    Args:
      scores: (in, units), e.g. ``wanda_scores``.
      sparsity: fraction in [0, 1). In all ``units·prune_count(sparsity, in)`` are pruned, which is
        ``prune_count(sparsity, in·units)`` whenever ``sparsity·in`` is a whole number.

    Returns:
      bool keep mask (in, units), True where kept.

    Raises:
      ValueError: scores not 2-D, NaN/inf; sparsity outside [0, 1).
    """
    scores = _float(scores, "scores")
    if scores.ndim != 2:
        raise ValueError(f"scores has shape {scores.shape}; expected (in, units)")
    return ~masks.smallest_per_column(scores, masks.prune_count(sparsity, scores.shape[0]))


def gram(x):
    """``XᵀX`` of inputs ``x`` (n, in): float64 (in, in). Grams of batches add up to the Gram of all of them."""
    x = _rows(x)
    return x.T @ x


def _check_pattern(pattern, sparsity, block_size, shape):
    n, m = (int(p) for p in pattern)
    if not 1 <= n <= m:
        raise ValueError(f"pattern {pattern!r} must be (n, m) with 1 <= n <= m: n of every m inputs are kept")
    if shape[0] % m:
        raise ValueError(f"pattern {n}:{m} needs m={m} to divide the inputs of kernel of shape {shape}")
    if block_size % m:
        raise ValueError(f"pattern {n}:{m} needs m={m} to divide block_size={block_size}")
    if sparsity is not None and not np.isclose(masks.check_sparsity(sparsity), 1 - n / m):
        raise ValueError(f"sparsity {sparsity!r} contradicts pattern {n}:{m} (sparsity {1 - n / m}); pass None")
    return n, m


def _inverse_cholesky(hessian, damp):
    """Upper Cholesky factor ``U`` of ``(H + damp·mean(diag H)·I)⁻¹`` (``H⁻¹ = UᵀU``), as SparseGPT computes it:
    ``U_qq·U[q, q:]`` is the first row of ``(H_FF)⁻¹`` for ``F = q:in``, the rows not yet fixed, so
    ``W[q:] -= U[q, q:]ᵀ·w_q/U_qq`` is the OBS step that removes row ``q`` with the rows before it fixed."""
    hessian = hessian + damp * np.mean(np.diag(hessian)) * np.eye(len(hessian))
    try:
        lower_inv = np.linalg.inv(np.linalg.cholesky(hessian))
        return np.linalg.cholesky(lower_inv.T @ lower_inv).T
    except np.linalg.LinAlgError:
        raise ValueError(f"gram of shape {hessian.shape} is not positive definite with damp={damp}; "
                         "raise damp or use more calibration samples") from None


def _block_mask(w1, u1, start, stop, sparsity, per_output, dead1, silent1):
    """Unstructured pruned mask of one block (rows ``start:stop``), smallest ``w²/U_ii²`` first: the block prunes
    what brings the rows up to ``stop`` to their exact count, over the whole block (ties: lower flat index first)
    or per column (``per_output``; ties: lower row first). Weights already pruned (``dead1``) go first, and the
    block prunes at least them; rows of inputs never nonzero (``silent1``) score 0."""
    scores = np.square(w1) / np.square(np.diag(u1))[:, None]
    scores = np.where(dead1, -np.inf, np.where(silent1[:, None], 0.0, scores))
    if per_output:
        count = masks.prune_count(sparsity, stop) - masks.prune_count(sparsity, start)
        order = np.argsort(scores, axis=0, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(len(scores))[:, None].repeat(scores.shape[1], 1), axis=0)
        return rank < np.maximum(count, dead1.sum(axis=0))[None, :]
    units = w1.shape[1]
    count = masks.prune_count(sparsity, stop * units) - masks.prune_count(sparsity, start * units)
    return masks.select_smallest(scores, max(count, int(dead1.sum()))).reshape(scores.shape)


def obs_prune(kernel, gram, sparsity, block_size=128, damp=0.01, pattern=None, per_output=False, keep=None):
    """SparseGPT (arXiv 2301.00774, Algorithm 1): prunes a Dense kernel and updates its remaining weights so that
    ``X @ W`` is reconstructed, from the Gram matrix ``H = XᵀX`` alone (all output columns share ``H``).

    Inputs (rows) are processed in order, in blocks of ``block_size``. Within a block each row ``q`` is fixed in
    turn: its pruned entries are zeroed and the error ``err = w_q / U_qq`` moves to the later rows,
    ``W[q+1:] -= U[q, q+1:]ᵀ·err``, where ``U`` is the upper Cholesky factor of ``H⁻¹`` (the OBS update with the
    earlier rows fixed); a block's errors reach the later blocks at once, as in SparseGPT's lazy batches.

    Mask selection (SparseGPT's adaptive one): when a block starts, the block's smallest scores ``w²/U_ii²``
    are pruned, computed from the weights as updated so far. Counts are exact and cumulative: the rows ``0:stop``
    hold ``prune_count(sparsity, stop·units)`` pruned weights once block ``start:stop`` is done, so the kernel
    ends with exactly ``prune_count(sparsity, kernel.size)``, as ``masks.weight_mask`` (ties: lower flat index
    first); columns may end unequally sparse. With ``per_output=True`` each column counts on its own instead
    (``prune_count(sparsity, stop)`` per column, ties: lower row first): every unit ends with exactly
    ``prune_count(sparsity, in)`` pruned, ``per_output_masks``'s count. Small blocks constrain the mask (with
    ``block_size=1`` every row prunes the same share, per output: by position alone); keep them large (the default).

    With ``pattern=(n, m)`` (N:M), in every group of ``m`` consecutive inputs of each column exactly ``n`` weights
    are KEPT (2:4 keeps two of four), the ``m - n`` smallest scores of the group pruned when the group starts.

    Dead inputs (``H_ii == 0``, never nonzero in the calibration data) get ``H_ii = 1`` before damping, as SparseGPT
    does; they score 0, so their block prunes them before any live weight, but (unlike SparseGPT, which zeroes them
    all) only within the count: at sparsity 0 the kernel is returned unchanged.

    Args:
      kernel: Dense kernel (in, units) (a convolution's, reshaped to (kh·kw·in, out) with the matching ``gram``:
        ``patches.conv_gram``).
      gram: ``XᵀX`` (in, in) of the layer's calibration inputs (``gram``).
      sparsity: fraction in [0, 1) of the weights to prune; with ``pattern``, None or ``1 - n/m``.
      block_size: rows per block (>= 1; with ``pattern``, a multiple of ``m``).
      damp: added to the diagonal of ``H`` as a fraction of its mean (>= 0; SparseGPT's ``percdamp``).
      pattern: optional ``(n, m)``: N:M sparsity.
      per_output: unstructured masks count per output column instead of over the whole block.
      keep: optional bool (in, units), the current keep mask: weights it prunes stay pruned (masks only shrink; a
        block that already holds more pruned weights than its count prunes just those, unstructured only).

    Returns:
      ``(new_kernel, keep_mask)``: the updated kernel, zero where pruned, in the kernel's dtype when it is
      floating (computed in float64), else float64; bool keep mask (in, units), True where kept.

    Raises:
      ValueError: naming the bad value: kernel not 2-D, gram not (in, in), NaN/inf, sparsity outside [0, 1),
        block_size < 1, damp < 0, a pattern that is not 1 <= n <= m or whose m does not divide ``in`` or
        ``block_size``, a gram that is not positive definite after damping.
    """
    weights, hessian, sparsity, block_size, pattern = _check_obs(kernel, gram, sparsity, block_size, damp, pattern)
    was_pruned = np.zeros(weights.shape, bool) if keep is None else ~np.asarray(keep, bool).reshape(weights.shape)
    dead = np.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    upper = _inverse_cholesky(hessian, damp)
    pruned = np.zeros(weights.shape, bool)
    for start in range(0, len(weights), block_size):
        stop = min(start + block_size, len(weights))
        w1, u1 = weights[start:stop].copy(), upper[start:stop, start:stop]
        mask1 = np.zeros(w1.shape, bool) if pattern else _block_mask(w1, u1, start, stop, sparsity, per_output,
                                                                     was_pruned[start:stop], dead[start:stop])
        errors = _prune_block(w1, u1, mask1, pattern)
        weights[start:stop] = np.where(mask1, 0.0, w1)
        weights[stop:] -= upper[start:stop, stop:].T @ errors  # the block's errors reach the later rows at once
        pruned[start:stop] = mask1
    dtype = np.asarray(kernel).dtype
    return weights.astype(dtype if np.issubdtype(dtype, np.floating) else np.float64), ~pruned


def _check_obs(kernel, gram, sparsity, block_size, damp, pattern):
    """``obs_prune``'s arguments checked: float64 copies of kernel and gram, sparsity, block_size, pattern."""
    weights, hessian = _dense(kernel).copy(), _float(gram, "gram").copy()
    if hessian.shape != (weights.shape[0],) * 2:
        raise ValueError(f"gram has shape {hessian.shape}; expected {(weights.shape[0],) * 2} for kernel of shape "
                         f"{weights.shape}")
    if int(block_size) < 1:
        raise ValueError(f"block_size {block_size!r} must be at least 1")
    if not damp >= 0:
        raise ValueError(f"damp {damp!r} must be >= 0 (a fraction of the mean of diag(gram))")
    block_size = int(block_size)
    if pattern is not None:
        return weights, hessian, sparsity, block_size, _check_pattern(pattern, sparsity, block_size, weights.shape)
    return weights, hessian, masks.check_sparsity(sparsity), block_size, None


def _prune_block(w1, u1, mask1, pattern):
    """SparseGPT's inner loop over the rows of one block, in place: ``w1`` (rows, units) updated, ``mask1`` (pruned,
    filled group by group for an N:M ``pattern``); returns the errors (rows, units) for the later blocks."""
    errors = np.zeros_like(w1)
    for i in range(len(w1)):
        if pattern and i % pattern[1] == 0:
            group = slice(i, i + pattern[1])
            scores = np.square(w1[group]) / np.square(np.diag(u1)[group])[:, None]
            mask1[group] = masks.smallest_per_column(scores, pattern[1] - pattern[0])
        errors[i] = np.where(mask1[i], w1[i], 0.0) / u1[i, i]
        w1[i:] -= np.outer(u1[i, i:], errors[i])
    return errors


def refit_next_layer(x_kept, y_target, bias=True, damp=0.0):
    """Least-squares weights of the next layer once units were removed:
    ``min ||x_kept @ W + b - y_target||² + λ·||W||²`` with ``λ = damp·mean(diag(XcᵀXc))`` (the bias is not
    penalised; ``Xc`` is ``x_kept``, centred when ``bias``).

    Args:
      x_kept: (n, in_kept): the next layer's inputs with the removed units' columns dropped.
      y_target: (n, out): the next layer's original pre-activation outputs (bias included).
      bias: whether to fit a bias too.
      damp: ridge strength as a fraction of the mean diagonal (>= 0); 0 gives NumPy's minimum-norm lstsq solution.

    Returns:
      ``(weights (in_kept, out), bias (out,) or None)``, float64.

    Raises:
      ValueError: naming the shapes when x_kept and y_target differ in rows or are not 2-D; NaN/inf; damp < 0.
    """
    x, y = _float(x_kept, "x_kept"), _float(y_target, "y_target")
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x_kept has shape {x.shape} and y_target {y.shape}; expected (n, in_kept) and (n, out)")
    if not damp >= 0:
        raise ValueError(f"damp {damp!r} must be >= 0")
    x_mean, y_mean = (x.mean(axis=0), y.mean(axis=0)) if bias else (0.0, 0.0)
    xc, yc = x - x_mean, y - y_mean
    if damp > 0:
        hessian = xc.T @ xc
        weights = np.linalg.solve(hessian + damp * np.mean(np.diag(hessian)) * np.eye(len(hessian)), xc.T @ yc)
    else:
        weights = np.linalg.lstsq(xc, yc, rcond=None)[0]
    return weights, (y_mean - x_mean @ weights if bias else None)


def refit_from_gram(gram_ones, weights, bias, keep_rows, damp=0.0):
    """``refit_next_layer`` from statistics alone: the next layer refitted on its kept input rows so that its outputs
    ``X @ W + b`` (the original ones, all rows) are matched in least squares, from the Gram of ``[X, 1]``.

    With ``A = [X_K, 1]`` (kept columns, and a ones column when ``bias`` is fitted), the solution of
    ``min ||A @ [W'; b'] - (X @ W + b)||² + λ·||W'||²`` solves ``(AᵀA + λ·I') [W'; b'] = Aᵀ[X, 1] [W; b]``, and both
    sides are blocks of ``gram_ones``. ``λ = damp·mean(diag(X_KᵀX_K))``; the bias is not penalised.

    Args:
      gram_ones: (in + 1, in + 1), the Gram of the inputs with a ones column appended (``[X, 1]ᵀ[X, 1]``: the
        last row holds the column sums, its last entry the sample count).
      weights: (in, out), the next layer's current weights; bias: (out,) or None (no bias fitted).
      keep_rows: bool (in,), True for the input rows that stay.
      damp: ridge strength (>= 0); with 0 a singular system gets NumPy's least-squares solution.

    Returns:
      ``(new_weights (in, out), new_bias (out,) or None)``, float64: zero on the removed rows.

    Raises:
      ValueError: naming the shapes when they disagree; NaN/inf; damp < 0.
    """
    weights = _dense(weights)
    rows, out = weights.shape
    full = _float(gram_ones, "gram_ones")
    keep = np.asarray(keep_rows, bool).ravel()
    if full.shape != (rows + 1, rows + 1) or keep.shape != (rows,):
        raise ValueError(f"gram_ones has shape {full.shape} and keep_rows {keep.shape}; expected {(rows + 1,) * 2} "
                         f"and ({rows},) for weights of shape {weights.shape}")
    if not damp >= 0:
        raise ValueError(f"damp {damp!r} must be >= 0")
    with_bias = bias is not None
    b = np.zeros(out) if bias is None else _float(bias, "bias").reshape(out)
    target = np.concatenate([weights, b[None]], axis=0)  # [W; b]: (in + 1, out)
    columns = np.concatenate([np.flatnonzero(keep), [rows] if with_bias else []]).astype(int)
    lhs, rhs = full[np.ix_(columns, columns)], full[columns] @ target
    kept = int(keep.sum())
    if damp > 0 and kept:
        lhs = lhs + np.diag(np.r_[np.full(kept, damp * np.mean(np.diag(lhs)[:kept])), np.zeros(len(columns) - kept)])
    solved = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    new = np.zeros_like(weights)
    new[keep] = solved[:kept]
    return new, (solved[kept] if with_bias else None)


def lamp_scores(kernel):
    """LAMP scores (arXiv 2010.07611) of one layer's weights, float64 in the kernel's shape: with the weights
    sorted ascending by ``w²`` (ties: lower flat index first), ``score(u) = w_u² / Σ_{v >= u} w_v²``, the tail sum
    including ``u`` itself. The largest weight scores 1; all scores are in [0, 1] and comparable across layers
    (global scope). A zero weight whose tail is all zero scores 0 (an all-zero kernel scores 0 everywhere).

    Tied weights: the lower flat index comes first in the order, has the larger tail and the smaller score, so it is
    pruned first, as ``masks`` breaks ties.
    """
    kernel = _float(kernel, "kernel")
    squares = np.square(kernel).ravel()
    order = np.argsort(squares, kind="stable")
    sorted_sq = squares[order]
    tails = np.cumsum(sorted_sq[::-1])[::-1]
    scores = np.empty_like(squares)
    scores[order] = np.divide(sorted_sq, tails, out=np.zeros_like(sorted_sq), where=tails > 0)
    return scores.reshape(kernel.shape)


__all__ = ["gram", "input_norms", "input_sq_sums", "lamp_scores", "obs_prune", "per_output_masks",
           "refit_from_gram", "refit_next_layer", "taylor_scores", "taylor_unit_scores", "wanda_scores"]
