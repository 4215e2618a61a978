"""The layer registry: what tfprune can prune, and how each Keras layer type is masked, unit-indexed and sliced.

This is the one table every other module asks (``make_prunable``, ``strip``, ``check_prunable``, the sparsity
report, ``shrink`` and export). Adding a layer type is one ``LayerKind`` entry per stack (plus its prunable layer
classes in its family module of ``tfprune.layers``) and its tests.

Conventions of a kind's **unit kernel** (the prunable weights as the methods rank them): its **last axis is the
output units** (Dense columns, Conv2D filters, recurrent hidden units), and it reads the **last axis of the layer's
input**; the bias, when there is one, has one entry per unit (per unit and gate for recurrent layers). For most
kinds the unit kernel is the kernel itself (``KernelLayout``); a recurrent layer's stacks its kernel and recurrent
kernel by gate (``GatedLayout``, ``tfprune.layers.recurrent``). Shrinking slices the weights with index arrays.

Every prunable layer class offers the same methods to the library: ``masked_kernel()`` (the unit kernel as it
computes), ``kernel_mask`` (its mask), ``masked_weights()`` (the plain twin's weights), ``mask_variables()``,
``set_masks(kernel_keep, bias_keep)`` and ``copy_plain(plain)``.

Layers without units of their own that pass channels through (activations, pooling, BatchNormalization,
DepthwiseConv2D, Flatten, joins...) are the table of ``tfprune.select.channel_rules``, which grouping, group pruning and
shrinking read.
"""

import numpy as np

from tfprune.structure import graph
from tfprune.layers import kernels_tf_keras as prunable_layers
from tfprune.layers import kernels_keras3 as prunable_layers3
from tfprune.layers import attention as prunable_attention
from tfprune.layers import bidirectional as prunable_bidirectional
from tfprune.layers import custom as layers_custom
from tfprune.layers import rnn as prunable_rnn
from tfprune.layers import rnn_keras3 as prunable_rnn3
from tfprune.layers import separable as prunable_separable
from tfprune.layers import transposed as prunable_transposed
from tfprune.layers import recurrent
from tfprune.layers import schedule_step
from tfprune import stacks
from tfprune.structure.channels import ELEMENTWISE_ACTIVATIONS, activation_name, is_elementwise
from tfprune.layers.kinds import LayerKind
from tfprune.layers.layouts import (BidirectionalLayout, DepthwiseLayout, GatedLayout, HeadLayout, KernelLayout,
                                    SeparableLayout, TransposedLayout)
from tfprune._env import keras, keras3

L, L3 = keras.layers, keras3.layers


def _conv_support(layer):
    if getattr(layer, "groups", 1) != 1:
        return f"grouped {type(layer).__name__} (groups={layer.groups})"
    return None


def _embedding_support(layer):
    if getattr(layer, "sparse", False):
        return "Embedding with sparse=True (sparse lookups)"
    return None


def _no_macs(layer, output_shape):  # pylint: disable=unused-argument
    """An Embedding looks rows up: no multiply-accumulates."""
    return 0


def _kernel_macs(layer, output_shape):
    """Dense: positions * in * out; Conv2D: H_out * W_out * kh * kw * C_in * C_out: positions * kernel size."""
    kernel_size = int(np.prod(kernel_shape(layer), dtype=np.int64))
    return int(np.prod(output_shape[1:-1], dtype=np.int64)) * kernel_size


def _recurrent_macs(layer, output_shape):  # pylint: disable=unused-argument
    """SimpleRNN/GRU/LSTM: timesteps * (in + units) * gates * units (every step multiplies both kernels)."""
    steps = graph.input_shape(layer)[1] or 1
    return int(steps) * int(np.prod(kernel_shape(layer), dtype=np.int64))


def _recurrent_shrinkable(layer):
    """Dead units are cut out of a recurrent layer with one output (no ``return_state``), batch-major."""
    return not getattr(layer, "return_state", False) and not getattr(layer, "time_major", False)


def _transposed_macs(layer, output_shape):  # pylint: disable=unused-argument
    """Transposed convolutions: every input position multiplies the whole kernel (k... * units * in)."""
    positions = int(np.prod(graph.input_shape(layer)[1:-1], dtype=np.int64))
    return positions * int(np.prod(kernel_shape(layer), dtype=np.int64))


