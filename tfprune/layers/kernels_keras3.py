"""Prunable Keras 3 layers with one kernel (any backend: TensorFlow, JAX, PyTorch): Dense, Conv1D/2D/3D,
EinsumDense, DepthwiseConv2D and Embedding, whose kernel and bias compute as exact zeros wherever their 0/1 masks are
0.

Keras 3 reads a layer's kernel through the ``kernel`` property (``keras/src/layers/core/dense.py``,
``convolutional/base_conv.py``: the stored variable is ``_kernel``; the property adds LoRA), and ``call`` reads
``self.kernel`` and ``self.bias``. These layers reuse the parent's ``call`` unchanged and keep a pruned weight at
exactly 0 in one of two ways, chosen by measurement (``scripts/bench_keras3.py``):

- **TensorFlow and PyTorch backends**: the variables themselves hold the zeros. ``set_masks`` zeroes the pruned
  entries, and a constraint on the variables (Keras' optimizers apply it after every update) multiplies them by the
  masks again, so the forward and backward passes are the plain layer's: no kernel-sized multiply per step
  (docs/DESIGN_NOTES.md, "Keras 3 masks").
- **JAX backend**: the same constraints, applied inside the training step that ``make_prunable`` and
  ``RankPruning`` give the model (``tfprune.layers.jax_masks``: JAX's stateless optimizer update cannot read the mask
  variables by itself). Outside such a step (evaluation, or a model loaded from a file and trained without
  ``RankPruning``) the properties return the masked tensors (``kernel`` is ``super().kernel * kernel_mask``,
  ``bias`` is ``bias * bias_mask``), so the gradient of a masked entry is zero.
- **Any layer with LoRA enabled**: the properties return the masked tensors, since LoRA adds a delta that only the
  property can mask.

Either way the layer computes with exact zeros at the pruned entries through any training.

The masks are non-trainable weights (``kernel_mask``, ``bias_mask``), saved and loaded with the model. The classes
are registered (``tfprune>PrunableDense``), so ``keras.models.load_model`` rebuilds them without custom_objects once
tfprune is imported. The same methods as the tf_keras twins (``tfprune.layers.kernels_tf_keras``) serve the pruning
library: ``masked_kernel``, ``masked_bias``, ``set_masks``, ``copy_plain``.
"""

import numpy as np

from tfprune._env import keras3
from tfprune.layers.schedule_step import ScheduleStep
from tfprune.layers.stored_masks import add_masks, masks_in_forward, to_numpy

ops = keras3.ops


class _MaskOps(ScheduleStep):
    """Building the masks, ``masked_kernel``/``masked_bias``, ``set_masks``, ``copy_plain`` and saving, over the
    layer's stored kernel and bias variables (``_variables()``); ``_KERNEL`` names the attribute the layer's ``call``
    reads its kernel from, on this layer and on the plain one (``kernel``; ``embeddings`` for Embedding)."""

    _KERNEL = "kernel"

    def build(self, input_shape=None):
        # enable_lora() locks the layer's variables: add the masks first, then enable LoRA as the parent would.
        rank, alpha = getattr(self, "lora_rank", None), getattr(self, "lora_alpha", None)
        if rank:
            self.lora_rank = None
        super().build(input_shape)
        self._add_masks()
        if rank:
            self.enable_lora(rank, lora_alpha=alpha)

    def masked_kernel(self):
        """The kernel as the layer computes with it (``kernel * kernel_mask``), a backend tensor."""
        kernel = getattr(self, self._KERNEL)
        return ops.multiply(kernel, ops.cast(self.kernel_mask, kernel.dtype))

    def masked_bias(self):
        bias = getattr(self, "bias", None)
        return None if bias is None else ops.multiply(bias, ops.cast(self.bias_mask, bias.dtype))

    def masked_weights(self):
        """``[kernel, bias?]`` with the masks applied: the weights of the plain twin (backend tensors)."""
        bias = self.masked_bias()
        return [self.masked_kernel()] + ([] if bias is None else [bias])

    def mask_variables(self):
        """The mask variables (``kernel_mask``, and ``bias_mask`` when there is a bias)."""
        return [m for m in (self.kernel_mask, self.bias_mask) if m is not None]

    def _masks_in_forward(self):
        return masks_in_forward() or bool(getattr(self, "lora_enabled", False))

    def _own_variables(self):
        return [v for v in (*self._variables(), self.kernel_mask, self.bias_mask) if v is not None]

    def save_own_variables(self, store):
        """Saves the raw kernel and bias and both masks (the parent would save a fixed two-entry list)."""
        for i, variable in enumerate(self._own_variables()):
            store[str(i)] = variable

    def load_own_variables(self, store):
        variables = self._own_variables()
        if len(store.keys()) != len(variables):
            raise ValueError(f"layer {self.name!r} expected {len(variables)} variables (kernel, bias, masks), but "
                             f"the file holds {len(store.keys())}")
        for i, variable in enumerate(variables):
            variable.assign(store[str(i)])

    def _add_masks(self):
        """Adds ``kernel_mask`` and ``bias_mask`` (ones) and the constraints that keep masked entries at 0."""
        add_masks(self, dict(zip(("kernel", "bias"), self._variables())), attr="{}_mask")

    def set_masks(self, kernel_keep, bias_keep=None):
        """Sets the masks from bool arrays (True = kept) and zeroes the pruned weights' variables too.

        Args:
          kernel_keep: bool array of the kernel's shape.
          bias_keep: bool vector (units,) or None (bias mask left as it is).
        """
        kernel, bias = self._variables()
        kernel_keep = np.asarray(kernel_keep, bool)
        self.kernel_mask.assign(kernel_keep.astype(self.kernel_mask.dtype))
        kernel.assign(to_numpy(kernel) * kernel_keep)
        if self.bias_mask is not None and bias_keep is not None:
            bias_keep = np.asarray(bias_keep, bool)
            self.bias_mask.assign(bias_keep.astype(self.bias_mask.dtype))
            bias.assign(to_numpy(bias) * bias_keep)

    def copy_plain(self, plain):
        """Copies the kernel and bias of the plain layer ``plain`` (same config); the masks stay as they are."""
        kernel, bias = self._variables()
        kernel.assign(to_numpy(getattr(plain, self._KERNEL)))
        if bias is not None:
            bias.assign(to_numpy(plain.bias))


