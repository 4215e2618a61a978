"""How a layer type's weights map to its **unit kernel** (the array the pruning methods rank, units on the last
axis) and how they are sliced when units or input channels are removed, as pure NumPy.

- ``KernelLayout``: one kernel whose last axis is the units (Dense, convolutions, Embedding), and a bias (units,).
- ``TransposedLayout``: a transposed convolution's kernel (k..., units, in): the unit kernel swaps the last axes.
- ``SeparableLayout``: a separable convolution's depthwise kernel, pointwise kernel (the unit kernel) and bias.
- ``HeadLayout``: a MultiHeadAttention's query, key, value and output projections, one column per head.
- ``BidirectionalLayout``: a Bidirectional's two recurrent layers, their unit kernels stacked (units coupled).
- ``GatedLayout``: a recurrent layer's kernel, recurrent kernel and bias, stacked by gate
(``tfprune.layers.recurrent``).
"""

import dataclasses

import numpy as np

from tfprune.layers import recurrent


def multiplied(channels, multiplier):
    """The positions ``c * m + j`` (j < m) of input channels ``channels`` after a depth multiplier ``m``, in order:
    how Keras lays out a depthwise convolution's outputs."""
    return (np.asarray(channels, np.int64)[:, None] * int(multiplier) + np.arange(int(multiplier))).ravel()


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

    def weight_keeps(self, kernel_keep, bias_keep, shapes):
        """The inverse of ``unit_kernel`` for masks: one bool array per weight of ``shapes`` (the layer's weight
        shapes in ``get_weights`` order, None for an absent one), None where that weight's mask stays as it is."""
        return [kernel_keep, None if len(shapes) < 2 or shapes[1] is None else bias_keep]

    def bias(self, weights):
        """The bias (units,) among the layer's weights, or None."""
        return weights[1] if len(weights) > 1 else None

    def input_rows(self, layer, positions):  # pylint: disable=unused-argument
        """(axis, indices) of the unit kernel that read the input's last-axis ``positions`` (group pruning zeroes
        them)."""
        return -2, np.asarray(positions, np.int64)

    def slice(self, weights, in_keep=None, out_keep=None):
        """``[kernel, bias?]`` with only the input rows ``in_keep`` and the units ``out_keep`` (None: all)."""
        weights = list(weights)
        if in_keep is not None:
            weights[0] = np.take(weights[0], in_keep, axis=self.in_axis)
        if out_keep is not None:
            weights = [np.take(w, out_keep, axis=-1) for w in weights]
        return weights


@dataclasses.dataclass(frozen=True)
class DepthwiseLayout(KernelLayout):
    """A DepthwiseConv2D's kernel (k..., in, m) and bias (in * m,): no units of its own; input channel ``c`` is its
    kernel's ``[..., c, :]`` and its outputs (and bias entries) ``c * m ... c * m + m - 1``."""

    def slice(self, weights, in_keep=None, out_keep=None):
        weights = list(weights)
        if in_keep is not None:
            multiplier = weights[0].shape[-1]
            weights[0] = np.take(weights[0], in_keep, axis=-2)
            if len(weights) > 1:
                weights[1] = np.take(weights[1], multiplied(in_keep, multiplier), axis=-1)
        return weights


@dataclasses.dataclass(frozen=True)
class TransposedLayout:
    """A transposed convolution's kernel (k..., units, in) and bias (units,): the unit kernel swaps the last two
    axes, so the units are last (``tfprune.layers.transposed``)."""

    def unit_kernel(self, weights):
        return np.swapaxes(np.asarray(weights[0]), -1, -2)

    def unit_shape(self, shape):
        return tuple(shape[:-2]) + (shape[-1], shape[-2])

    def weight_keeps(self, kernel_keep, bias_keep, shapes):
        return [np.swapaxes(kernel_keep, -1, -2), None if shapes[1] is None else bias_keep]

    def input_rows(self, layer, positions):  # pylint: disable=unused-argument
        return -2, np.asarray(positions, np.int64)  # the unit kernel is (k..., in, units)

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

    def weight_keeps(self, kernel_keep, bias_keep, shapes):
        return [None, kernel_keep, None if shapes[2] is None else bias_keep]

    def input_rows(self, layer, positions):
        """Input channel ``c`` is read by the pointwise rows ``c * m + j``."""
        return -2, multiplied(positions, layer.depth_multiplier)

    def bias(self, weights):
        return weights[2] if len(weights) > 2 else None

    def slice(self, weights, in_keep=None, out_keep=None):
        weights = list(weights)
        if in_keep is not None:
            rows = multiplied(in_keep, weights[0].shape[-1])
            weights[0] = np.take(weights[0], in_keep, axis=-2)
            weights[1] = np.take(weights[1], rows, axis=-2)
        if out_keep is not None:
            weights[1:] = [np.take(w, out_keep, axis=-1) for w in weights[1:]]
        return weights


