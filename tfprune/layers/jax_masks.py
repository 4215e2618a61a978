"""Keras 3 on JAX: the optimizer step applies the masks, so the forward and backward passes are the plain layer's.

On TensorFlow and PyTorch a pruned variable carries a constraint that multiplies it by its mask after every
optimizer update (``stored_masks.MaskConstraint``). JAX's training step is a pure function of its state: the
optimizer update (``optimizer.stateless_apply``) maps only the trainable and optimizer variables, so a constraint
reading a mask variable there would read a value frozen at trace time. Without help, a layer on JAX therefore
multiplies its kernel by the mask in every forward pass, and its gradient in every backward pass: about 10 % of a
fc_1000 step (``scripts/bench_keras3.py``).

``hold_masks_in_optimizer(model)`` gives the model a ``train_step`` that runs Keras' own, with the step's
non-trainable state (the masks among it) in scope: inside it, ``step_value(mask)`` is the mask's traced value, the
constraints multiply by it after the update (XLA fuses that into the optimizer's elementwise update), and
``in_masked_step()`` tells the layers to compute with their variables as they are (``stored_masks`` and
the Keras 3 layer families ask it). Anything else on JAX (evaluation, predict, a model trained without the hook) keeps
the masks in the forward pass, so a pruned weight is exactly 0 either way.
"""

import threading

from tfprune._env import keras3

_STEP = threading.local()


def on_jax():
    """True when Keras 3 runs on the JAX backend."""
    return keras3.backend.backend() == "jax"


def in_masked_step():
    """True while a ``hold_masks_in_optimizer`` train step is being traced: the constraints apply the masks."""
    return getattr(_STEP, "values", None) is not None


def step_value(variable):
    """The traced value of a non-trainable ``variable`` in the train step being traced, else None."""
    values = getattr(_STEP, "values", None)
    return None if values is None else values.get(id(variable))


def hold_masks_in_optimizer(model):
    """On JAX, makes ``model.fit`` apply the masks by constraint after each update instead of in the forward pass.

    Installs an instance ``train_step`` around Keras' own (once; the model's compiled train function is reset) and
    returns the model. Does nothing off JAX, or for a tf_keras model. The hook is not saved: a model loaded from a
    file trains correctly without it (masks in the forward pass), and ``RankPruning`` installs it again.
    """
    if not (isinstance(model, keras3.Model) and on_jax()) or getattr(model, "_tfprune_masked_step", False):
        return model
    keras_step = model.train_step

    def train_step(state, data):
        values = {id(v): t for v, t in zip(model.non_trainable_variables, state[1])}
        previous, _STEP.values = getattr(_STEP, "values", None), values
        try:
            return keras_step(state, data)
        finally:
            _STEP.values = previous

    model.train_step = train_step
    model._tfprune_masked_step = True  # pylint: disable=protected-access
    model.train_function = None
    return model


__all__ = ["hold_masks_in_optimizer", "in_masked_step", "on_jax", "step_value"]
