"""Prunable tf_keras layers with one kernel: Dense, Conv1D/2D/3D, DepthwiseConv2D and Embedding compute with
``kernel * kernel_mask`` (and ``bias * bias_mask``); EinsumDense holds its masks in the variables
(``tfprune.layers.stored_masks``).

The masks are non-trainable weights of the layer, so they are saved and loaded with the model (``.keras`` and
``.h5``) and copied to every replica under ``tf.distribute``. Which Keras class each one replaces, and how it is
unit-indexed and sliced, is written in ``tfprune.layers.registry``. Because the forward pass multiplies by the mask, the
gradient of a pruned weight is exactly zero and its effective value stays exactly 0 through any amount of training,
whatever the optimizer does to the underlying variable.
"""

import numpy as np

from tfprune._env import keras, tf
from tfprune.layers.schedule_step import ScheduleStep
from tfprune.layers.stored_masks import TfKerasKernelBias


class _MaskedKernelMixin(ScheduleStep):
    """Adds ``kernel_mask`` (kernel shape) and ``bias_mask`` (units) to a layer with a kernel and ``bias``; the
    kernel is the attribute ``_KERNEL`` names (``kernel``; ``depthwise_kernel`` for DepthwiseConv2D)."""

    _KERNEL = "kernel"

    @property
    def _kernel_variable(self):
        return getattr(self, self._KERNEL)

    def build(self, input_shape=None):
        super().build(input_shape)
        self._add_masks()

    def _add_masks(self):
        # ON_READ/ONLY_FIRST_REPLICA is not needed: masks are only assigned in cross-replica context (callbacks),
        # which writes the same value to every replica's copy of a mirrored variable.
        self.kernel_mask = self.add_weight(
            name="kernel_mask", shape=self._kernel_variable.shape, dtype=self._kernel_variable.dtype,
            initializer=keras.initializers.Ones(), trainable=False)
        self.bias_mask = None
        if getattr(self, "bias", None) is not None:
            self.bias_mask = self.add_weight(
                name="bias_mask", shape=self.bias.shape, dtype=self.bias.dtype,
                initializer=keras.initializers.Ones(), trainable=False)

    def masked_kernel(self):
        return self._kernel_variable * self.kernel_mask

    def masked_bias(self):
        bias = getattr(self, "bias", None)
        return None if bias is None else bias * self.bias_mask

    def masked_weights(self):
        """``[kernel, bias?]`` with the masks applied: the weights of the plain twin."""
        bias = self.masked_bias()
        return [self.masked_kernel()] + ([] if bias is None else [bias])

    def mask_variables(self):
        """The mask variables (``kernel_mask``, and ``bias_mask`` when there is a bias)."""
        return [m for m in (self.kernel_mask, self.bias_mask) if m is not None]

    def copy_plain(self, plain):
        """Copies the kernel and bias of the plain layer ``plain`` (same config); the masks stay as they are."""
        self._kernel_variable.assign(getattr(plain, self._KERNEL))
        if self.bias_mask is not None:
            self.bias.assign(plain.bias)

    def set_masks(self, kernel_keep, bias_keep=None):
        """Sets the masks from bool arrays (True = kept) and zeroes the pruned weights' variables too.

        Args:
          kernel_keep: bool array of the kernel's shape.
          bias_keep: bool vector (units,) or None (bias mask left as it is).
        """
        kernel_keep = np.asarray(kernel_keep, bool)
        kernel = self._kernel_variable
        dtype = kernel.dtype.as_numpy_dtype
        self.kernel_mask.assign(kernel_keep.astype(dtype))
        kernel.assign(kernel.numpy() * kernel_keep)
        if self.bias_mask is not None and bias_keep is not None:
            bias_keep = np.asarray(bias_keep, bool)
            self.bias_mask.assign(bias_keep.astype(dtype))
            self.bias.assign(self.bias.numpy() * bias_keep)


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableDense(_MaskedKernelMixin, keras.layers.Dense):
    """``tf_keras.layers.Dense`` whose kernel (in, units) is multiplied by a fixed 0/1 mask in every call.

    Extra weights: ``kernel_mask`` (in, units) and ``bias_mask`` (units,), non-trainable, 1 = kept. Same config
    as Dense, so ``get_config``/``from_config`` and saving work unchanged.
    """


    def call(self, inputs):
        kernel = self.masked_kernel()
        if inputs.dtype.base_dtype != self._compute_dtype_object.base_dtype:
            inputs = tf.cast(inputs, self._compute_dtype_object)
        if inputs.shape.rank == 2:
            outputs = tf.matmul(inputs, kernel)
        else:
            outputs = tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]])
            if not tf.executing_eagerly():
                outputs.set_shape(inputs.shape[:-1].concatenate([self.units]))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.masked_bias())
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


