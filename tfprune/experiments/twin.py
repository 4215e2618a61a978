"""A tf_keras twin of a Keras 3 model: the same layers with the same weights, for TF-MOT (which runs on tf_keras
only).

Each Keras 3 layer becomes the tf_keras class of the same name, built from its config translated to tf_keras'
conventions (dtype policies as names, ``batch_shape`` as ``batch_input_shape``, initializer and layer keys tf_keras
does not know dropped), and gets its weights (a tfprune prunable layer's masks baked in). The twin is accepted only
after it computes the same outputs as the original on real inputs (``check``): a twin that differs would make the
comparison unfair, so it is an error, never a silently different model.
"""

import copy
import inspect

import numpy as np

from tfprune.structure import graph
from tfprune.layers import registry
from tfprune import stacks
from tfprune._env import keras as tf_keras
from tfprune._env import tf

# Keyword arguments every tf_keras layer takes (through **kwargs) besides its own signature.
_BASE_LAYER_KEYS = {"name", "dtype", "trainable", "input_shape", "batch_input_shape", "batch_size", "weights",
                    "activity_regularizer", "autocast", "input_dim", "dynamic", "implementation"}
TOLERANCE = 1e-5  # max |output difference| of an accepted twin (float32 summation order differs, ~1e-7)


class TwinError(ValueError):
    """The model has no faithful tf_keras twin; the message names the layer (or the output difference)."""


def _fix_nested(value):
    """Keras 3 serialized values as tf_keras writes them (recursively)."""
    if isinstance(value, dict):
        if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            return value["config"]["name"]
        value = {k: _fix_nested(v) for k, v in value.items()}
        if str(value.get("module", "")).startswith("keras.initializers") and isinstance(value.get("config"), dict):
            cls = getattr(tf_keras.initializers, value.get("class_name", ""), None)
            if cls is not None:
                known = set(inspect.signature(cls.__init__).parameters)
                value["config"] = {k: v for k, v in value["config"].items() if k in known or v is not None}
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_fix_nested(v) for v in value)
    return value


def _tf_keras_class(layer):
    """(tf_keras class, its name) for a Keras 3 layer: a tfprune prunable layer maps to its plain parent."""
    kind = registry.kind_of(layer)
    cls = kind.plain if kind is not None else type(layer)
    if cls.__module__.startswith("keras.") and hasattr(tf_keras.layers, cls.__name__):
        return getattr(tf_keras.layers, cls.__name__), cls.__name__
    raise TwinError(f"layer {layer.name!r} ({type(layer).__name__}) has no tf_keras twin")


def layer_config(class_name, config):
    """A Keras 3 layer config translated for the tf_keras class ``class_name``: returns (config, dropped keys)."""
    config = _fix_nested(copy.deepcopy(config))
    if class_name == "InputLayer":
        config["batch_input_shape"] = config.pop("batch_shape")
        config.pop("optional", None)
        return config, {}
    cls = getattr(tf_keras.layers, class_name)
    known = set(_BASE_LAYER_KEYS)
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            known |= set(inspect.signature(klass.__init__).parameters)
    dropped = {k: config.pop(k) for k in list(config) if k not in known}
    return config, dropped


def _twin_layer(layer):
    cls, name = _tf_keras_class(layer)
    config, dropped = layer_config(name, layer.get_config())
    meaningful = {k: v for k, v in dropped.items() if v not in (None, False, 0, "", [], {})}
    if meaningful:  # a setting tf_keras cannot express (LoRA rank, quantization, RMS scaling...)
        raise TwinError(f"layer {layer.name!r} ({type(layer).__name__}) uses {meaningful}, which tf_keras has no "
                        "twin for")
    return cls.from_config(config)


def _weights(layer):
    if registry.is_prunable(layer):
        return registry.masked_weights(layer)
    return [stacks.KERAS3.to_numpy(w) for w in layer.weights]


def to_tf_keras(model):
    """The tf_keras twin of a built Sequential or functional Keras 3 model (not checked: see ``checked_twin``).

    Raises:
      TwinError: a layer without a tf_keras counterpart, or using a setting tf_keras cannot express.
      ValueError: not a built Keras 3 graph model.
    """
    if stacks.of(model) is not stacks.KERAS3:
        raise ValueError(f"model {model.name!r} is not a Keras 3 model")
    graph.check_graph_model(model, "twins", built=True)
    tensors, made, inputs = {}, {}, []
    model_inputs, model_outputs = graph.keras3_io(model)
    for input_layer, x in zip(graph.keras3_input_layers(model), model_inputs):
        config, _ = layer_config("InputLayer", input_layer.get_config())
        t = tf_keras.Input(batch_shape=config["batch_input_shape"], dtype=config.get("dtype"), name=config["name"])
        tensors[id(x)] = t
        inputs.append(t)
    for layer, node in graph.keras3_calls(model):
        if id(layer) not in made:
            made[id(layer)] = _twin_layer(layer)
        args, kwargs = node.arguments.fill_in(tensors)
        for keras_tensor, t in zip(node.outputs, tf.nest.flatten(made[id(layer)](*args, **kwargs))):
            tensors[id(keras_tensor)] = t
    outputs = [tensors[id(o)] for o in model_outputs]
    twin = tf_keras.Model(inputs, outputs, name=model.name)
    for layer in model.layers:
        if id(layer) in made:
            made[id(layer)].set_weights(_weights(layer))
    return twin


def checked_twin(model, x):
    """``to_tf_keras(model)``, returned only once it computes the same outputs as ``model`` on ``x`` (real inputs,
    N >= 1): max |difference| <= ``TOLERANCE``.

    Raises:
      TwinError: as ``to_tf_keras``, or outputs that differ (the difference is in the message).
    """
    twin = to_tf_keras(model)
    diff = float(np.max(np.abs(np.asarray(twin(x, training=False)) - stacks.KERAS3.to_numpy(model(x, training=False)))))
    if not diff <= TOLERANCE:
        raise TwinError(f"the tf_keras twin of model {model.name!r} computes other outputs (max |difference| "
                        f"{diff:.3g} > {TOLERANCE:g} on {len(x)} inputs)")
    return twin


__all__ = ["TOLERANCE", "TwinError", "checked_twin", "layer_config", "to_tf_keras"]
