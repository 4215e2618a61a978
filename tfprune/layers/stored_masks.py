"""Masks held in the variables: what every prunable layer shares whose ``call`` reads its variables directly.

Recurrent layers (tf_keras passes ``self.cell.kernel`` straight into ``standard_lstm``) and transposed convolutions
cannot take the mask into their forward pass without copying their code. Instead **the variables hold the zeros**:
``set_masks`` zeroes the pruned entries, and each variable carries a constraint that multiplies it by its mask after
every optimizer update (every tf_keras and Keras 3 optimizer applies constraints), so the layer computes with exact
zeros at the pruned entries and pays nothing in the forward pass. On Keras 3's JAX backend the stateless optimizer
step reads the masks only inside the train step ``tfprune.layers.jax_masks`` installs; outside it the layer's properties
return the masked tensors (``masked_property``, ``masks_in_forward``).

``StoredMaskMethods`` gives the methods the pruning library calls (``mask_variables``, ``kernel_mask``,
``masked_weights``, ``masked_kernel``, ``copy_plain``, ``set_masks``) over five hooks each layer family writes once:
``_variables()`` and ``_masks()`` (aligned lists, ``None`` where a weight is absent), ``_unit_kernel(arrays)`` (the
unit kernel the library ranks, from the kernel-like members of such a list), ``_variable_keeps(kernel_keep,
bias_keep)`` (the inverse: one bool array per variable, ``None`` = leave as it is), and the stack's
``_multiply``/``_numpy`` (``TfKerasOps``, ``Keras3Ops``).
"""

import contextlib

import numpy as np

from tfprune.layers import jax_masks
from tfprune.layers.schedule_step import ScheduleStep
from tfprune._env import keras, keras3, tf

ops = keras3.ops


def to_numpy(x):
    """A backend tensor or variable (TensorFlow, JAX, PyTorch) as a NumPy array."""
    return np.asarray(ops.convert_to_numpy(x))


class MaskedConstraint(keras3.constraints.Constraint):
    """A Keras 3 variable constraint: the user's own constraint (if any), then multiplication by the mask variable."""

    def __init__(self, mask, inner=None):
        self.mask, self.inner = mask, inner

    def __call__(self, w):
        w = self.inner(w) if self.inner is not None else w
        mask = self.mask
        if jax_masks.on_jax():  # only the train step's traced mask is current (see tfprune.layers.jax_masks)
            mask = jax_masks.step_value(self.mask)
            if mask is None:
                return w  # the layer applies the mask in its forward pass
        return ops.multiply(w, ops.cast(mask, w.dtype))


class MaskedThenInner:
    """A tf_keras variable constraint: the user's constraint (if any), then the mask the layer holds under
    ``attr`` (read when applied, so the mask may be created after the variable)."""

    def __init__(self, layer, attr, inner):
        self.layer, self.attr, self.inner = layer, attr, inner

    def __call__(self, w):
        w = self.inner(w) if self.inner is not None else w
        return w * tf.cast(getattr(self.layer, self.attr), w.dtype)


class TfKerasOps:
    """How the mask methods multiply and read tf_keras variables."""

    @staticmethod
    def _multiply(variable, mask):
        return variable * mask

    @staticmethod
    def _numpy(variable):
        return variable.numpy()


class Keras3Ops:
    """How the mask methods multiply and read Keras 3 variables (any backend)."""

    @staticmethod
    def _multiply(variable, mask):
        return ops.multiply(variable, ops.cast(mask, variable.dtype))

    @staticmethod
    def _numpy(variable):
        return to_numpy(variable)


class StoredMaskMethods(ScheduleStep):
    """The methods the pruning library uses, over the hooks the module docstring lists."""

    def mask_variables(self):
        """The mask variables, one per weight the layer has."""
        return [m for m in self._masks() if m is not None]

    @property
    def kernel_mask(self):
        """The mask of the unit kernel (units on the last axis): 1 = kept."""
        return self._unit_kernel(self._masks())

    def masked_weights(self):
        """The layer's weights, in ``get_weights`` order, with the masks applied: the weights of the plain twin."""
        return [self._multiply(v, m) for v, m in zip(self._variables(), self._masks()) if v is not None]

    def masked_kernel(self):
        """The unit kernel as the layer computes with it."""
        weights = iter(self.masked_weights())
        return self._unit_kernel([None if v is None else next(weights) for v in self._variables()])

    def copy_plain(self, plain):
        """Copies the weights of the plain layer ``plain`` (same config); the masks stay as they are."""
        for variable, value in zip([v for v in self._variables() if v is not None], plain.get_weights()):
            variable.assign(value)

    def set_masks(self, kernel_keep, bias_keep=None):
        """Sets the masks and zeroes the pruned weights' variables.

        Args:
          kernel_keep: bool array of the unit kernel's shape, True = kept.
          bias_keep: bool vector (units,) or None (bias mask left as it is).
        """
        keeps = self._variable_keeps(np.asarray(kernel_keep, bool),
                                     None if bias_keep is None else np.asarray(bias_keep, bool))
        for variable, mask, keep in zip(self._variables(), self._masks(), keeps):
            if variable is None or keep is None:
                continue
            mask.assign(keep.astype(self._numpy(mask).dtype))
            variable.assign(self._numpy(variable) * keep)


