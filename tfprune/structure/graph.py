"""The Keras model graph: the only module that reads Keras' private graph attributes.

Everything that asks "is this a Sequential/functional model", "which layers are the model's outputs", "how often
is this layer called in this model", or "who feeds whom" asks here, so the rules are written once:

- a **graph model** is a ``Sequential`` or a functional ``Model`` (tf_keras: ``_is_graph_network``; Keras 3: a
  ``Functional``); a subclassed ``Model`` has no graph tfprune could rewrite;
- a **built** graph model has its graph already (a functional model, or a ``Sequential`` given an input shape;
  Keras 3 keeps a built Sequential's graph in ``_functional``);
- a layer's **calls** in a model are its inbound nodes that belong to that model (a layer may also be called in
  other models that share it);
- the **output layers** are the layers whose outputs are model outputs (their units are the classes);
- a subclassed model's **layers** are found through its tracked sublayers (``model_layers``), and its output layers
  by running it once (``output_layer_names``), since it has no graph to read them from.
"""

import collections
import dataclasses
import weakref

import numpy as np

from tfprune import stacks
from tfprune._env import keras, keras3, tf
from keras.src.models.functional import Functional as _Keras3Functional  # noqa: E402  (not exported publicly)


def _keras3_functional(model):
    """The ``Functional`` holding a Keras 3 model's graph (a built Sequential's inner one), or None."""
    if isinstance(model, keras3.Sequential):
        return getattr(model, "_functional", None)
    return model if isinstance(model, _Keras3Functional) else None


def is_graph_model(model):
    """True for a ``Sequential`` or functional model of either Keras stack (built or not), False for anything else."""
    if isinstance(model, keras.Model):
        return isinstance(model, keras.Sequential) or bool(getattr(model, "_is_graph_network", False))
    return isinstance(model, (keras3.Sequential, _Keras3Functional))


def is_built_graph(model):
    """True when ``model`` is a graph model whose graph exists (functional, or a Sequential with an input shape)."""
    if isinstance(model, keras.Model):
        return bool(getattr(model, "_is_graph_network", False))
    return isinstance(model, keras3.Model) and _keras3_functional(model) is not None


def check_graph_model(model, action="rewrites", built=False, hint="rebuild it with the functional API"):
    """Raises ValueError unless ``model`` is a Sequential/functional model (``built``: with its graph).

    Args:
      action: what the caller does, for the message (``"rewrites"``, ``"prunes"``, ``"shrinks"``).
      hint: what the message tells the owner of a subclassed model to do.

    Raises:
      ValueError: not a Keras Model (tf_keras or Keras 3); a subclassed Model (the message says to rebuild it
        functionally); with ``built``, an unbuilt Sequential (the message says to give it an input shape).
    """
    if not stacks.is_model(model):
        raise ValueError(f"expected a Keras Model (tf_keras or Keras 3), got {type(model).__name__}")
    if not is_graph_model(model):
        raise ValueError(f"model {model.name!r} is a subclassed Model ({type(model).__name__}); tfprune {action} "
                         f"only Sequential and functional models: {hint}")
    if built and not is_built_graph(model):
        raise ValueError(f"model {model.name!r} is an unbuilt Sequential (give it an input shape); tfprune {action} "
                         "only built Sequential and functional models")


def nodes_in(model, layer):
    """The calls (inbound nodes) of ``layer`` that belong to ``model``, in order (a shared layer also has nodes in
    other models; a rebuilt Keras 3 Sequential leaves stale ones)."""
    # pylint: disable=protected-access
    if isinstance(model, keras3.Model):
        functional = _keras3_functional(model)
        if functional is None:  # an unbuilt Sequential: no call yet
            return []
        return [n for i, n in enumerate(layer._inbound_nodes) if f"{id(layer)}_ib-{i}" in functional._nodes]
    network_nodes = getattr(model, "_network_nodes", None)
    if network_nodes is None:  # an unbuilt Sequential: every call counts
        return list(layer._inbound_nodes)
    return [n for i, n in enumerate(layer._inbound_nodes) if f"{layer.name}_ib-{i}" in network_nodes]


def _node_outputs(node):
    return tf.nest.flatten(node.outputs)


def _node_parents(node):
    """Names of the layers whose outputs a node reads."""
    if hasattr(node, "iterate_inbound"):  # tf_keras
        return [history[0].name for history in node.iterate_inbound()]
    return [t._keras_history.operation.name for t in node.input_tensors]  # pylint: disable=protected-access


def call_count(model, layer):
    """How many times ``model`` calls ``layer`` (more than 1: a shared layer)."""
    return len(nodes_in(model, layer))


def output_shapes(model, layer):
    """The output shape (a tuple, batch axis first) of each call of ``layer`` in ``model``."""
    return [stacks.shape_tuple(_node_outputs(node)[0].shape) for node in nodes_in(model, layer)]


def input_shape(layer):
    """The input shape (a tuple, batch axis first) of a layer's first call."""
    if isinstance(layer, keras3.Layer):
        return stacks.shape_tuple(tf.nest.flatten(layer.input)[0].shape)
    return tuple(layer.input_shape)