class _MaskedMixin(_MaskOps):
    """Masks for a Keras 3 layer whose build makes ``_kernel`` and ``bias`` (Dense, Conv1D/2D/3D)."""

    @property
    def kernel(self):
        kernel = super().kernel
        mask = self.__dict__.get("kernel_mask")  # absent while build() runs
        if mask is None or not self._masks_in_forward():
            return kernel
        return ops.multiply(kernel, ops.cast(mask, kernel.dtype))

    @property
    def bias(self):
        bias = self.__dict__.get("_bias")
        mask = self.__dict__.get("bias_mask")
        if bias is None or mask is None or not self._masks_in_forward():
            return bias
        return ops.multiply(bias, ops.cast(mask, bias.dtype))

    @bias.setter
    def bias(self, value):  # the parent's build assigns the variable (tracked by Layer.__setattr__) or None
        self.__dict__["_bias"] = value

    def _variables(self):
        return self._kernel, self.__dict__.get("_bias")


@keras3.saving.register_keras_serializable(package="tfprune")
class PrunableDense(_MaskedMixin, keras3.layers.Dense):
    """Keras 3 ``Dense`` whose kernel (in, units) and bias (units,) are multiplied by fixed 0/1 masks."""


@keras3.saving.register_keras_serializable(package="tfprune")
class PrunableConv1D(_MaskedMixin, keras3.layers.Conv1D):
    """Keras 3 ``Conv1D`` whose kernel (k, in, filters) and bias (filters,) are multiplied by fixed 0/1 masks."""


@keras3.saving.register_keras_serializable(package="tfprune")
class PrunableConv2D(_MaskedMixin, keras3.layers.Conv2D):
    """Keras 3 ``Conv2D`` whose kernel (kh, kw, in, filters) and bias (filters,) are multiplied by fixed 0/1 masks."""


@keras3.saving.register_keras_serializable(package="tfprune")
class PrunableConv3D(_MaskedMixin, keras3.layers.Conv3D):
    """Keras 3 ``Conv3D`` whose kernel (kd, kh, kw, in, filters) and bias are multiplied by fixed 0/1 masks."""


@keras3.saving.register_keras_serializable(package="tfprune")
class PrunableEinsumDense(_MaskedMixin, keras3.layers.EinsumDense):
    """Keras 3 ``EinsumDense`` whose kernel (any shape its equation gives) and bias are multiplied by 0/1 masks
    (weight pruning; the projections of ``PrunableMultiHeadAttention`` are these)."""


@keras3.saving.register_keras_serializable(package="tfprune")
class PrunableDepthwiseConv2D(_MaskOps, keras3.layers.DepthwiseConv2D):
    """Keras 3 ``DepthwiseConv2D`` whose kernel (kh, kw, in, multiplier) and bias are multiplied by 0/1 masks
    (weight pruning only: its channels follow its input). Its kernel and bias are plain variable attributes (no
    property to mask through), so the masks are kept the same two ways as ``_MaskedMixin``'s by other means:
    variable constraints, and on JAX outside ``jax_masks``' train step a ``call`` that computes with the masked
    tensors."""

    def _variables(self):
        return self.kernel, self.bias

    def call(self, inputs):
        if not masks_in_forward():
            return super().call(inputs)  # the variables hold the zeros (constraints)
        # Keras 3's BaseDepthwiseConv.call (channels-last or first) with the masked kernel and bias.
        outputs = ops.depthwise_conv(inputs, self.masked_kernel(), strides=self.strides, padding=self.padding,
                                     dilation_rate=self.dilation_rate, data_format=self.data_format)
        if self.use_bias:
            width = self.depth_multiplier * self._get_input_channel(inputs.shape)
            shape = ((1,) * (self.rank + 1) + (width,) if self.data_format == "channels_last"
                     else (1, width) + (1,) * self.rank)
            outputs = ops.add(outputs, ops.reshape(self.masked_bias(), shape))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs


@keras3.saving.register_keras_serializable(package="tfprune")
class PrunableEmbedding(_MaskOps, keras3.layers.Embedding):
    """Keras 3 ``Embedding`` whose table (vocabulary, output_dim) is multiplied by a 0/1 mask (through the
    ``embeddings`` property its ``call`` reads, as ``_MaskedMixin`` does for ``kernel``); its units are the
    embedding dimensions (columns)."""

    _KERNEL = "embeddings"

    def _variables(self):
        return self._embeddings, None

    @property
    def embeddings(self):
        table = super().embeddings
        mask = self.__dict__.get("kernel_mask")
        if mask is None or not self._masks_in_forward():
            return table
        return ops.multiply(table, ops.cast(mask, table.dtype))



__all__ = ["PrunableConv1D", "PrunableConv2D", "PrunableConv3D", "PrunableDense",
           "PrunableDepthwiseConv2D", "PrunableEinsumDense",
           "PrunableEmbedding"]