@contextlib.contextmanager
def masking_constraints(owner, layer, attrs):
    """tf_keras: while the block runs (the parent's ``build``), ``owner``'s constraint attributes hold
    ``MaskedThenInner`` constraints reading ``layer``'s mask attributes, so the variables built get them; then the
    attributes (and so the config) are the user's own again.

    Args:
      owner: the object whose build makes the variables (the layer, or a recurrent layer's cell).
      layer: the layer that will hold the masks.
      attrs: {constraint attribute of ``owner``: mask attribute of ``layer``}.
    """
    originals = {name: getattr(owner, name) for name in attrs}
    for name, mask_attr in attrs.items():
        setattr(owner, name, MaskedThenInner(layer, mask_attr, originals[name]))
    try:
        yield
    finally:
        for name, constraint in originals.items():
            setattr(owner, name, constraint)


class TfKerasKernelBias(TfKerasOps, StoredMaskMethods):
    """A tf_keras layer whose build makes ``kernel`` and ``bias`` from ``kernel_constraint``/``bias_constraint``:
    the masks ``kernel_mask_variable``/``bias_mask_variable`` and their constraints, made at build (the layer's
    config keeps the user's constraints). ``_has_bias()`` says whether the config asks for a bias."""

    def _has_bias(self):
        return bool(self.use_bias)

    def build(self, input_shape):
        attrs = {"kernel_constraint": "kernel_mask_variable"}
        if self._has_bias():
            attrs["bias_constraint"] = "bias_mask_variable"
        with masking_constraints(self, self, attrs):
            super().build(input_shape)
        add_masks(self, {"kernel": self.kernel, "bias": self.bias})

    def _variables(self):
        return [self.kernel, self.bias]

    def _masks(self):
        return [self.kernel_mask_variable, self.bias_mask_variable]


def add_masks(layer, variables, attr="{}_mask_variable"):
    """Adds one non-trainable mask of ones to ``layer`` per variable, as ``attr.format(name)`` (``None`` for an
    absent variable). On Keras 3 the variable's constraint becomes ``MaskedConstraint`` (mask after the user's
    constraint; on JAX it acts inside ``jax_masks``' train step only); tf_keras' constraints are given at build
    (``masking_constraints``).

    Args:
      layer: a tf_keras or Keras 3 layer, being built.
      variables: {weight name: its variable or None}, e.g. {"kernel": ..., "bias": None}.
    """
    is_keras3 = isinstance(layer, keras3.layers.Layer)
    for name, variable in variables.items():
        mask = None
        if variable is not None:
            initializer = "ones" if is_keras3 else keras.initializers.Ones()
            mask = layer.add_weight(name=f"{name}_mask", shape=variable.shape, dtype=variable.dtype,
                                    initializer=initializer, trainable=False)
            if is_keras3:
                variable.constraint = MaskedConstraint(mask, variable.constraint)
        setattr(layer, attr.format(name), mask)


def masks_in_forward():
    """True when a Keras 3 layer must multiply its weights by the masks in its forward pass: on JAX, outside a
    ``jax_masks.hold_masks_in_optimizer`` train step (there the constraints hold the zeros)."""
    return jax_masks.on_jax() and not jax_masks.in_masked_step()


def masked_property(name, mask_attr=None):
    """A Keras 3 property over the variable stored as ``_<name>_variable``: when ``masks_in_forward()`` and the mask
    (the attribute ``mask_attr``, default ``<name>_mask``) exists, the variable times the mask; else the variable."""
    mask_attr = mask_attr or f"{name}_mask"

    def get(self):
        variable = self.__dict__.get(f"_{name}_variable")
        mask = self.__dict__.get(mask_attr)
        if variable is None or mask is None or not masks_in_forward():
            return variable
        return ops.multiply(variable, ops.cast(mask, variable.dtype))

    def set_(self, value):  # the parent's build assigns the variable (tracked by Layer.__setattr__) or None
        self.__dict__[f"_{name}_variable"] = value
    return property(get, set_)


def prunable_classes(mixins, names, what, module):
    """The registered prunable classes ``Prunable<name>`` of both stacks: {"tf_keras"|"keras3": {name: class}}.

    Args:
      mixins: (tf_keras mixin, Keras 3 mixin), put before each plain class.
      names: the plain classes' names in ``layers`` of both stacks (``"Conv2DTranspose"``).
      what: the docstring's description of the masked weights.
      module: the defining module's ``__name__``.
    """
    out = {}
    for stack, mixin, layers, register in (
            ("tf_keras", mixins[0], keras.layers, keras.utils.register_keras_serializable),
            ("keras3", mixins[1], keras3.layers, keras3.saving.register_keras_serializable)):
        out[stack] = {}
        for name in names:
            cls = type(f"Prunable{name}", (mixin, getattr(layers, name)), {
                "__doc__": f"{'tf_keras' if stack == 'tf_keras' else 'Keras 3'} ``{name}`` whose {what} are "
                           f"multiplied by 0/1 masks (held in the variables; see ``{module}``).",
                "__module__": module})
            out[stack][name] = register(package="tfprune")(cls)
    return out


__all__ = ["Keras3Ops", "MaskedConstraint", "MaskedThenInner", "StoredMaskMethods", "TfKerasKernelBias", "TfKerasOps",
           "add_masks", "masked_property", "masking_constraints", "masks_in_forward", "prunable_classes", "to_numpy"]
