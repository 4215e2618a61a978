"""Block arithmetic for block pruning, as pure NumPy functions: a kernel cut into blocks of consecutive inputs.

A block is ``units x inputs`` in TFLite's weight layout, where a FULLY_CONNECTED weight is ``(units, inputs)``:
block ``1x4`` is four consecutive inputs of one output unit, the block TFLite's sparse float kernel computes with,
``1x16`` the one of its int8 kernels. A Keras kernel is ``(..., inputs, units)`` (Dense ``(in, out)``, Conv2D
``(kh, kw, in, out)``), so a block spans ``inputs`` consecutive entries of axis -2 and ``units`` of axis -1, at one
position of the leading axes (one tap of a convolution).

Blocks are ranked by the *mean* of their squared weights (L2: the RMS, i.e. the L2 norm over sqrt(block size)) or
of their absolute weights (L1). The block counts are exact: ``prune_count(sparsity, blocks)`` blocks are pruned.

Ragged tails: where the block does not divide an axis, the last block of each row is shorter (a 1000-input kernel
in 1x16 blocks has 62 blocks of 16 and one of 8 per unit). TFLite's block format cannot hold such a block (the
converter stores whole blocks only and drops the rest), so tail blocks rank below every whole block: they are
pruned first, and a layer pruned to at least its share of tail blocks (1 in 63 blocks there) exports exactly in
the block format its sparse kernel computes. A layer that keeps tail weights (a sparsity below that share) is
exported in CSR instead, which the card says (``tfprune.tflite.sparse``).
"""

TAIL_SCORE = -1.0  # below every block's mean (>= 0): tail blocks are pruned first

import numpy as np

NORMS = ("l2", "l1")


def check_block(shape, block, name="kernel"):
    """Checks that ``block`` (units, inputs) can cut a kernel of ``shape``.

    Raises:
      ValueError: naming ``name`` and its shape: a kernel of rank < 2, a block entry below 1, or a block wider
        than the kernel's inputs (axis -2) or units (axis -1).
    """
    units, inputs = (int(b) for b in block)
    shape = tuple(int(d) for d in shape)
    if units < 1 or inputs < 1:
        raise ValueError(f"block {units}x{inputs} must have at least one unit and one input")
    if len(shape) < 2:
        raise ValueError(f"{name} has shape {shape}: block pruning needs a kernel with an inputs and a units axis "
                         "(rank >= 2)")
    if inputs > shape[-2] or units > shape[-1]:
        raise ValueError(f"block {units}x{inputs} (units x inputs) does not fit {name} of shape {shape}: it has "
                         f"{shape[-2]} inputs (axis -2) and {shape[-1]} units (axis -1)")


def grid(shape, block):
    """``(positions, input blocks, unit blocks)``: how many blocks of ``block`` cut a kernel of ``shape``."""
    units, inputs = block
    return (int(np.prod(shape[:-2], dtype=np.int64)), -(-int(shape[-2]) // inputs), -(-int(shape[-1]) // units))


def count(shape, block):
    """Number of blocks (whole and tail) of a kernel of ``shape``."""
    return int(np.prod(grid(shape, block)))


def _padded(array, block, fill):
    """``array`` as (positions, input blocks, inputs, unit blocks, units), padded with ``fill`` past its edges."""
    units, inputs = block
    p, ni, nu = grid(array.shape, block)
    flat = array.reshape(p, array.shape[-2], array.shape[-1])
    padded = np.full((p, ni * inputs, nu * units), fill, dtype=array.dtype)
    padded[:, :array.shape[-2], :array.shape[-1]] = flat
    return padded.reshape(p, ni, inputs, nu, units)


def scores(kernel, block, norm="l2"):
    """One score per block, 1-D in block order (position, input block, unit block): the RMS of its weights
    (``l2``) or their mean absolute value (``l1``); ``TAIL_SCORE`` for a tail block (module docstring).

    Raises:
      ValueError: ``check_block``; an unknown ``norm``.
    """
    if norm not in NORMS:
        raise ValueError(f"block norm {norm!r} is not one of {NORMS}")
    kernel = np.asarray(kernel, np.float64)
    check_block(kernel.shape, block)
    values = np.square(kernel) if norm == "l2" else np.abs(kernel)
    sums = _padded(values, block, 0.0).sum(axis=(2, 4))
    sizes = _padded(np.ones(kernel.shape), block, 0.0).sum(axis=(2, 4))
    means = sums / sizes
    return np.where(sizes < block[0] * block[1], TAIL_SCORE, np.sqrt(means) if norm == "l2" else means).ravel()


def alive(current, block):
    """Bool vector, one per block: True where the block keeps at least one weight in ``current`` (kernel shape)."""
    current = np.asarray(current, bool)
    return _padded(current, block, False).any(axis=(2, 4)).ravel()


def expand(keep, shape, block):
    """A block keep vector (``count(shape, block)``,) as a bool mask of the kernel's ``shape``."""
    units, inputs = block
    p, ni, nu = grid(shape, block)
    full = np.broadcast_to(np.asarray(keep, bool).reshape(p, ni, 1, nu, 1), (p, ni, inputs, nu, units))
    full = full.reshape(p, ni * inputs, nu * units)[:, :shape[-2], :shape[-1]]
    return full.reshape(shape)


def tail_inputs(shape, block):
    """Inputs in each row's last, shorter block (0 when the block divides the inputs axis)."""
    return int(shape[-2]) % block[1]


__all__ = ["NORMS", "TAIL_SCORE", "alive", "check_block", "count", "expand", "grid", "scores", "tail_inputs"]
