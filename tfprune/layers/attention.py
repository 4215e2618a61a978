"""Prunable MultiHeadAttention for tf_keras and Keras 3 (any backend): masks on its four projections.

A MultiHeadAttention computes with four EinsumDense sublayers (query, key, value, output), which it makes in its
build. The prunable layer builds them as ``PrunableEinsumDense`` (``tfprune.layers.einsum``: masks held in the
variables), so the masks live in the sublayers and are saved and loaded with them. It offers the library the same
methods as every prunable layer over its **unit kernel**, one column per head (``layouts.HeadLayout``): weight pruning
ranks every projection weight together, unit pruning ranks
**heads** by the L2 norm of all their weights in the four projections and zeroes a pruned head everywhere (its query,
key and value biases too), and shrinking lowers ``num_heads``. Gated attention (Keras 3's ``use_gate``) is not
supported.
"""

import contextlib

import numpy as np

from tfprune.layers import einsum
from tfprune.layers.kinds import LayerKind
from tfprune.layers.layouts import HeadLayout
from tfprune.layers.stored_masks import StoredMaskMethods
from tfprune.structure import graph
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


class _HeadMasks(StoredMaskMethods):
    """The protocol over the four projections' variables and masks: [query kernel, its bias or None, key...,
    value..., output...], laid out by ``HeadLayout`` (one unit-kernel column per head; a pruned head loses its
    query, key and value biases too)."""

    LAYOUT = LAYOUT

    def _variables(self):
        return [v for p in projections(self) for v in p._variables()]  # pylint: disable=protected-access

    def _masks(self):
        return [m for p in projections(self) for m in p._masks()]  # pylint: disable=protected-access

    def _plain_weights(self, plain):
        return [w for p in projections(plain) for w in p.get_weights()]


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
        with _einsum_class(core, einsum.TF_KERAS["EinsumDense"]):
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
        with _einsum_class(multi_head_attention, einsum.KERAS3["EinsumDense"]):
            super().build(query_shape, value_shape, key_shape)


# Keras 3's twin has the same class name (registered as tfprune>PrunableMultiHeadAttention in Keras 3's registry).
PrunableMultiHeadAttention3 = keras3.saving.register_keras_serializable(package="tfprune")(type(
    "PrunableMultiHeadAttention", (_Keras3Build, _HeadMasks, keras3.layers.MultiHeadAttention), {
        "__doc__": "Keras 3 ``MultiHeadAttention`` whose query, key, value and output projections are "
                   "``PrunableEinsumDense`` layers (kernels and biases times 0/1 masks).",
        "__module__": __name__}))


def _attention_macs(layer, output_shape):
    """MultiHeadAttention over T query and S value positions: the query projection (T * in * h * d_k), key and
    value projections (S * in * h * d), the scores and the weighted sum (T * S * h * (d_k + d_v)), the output
    projection (T * h * d_v * out)."""
    (q_in, heads, key_dim), (k_in, _, _), (v_in, _, value_dim), (_, _, out) = (
        tuple(int(d) for d in p.kernel.shape) for p in projections(layer))
    shapes = graph.input_shapes(layer)
    queries = int(np.prod(output_shape[1:-1], dtype=np.int64))
    values = int(np.prod(shapes[min(1, len(shapes) - 1)][1:-1], dtype=np.int64))
    return (queries * heads * (q_in * key_dim + value_dim * out) + values * heads * (k_in * key_dim + v_in * value_dim)
            + queries * values * heads * (key_dim + value_dim))


def _head_unit_shape(layer):
    """(all projection weights, heads) of a built MultiHeadAttention, or None."""
    if getattr(layer, "_query_dense", None) is None or getattr(layer, "_output_dense", None) is None:
        return None
    return LAYOUT.unit_shape([tuple(int(d) for d in p.kernel.shape) for p in projections(layer)])


ORDER = 80  # where these kinds come in the registry's table (and in messages)
KINDS = tuple(LayerKind(layers.MultiHeadAttention, cls, "num_heads", unsupported=head_support, macs=_attention_macs,
                        layout=LAYOUT, unit_shape=_head_unit_shape, internal_units=True, build_like=build)
              for layers, cls, build in ((keras.layers, PrunableMultiHeadAttention, build_like),
                                         (keras3.layers, PrunableMultiHeadAttention3, None)))

__all__ = ["KINDS", "ORDER", "LAYOUT", "PrunableMultiHeadAttention", "PrunableMultiHeadAttention3", "build_like",
"head_support",
           "projections"]
