"""Subclasses of registered layer types (KerasHub's ``ReversibleEmbedding`` is an Embedding, a user's ``MyDense`` a
Dense): pruned as their registered parent is, their own code kept.

The registry matches classes exactly (a Keras subclass such as tf_keras' Conv2DTranspose lays its kernel out
otherwise and has its own entry). A subclass defined outside the Keras packages, or one of ``_KERAS_SUBCLASSES``,
gets the kind of its nearest registered parent with a prunable twin of its own: the parent's masking mixin put
before the subclass (``Prunable<Name>``, registered as ``tfprune>Prunable<Name>``), so the subclass's ``call``,
``build``, config and other methods run unchanged over the masked variables.

**Honoured**: anything a subclass does with the parent's weights (its own ``call``: ReversibleEmbedding's reverse
projection to logits reads the masked embeddings), extra config keys, extra layers without weights.
**Refused** (the layer stays dense, ``LayerKind.unsupported`` says why): a subclass that makes weights of its own
(an untied ReversibleEmbedding's ``reverse_embeddings``: its mask and its saving would be missing) or saves its
variables its own way (``save_own_variables``/``load_own_variables``, which the twin replaces).
"""

import dataclasses

from tfprune._env import keras, keras3

# Keras' own subclasses of a registered class that follow their parent's weights (matched like a user's).
_KERAS_SUBCLASSES = ("ReversibleEmbedding",)
_OWN_SAVING = ("save_own_variables", "load_own_variables")
# The weights registered parents make themselves (a subclass's other own weights are refused).
_PARENT_WEIGHTS = frozenset({"kernel", "bias", "embeddings", "depthwise_kernel", "pointwise_kernel",
                             "recurrent_kernel"})
_TWINS = {}  # subclass -> its LayerKind


def _matched(cls):
    module = cls.__module__
    return not module.startswith(("keras.", "tf_keras.", "tensorflow_model_optimization.")) or \
        cls.__name__ in _KERAS_SUBCLASSES


def _own_weight_names(layer):
    """Names of the variables ``layer`` holds itself (not through sublayers)."""
    # pylint: disable=protected-access
    if isinstance(layer, keras3.Layer):
        own = list(layer._trainable_variables) + list(layer._non_trainable_variables)
    else:
        own = list(layer._trainable_weights) + list(layer._non_trainable_weights)
    return [w.name.split("/")[-1].split(":")[0] for w in own]


def _support(parent_kind):
    def unsupported(layer):
        reason = parent_kind.unsupported(layer)
        if reason is not None:
            return reason
        cls, parent = type(layer), parent_kind.plain
        chain = cls.__mro__[:cls.__mro__.index(parent)]
        saving = [m for m in _OWN_SAVING if any(m in c.__dict__ for c in chain)]
        if saving:
            return (f"{cls.__name__} (a subclass of {parent.__name__}) defines {', '.join(saving)}, which tfprune's "
                    "masked twin replaces")
        extra = [n for n in _own_weight_names(layer) if n not in _PARENT_WEIGHTS]
        if extra:
            return (f"{cls.__name__} (a subclass of {parent.__name__}) makes weights of its own "
                    f"({', '.join(extra)}) that tfprune would not mask")
        return None
    return unsupported


def kind_for(cls, by_type):
    """The ``LayerKind`` of a subclass ``cls`` of a registered plain class (``by_type``: class -> kind), or None:
    not a subclass of one, a Keras class with an entry or layout of its own, or a prunable twin already."""
    if cls in _TWINS:
        return _TWINS[cls]
    if not _matched(cls):
        return None
    parent_kind = next((by_type[c] for c in cls.__mro__[1:] if c in by_type), None)
    if parent_kind is None or issubclass(cls, parent_kind.prunable) or cls.__name__.startswith("Prunable"):
        return None
    register = (keras3.saving.register_keras_serializable if issubclass(cls, keras3.layers.Layer)
                else keras.utils.register_keras_serializable)
    twin = register(package="tfprune")(type(f"Prunable{cls.__name__}", (parent_kind.prunable, cls), {
        "__doc__": f"``{cls.__name__}`` pruned as a {parent_kind.name} (``tfprune.layers.subclasses``).",
        "__module__": __name__}))
    kind = dataclasses.replace(parent_kind, plain=cls, prunable=twin, unsupported=_support(parent_kind))
    _TWINS[cls] = _TWINS[twin] = kind
    return kind


__all__ = ["kind_for"]
