"""The Keras model graph: the only module that reads Keras' private graph attributes.

Everything that asks "is this a Sequential/functional model", "which layers are the model's outputs", "how often
is this layer called in this model", or "who feeds whom" asks here, so the rules are written once:

- a **graph model** is a ``Sequential`` or a functional ``Model`` (``_is_graph_network``); a subclassed ``Model``
  has no graph tfprune could rewrite;
- a **built** graph model has its graph already (a functional model, or a ``Sequential`` given an input shape);
- a layer's **calls** in a model are its inbound nodes that belong to that model (a layer may also be called in
  other models that share it);
- the **output layers** are the layers whose outputs are model outputs (their units are the classes).
"""

import collections
import dataclasses

from tfprune._env import keras, tf


def is_graph_model(model):
    """True for a ``Sequential`` or functional tf_keras model (built or not), False for anything else."""
    return isinstance(model, keras.Model) and (
        isinstance(model, keras.Sequential) or bool(getattr(model, "_is_graph_network", False)))


def is_built_graph(model):
    """True when ``model`` is a graph model whose graph exists (functional, or a Sequential with an input shape)."""
    return isinstance(model, keras.Model) and bool(getattr(model, "_is_graph_network", False))


def check_graph_model(model, action="rewrites", built=False):
    """Raises ValueError unless ``model`` is a Sequential/functional tf_keras model (``built``: with its graph).

    Args:
      action: what the caller does, for the message (``"rewrites"``, ``"prunes"``, ``"shrinks"``).

    Raises:
      ValueError: not a tf_keras Model; a subclassed Model (the message says to rebuild it functionally); with
        ``built``, an unbuilt Sequential (the message says to give it an input shape).
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"expected a tf_keras Model, got {type(model).__name__}")
    if not is_graph_model(model):
        raise ValueError(f"model {model.name!r} is a subclassed Model ({type(model).__name__}); tfprune {action} "
                         "only Sequential and functional models: rebuild it with the functional API")
    if built and not is_built_graph(model):
        raise ValueError(f"model {model.name!r} is an unbuilt Sequential (give it an input shape); tfprune {action} "
                         "only built Sequential and functional models")


def nodes_in(model, layer):
    """The calls (inbound nodes) of ``layer`` that belong to ``model``, in order."""
    # pylint: disable=protected-access
    network_nodes = getattr(model, "_network_nodes", None)
    if network_nodes is None:  # an unbuilt Sequential: every call counts
        return list(layer._inbound_nodes)
    return [n for i, n in enumerate(layer._inbound_nodes) if f"{layer.name}_ib-{i}" in network_nodes]


def call_count(model, layer):
    """How many times ``model`` calls ``layer`` (more than 1: a shared layer)."""
    return len(nodes_in(model, layer))


def output_shapes(model, layer):
    """The output shape (a ``TensorShape``, batch axis first) of each call of ``layer`` in ``model``."""
    return [tf.nest.flatten(node.outputs)[0].shape for node in nodes_in(model, layer)]


def output_layer_names(model):
    """Names of the layers whose outputs are model outputs (their units are the classes: never unit-pruned)."""
    return {t._keras_history.layer.name for t in model.outputs}  # pylint: disable=protected-access


@dataclasses.dataclass(frozen=True)
class LayerGraph:
    """Who feeds whom inside one model, by layer name.

    inbound: layer -> names of the layers feeding its (last) call; consumers: layer -> names of the layers it feeds
    (one entry per call that reads it); calls: layer -> number of calls in the model; outputs: the output layers.
    """
    inbound: dict
    consumers: dict
    calls: dict
    outputs: frozenset


def layer_graph(model):
    """The ``LayerGraph`` of a built Sequential/functional model."""
    inbound, consumers, calls = {}, collections.defaultdict(list), {}
    for layer in model.layers:
        nodes = nodes_in(model, layer)
        calls[layer.name] = len(nodes)
        for node in nodes:
            parents = [history[0].name for history in node.iterate_inbound()]
            inbound[layer.name] = parents
            for parent in parents:
                consumers[parent].append(layer.name)
    return LayerGraph(inbound, dict(consumers), calls, frozenset(output_layer_names(model)))


def clone(model, clone_function):
    """``keras.models.clone_model(model, clone_function=...)``: the same graph with each layer replaced by
    ``clone_function(layer)`` (a new, unbuilt layer); weights are not copied."""
    return keras.models.clone_model(model, clone_function=clone_function)


def copy_weights(old_model, new_model, copy):
    """Calls ``copy(old_layer, new_layer)`` for every layer of ``old_model`` and its namesake in ``new_model``."""
    for old in old_model.layers:
        copy(old, new_model.get_layer(old.name))


__all__ = ["LayerGraph", "call_count", "check_graph_model", "clone", "copy_weights", "is_built_graph",
           "is_graph_model", "layer_graph", "nodes_in", "output_layer_names", "output_shapes"]