def _separable_macs(layer, output_shape):
    """Separable convolutions: the depthwise kernel (k... * in * m) and the pointwise kernel (in * m * filters) at
    every output position."""
    positions = int(np.prod(output_shape[1:-1], dtype=np.int64))
    depthwise, pointwise = (int(np.prod(w.shape, dtype=np.int64)) for w in layer.weights[:2])
    return positions * (depthwise + pointwise)


def _einsum_macs(layer, output_shape):
    """EinsumDense: every output element sums over the kernel axes its equation contracts."""
    inputs, out = layer.equation.split("->")
    kernel_axes = inputs.split(",")[1]
    contracted = [int(d) for a, d in zip(kernel_axes, kernel_shape(layer)) if a not in out]
    return int(np.prod(output_shape[1:], dtype=np.int64)) * int(np.prod(contracted, dtype=np.int64))


def _attention_macs(layer, output_shape):
    """MultiHeadAttention over T query and S value positions: the query projection (T * in * h * d_k), key and
    value projections (S * in * h * d), the scores and the weighted sum (T * S * h * (d_k + d_v)), the output
    projection (T * h * d_v * out)."""
    (q_in, heads, key_dim), (k_in, _, _), (v_in, _, value_dim), (_, _, out) = (
        tuple(int(d) for d in p.kernel.shape) for p in prunable_attention.projections(layer))
    shapes = graph.input_shapes(layer)
    queries = int(np.prod(output_shape[1:-1], dtype=np.int64))
    values = int(np.prod(shapes[min(1, len(shapes) - 1)][1:-1], dtype=np.int64))
    return (queries * heads * (q_in * key_dim + value_dim * out) + values * heads * (k_in * key_dim + v_in * value_dim)
            + queries * values * heads * (key_dim + value_dim))


def _recurrent_unit_shape(layer):
    """(in + u, gates, u) of a built SimpleRNN/GRU/LSTM (``tfprune.layers.recurrent``), or None."""
    cell = layer.cell
    if not layer.built or getattr(cell, "recurrent_kernel", None) is None:
        return None
    units = int(cell.units)
    return (int(cell.kernel.shape[0]) + units, kind_of(layer).layout.gates, units)


def _bidirectional_unit_shape(layer):
    """(in + u, gates, 2, u) of a built Bidirectional (its two directions' unit kernels stacked), or None."""
    shape = _recurrent_unit_shape(layer.forward_layer) if layer.built else None
    return None if shape is None else shape[:2] + (2,) + shape[2:]


def _bidirectional_width(config, width):
    """The inner layers' configs with ``width`` units (and without Keras 3's build config, which holds the old
    input width)."""
    for key in ("layer", "backward_layer"):
        if config.get(key):
            config[key]["config"]["units"] = int(width)
            config[key].pop("build_config", None)
    return config


def _head_unit_shape(layer):
    """(all projection weights, heads) of a built MultiHeadAttention, or None."""
    if getattr(layer, "_query_dense", None) is None or getattr(layer, "_output_dense", None) is None:
        return None
    return kind_of(layer).layout.unit_shape([tuple(int(d) for d in p.kernel.shape)
                                             for p in prunable_attention.projections(layer)])


def _kind(plain, prunable, width_key, **fields):
    """A ``LayerKind`` whose MACs are positions * kernel size unless ``fields`` say otherwise."""
    return LayerKind(plain, prunable, width_key, **{"macs": _kernel_macs, **fields})


def _transposed_kinds(layers, classes):
    return tuple(_kind(getattr(layers, name), cls, "filters", unsupported=_conv_support, macs=_transposed_macs,
                           layout=TransposedLayout()) for name, cls in classes.items())


def _separable_kinds(layers, classes):
    return tuple(_kind(getattr(layers, name), cls, "filters", macs=_separable_macs, layout=SeparableLayout(),
                           kernel_attr="pointwise_kernel", has_units=prunable_separable.has_units,
                           unit_shape=prunable_separable.unit_shape, options=("pruned_kernels",))
                 for name, cls in classes.items())