def input_shapes(layer):
    """The shapes (tuples, batch axis first) of every input of a layer's first call (MultiHeadAttention's query,
    value and key)."""
    return [stacks.shape_tuple(t.shape) for t in tf.nest.flatten(layer.input)]


def model_input_shape(model):
    """The shape (a tuple, batch axis first) of a single-input model's input."""
    return stacks.shape_tuple(model.inputs[0].shape)


def model_output_shape(model):
    """The shape (a tuple, batch axis first) of a single-output model's output."""
    return stacks.shape_tuple(model.outputs[0].shape)


def is_block(layer):
    """True for a layer of a graph model tfprune looks inside: a layer class of neither Keras package nor TF-MOT
    holding layers (a user's or KerasHub's block: ``TransformerEncoder``, ``GemmaDecoderBlock``; a KerasHub backbone
    inside its task model)."""
    if type(layer).__module__.startswith(("keras.", "tf_keras.", "tensorflow_model_optimization.")):
        return False
    return bool(layer._flatten_layers(include_self=False, recursive=False))  # pylint: disable=protected-access


def nested_layers(parent, is_leaf, path=()):
    """[(layer, path)] of every layer tracked under ``parent`` (attributes, lists, dicts), depth first, not inside a
    layer ``is_leaf`` accepts; ``path`` is the names of the layers above it below ``parent``, then its own."""
    found, seen = [], set()

    def walk(layer, above):
        for child in layer._flatten_layers(include_self=False, recursive=False):  # pylint: disable=protected-access
            if id(child) not in seen:
                seen.add(id(child))
                found.append((child, above + (child.name,)))
                if not is_leaf(child):
                    walk(child, above + (child.name,))
    walk(parent, tuple(path))
    return found


def model_layers(model, is_leaf=lambda layer: False):
    """The layers tfprune works on, in order: a graph model's ``model.layers``, each followed by the layers nested in
    it when it is a block (``is_block``: a custom layer holding layers, as KerasHub's transformer blocks do),
    found recursively but not inside a layer ``is_leaf`` accepts (a layer type the registry knows keeps its own
    sublayers, as MultiHeadAttention its projections); for a subclassed model, every layer tracked under it,
    likewise.

    Raises:
      ValueError: two leaf layers of a subclassed model share a name (tfprune addresses layers by name).
    """
    if is_graph_model(model):
        found = []
        for layer in model.layers:
            found.append(layer)
            if is_block(layer) and not is_leaf(layer):
                found.extend(child for child, _ in nested_layers(layer, is_leaf))
        return found
    found = [layer for layer, _ in nested_layers(model, is_leaf)]
    names = collections.Counter(l.name for l in found if is_leaf(l))
    twice = sorted(n for n, count in names.items() if count > 1)
    if twice:
        raise ValueError(f"model {model.name!r} holds several layers named {', '.join(map(repr, twice))}; tfprune "
                         "addresses layers by name: give them unique names")
    return found


PATH_SEPARATOR = "."


def block_leaves(model, is_leaf):
    """[(block, [(leaf, path name)])] for each block of a graph model (``model_layers``) holding leaves ``is_leaf``
    accepts; a leaf's path name is the names from the block down to it joined by ``PATH_SEPARATOR``
    (``transformer_layer_0.feedforward_intermediate_dense``): unique in the model where the leaves' own names
    repeat from block to block."""
    out = []
    for layer in model.layers if is_graph_model(model) else ():
        if is_block(layer) and not is_leaf(layer):
            leaves = [(child, PATH_SEPARATOR.join((layer.name,) + path[:-1] + (_own_name(child),)))
                      for child, path in nested_layers(layer, is_leaf) if is_leaf(child)]
            if leaves:
                out.append((layer, leaves))
    return out


def _own_name(layer):
    """A leaf's name before ``name_by_path`` (its path name's last part)."""
    return layer.name.rsplit(PATH_SEPARATOR, 1)[-1]


def name_by_path(model, is_leaf):
    """Renames every leaf nested in a block of graph model ``model`` to its path name (``block_leaves``), so tfprune
    can address it by name; its variables keep their paths. Again on a renamed model, nothing changes. Returns the
    path names, in model order."""
    names = []
    for _, leaves in block_leaves(model, is_leaf):
        for leaf, path in leaves:
            if isinstance(leaf, keras3.Layer):
                leaf.name = path
            else:
                leaf._name = path  # pylint: disable=protected-access
            names.append(path)
    return names


_PROBED = weakref.WeakKeyDictionary()  # subclassed model -> (ids of its layers, names of its output layers)


def _probe_input(model):
    """A zero batch of one for a subclassed model built on a single input shape, or None."""
    config = model.get_build_config() if model.built else None
    shape = (config or {}).get("input_shape")
    if shape is None or not all(d is None or isinstance(d, int) for d in shape):
        return None
    return np.zeros((1,) + tuple(2 if d is None else d for d in shape[1:]), "float32")