class _MaskedConvMixin(_MaskedKernelMixin):
    """``call`` of tf_keras' convolution base class (``base_conv.Conv.call``, groups == 1) with the masked kernel
    and bias: causal padding (Conv1D), bias in either data format, the static output shape."""


    def call(self, inputs):
        input_shape = inputs.shape
        if self._is_causal:
            inputs = tf.pad(inputs, self._compute_causal_padding(inputs))
        outputs = self.convolution_op(inputs, self.masked_kernel())
        if self.use_bias:
            if self.rank == 1 and self._channels_first:  # nn.bias_add does not accept this layout
                outputs += tf.reshape(self.masked_bias(), (1, self.filters, 1))
            else:
                outputs = tf.nn.bias_add(outputs, self.masked_bias(), data_format=self._tf_data_format)
        if not tf.executing_eagerly() and input_shape.rank:
            outputs.set_shape(self.compute_output_shape(input_shape))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableConv1D(_MaskedConvMixin, keras.layers.Conv1D):
    """``tf_keras.layers.Conv1D`` whose kernel (k, in, filters) and bias (filters,) are multiplied by 0/1 masks."""


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableConv2D(_MaskedConvMixin, keras.layers.Conv2D):
    """``tf_keras.layers.Conv2D`` whose kernel (kh, kw, in, filters) is multiplied by a fixed 0/1 mask.

    Extra weights: ``kernel_mask`` (kh, kw, in, filters) and ``bias_mask`` (filters,), non-trainable, 1 = kept.
    """


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableConv3D(_MaskedConvMixin, keras.layers.Conv3D):
    """``tf_keras.layers.Conv3D`` whose kernel (kd, kh, kw, in, filters) and bias are multiplied by 0/1 masks."""


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableDepthwiseConv2D(_MaskedKernelMixin, keras.layers.DepthwiseConv2D):
    """``tf_keras.layers.DepthwiseConv2D`` whose depthwise kernel (kh, kw, in, multiplier) and bias (in * multiplier,)
    are multiplied by 0/1 masks (weight pruning only: its channels follow its input, it has no units of its own)."""

    _KERNEL = "depthwise_kernel"


    def call(self, inputs):  # tf_keras' DepthwiseConv2D.call with the masked kernel and bias
        outputs = keras.backend.depthwise_conv2d(inputs, self.masked_kernel(), strides=self.strides,
                                                 padding=self.padding, dilation_rate=self.dilation_rate,
                                                 data_format=self.data_format)
        if self.use_bias:
            outputs = keras.backend.bias_add(outputs, self.masked_bias(), data_format=self.data_format)
        if self.activation is not None:
            return self.activation(outputs)
        return outputs


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableEmbedding(_MaskedKernelMixin, keras.layers.Embedding):
    """``tf_keras.layers.Embedding`` whose table (vocabulary, output_dim) is multiplied by a 0/1 mask; its units are
    the embedding dimensions (columns). Dense inputs only (``sparse=False``)."""

    _KERNEL = "embeddings"


    def call(self, inputs):  # tf_keras' Embedding.call (dense ids) with the masked table
        if inputs.dtype not in (tf.int32, tf.int64):
            inputs = tf.cast(inputs, "int32")
        outputs = tf.nn.embedding_lookup(self.masked_kernel(), inputs)
        if self._dtype_policy.compute_dtype != self._dtype_policy.variable_dtype:
            outputs = tf.cast(outputs, self._dtype_policy.compute_dtype)
        return outputs


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableEinsumDense(TfKerasKernelBias, keras.layers.EinsumDense):
    """``tf_keras.layers.EinsumDense`` whose kernel (any shape its equation gives) and bias are multiplied by 0/1
    masks (weight pruning; the projections of ``PrunableMultiHeadAttention`` are these).

    Unlike the layers above, the masks are held in the variables (``tfprune.layers.stored_masks``: constraints re-apply
    them after every update), so the forward pass is the plain layer's: a masked ``call`` cost 29 % per epoch on a
    small EinsumDense model and 10 % on an attention block (``scripts/bench.sh layer_types``)."""

    def _has_bias(self):
        return self.bias_axes is not None

    @property
    def bias_mask(self):
        """The bias mask variable, or None."""
        return self.bias_mask_variable

    def _unit_kernel(self, arrays):
        return arrays[0]

    def _variable_keeps(self, kernel_keep, bias_keep):
        return [kernel_keep, bias_keep]


__all__ = ["PrunableConv1D", "PrunableConv2D", "PrunableConv3D", "PrunableDense", "PrunableDepthwiseConv2D",
           "PrunableEinsumDense", "PrunableEmbedding"]
