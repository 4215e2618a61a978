"""The EinsumDense family, both stacks: ``PrunableEinsumDense`` (a kernel of any shape its equation gives, and a
bias). Weight pruning always; units only where the equation makes it a Dense along the last axis (``dense_like``:
``btd,df->btf``, Gemma's feed-forward projections), since elsewhere the kernel's last axis need not be units. The
projections of ``PrunableMultiHeadAttention`` are these. Masks are held in the variables
(``tfprune.layers.stored_masks``).
"""

import numpy as np

from tfprune.layers.kinds import LayerKind, both_stacks
from tfprune.layers.stored_masks import Keras3KernelBias, TfKerasKernelBias, prunable_classes


class _TfKerasEinsum(TfKerasKernelBias):
    def _has_bias(self):
        return self.bias_axes is not None


_CLASSES = prunable_classes((_TfKerasEinsum, Keras3KernelBias), ("EinsumDense",),
                            "kernel (any shape its equation gives) and bias", __name__)
TF_KERAS, KERAS3 = _CLASSES["tf_keras"], _CLASSES["keras3"]


def _einsum_macs(layer, output_shape):
    """EinsumDense: every output element sums over the kernel axes its equation contracts (an output axis of
    unknown length, as ``output_shape=(None, f)`` leaves it, counts once: the MACs per position)."""
    inputs, out = layer.equation.split("->")
    kernel_axes = inputs.split(",")[1]
    contracted = [int(d) for a, d in zip(kernel_axes, layer.kernel.shape) if a not in out]
    positions = [1 if d is None else int(d) for d in output_shape[1:]]
    return int(np.prod(positions, dtype=np.int64)) * int(np.prod(contracted, dtype=np.int64))


def contracts_inputs(layer):
    """True when the equation sums over the kernel's axis -2 and outputs along its last (``ab,bc->ac``): the kernel
    is then laid out as a Dense kernel (..., inputs, outputs)."""
    inputs, output = layer.equation.split("->")
    kernel = inputs.split(",")[1].strip()
    return len(kernel) >= 2 and "." not in kernel and kernel[-2] not in output and kernel[-1] in output


def _parts(layer):
    inputs, output = layer.equation.split("->")
    source, kernel = (part.strip() for part in inputs.split(","))
    return source, kernel, output.strip()


def dense_like(layer):
    """True when ``layer`` is a Dense along its input's last axis: a 2-axis kernel (inputs, units) that contracts
    the input's last axis and makes the output's last, every other output axis the input's own, a bias on the units
    or none (``btd,df->btf``, ``ab,bc->ac``). Its kernel's last axis then holds units, sliced as a Dense's."""
    source, kernel, output = _parts(layer)
    if "." in source + kernel + output or len(kernel) != 2 or not source or not output:
        return False
    return (source[-1] == kernel[0] and output[-1] == kernel[1] and kernel[0] not in output
            and source[:-1] == output[:-1] and layer.bias_axes in (None, kernel[1]))


def _set_output_width(config, width):
    """The config with ``width`` units: ``output_shape``'s last entry (an int ``output_shape`` is the width)."""
    shape = config["output_shape"]
    return {**config, "output_shape": int(width) if isinstance(shape, int) else list(shape)[:-1] + [int(width)]}


ORDER = 70  # where these kinds come in the registry's table (and in messages)
KINDS = both_stacks(lambda layers, stack: [
    LayerKind(layers.EinsumDense, _CLASSES[stack]["EinsumDense"], "output_shape", macs=_einsum_macs,
              has_units=dense_like, set_width=_set_output_width, inputs_axis=contracts_inputs)])

__all__ = ["KERAS3", "KINDS", "ORDER", "TF_KERAS", "contracts_inputs", "dense_like"]
