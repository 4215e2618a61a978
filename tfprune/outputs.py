"""What a classifier's outputs are: class probabilities (it ends in a softmax) or logits (anything else).

Keras and TensorFlow tutorials end a classifier in ``Dense(classes)`` and train it with
``SparseCategoricalCrossentropy(from_logits=True)``; tfprune's reference models end in a softmax. Both are accepted
everywhere: ``output_kind`` tells which a model gives, losses use ``from_logits`` accordingly, accuracy is the argmax
either way, and outputs are compared with ``as_probabilities`` (a softmax of logits) so one tolerance serves both.
"""

import numpy as np

from tfprune.structure import graph
from tfprune.layers import registry
from tfprune import stacks

PROBABILITIES = "probabilities"
LOGITS = "logits"
KINDS = (PROBABILITIES, LOGITS)
# A row of probabilities sums to 1 within float32 rounding; int8 softmax outputs (steps of 1/256) within ~0.04.
_SUM_TOLERANCE = 1e-3


def softmax(logits):
    """Row-wise softmax of ``logits`` (N, classes) as float64, computed stably (the row's maximum subtracted)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def log_softmax(logits):
    """Row-wise log-softmax of ``logits`` (N, classes) as float64 (what ``from_logits=True`` losses take the log
    of, without clipping)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def as_probabilities(outputs, kind):
    """``outputs`` (N, classes) as probabilities: a softmax of them when ``kind`` is ``LOGITS``, else as given.

    Raises:
      ValueError: ``kind`` is not one of ``KINDS``.
    """
    check_kind(kind)
    return softmax(outputs) if kind == LOGITS else np.asarray(outputs)


def check_kind(kind):
    """ValueError unless ``kind`` is ``"probabilities"`` or ``"logits"``."""
    if kind not in KINDS:
        raise ValueError(f"output kind {kind!r} is not one of {', '.join(KINDS)}")


def are_probabilities(values):
    """True when every row of ``values`` (N, classes) is non-negative and sums to 1 (within 1e-3)."""
    values = np.asarray(values, np.float64)
    return bool(np.all(values >= -1e-6) and np.allclose(values.sum(axis=-1), 1.0, atol=_SUM_TOLERANCE))


def _activation_name(layer):
    """The name of the activation that ends ``layer``'s computation, or None when it cannot be read from it."""
    if registry.is_tfmot_wrapper(layer):
        layer = layer.layer
    if type(layer).__name__ == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if callable(activation) else None


def last_activation(model):
    """The name of the activation that ends ``model``'s output (``"softmax"``, ``"linear"``, ``"sigmoid"``, ...):
    its output layer's ``activation`` or a ``Softmax`` layer, a TF-MOT wrapper looked through. None when it cannot
    be read without a run (not a built graph model, several outputs, a layer without an ``activation``)."""
    if not graph.is_built_graph(model) or len(model.outputs) != 1:
        return None
    (name,) = graph.output_layer_names(model)
    return _activation_name(model.get_layer(name))


def output_kind(model, sample=None):
    """``"probabilities"`` when ``model``'s output rows are class probabilities, ``"logits"`` otherwise.

    A graph model whose output layer ends in a softmax (a ``softmax`` activation, a ``Softmax`` layer; a TF-MOT
    wrapper is looked through) gives probabilities, and one ending in a ``linear`` activation gives logits, with no
    model run. Any other model (another last activation, a subclassed model that may apply a softmax in its own
    code) is run once, on ``sample`` (inputs (N, ...), e.g. a few test images) or else on a zero batch of its input
    shape: rows that are non-negative and sum to 1 are probabilities.

    Raises:
      ValueError: a model that must be run but has neither ``sample`` nor a single input of known shape.
    """
    activation = last_activation(model)
    if activation in ("softmax", "linear"):
        return PROBABILITIES if activation == "softmax" else LOGITS
    if sample is None:
        sample = graph.zero_batch(model, 2)
    if sample is None:
        raise ValueError(f"model {model.name!r}: cannot tell whether it outputs probabilities or logits without "
                         "running it, and it has no single input of known shape; pass a sample of its inputs")
    values = stacks.of(model).to_numpy(model(sample, training=False))
    return PROBABILITIES if are_probabilities(values) else LOGITS


def with_softmax(model):
    """A functional model computing ``softmax(model(x))`` with ``model``'s own layers (weights shared, not copied):
    a logits model turned into one that outputs probabilities, e.g. for an app that wants them from the file.

    Raises:
      ValueError: ``model`` is not a built graph model with one input and one output.
    """
    graph.check_graph_model(model, "appends a softmax to", built=True)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "a softmax is appended to one output only")
    k = stacks.of(model).keras
    outputs = k.layers.Softmax(name=f"{model.name}_softmax")(model.outputs[0])
    return k.Model(model.inputs, outputs, name=model.name)


__all__ = ["KINDS", "LOGITS", "PROBABILITIES", "are_probabilities", "as_probabilities", "check_kind",
           "last_activation", "log_softmax", "output_kind", "softmax", "with_softmax"]
