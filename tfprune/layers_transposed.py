"""Prunable transposed convolutions (Conv1DTranspose, Conv2DTranspose, Conv3DTranspose) for tf_keras and Keras 3.

A transposed convolution's kernel is (k..., filters, in): its **units (output filters) are axis -2** and axis -1
reads the input's channels, the other way round from a convolution. tfprune ranks it through its unit kernel, the
kernel with those two axes swapped, (k..., in, filters), units last like every other kind (``registry``'s
``TransposedLayout``); these layers take and give masks in that layout.

Both stacks' transposed convolutions read ``self.kernel`` and ``self.bias`` in their ``call``. The masks are kept
the way ``tfprune.layers_rnn`` keeps a recurrent layer's: the variables hold the zeros (``set_masks`` zeroes them,
constraints multiply them by the masks after every optimizer update), and on Keras 3's JAX backend ``kernel`` and
``bias`` are properties returning the masked tensors.
"""

import numpy as np

from tfprune._env import keras, keras3, tf
from tfprune.layers_keras3 import MaskedConstraint
from tfprune.layers_rnn import MaskedThenInner, TfKerasOps
from tfprune.layers_rnn_keras3 import Keras3Ops, masked_property

ops = keras3.ops


class _UnitLayout:
    """The methods the library uses, over ``_kernel_variables()`` -> (kernel, bias or None) and
    ``mask_variables()``, with the kernel's last two axes swapped (``_swap``, this stack's transpose)."""

    def _masks(self):
        return self.kernel_mask_variable, self.bias_mask_variable

    def mask_variables(self):
        """The mask variables (kernel, and bias when there is one)."""
        return [m for m in self._masks() if m is not None]

    @property
    def kernel_mask(self):
        """The mask of the unit kernel (k..., in, filters): 1 = kept."""
        return self._swap(self.kernel_mask_variable)

    def masked_weights(self):
        """``[kernel (k..., filters, in), bias?]`` with the masks applied: the weights of the plain twin."""
        return [self._multiply(v, m) for v, m in zip(self._kernel_variables(), self._masks()) if v is not None]

    def masked_kernel(self):
        """The unit kernel (k..., in, filters) as the layer computes with it."""
        return self._swap(self.masked_weights()[0])

    def copy_plain(self, plain):
        """Copies the kernel and bias of the plain layer ``plain`` (same config); the masks stay as they are."""
        for variable, value in zip([v for v in self._kernel_variables() if v is not None], plain.get_weights()):
            variable.assign(value)

    def set_masks(self, kernel_keep, bias_keep=None):
        """Sets the masks and zeroes the pruned weights' variables.

        Args:
          kernel_keep: bool array of the unit kernel's shape (k..., in, filters), True = kept.
          bias_keep: bool vector (filters,) or None (bias mask left as it is).
        """
        kernel, bias = self._kernel_variables()
        keep = np.swapaxes(np.asarray(kernel_keep, bool), -1, -2)
        self.kernel_mask_variable.assign(keep.astype(self._numpy(self.kernel_mask_variable).dtype))
        kernel.assign(self._numpy(kernel) * keep)
        if bias is not None and bias_keep is not None:
            bias_keep = np.asarray(bias_keep, bool)
            self.bias_mask_variable.assign(bias_keep.astype(self._numpy(self.bias_mask_variable).dtype))
            bias.assign(self._numpy(bias) * bias_keep)


class _TfKerasTransposed(TfKerasOps, _UnitLayout):
    """tf_keras: constraints given to the variables at build (the layer's config keeps the user's own)."""

    def build(self, input_shape):
        originals = self.kernel_constraint, self.bias_constraint
        self.kernel_constraint = MaskedThenInner(self, "kernel_mask_variable", originals[0])
        if self.use_bias:
            self.bias_constraint = MaskedThenInner(self, "bias_mask_variable", originals[1])
        try:
            super().build(input_shape)
        finally:
            self.kernel_constraint, self.bias_constraint = originals
        self.kernel_mask_variable = self.add_weight(
            name="kernel_mask", shape=self.kernel.shape, dtype=self.kernel.dtype,
            initializer=keras.initializers.Ones(), trainable=False)
        self.bias_mask_variable = None if self.bias is None else self.add_weight(
            name="bias_mask", shape=self.bias.shape, dtype=self.bias.dtype, initializer=keras.initializers.Ones(),
            trainable=False)

    def _kernel_variables(self):
        return self.kernel, self.bias

    @staticmethod
    def _swap(x):
        rank = x.shape.rank
        return tf.transpose(x, list(range(rank - 2)) + [rank - 1, rank - 2])


class _Keras3Transposed(Keras3Ops, _UnitLayout):
    """Keras 3: masked ``kernel``/``bias`` properties on JAX, constraints on TensorFlow and PyTorch."""

    kernel = masked_property("kernel", "kernel_mask_variable")
    bias = masked_property("bias", "bias_mask_variable")

    def build(self, input_shape):
        super().build(input_shape)
        for name in ("kernel", "bias"):
            variable = self.__dict__.get(f"_{name}_variable")
            mask = None if variable is None else self.add_weight(
                name=f"{name}_mask", shape=variable.shape, initializer="ones", trainable=False, dtype=variable.dtype)
            setattr(self, f"{name}_mask_variable", mask)
            if mask is not None and keras3.backend.backend() != "jax":
                variable.constraint = MaskedConstraint(mask, variable.constraint)

    def _kernel_variables(self):
        return self.__dict__.get("_kernel_variable"), self.__dict__.get("_bias_variable")

    @staticmethod
    def _swap(x):
        return ops.swapaxes(x, -1, -2)


def _classes(base, layers, register, stack):
    out = {}
    for name in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
        cls = type(f"Prunable{name}", (base, getattr(layers, name)), {
            "__doc__": f"{stack} ``{name}`` whose kernel (k..., filters, in) and bias (filters,) are multiplied by "
                       "0/1 masks (held in the variables; see ``tfprune.layers_transposed``).",
            "__module__": __name__})
        out[name] = register(package="tfprune")(cls)
    return out


TF_KERAS = _classes(_TfKerasTransposed, keras.layers, keras.utils.register_keras_serializable, "tf_keras")
KERAS3 = _classes(_Keras3Transposed, keras3.layers, keras3.saving.register_keras_serializable, "Keras 3")

__all__ = ["KERAS3", "TF_KERAS"]
