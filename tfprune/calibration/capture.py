"""Each layer's call inputs while a model runs: the one place tfprune hooks a layer's ``call``.

The model runs eagerly (``model(x, training=False)``), so this works the same on graph and subclassed models, on
tf_keras and on Keras 3 with any backend: every selected layer's ``call`` is wrapped, for the duration, by a function
that hands its first argument (as NumPy) to ``record`` and then calls the layer's own ``call``.
"""

import contextlib
import functools

from tfprune import stacks
from tfprune.structure import graph


class _Seen(Exception):
    """Raised by a hook once the only layer wanted has seen its inputs: the rest of the forward pass is skipped."""


@contextlib.contextmanager
def recording_inputs(layers, record):
    """While the block runs, every call of a layer in ``layers`` first calls ``record(layer, inputs as NumPy)``."""
    wrapped = []
    try:
        for layer in layers:
            original = layer.call
            to_numpy = stacks.of(layer).to_numpy

            @functools.wraps(original)
            def call(inputs, *args, _layer=layer, _original=original, _to_numpy=to_numpy, **kwargs):
                record(_layer, _to_numpy(inputs))
                return _original(inputs, *args, **kwargs)
            layer.call = call
            wrapped.append(layer)
        yield
    finally:
        for layer in wrapped:
            del layer.call


def _stops_early(model, layers):
    """True when the forward pass may stop at ``layers``' one layer: a graph model calling it once."""
    return len(layers) == 1 and graph.is_graph_model(model) and graph.call_count(model, layers[0]) == 1


def run(model, calibration, layers, record, progress=None):
    """Runs ``model`` on every calibration batch, ``record(layer, inputs)`` seeing the inputs of ``layers``. With
    one layer of a graph model that calls it once, each pass stops there (the layers after it are not run).

    ``progress``: optional ``(batches done, batches in all) -> None``.
    """
    stack = stacks.of(model)
    count = -(-len(calibration) // int(calibration.batch_size))
    stop = _stops_early(model, layers)

    def hook(layer, x):
        record(layer, x)
        if stop:
            raise _Seen()
    with recording_inputs(layers, hook):
        for index, (x, _) in enumerate(calibration.batches()):
            try:
                model(stack.to_tensor(x), training=False)
            except _Seen:
                pass
            if progress is not None:
                progress(index + 1, count)


__all__ = ["recording_inputs", "run"]