def zero_batch(model, size=1):
    """A zero batch of ``size`` shaped like a model's single input (an unknown length becomes 2): a graph model's
    declared input, a subclassed model's build shape; None when there is no single input of known shape."""
    if is_built_graph(model):
        if len(model.inputs) != 1:
            return None
        shape = model_input_shape(model)[1:]
        return np.zeros((size,) + tuple(2 if d is None else d for d in shape), "float32")
    sample = _probe_input(model)
    return None if sample is None else np.zeros((size,) + sample.shape[1:], sample.dtype)


def called_output_layer_names(model, layers):
    """Names of the ``layers`` that give a subclassed ``model``'s outputs, found by running the model once on a zero
    batch of one: those whose call returned one of the outputs; when none did (the model's code applies an
    operation after its last layer, e.g. a softmax), the last of them to return a tensor as wide as an output (its
    last axis). None when the model was not built on one input shape (nothing to run on) or no layer qualifies.

    Each layer's ``call`` is wrapped for that one run (an instance attribute, removed after), so the result is what
    the model's own code does; it is remembered per model until its layers change."""
    key = tuple(id(l) for l in layers)
    if model in _PROBED and _PROBED[model][0] == key:
        return _PROBED[model][1]
    sample = _probe_input(model)
    if sample is None:
        return None
    returned = []  # (name, outputs) in the order the calls finished
    for layer in layers:
        def recording(*args, _call=layer.call, _name=layer.name, **kwargs):
            outputs = _call(*args, **kwargs)
            returned.append((_name, outputs))
            return outputs
        object.__setattr__(layer, "call", recording)
    try:
        outputs = tf.nest.flatten(model(sample))
    finally:
        for layer in layers:
            layer.__dict__.pop("call", None)
    names = {name for name, result in returned if any(result is o for o in outputs)}
    if not names:
        widths = {tuple(o.shape)[-1] for o in outputs if len(o.shape)}
        wide = [name for name, result in returned if len(getattr(result, "shape", ())) and
                tuple(result.shape)[-1] in widths]
        names = set(wide[-1:])
    _PROBED[model] = (key, names or None)
    return names or None


def output_layer_names(model, layers=None):
    """Names of the layers whose outputs are model outputs (their units are the classes: never unit-pruned).

    A subclassed model is run once to find them (``called_output_layer_names`` over ``layers``, default its
    ``model_layers``); None when it cannot be (it was not built on one input shape)."""
    # pylint: disable=protected-access
    if not is_graph_model(model):
        return called_output_layer_names(model, model_layers(model) if layers is None else layers)
    if isinstance(model, keras3.Model):
        return {t._keras_history.operation.name for t in model.outputs}
    return {t._keras_history.layer.name for t in model.outputs}


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
            parents = _node_parents(node)
            inbound[layer.name] = parents
            for parent in parents:
                consumers[parent].append(layer.name)
    return LayerGraph(inbound, dict(consumers), calls, frozenset(output_layer_names(model)))


def keras3_calls(model):
    """The calls of a functional Keras 3 model in execution order: ``[(layer, node), ...]`` (input layers left out).

    ``node.arguments.fill_in(tensors)`` gives a call's ``(args, kwargs)`` from ``{id(keras tensor): tensor}``, and
    ``node.outputs`` its output keras tensors: enough to rebuild the graph with other layers
    (``tfprune.experiments.twin``).
    """
    functional = _keras3_functional(model)
    calls = []
    for depth in sorted(functional._nodes_by_depth, reverse=True):  # pylint: disable=protected-access
        for node in functional._nodes_by_depth[depth]:  # pylint: disable=protected-access
            if not node.is_input:
                calls.append((node.operation, node))
    return calls


def keras3_input_layers(model):
    """The InputLayer of each input of a built Keras 3 model, in order."""
    functional = _keras3_functional(model)
    return [t._keras_history.operation for t in functional.inputs]  # pylint: disable=protected-access


def keras3_io(model):
    """(input keras tensors, output keras tensors) of a built Keras 3 graph model (a Sequential's inner graph)."""
    functional = _keras3_functional(model)
    return list(functional.inputs), list(functional.outputs)


def clone(model, clone_function):
    """``clone_model(model, clone_function=...)`` of the model's own stack: the same graph with each layer replaced
    by ``clone_function(layer)`` (a new, unbuilt layer; input layers are recreated); weights are not copied."""
    return stacks.of(model).clone_model(model, clone_function)


def copy_weights(old_model, new_model, copy):
    """Calls ``copy(old_layer, new_layer)`` for every layer of ``old_model`` that has weights and its namesake in
    ``new_model`` (layers without weights, input layers among them, have nothing to copy: Keras 3's clone renames
    an unnamed model's input layers after their tensors)."""
    for old in old_model.layers:
        if old.weights:
            copy(old, new_model.get_layer(old.name))


__all__ = ["LayerGraph", "PATH_SEPARATOR", "block_leaves", "call_count", "called_output_layer_names",
           "check_graph_model", "clone", "copy_weights", "is_block",
           "input_shape", "is_built_graph", "is_graph_model", "keras3_calls", "keras3_input_layers",
           "keras3_io", "layer_graph", "model_input_shape", "model_layers", "model_output_shape", "nodes_in",
           "name_by_path", "nested_layers", "output_layer_names", "output_shapes"]