def _recurrent_kinds(layers, prunable_module):
    return tuple(_kind(getattr(layers, name), getattr(prunable_module, f"Prunable{name}"), "units",
                           macs=_recurrent_macs, layout=GatedLayout(gates), shrinkable=_recurrent_shrinkable,
                           unit_shape=_recurrent_unit_shape)
                 for name, gates in recurrent.GATES.items())


KINDS = (  # tf_keras (Keras 2), then Keras 3: the same layer types, each with the masked twin of its stack
    _kind(L.Dense, prunable_layers.PrunableDense, "units", flat_input=True),
    _kind(L.Conv1D, prunable_layers.PrunableConv1D, "filters", unsupported=_conv_support),
    _kind(L.Conv2D, prunable_layers.PrunableConv2D, "filters", unsupported=_conv_support),
    _kind(L.Conv3D, prunable_layers.PrunableConv3D, "filters", unsupported=_conv_support),
    _kind(L.DepthwiseConv2D, prunable_layers.PrunableDepthwiseConv2D, "depth_multiplier",
              kernel_attr="depthwise_kernel", has_units=False, layout=DepthwiseLayout()),
    _kind(L.Embedding, prunable_layers.PrunableEmbedding, "output_dim", unsupported=_embedding_support,
              macs=_no_macs, kernel_attr="embeddings"),
    _kind(L3.Dense, prunable_layers3.PrunableDense, "units", flat_input=True),
    _kind(L3.Conv1D, prunable_layers3.PrunableConv1D, "filters", unsupported=_conv_support),
    _kind(L3.Conv2D, prunable_layers3.PrunableConv2D, "filters", unsupported=_conv_support),
    _kind(L3.Conv3D, prunable_layers3.PrunableConv3D, "filters", unsupported=_conv_support),
    _kind(L3.DepthwiseConv2D, prunable_layers3.PrunableDepthwiseConv2D, "depth_multiplier", has_units=False,
          layout=DepthwiseLayout()),
    _kind(L3.Embedding, prunable_layers3.PrunableEmbedding, "output_dim", unsupported=_embedding_support,
              macs=_no_macs, kernel_attr="embeddings"),
) + (_transposed_kinds(L, prunable_transposed.TF_KERAS) + _transposed_kinds(L3, prunable_transposed.KERAS3)
     + _separable_kinds(L, prunable_separable.TF_KERAS) + _separable_kinds(L3, prunable_separable.KERAS3)
     + _recurrent_kinds(L, prunable_rnn) + _recurrent_kinds(L3, prunable_rnn3) + tuple(
         _kind(layers.EinsumDense, einsum, "output_shape", macs=_einsum_macs, has_units=False)
         for layers, einsum in ((L, prunable_layers.PrunableEinsumDense), (L3, prunable_layers3.PrunableEinsumDense)))
     + tuple(_kind(layers.MultiHeadAttention, cls, "num_heads", unsupported=prunable_attention.head_support,
                       macs=_attention_macs, layout=HeadLayout(), unit_shape=_head_unit_shape, internal_units=True,
                       build_like=build_like)
             for layers, cls, build_like in (
                 (L, prunable_attention.PrunableMultiHeadAttention, prunable_attention.build_like),
                 (L3, prunable_attention.PrunableMultiHeadAttention3, None)))
     + tuple(_kind(layers.Bidirectional, cls, "units", unsupported=prunable_bidirectional.support,
                       macs=_recurrent_macs, layout=BidirectionalLayout(), shrinkable=_recurrent_shrinkable,
                       unit_shape=_bidirectional_unit_shape, unit_channels=prunable_bidirectional.unit_channels,
                       set_width=_bidirectional_width)
             for layers, cls in ((L, prunable_bidirectional.PrunableBidirectional),
                                 (L3, prunable_bidirectional.PrunableBidirectional3))))
_BY_TYPE = {**{k.plain: k for k in KINDS}, **{k.prunable: k for k in KINDS}}
KIND_NAMES = ", ".join(dict.fromkeys(k.name for k in KINDS))  # "Dense, Conv1D, ...": what messages list
PRUNABLE_CLASSES = tuple(k.prunable for k in KINDS)


