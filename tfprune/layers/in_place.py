"""In-place conversion: the layers of a model that cannot be cloned (a subclassed Model) become prunable, or plain
again, without the model being rebuilt.

A subclassed model's layers are made by its own code, so ``make_prunable`` cannot rebuild the model with other
layers. Instead each layer of a registered kind keeps its identity and takes on the state and class of its twin:
the twin is made from the layer's config (``registry.to_prunable`` / ``to_plain``), built from the layer's build
config, given the layer's weights, and then the layer object adopts the twin's attributes and class
(``transplant``). The model's attributes, lists and ``call`` code still reach the same objects, so its outputs are
unchanged, and the rest of the library (``prune``, the callbacks, the sparsity report) finds the layers by walking
the model's sublayers (``registry.model_layers``).

The layers' variables are new objects: a compiled model must be compiled again before it trains (its optimizer
was built for the old variables), and the model's cached predict/train/test functions are dropped here.
"""

import contextlib

from tfprune.layers import registry
from tfprune._env import keras3, tf

# Attributes a layer keeps across a transplant: where it was called (graph nodes) and the shapes it was built with.
_KEPT = ("_build_shapes_dict", "_build_input_shape", "_inbound_nodes", "_outbound_nodes", "_inbound_nodes_value",
         "_outbound_nodes_value")
_CACHED_FUNCTIONS = ("train_function", "test_function", "predict_function")


def transplant(layer, twin):
    """Makes ``layer`` (the same object) the twin: the twin's attributes and class, keeping ``_KEPT``."""
    for attr in _KEPT:
        if attr in layer.__dict__:
            twin.__dict__[attr] = layer.__dict__[attr]
    object.__setattr__(layer, "__dict__", twin.__dict__)
    object.__setattr__(layer, "__class__", type(twin))


def _scope(layer):
    """The name scope ``layer``'s variables were made in (``classifier/body/conv`` for ``classifier/body/conv/kernel``),
    so its twin's variables get the same names (tf_keras saves weights by name) and Keras 3 paths; or a no-op."""
    names = [getattr(w, "path", None) or w.name for w in layer.weights[:1]]
    parts = names[0].split("/") if names else []
    own = [i for i, part in enumerate(parts[:-1]) if part == layer.name]
    if not own:
        return contextlib.nullcontext()
    if not isinstance(layer, keras3.Layer):
        return tf.name_scope("/".join(parts[:own[-1] + 1]) + "/")
    scopes = contextlib.ExitStack()  # Keras 3 scopes take one name each; build() opens the layer's own
    for part in parts[:own[-1]]:
        scopes.enter_context(keras3.name_scope(part))
    return scopes


def _built_twin(layer, make_twin, copy):
    twin = make_twin(layer)
    if layer.built:
        build_like = registry.kind_of(layer).build_like
        config = layer.get_build_config()
        if build_like is None and not config:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) is built but has no build config "
                             "(get_build_config() returned nothing); it cannot be rebuilt in place")
        with _scope(layer):
            if build_like is not None:
                build_like(twin, layer)
            else:
                twin.build_from_config(config)
        twin.built = True  # as a first call does (a user's build need not set it; tf_keras' build_from_config won't)
        copy(layer, twin)
    return twin


def replace(layer, twin, weights, build_config=None):
    """Builds ``twin`` like ``layer`` (or from ``build_config``: another input shape), gives it ``weights`` and makes
    ``layer`` the twin (``transplant``); the graph nodes and the owners of ``layer`` reach it unchanged. Returns a
    function making ``layer`` what it was."""
    build_like = registry.kind_of(layer).build_like
    with _scope(layer):
        if build_config is None and build_like is not None:
            build_like(twin, layer)
        else:
            twin.build_from_config(build_config or layer.get_build_config())
    twin.built = True
    twin.set_weights(weights)
    state, cls = layer.__dict__, type(layer)
    transplant(layer, twin)
    return lambda: (object.__setattr__(layer, "__dict__", state), object.__setattr__(layer, "__class__", cls))


def convert(model, wanted, make_twin, copy):
    """Replaces, in place, every layer of ``model`` that ``wanted(layer)`` accepts by ``make_twin(layer)``, built
    like it, with ``copy(layer, twin)`` moving the weights. Every twin is made before any layer changes, so nothing
    is modified when it raises. Returns the names of the converted layers, in model order.

    Raises:
      ValueError: a built layer without a build config; whatever building a twin or copying raises.
    """
    layers = [l for l in registry.model_layers(model) if wanted(l)]
    twins = [_built_twin(l, make_twin, copy) for l in layers]
    for layer, twin in zip(layers, twins):
        transplant(layer, twin)
    for name in _CACHED_FUNCTIONS:
        if getattr(model, name, None) is not None:
            setattr(model, name, None)
    return [l.name for l in layers]


def make_prunable(model, options=None):
    """Makes the convertible layers of ``model`` prunable in place (masks all ones; ``options`` as for
    ``registry.to_prunable``); returns their names."""
    return convert(model, registry.convertible, lambda layer: registry.to_prunable(layer, options),
                   lambda layer, twin: twin.copy_plain(layer))


def strip(model):
    """Turns the prunable layers of ``model`` back into their plain classes in place, masks baked into the weights
    (pruned weights are stored zeros); returns their names."""
    return convert(model, registry.is_prunable, registry.to_plain,
                   lambda layer, twin: twin.set_weights(registry.masked_weights(layer)))


__all__ = ["convert", "make_prunable", "replace", "strip", "transplant"]