@dataclasses.dataclass(frozen=True)
class HeadLayout:
    """A MultiHeadAttention's ``[query, key, value, output]`` kernels, each followed by its bias when the layer has
    biases: query/key (in, heads, key_dim), value (in, heads, value_dim), output (heads, value_dim, out). The unit
    kernel has one column per **head**: every weight of that head in the four projections (its query, key and value
    columns and its output rows). A head is removed from all four; the layer's input and output widths stay."""

    @staticmethod
    def kernels(weights):
        """The four kernels among the layer's weights (with biases: every second one)."""
        return list(weights[::2]) if len(weights) == 8 else list(weights)

    @staticmethod
    def _columns(kernel, head_axis):
        return np.moveaxis(np.asarray(kernel), head_axis, -1).reshape(-1, kernel.shape[head_axis])

    def unit_kernel(self, weights):
        kernels = self.kernels(weights)
        return np.concatenate([self._columns(k, self._head_axis(i)) for i, k in enumerate(kernels)])

    @staticmethod
    def _head_axis(index):
        return 0 if index == 3 else 1  # query/key/value kernels (in, heads, dim); output kernel (heads, dim, out)

    def unit_shape(self, shapes):
        """The unit kernel's shape (weights, heads) for the four kernels' ``shapes``."""
        heads = shapes[0][1]
        return (sum(int(np.prod(shape)) // heads for shape in shapes), heads)

    def split(self, unit_keep, shapes):
        """The unit kernel's mask ``unit_keep`` as the four kernels' masks (``shapes``: the kernels' shapes)."""
        out, start = [], 0
        for index, shape in enumerate(shapes):
            head_axis = self._head_axis(index)
            rest = tuple(d for a, d in enumerate(shape) if a != head_axis)
            size = int(np.prod(rest))
            out.append(np.moveaxis(unit_keep[start:start + size].reshape(rest + (shape[head_axis],)), -1, head_axis))
            start += size
        return out

    def weight_keeps(self, kernel_keep, bias_keep, shapes):
        """Per weight of ``shapes`` (query kernel, its bias or None, key..., value..., output...): the four kernels'
        masks, and a pruned head's query, key and value biases (heads, dim) when ``bias_keep`` (heads,) is given."""
        keeps = []
        for index, keep in enumerate(self.split(kernel_keep, [shapes[2 * i] for i in range(4)])):
            bias_shape = shapes[2 * index + 1]
            bias = None
            if bias_keep is not None and bias_shape is not None and index < 3:
                bias = np.broadcast_to(np.asarray(bias_keep, bool)[:, None], bias_shape)
            keeps += [keep, bias]
        return keeps

    def bias(self, weights):  # no bias per head: a dead head contributes through no weight at all
        return None

    def slice(self, weights, in_keep=None, out_keep=None):
        weights, step = list(weights), 2 if len(weights) == 8 else 1
        if in_keep is not None:  # query, key and value read the (one) input
            for i in range(3):
                weights[i * step] = np.take(weights[i * step], in_keep, axis=0)
        if out_keep is not None:
            for i, w in enumerate(weights):
                projection, is_bias = divmod(i, step)
                if projection < 3:  # (in, heads, dim) kernels, (heads, dim) biases
                    weights[i] = np.take(w, out_keep, axis=0 if is_bias else 1)
                elif not is_bias:  # the output kernel (heads, dim, out); its bias (out,) stays
                    weights[i] = np.take(w, out_keep, axis=0)
        return weights


@dataclasses.dataclass(frozen=True)
class GatedLayout:
    """A recurrent layer's ``[kernel, recurrent_kernel, bias?]`` with ``gates`` gates (``tfprune.layers.recurrent``)."""
    gates: int

    def unit_kernel(self, weights):
        return recurrent.unit_kernel(weights[0], weights[1], self.gates)

    def weight_keeps(self, kernel_keep, bias_keep, shapes):
        """[kernel, recurrent kernel, bias] masks of a unit-kernel mask (in + u, gates, u) and a per-unit bias mask."""
        keeps = list(recurrent.split_unit_kernel(kernel_keep, shapes[0][0]))
        if shapes[2] is None or bias_keep is None:
            return keeps + [None]
        return keeps + [recurrent.bias_of_units(bias_keep, shapes[2], self.gates)]

    def input_rows(self, layer, positions):  # pylint: disable=unused-argument
        return 0, np.asarray(positions, np.int64)  # the unit kernel is (in + u, gates, u)

    def slice(self, weights, in_keep=None, out_keep=None):
        return recurrent.slice_weights(weights, self.gates, in_keep, out_keep)


@dataclasses.dataclass(frozen=True)
class BidirectionalLayout:
    """A Bidirectional's weights: its forward layer's ``[kernel, recurrent_kernel, bias?]`` then its backward
    layer's (either SimpleRNN, GRU or LSTM: the gates are read from the recurrent kernel (u, gates * u)). The unit
    kernel stacks the two ``GatedLayout`` unit kernels, (in + u, gates, 2, u): unit ``j`` of both directions is one
    unit."""

    @staticmethod
    def _halves(weights):
        half = len(weights) // 2
        recurrent_kernel = np.asarray(weights[1])
        return GatedLayout(recurrent_kernel.shape[1] // recurrent_kernel.shape[0]), weights[:half], weights[half:]

    def input_rows(self, layer, positions):  # pylint: disable=unused-argument
        return 0, np.asarray(positions, np.int64)  # the unit kernel is (in + u, gates, 2, u)

    def unit_kernel(self, weights):
        gated, forward, backward = self._halves(weights)
        return np.stack([gated.unit_kernel(forward), gated.unit_kernel(backward)], axis=-2)

    def weight_keeps(self, kernel_keep, bias_keep, shapes):
        """Both directions' [kernel, recurrent kernel, bias] masks (``[..., 0, :]`` forward, ``[..., 1, :]``
        backward; ``shapes`` holds six entries, None for absent biases)."""
        units, gates_units = shapes[1]
        gated = GatedLayout(gates_units // units)
        return (gated.weight_keeps(kernel_keep[..., 0, :], bias_keep, shapes[:3])
                + gated.weight_keeps(kernel_keep[..., 1, :], bias_keep, shapes[3:]))

    def bias(self, weights):  # dead recurrent units are proven 0 by running them (``surgery``), not from a bias
        return None

    def slice(self, weights, in_keep=None, out_keep=None):
        gated, forward, backward = self._halves(weights)
        return gated.slice(forward, in_keep, out_keep) + gated.slice(backward, in_keep, out_keep)


@dataclasses.dataclass(frozen=True)
class SeparableDepthwiseLayout:
    """A separable convolution pruned in its depthwise kernel only (``pruned_kernels="depthwise"``): the unit kernel
    is the depthwise kernel (k..., in, m), weight pruning only (its last axis is the depth multiplier)."""

    def unit_kernel(self, weights):
        return np.asarray(weights[0])

    def weight_keeps(self, kernel_keep, bias_keep, shapes):  # pylint: disable=unused-argument
        return [kernel_keep, None, None]


@dataclasses.dataclass(frozen=True)
class SeparableBothLayout:
    """A separable convolution pruned in both kernels (``pruned_kernels="both"``): the unit kernel is every
    depthwise then pointwise weight, as one column (weights, 1): weight pruning only."""

    def unit_kernel(self, weights):
        return np.concatenate([np.ravel(w) for w in weights[:2]])[:, None]

    def weight_keeps(self, kernel_keep, bias_keep, shapes):  # pylint: disable=unused-argument
        depthwise, pointwise = shapes[:2]
        flat, size = np.ravel(kernel_keep), int(np.prod(depthwise))
        return [flat[:size].reshape(depthwise), flat[size:].reshape(pointwise), None]


@dataclasses.dataclass(frozen=True)
class AxisLayout:
    """A custom layer's prunable weights (``tfprune.layers.custom``), each with its unit axis ``axis`` moved last
    and flattened to (n, units), stacked; with ``axis`` None, every weight as one column (all weights, 1)."""
    axis: object = None

    def unit_kernel(self, weights):
        if self.axis is None:
            return np.concatenate([np.ravel(w) for w in weights])[:, None]
        return np.concatenate([np.moveaxis(np.asarray(w), self.axis, -1).reshape(-1, np.shape(w)[self.axis])
                               for w in weights])

    def unit_shape(self, shapes):
        """The unit kernel's shape for weights of ``shapes``."""
        sizes = [int(np.prod(shape)) for shape in shapes]
        if self.axis is None:
            return (sum(sizes), 1)
        return (sum(size // shape[self.axis] for size, shape in zip(sizes, shapes)), shapes[0][self.axis])

    def weight_keeps(self, kernel_keep, bias_keep, shapes):  # pylint: disable=unused-argument
        out, start = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            if self.axis is None:
                out.append(kernel_keep[start:start + size, 0].reshape(shape))
            else:
                moved = tuple(np.moveaxis(np.empty(shape, np.int8), self.axis, -1).shape)
                size //= shape[self.axis]
                out.append(np.moveaxis(kernel_keep[start:start + size].reshape(moved), -1, self.axis))
            start += size
        return out


__all__ = ["AxisLayout", "BidirectionalLayout", "DepthwiseLayout", "GatedLayout", "HeadLayout", "KernelLayout",
           "SeparableBothLayout", "SeparableDepthwiseLayout", "SeparableLayout", "TransposedLayout", "multiplied"]