_CUSTOM_KINDS = {}


def _custom_kind(cls):
    """The kind of a custom layer class that opts in (``tfprune.layers.custom``), made once per class."""
    plain = layers_custom.plain_class(cls) if issubclass(cls, layers_custom.CustomMasks) else cls
    if plain not in _CUSTOM_KINDS:
        _CUSTOM_KINDS[plain] = LayerKind(
            plain, layers_custom.prunable_class(plain), "", unsupported=layers_custom.support, macs=_no_macs,
            shrinkable=lambda layer: False, has_units=callable(getattr(plain, "get_unit_axis", None)),
            unit_shape=layers_custom.unit_shape, plain_unit_kernel=layers_custom.plain_unit_kernel)
    return _CUSTOM_KINDS[plain]


def kind_of(layer):
    """The ``LayerKind`` of ``layer`` (plain or prunable, exact type; a custom layer that defines
    ``get_prunable_weights``), or None when tfprune has no entry for it."""
    kind = _BY_TYPE.get(type(layer))
    if kind is None and layers_custom.opts_in(type(layer)):
        return _custom_kind(type(layer))
    return kind


def is_prunable(layer):
    """True for layers that carry tfprune masks (``PrunableDense``, ``PrunableConv2D``, a custom layer's...)."""
    return isinstance(layer, PRUNABLE_CLASSES) or isinstance(layer, layers_custom.CustomMasks)


def is_tfmot_wrapper(layer):
    """True for TF-MOT's ``PruneLowMagnitude`` pruning wrapper (detected without importing TF-MOT)."""
    cls = type(layer)
    return cls.__name__ == "PruneLowMagnitude" and cls.__module__.startswith("tensorflow_model_optimization")


def convertible(layer):
    """True for a plain layer that ``make_prunable`` turns into its prunable twin."""
    kind = kind_of(layer)
    return kind is not None and not is_prunable(layer) and kind.unsupported(layer) is None


def to_prunable(layer, options=None):
    """A new, unbuilt prunable twin of a convertible plain layer (same config, plus those of ``options`` (a dict of
    ``make_prunable`` keywords, None values left out) its kind takes); other layers: a plain clone."""
    if not convertible(layer):
        return type(layer).from_config(layer.get_config())
    kind = kind_of(layer)
    extra = {k: v for k, v in (options or {}).items() if k in kind.options and v is not None}
    return kind.prunable.from_config({**layer.get_config(), **extra})


def to_plain(layer):
    """A new, unbuilt plain Keras layer with the config of ``layer`` (a prunable layer becomes its plain class)."""
    kind = kind_of(layer)
    if kind is None or not is_prunable(layer):
        return type(layer).from_config(layer.get_config())
    config = schedule_step.without_step(layer.get_config())
    return kind.plain.from_config({k: v for k, v in config.items() if k not in kind.options})


def with_width(layer, width):
    """A new, unbuilt plain layer like ``layer`` with ``width`` output units (for shrinking)."""
    kind = kind_of(layer)
    config = layer.get_config()
    if kind.set_width is not None:
        config = kind.set_width(config, width)
    else:
        config[kind.width_key] = int(width)
    return kind.plain.from_config(config)


def kernel(layer):
    """The prunable kernel variable of a layer of a one-kernel kind (``kernel``, or DepthwiseConv2D's
    ``depthwise_kernel`` in tf_keras), or None before the layer is built (recurrent and attention kinds: None, see
    ``kernel_shape``)."""
    kind = kind_of(layer)
    return None if kind.unit_shape is not None else getattr(layer, kind.kernel_attr, None)


def kernel_shape(layer):
    """The shape of the unit kernel the methods rank (units last; a recurrent layer's (in + u, gates, u), see
    ``tfprune.layers.recurrent``; an attention layer's (weights, heads)), or None before the layer is built."""
    kind = kind_of(layer)
    if kind.unit_shape is not None:
        return kind.unit_shape(layer)
    variable = kernel(layer)
    return None if variable is None else kind.layout.unit_shape(tuple(int(d) for d in variable.shape))


