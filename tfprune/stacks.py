"""The two Keras stacks tfprune works on, and which one a model belongs to.

- ``TF_KERAS``: tf_keras 2.21 (Keras 2, TensorFlow only; TF-MOT runs here);
- ``KERAS3``: Keras 3 (``import keras``) on its configured backend (TensorFlow, JAX or PyTorch).

Everything that builds, clones, compiles, seeds or reads a model asks ``of(model)`` for its stack, so the library
decides from the model it is given and never from environment variables (``tf.keras`` means either, depending on
``TF_USE_LEGACY_KERAS`` and on who imported what first).
"""

import dataclasses

import numpy as np

from tfprune._env import keras as tf_keras
from tfprune._env import keras3, tf


@dataclasses.dataclass(frozen=True)
class Stack:
    """One Keras stack. ``name``: ``tf_keras`` or ``keras3``; ``version``: ``"2"`` or ``"3"`` (the ``--keras``
    value); ``keras``: the module (``keras.layers``, ``keras.Model``, ``keras.optimizers``...)."""
    name: str
    version: str
    keras: object

    @property
    def backend(self):
        """The backend the stack computes with: ``tensorflow`` for tf_keras, Keras 3's configured one else."""
        return "tensorflow" if self is TF_KERAS else keras3.backend.backend()

    @property
    def label(self):
        """How tables name it: ``tf_keras 2.21.0``, ``Keras 3.15.1 (jax)``."""
        if self is TF_KERAS:
            return f"tf_keras {tf_keras.__version__}"
        return f"Keras {keras3.__version__} ({self.backend})"

    def to_numpy(self, x):
        """A tensor or variable of this stack as a NumPy array."""
        if self is KERAS3:
            return np.asarray(keras3.ops.convert_to_numpy(x))
        return np.asarray(x.numpy() if hasattr(x, "numpy") else x)

    def to_tensor(self, x):
        """A NumPy array as a tensor of this stack's backend (tf_keras: a TensorFlow constant)."""
        return tf.constant(x) if self is TF_KERAS else keras3.ops.convert_to_tensor(x)

    def set_random_seed(self, seed):
        """Seeds Python, NumPy and this stack's backend (for Keras 3 also its own seed generators)."""
        self.keras.utils.set_random_seed(int(seed))

    def clone_model(self, model, clone_function=None):
        return self.keras.models.clone_model(model, clone_function=clone_function)

    def load_model(self, path, **kwargs):
        return self.keras.models.load_model(path, **kwargs)


TF_KERAS = Stack("tf_keras", "2", tf_keras)
KERAS3 = Stack("keras3", "3", keras3)
STACKS = (TF_KERAS, KERAS3)
VERSIONS = {s.version: s for s in STACKS}


def seed_all(seed):
    """Seeds Python, NumPy, TensorFlow and both Keras stacks (Keras 3's seed generators and its backend) alike."""
    for stack in STACKS:
        stack.set_random_seed(seed)


def of(obj):
    """The ``Stack`` of a Keras model or layer.

    Raises:
      ValueError: ``obj`` is neither a tf_keras nor a Keras 3 layer or model.
    """
    if isinstance(obj, tf_keras.layers.Layer):
        return TF_KERAS
    if isinstance(obj, keras3.Layer):
        return KERAS3
    raise ValueError(f"expected a Keras model or layer (tf_keras or Keras 3), got {type(obj).__name__}")


def by_version(version):
    """The stack of a ``--keras`` value (``"2"``/``"3"``).

    Raises:
      ValueError: naming the value and the known ones.
    """
    if str(version) not in VERSIONS:
        raise ValueError(f"keras {version!r} is not one of {sorted(VERSIONS)} (2: tf_keras, 3: Keras 3)")
    return VERSIONS[str(version)]


def is_model(obj):
    return isinstance(obj, (tf_keras.Model, keras3.Model))


def shape_tuple(shape):
    """A ``TensorShape`` or tuple as a tuple of ints / None."""
    if isinstance(shape, tf.TensorShape):
        return tuple(shape.as_list()) if shape.rank is not None else None
    return tuple(None if d is None else int(d) for d in shape)


__all__ = ["KERAS3", "STACKS", "Stack", "TF_KERAS", "VERSIONS", "by_version", "is_model", "of", "seed_all",
           "shape_tuple"]
