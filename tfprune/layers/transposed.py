"""Prunable transposed convolutions (Conv1DTranspose, Conv2DTranspose, Conv3DTranspose) for tf_keras and Keras 3.

A transposed convolution's kernel is (k..., filters, in): its **units (output filters) are axis -2** and axis -1
reads the input's channels, the other way round from a convolution. tfprune ranks it through its unit kernel, the
kernel with those two axes swapped, (k..., in, filters), units last like every other kind (``registry``'s
``TransposedLayout``); these layers take and give masks in that layout.

Both stacks' transposed convolutions read ``self.kernel`` and ``self.bias`` in their ``call``. The masks are kept
in the variables, as ``tfprune.layers.stored_masks`` describes (constraints; on Keras 3's JAX backend ``kernel`` and
``bias`` are properties returning the masked tensors).
"""

import numpy as np

from tfprune._env import keras3, tf
from tfprune.layers.stored_masks import (Keras3Ops, StoredMaskMethods, TfKerasKernelBias, add_masks, masked_property,
                                         prunable_classes)

ops = keras3.ops


class _SwappedUnits(StoredMaskMethods):
    """The unit kernel of a transposed convolution, for ``StoredMaskMethods``: ``_variables()``/``_masks()`` are
    [kernel, bias or None]; the unit kernel is the kernel with its last two axes swapped (``_swap``)."""

    def _masks(self):
        return [self.kernel_mask_variable, self.bias_mask_variable]

    def _unit_kernel(self, arrays):
        return self._swap(arrays[0])

    def _variable_keeps(self, kernel_keep, bias_keep):
        return [np.swapaxes(kernel_keep, -1, -2), bias_keep]


class _TfKerasTransposed(TfKerasKernelBias, _SwappedUnits):
    """tf_keras: constraints given to the variables at build (the layer's config keeps the user's own)."""

    @staticmethod
    def _swap(x):
        rank = x.shape.rank
        return tf.transpose(x, list(range(rank - 2)) + [rank - 1, rank - 2])


class _Keras3Transposed(Keras3Ops, _SwappedUnits):
    """Keras 3: masked ``kernel``/``bias`` properties on JAX, constraints on TensorFlow and PyTorch."""

    kernel = masked_property("kernel", "kernel_mask_variable")
    bias = masked_property("bias", "bias_mask_variable")

    def build(self, input_shape):
        super().build(input_shape)
        add_masks(self, dict(zip(("kernel", "bias"), self._variables())))

    def _variables(self):
        return [self.__dict__.get("_kernel_variable"), self.__dict__.get("_bias_variable")]

    @staticmethod
    def _swap(x):
        return ops.swapaxes(x, -1, -2)


_CLASSES = prunable_classes((_TfKerasTransposed, _Keras3Transposed),
                            ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"),
                            "kernel (k..., filters, in) and bias (filters,)", __name__)
TF_KERAS, KERAS3 = _CLASSES["tf_keras"], _CLASSES["keras3"]

__all__ = ["KERAS3", "TF_KERAS"]