def model_layers(model):
    """``graph.model_layers``: a graph model's layers; a subclassed model's, found recursively but not inside a
    layer of a registered kind."""
    return graph.model_layers(model, lambda layer: kind_of(layer) is not None)


def kernel_layers(model):
    """The layers of ``model`` with a registered kind and a built kernel (prunable or plain), in model order."""
    return [l for l in model_layers(model) if kind_of(l) is not None and kernel_shape(l) is not None]


def effective_kernel(layer):
    """The unit kernel as the layer computes with it (``kernel * kernel_mask`` for a prunable layer), as NumPy."""
    if is_prunable(layer):
        return stacks.of(layer).to_numpy(layer.masked_kernel())
    kind = kind_of(layer)
    if kind.plain_unit_kernel is not None:
        return kind.plain_unit_kernel(layer)
    return kind.layout.unit_kernel([stacks.of(layer).to_numpy(w) for w in layer.weights])


def masked_weights(layer):
    """The weights of a prunable layer as it computes with them (masks applied), NumPy, in its plain twin's order
    (``[kernel, bias?]``; recurrent: ``[kernel, recurrent_kernel, bias?]``)."""
    to_numpy = stacks.of(layer).to_numpy
    return [to_numpy(w) for w in layer.masked_weights()]


def kernel_mask(layer):
    """A prunable layer's kernel mask as a bool array (True = kept)."""
    return stacks.of(layer).to_numpy(layer.kernel_mask) > 0.5


def skip_reason(layer):
    """Why a layer with weights stays dense, "" for a layer without weights, None when tfprune prunes it."""
    kind = kind_of(layer)
    if kind is not None:
        return None if is_prunable(layer) else kind.unsupported(layer)
    if not layer.weights:
        return ""
    cls = type(layer)
    if not cls.__module__.startswith(("tf_keras.", "keras.")):
        return (f"custom layer class {cls.__name__} ({cls.__module__}); its weights stay dense (a custom layer opts in "
                "by defining get_prunable_weights(): tfprune.PrunableLayer)")
    if isinstance(layer, tuple(k.plain for k in KINDS)):
        return f"{cls.__name__} is not a plain {'/'.join(dict.fromkeys(k.name for k in KINDS))}; its kernel stays dense"
    inner = getattr(layer, "layer", None) or getattr(layer, "forward_layer", None)
    if isinstance(inner, (L.Layer, L3.Layer)):  # Wrapper, TimeDistributed, Bidirectional (not a Wrapper in Keras 3)
        return (f"{cls.__name__} wraps a {type(inner).__name__}: layers inside wrappers are not pruned yet; its "
                "weights stay dense")
    return f"{cls.__name__} has no kernel tfprune prunes; its weights stay dense"


def mask_weight_ids(layer):
    """ids of the mask variables of a prunable layer (empty for other layers): masks are not parameters."""
    return {id(m) for m in layer.mask_variables()} if is_prunable(layer) else set()


def custom_objects(*custom_layers):
    """The ``custom_objects`` dict that loads models holding tfprune layers: ``load_model(p, custom_objects=...)``.

    Args:
      custom_layers: the user's custom layer classes that opt in (``get_prunable_weights``): their prunable
        subclasses are made, registered and included, with the classes themselves.
    """
    out = {}
    tf_keras = [k.prunable for k in KINDS if issubclass(k.plain, keras.layers.Layer)]  # Keras 3 ones are registered
    for cls in tf_keras + [c for plain in custom_layers for c in (plain, layers_custom.prunable_class(plain))]:
        out[cls.__name__] = cls
        out[f"tfprune>{cls.__name__}"] = cls
    return out


__all__ = ["ELEMENTWISE_ACTIVATIONS", "GatedLayout", "KINDS", "KIND_NAMES", "KernelLayout",
           "LayerKind", "PRUNABLE_CLASSES", "TransposedLayout", "activation_name", "convertible", "custom_objects",
           "effective_kernel", "is_elementwise", "is_prunable", "is_tfmot_wrapper",
           "kernel", "kernel_layers", "kernel_mask", "kernel_shape", "kind_of", "mask_weight_ids", "masked_weights",
           "model_layers", "skip_reason", "to_plain", "to_prunable", "with_width"]
