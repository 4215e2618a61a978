"""How a layer type's weights map to its **unit kernel** (the array the pruning methods rank, units on the last
axis) and how they are sliced when units or input channels are removed, as pure NumPy.

- ``KernelLayout``: one kernel whose last axis is the units (Dense, convolutions, Embedding), and a bias (units,).
- ``TransposedLayout``: a transposed convolution's kernel (k..., units, in): the unit kernel swaps the last axes.
- ``SeparableLayout``: a separable convolution's depthwise kernel, pointwise kernel (the unit kernel) and bias.
- ``GatedLayout``: a recurrent layer's kernel, recurrent kernel and bias, stacked by gate (``tfprune.recurrent``).
"""

import dataclasses

import numpy as np

from tfprune import recurrent


@dataclasses.dataclass(frozen=True)
class KernelLayout:
    """One kernel whose last axis is the units and whose axis ``in_axis`` reads the input's last axis, and an
    optional bias (units,): Dense, convolutions, Embedding."""
    in_axis: int = -2

    def unit_kernel(self, weights):
        """The kernel the pruning methods rank (units last), from the layer's ``[kernel, bias?]``."""
        return np.asarray(weights[0])

    def unit_shape(self, shape):
        """The unit kernel's shape for a kernel of ``shape``."""
        return tuple(shape)

    def bias(self, weights):
        """The bias (units,) among the layer's weights, or None."""
        return weights[1] if len(weights) > 1 else None

    def slice(self, weights, in_keep=None, out_keep=None):
        """``[kernel, bias?]`` with only the input rows ``in_keep`` and the units ``out_keep`` (None: all)."""
        weights = list(weights)
        if in_keep is not None:
            weights[0] = np.take(weights[0], in_keep, axis=self.in_axis)
        if out_keep is not None:
            weights = [np.take(w, out_keep, axis=-1) for w in weights]
        return weights


@dataclasses.dataclass(frozen=True)
class TransposedLayout:
    """A transposed convolution's kernel (k..., units, in) and bias (units,): the unit kernel swaps the last two
    axes, so the units are last (``tfprune.layers_transposed``)."""

    def unit_kernel(self, weights):
        return np.swapaxes(np.asarray(weights[0]), -1, -2)

    def unit_shape(self, shape):
        return tuple(shape[:-2]) + (shape[-1], shape[-2])

    def bias(self, weights):
        return weights[1] if len(weights) > 1 else None

    def slice(self, weights, in_keep=None, out_keep=None):
        weights = list(weights)
        if in_keep is not None:
            weights[0] = np.take(weights[0], in_keep, axis=-1)
        if out_keep is not None:
            weights[0] = np.take(weights[0], out_keep, axis=-2)
            weights[1:] = [np.take(w, out_keep, axis=-1) for w in weights[1:]]
        return weights


@dataclasses.dataclass(frozen=True)
class SeparableLayout:
    """A separable convolution's ``[depthwise (k..., in, m), pointwise (1..., in * m, units), bias?]``: the unit
    kernel is the pointwise kernel; input channel ``c`` is the depthwise channel ``c`` and the pointwise rows
    ``c * m + j`` (j < m), which is how Keras orders the depthwise outputs."""

    def unit_kernel(self, weights):
        return np.asarray(weights[1])

    def unit_shape(self, shape):
        """The unit kernel's shape for a pointwise kernel of ``shape`` (the kind's ``kernel_attr``)."""
        return tuple(shape)

    def bias(self, weights):
        return weights[2] if len(weights) > 2 else None

    def slice(self, weights, in_keep=None, out_keep=None):
        weights = list(weights)
        if in_keep is not None:
            multiplier = weights[0].shape[-1]
            rows = (np.asarray(in_keep, np.int64)[:, None] * multiplier + np.arange(multiplier)).ravel()
            weights[0] = np.take(weights[0], in_keep, axis=-2)
            weights[1] = np.take(weights[1], rows, axis=-2)
        if out_keep is not None:
            weights[1:] = [np.take(w, out_keep, axis=-1) for w in weights[1:]]
        return weights


@dataclasses.dataclass(frozen=True)
class GatedLayout:
    """A recurrent layer's ``[kernel, recurrent_kernel, bias?]`` with ``gates`` gates (``tfprune.recurrent``)."""
    gates: int

    def unit_kernel(self, weights):
        return recurrent.unit_kernel(weights[0], weights[1], self.gates)

    def slice(self, weights, in_keep=None, out_keep=None):
        return recurrent.slice_weights(weights, self.gates, in_keep, out_keep)


__all__ = ["GatedLayout", "KernelLayout", "SeparableLayout", "TransposedLayout"]
