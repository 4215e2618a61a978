"""The weight layout of Keras' recurrent layers (SimpleRNN, GRU, LSTM), as pure NumPy.

A recurrent layer of ``u`` units and ``g`` gates (SimpleRNN 1; GRU 3: z, r, h; LSTM 4: i, f, c, o) holds
``kernel`` (in, g*u), ``recurrent_kernel`` (u, g*u) and, with ``use_bias``, ``bias`` (g*u,) (a GRU with
``reset_after``: (2, g*u), input and recurrent biases). Keras lays the gates out as blocks of ``u`` columns, so
hidden unit ``j`` owns column ``gate * u + j`` of every block, in both kernels and the bias, and row ``j`` of the
recurrent kernel (its output fed back).

tfprune ranks such a layer through its **unit kernel**: the kernel and the recurrent kernel stacked along rows and
cut into gates, shape (in + u, g, u), units last like every other prunable kernel. Weight pruning ranks its entries
(input and recurrent weights together, one sparsity for the layer); unit pruning ranks its last axis: a unit's
score is the L2 norm of its incoming weights in every gate, input and recurrent, and a pruned unit loses all of
them and its bias entries in every gate.
"""

import numpy as np

GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}


def unit_kernel(kernel, recurrent_kernel, gates):
    """The unit kernel (in + u, gates, u) of a kernel (in, gates*u) and recurrent kernel (u, gates*u)."""
    kernel, recurrent_kernel = np.asarray(kernel), np.asarray(recurrent_kernel)
    units = recurrent_kernel.shape[0]
    if kernel.shape[-1] != gates * units or recurrent_kernel.shape != (units, gates * units):
        raise ValueError(f"kernel {kernel.shape} and recurrent kernel {recurrent_kernel.shape} are not the weights "
                         f"of a {gates}-gate recurrent layer")
    return np.concatenate([kernel, recurrent_kernel], axis=0).reshape(-1, gates, units)


def split_unit_kernel(array, input_dim):
    """Inverse of ``unit_kernel``: (kernel (in, g*u), recurrent kernel (u, g*u)) of a unit-kernel-shaped array."""
    array = np.asarray(array)
    rows, gates, units = array.shape
    flat = array.reshape(rows, gates * units)
    return flat[:input_dim], flat[input_dim:]


def bias_of_units(keep, bias_shape, gates):
    """A per-unit vector (u,) spread over every gate of a bias of ``bias_shape`` ((g*u,) or GRU's (2, g*u))."""
    return np.broadcast_to(np.tile(np.asarray(keep), gates), bias_shape).copy()


def gate_columns(kept_units, units, gates):
    """Column indices (into a g*u axis) of the units ``kept_units`` in every gate, gate by gate."""
    kept_units = np.asarray(kept_units, np.int64)
    return (np.arange(gates, dtype=np.int64)[:, None] * units + kept_units[None, :]).ravel()


def slice_weights(weights, gates, in_keep=None, out_keep=None):
    """``[kernel, recurrent_kernel, bias?]`` with only the input rows ``in_keep`` and the units ``out_keep`` (their
    columns in every gate, and their rows of the recurrent kernel); None keeps all."""
    kernel, recurrent_kernel, *bias = [np.asarray(w) for w in weights]
    if in_keep is not None:
        kernel = np.take(kernel, in_keep, axis=0)
    if out_keep is not None:
        columns = gate_columns(out_keep, recurrent_kernel.shape[0], gates)
        kernel = np.take(kernel, columns, axis=-1)
        recurrent_kernel = np.take(np.take(recurrent_kernel, out_keep, axis=0), columns, axis=-1)
        bias = [np.take(b, columns, axis=-1) for b in bias]
    return [kernel, recurrent_kernel, *bias]


__all__ = ["GATES", "bias_of_units", "gate_columns", "slice_weights", "split_unit_kernel", "unit_kernel"]
