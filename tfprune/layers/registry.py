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

import importlib
import pkgutil

from tfprune.structure import graph
from tfprune.layers import custom
from tfprune.layers import schedule_step
from tfprune.layers import subclasses
from tfprune import stacks
from tfprune.structure.channels import ELEMENTWISE_ACTIVATIONS, activation_name, is_elementwise
from tfprune.layers.kinds import LayerKind
from tfprune.layers.layouts import GatedLayout, KernelLayout, TransposedLayout
from tfprune._env import keras, keras3

L, L3 = keras.layers, keras3.layers



def _families():
    """The layer-family modules of ``tfprune.layers``: every module that declares ``KINDS`` (its kinds for both
    stacks) and ``ORDER`` (where its kinds come in the table, and so in messages), in that order."""
    package = importlib.import_module("tfprune.layers")
    modules = [importlib.import_module(f"tfprune.layers.{info.name}") for info in pkgutil.iter_modules(package.__path__)
               if info.name != "registry"]
    return tuple(sorted((m for m in modules if hasattr(m, "KINDS") and hasattr(m, "ORDER")), key=lambda m: m.ORDER))


FAMILIES = _families()
KINDS = tuple(kind for family in FAMILIES for kind in family.KINDS)
_BY_TYPE = {**{k.plain: k for k in KINDS}, **{k.prunable: k for k in KINDS}}
KIND_NAMES = ", ".join(dict.fromkeys(k.name for k in KINDS))  # "Dense, Conv1D, ...": what messages list
PRUNABLE_CLASSES = tuple(k.prunable for k in KINDS)


def kind_of(layer):
    """The ``LayerKind`` of ``layer`` (plain or prunable, exact type; a custom layer that defines
    ``get_prunable_weights``; a subclass of a registered type, ``tfprune.layers.subclasses``), or None when tfprune
    has no entry for it."""
    kind = _BY_TYPE.get(type(layer))
    if kind is None and custom.opts_in(type(layer)):
        return custom.kind_for(type(layer))
    return kind if kind is not None else subclasses.kind_for(type(layer), _BY_TYPE)


def is_prunable(layer):
    """True for layers that carry tfprune masks (``PrunableDense``, ``PrunableConv2D``, a custom layer's...)."""
    return isinstance(layer, PRUNABLE_CLASSES) or isinstance(layer, custom.CustomMasks)


def is_tfmot_wrapper(layer):
    """True for TF-MOT's ``PruneLowMagnitude`` pruning wrapper (detected without importing TF-MOT)."""
    cls = type(layer)
    return cls.__name__ == "PruneLowMagnitude" and cls.__module__.startswith("tensorflow_model_optimization")


def convertible(layer):
    """True for a plain layer that ``make_prunable`` turns into its prunable twin."""
    kind = kind_of(layer)
    return kind is not None and not is_prunable(layer) and kind.unsupported(layer) is None


def _from_own_config(layer):
    """A new layer of ``layer``'s class from its config (how a model is cloned).

    Raises:
      ValueError: the class cannot be rebuilt from its own config (KerasHub 0.32's ``ViTPatchingAndEmbedding``
        writes keys its constructor refuses), naming the layer and what to do instead.
    """
    try:
        return type(layer).from_config(layer.get_config())
    except (TypeError, ValueError) as e:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) cannot be rebuilt from its own config, so the "
                         f"model cannot be cloned ({str(e).splitlines()[-1]}); convert it where it is: "
                         "make_prunable(model, in_place=True), strip(model, in_place=True)") from None


def to_prunable(layer, options=None):
    """A new, unbuilt prunable twin of a convertible plain layer (same config, plus those of ``options`` (a dict of
    ``make_prunable`` keywords, None values left out) its kind takes); other layers: a plain clone."""
    if not convertible(layer):
        return _from_own_config(layer)
    kind = kind_of(layer)
    extra = {k: v for k, v in (options or {}).items() if k in kind.options and v is not None}
    return kind.prunable.from_config({**layer.get_config(), **extra})


def to_plain(layer):
    """A new, unbuilt plain Keras layer with the config of ``layer`` (a prunable layer becomes its plain class)."""
    kind = kind_of(layer)
    if kind is None or not is_prunable(layer):
        return _from_own_config(layer)
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
    """``graph.model_layers``: a graph model's layers, with those nested in its blocks (``tfprune.layers.nested``);
    a subclassed model's, found recursively; never inside a layer of a registered kind."""
    return graph.model_layers(model, lambda layer: kind_of(layer) is not None)


def kernel_layers(model):
    """The layers of ``model`` with a registered kind and a built kernel (prunable or plain), in model order."""
    return [l for l in model_layers(model) if kind_of(l) is not None and kernel_shape(l) is not None]


def effective_kernel(layer):
    """The unit kernel as the layer computes with it (``kernel * kernel_mask`` for a prunable layer), as NumPy."""
    if is_prunable(layer):
        return layer.masked_kernel()
    kind = kind_of(layer)
    if kind.plain_unit_kernel is not None:
        return kind.plain_unit_kernel(layer)
    return kind.layout.unit_kernel([stacks.of(layer).to_numpy(w) for w in layer.weights])


def masked_weights(layer):
    """The weights of a prunable layer as it computes with them (masks applied), NumPy, in its plain twin's order
    (``[kernel, bias?]``; recurrent: ``[kernel, recurrent_kernel, bias?]``)."""
    return layer.masked_weights()


def kernel_mask(layer):
    """A prunable layer's kernel mask as a bool array (True = kept)."""
    return layer.kernel_mask > 0.5


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
    for cls in tf_keras + [c for plain in custom_layers for c in (plain, custom.prunable_class(plain))]:
        out[cls.__name__] = cls
        out[f"tfprune>{cls.__name__}"] = cls
    return out


__all__ = ["ELEMENTWISE_ACTIVATIONS", "GatedLayout", "KINDS", "KIND_NAMES", "KernelLayout",
           "LayerKind", "PRUNABLE_CLASSES", "TransposedLayout", "activation_name", "convertible", "custom_objects",
           "effective_kernel", "is_elementwise", "is_prunable", "is_tfmot_wrapper",
           "kernel", "kernel_layers", "kernel_mask", "kernel_shape", "kind_of", "mask_weight_ids", "masked_weights",
           "model_layers", "skip_reason", "to_plain", "to_prunable", "with_width"]
