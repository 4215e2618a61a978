"""The EinsumDense family, both stacks: ``PrunableEinsumDense`` (a kernel of any shape its equation gives, and a
bias), weight pruning only (its kernel's last axis need not be units). The projections of
``PrunableMultiHeadAttention`` are these. Masks are held in the variables (``tfprune.layers.stored_masks``).
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
    """EinsumDense: every output element sums over the kernel axes its equation contracts."""
    inputs, out = layer.equation.split("->")
    kernel_axes = inputs.split(",")[1]
    contracted = [int(d) for a, d in zip(kernel_axes, layer.kernel.shape) if a not in out]
    return int(np.prod(output_shape[1:], dtype=np.int64)) * int(np.prod(contracted, dtype=np.int64))


def contracts_inputs(layer):
    """True when the equation sums over the kernel's axis -2 and outputs along its last (``ab,bc->ac``): the kernel
    is then laid out as a Dense kernel (..., inputs, outputs)."""
    inputs, output = layer.equation.split("->")
    kernel = inputs.split(",")[1].strip()
    return len(kernel) >= 2 and "." not in kernel and kernel[-2] not in output and kernel[-1] in output


ORDER = 70  # where these kinds come in the registry's table (and in messages)
KINDS = both_stacks(lambda layers, stack: [
    LayerKind(layers.EinsumDense, _CLASSES[stack]["EinsumDense"], "output_shape", macs=_einsum_macs,
              has_units=False, inputs_axis=contracts_inputs)])

__all__ = ["KERAS3", "KINDS", "ORDER", "TF_KERAS", "contracts_inputs"]
