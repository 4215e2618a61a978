"""Prunable MultiHeadAttention for tf_keras and Keras 3 (any backend): masks on its four projections.

A MultiHeadAttention computes with four EinsumDense sublayers (query, key, value, output), which it makes in its
build. The prunable layer builds them as ``PrunableEinsumDense`` (``tfprune.layers.kernels_tf_keras`` /
``kernels_keras3``: kernel and bias times their masks in the forward pass), so the masks live in the sublayers and are
saved and loaded with them. It offers the library the same methods as every prunable layer over its **unit kernel**, one
column per head (``layouts.HeadLayout``): weight pruning ranks every projection weight together, unit pruning ranks
**heads** by the L2 norm of all their weights in the four projections and zeroes a pruned head everywhere (its query,
key and value biases too), and shrinking lowers ``num_heads``. Gated attention (Keras 3's ``use_gate``) is not
supported.
"""

import contextlib

import numpy as np

from tfprune.layers import kernels_tf_keras as prunable_layers
from tfprune.layers import kernels_keras3 as prunable_layers3
from tfprune import stacks
from tfprune.layers.layouts import HeadLayout
from tfprune.layers.schedule_step import ScheduleStep
from tfprune._env import keras, keras3, tf

LAYOUT = HeadLayout()


def projections(layer):
    """The query, key, value and output EinsumDense sublayers of a built MultiHeadAttention (either stack)."""
    return [layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense]  # pylint: disable=W0212


@contextlib.contextmanager
def _einsum_class(module, cls):
    """While the block runs, ``module.EinsumDense`` (what MultiHeadAttention's build calls) is ``cls``."""
    original = module.EinsumDense
    module.EinsumDense = cls
    try:
        yield
    finally:
        module.EinsumDense = original


class _HeadMasks(ScheduleStep):
    """The library's methods over the projections' masks (``projections(self)``)."""

    def mask_variables(self):
        """The mask variables of the four projections (kernel, and bias when there is one)."""
        return [m for p in projections(self) for m in p.mask_variables()]

    def masked_weights(self):
        """The weights of the plain twin, masks applied: [query kernel, bias?, key..., value..., output...]."""
        return [w for p in projections(self) for w in p.masked_weights()]

    def masked_kernel(self):
        """The unit kernel (all projection weights, heads), as the layer computes with it (NumPy)."""
        to_numpy = stacks.of(self).to_numpy
        return LAYOUT.unit_kernel([to_numpy(p.masked_kernel()) for p in projections(self)])

    @property
    def kernel_mask(self):
        """The unit kernel's mask (NumPy, 1 = kept)."""
        to_numpy = stacks.of(self).to_numpy
        return LAYOUT.unit_kernel([to_numpy(p.kernel_mask) for p in projections(self)])

    def copy_plain(self, plain):
        """Copies the weights of the plain MultiHeadAttention ``plain`` (same config); the masks stay."""
        for mine, theirs in zip(projections(self), projections(plain)):
            mine.copy_plain(theirs)

    def set_masks(self, kernel_keep, bias_keep=None):
        """Sets the projections' masks and zeroes the pruned weights.

        Args:
          kernel_keep: bool array of the unit kernel's shape (all projection weights, heads), True = kept.
          bias_keep: bool vector (heads,): a pruned head loses its query, key and value biases; or None.
        """
        layers = projections(self)
        keeps = LAYOUT.split(np.asarray(kernel_keep, bool), [tuple(p.kernel_mask.shape) for p in layers])
        for index, (layer, keep) in enumerate(zip(layers, keeps)):
            bias = None
            if bias_keep is not None and layer.bias_mask is not None and index < 3:  # biases (heads, dim)
                bias = np.broadcast_to(np.asarray(bias_keep, bool)[:, None], tuple(layer.bias_mask.shape))
            layer.set_masks(keep, bias)


def head_support(layer):
    """None when a MultiHeadAttention can be pruned, else why it stays dense."""
    if getattr(layer, "_use_gate", False):
        return "MultiHeadAttention with use_gate=True (a fifth, gating projection)"
    if layer.built and any(len(k.shape) != 3 for k in (p.kernel for p in projections(layer))):
        return "MultiHeadAttention with a multi-axis output_shape (projection kernels not of rank 3)"
    return None


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableMultiHeadAttention(_HeadMasks, keras.layers.MultiHeadAttention):
    """``tf_keras.layers.MultiHeadAttention`` whose query, key, value and output projections are
    ``PrunableEinsumDense`` layers (kernels and biases times 0/1 masks)."""

    def _build_from_signature(self, query, value, key=None):
        from tf_keras.src.layers import core  # pylint: disable=import-outside-toplevel
        with _einsum_class(core, prunable_layers.PrunableEinsumDense):
            super()._build_from_signature(query, value, key)


def build_like(twin, layer):
    """Builds ``twin`` as the built tf_keras MultiHeadAttention ``layer``: one call on zeros of the query, value and
    key shapes it was built with (tf_keras builds the projections at the first call, not from a build config)."""
    # pylint: disable=protected-access
    shapes = (layer._query_shape, layer._value_shape, layer._key_shape)
    query, value, key = (tf.zeros([1 if d is None else d for d in shape.as_list()]) for shape in shapes)
    twin(query, value, key=key)


class _Keras3Build:
    def build(self, query_shape, value_shape, key_shape=None):
        from keras.src.layers.attention import multi_head_attention  # pylint: disable=import-outside-toplevel
        with _einsum_class(multi_head_attention, prunable_layers3.PrunableEinsumDense):
            super().build(query_shape, value_shape, key_shape)


# Keras 3's twin has the same class name (registered as tfprune>PrunableMultiHeadAttention in Keras 3's registry).
PrunableMultiHeadAttention3 = keras3.saving.register_keras_serializable(package="tfprune")(type(
    "PrunableMultiHeadAttention", (_Keras3Build, _HeadMasks, keras3.layers.MultiHeadAttention), {
        "__doc__": "Keras 3 ``MultiHeadAttention`` whose query, key, value and output projections are "
                   "``PrunableEinsumDense`` layers (kernels and biases times 0/1 masks).",
        "__module__": __name__}))


__all__ = ["LAYOUT", "PrunableMultiHeadAttention", "PrunableMultiHeadAttention3", "build_like", "head_support",
           "projections"]
