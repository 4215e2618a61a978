"""The one prunable-layer protocol: masks held in the variables, every method returning NumPy.

Every prunable layer of both stacks keeps a pruned weight at exactly 0 the same way: **the variables hold the
zeros**. ``set_masks`` zeroes the pruned entries, and each prunable variable carries a ``MaskConstraint`` that
multiplies it by its mask after every optimizer update (every tf_keras and Keras 3 optimizer applies variable
constraints, in ``fit`` and in ``apply_gradients``), so the layer's own ``call`` runs unchanged and computes with
exact zeros at the pruned entries, paying nothing in the forward pass (docs/DESIGN_NOTES.md, "Keras 3 masks"). On
Keras 3's JAX backend the stateless optimizer step reads the masks only inside the train step
``tfprune.layers.jax_masks`` installs; outside it the layer's properties return the masked tensors
(``masked_property``, ``masks_in_forward``). The user's own constraints still apply, before the mask.

``StoredMaskMethods`` is the protocol the pruning library calls, the same for every layer family (one kernel,
recurrent, transposed, separable, attention, Bidirectional, custom), all in NumPy:

- ``kernel_mask``: the unit kernel's mask (units last, 1 = kept), float array;
- ``masked_kernel()``: the unit kernel as the layer computes with it;
- ``masked_weights()``: the plain twin's weights, in ``get_weights`` order, masks applied;
- ``mask_variables()``, ``variable_masks()`` (each prunable variable with its mask), ``set_masks(kernel_keep,
  bias_keep)``, ``copy_plain(plain)``.

A family writes three hooks: ``_variables()`` and ``_masks()`` (aligned lists in ``get_weights`` order, None where a
weight is absent) and its layout (``LAYOUT``, or ``_layout()`` when it depends on the instance: ``tfprune.layers.
layouts``, where each layout's unit-kernel mapping and its inverse ``weight_keeps`` are written once).
"""

import contextlib

import numpy as np

from tfprune.layers import jax_masks
from tfprune.layers.layouts import KernelLayout
from tfprune.layers.schedule_step import ScheduleStep
from tfprune._env import keras, keras3, tf

ops = keras3.ops


def to_numpy(x):
    """A variable or tensor of either stack (TensorFlow, JAX or PyTorch backend) as a NumPy array."""
    if isinstance(x, (tf.Variable, tf.Tensor)):
        return np.asarray(x.numpy())
    return np.asarray(ops.convert_to_numpy(x))


class MaskConstraint(keras3.constraints.Constraint):
    """The one mask constraint (both stacks): the user's constraint ``inner`` (if any), then multiplication by the
    mask: the variable ``mask``, or the attribute ``attr`` of ``owner`` read when applied (a tf_keras variable gets
    its constraint at creation, before its mask exists), or nothing while neither is set (a custom layer's weight
    that is not pruned). On Keras 3's JAX backend the mask is the train step's traced value
    (``tfprune.layers.jax_masks``); outside that step the constraint leaves the weight to the layer's forward pass.
    """

    def __init__(self, inner=None, mask=None, owner=None, attr=None):
        self.inner, self.mask, self.owner, self.attr = inner, mask, owner, attr

    def __call__(self, w):
        w = self.inner(w) if self.inner is not None else w
        mask = self.mask if self.owner is None else getattr(self.owner, self.attr, None)
        if mask is None:
            return w
        if isinstance(mask, keras3.Variable):
            if jax_masks.on_jax():
                mask = jax_masks.step_value(mask)
                if mask is None:
                    return w  # the layer applies the mask in its forward pass
            return ops.multiply(w, ops.cast(mask, w.dtype))
        return w * tf.cast(mask, w.dtype)


class StoredMaskMethods(ScheduleStep):
    """The methods the pruning library uses, over the hooks the module docstring lists."""

    LAYOUT = KernelLayout()

    def _layout(self):
        return self.LAYOUT

    def _values(self):
        """The arrays the layer computes with before the masks, aligned with ``_variables()`` (None where absent)."""
        return [None if v is None else to_numpy(v) for v in self._variables()]

    def mask_variables(self):
        """The mask variables, one per weight the layer has."""
        return [m for m in self._masks() if m is not None]

    def variable_masks(self):
        """[(prunable variable, its mask variable)] for every weight the layer has, in ``get_weights`` order."""
        return [(v, m) for v, m in zip(self._variables(), self._masks()) if v is not None and m is not None]

    @property
    def kernel_mask(self):
        """The unit kernel's mask (units on the last axis), NumPy: 1 = kept."""
        return self._layout().unit_kernel([to_numpy(m) for m in self._masks() if m is not None])

    def masked_weights(self):
        """The layer's weights, in ``get_weights`` order, with the masks applied: the plain twin's weights (NumPy)."""
        return [value if mask is None else value * to_numpy(mask)
                for value, mask in zip(self._values(), self._masks()) if value is not None]

    def masked_kernel(self):
        """The unit kernel as the layer computes with it (NumPy)."""
        return self._layout().unit_kernel(self.masked_weights())

    def _plain_weights(self, plain):
        """The weights of the plain twin ``plain``, aligned with the present entries of ``_variables()``."""
        return plain.get_weights()

    def copy_plain(self, plain):
        """Copies the weights of the plain layer ``plain`` (same config); the masks stay as they are."""
        for variable, value in zip([v for v in self._variables() if v is not None], self._plain_weights(plain)):
            variable.assign(value)

    def set_masks(self, kernel_keep, bias_keep=None):
        """Sets the masks and zeroes the pruned weights' variables.

        Args:
          kernel_keep: bool array of the unit kernel's shape, True = kept.
          bias_keep: bool vector (units,) or None (bias masks left as they are).
        """
        shapes = [None if v is None else tuple(int(d) for d in v.shape) for v in self._variables()]
        keeps = self._layout().weight_keeps(np.asarray(kernel_keep, bool),
                                            None if bias_keep is None else np.asarray(bias_keep, bool), shapes)
        for variable, mask, keep in zip(self._variables(), self._masks(), keeps):
            if variable is None or mask is None or keep is None:
                continue
            mask.assign(np.asarray(keep).astype(to_numpy(mask).dtype))
            variable.assign(to_numpy(variable) * keep)


@contextlib.contextmanager
def masking_constraints(owner, layer, attrs):
    """tf_keras: while the block runs (the parent's ``build``), ``owner``'s constraint attributes hold
    ``MaskConstraint``s reading ``layer``'s mask attributes, so the variables built get them; then the attributes
    (and so the config) are the user's own again.

    Args:
      owner: the object whose build makes the variables (the layer, or a recurrent layer's cell).
      layer: the layer that will hold the masks.
      attrs: {constraint attribute of ``owner``: mask attribute of ``layer``}.
    """
    originals = {name: getattr(owner, name) for name in attrs}
    for name, mask_attr in attrs.items():
        setattr(owner, name, MaskConstraint(originals[name], owner=layer, attr=mask_attr))
    try:
        yield
    finally:
        for name, constraint in originals.items():
            setattr(owner, name, constraint)


def add_masks(layer, variables, attr="{}_mask_variable"):
    """Adds one non-trainable mask of ones to ``layer`` per variable, as ``attr.format(name)`` (``None`` for an
    absent variable). On Keras 3 the variable's constraint becomes a ``MaskConstraint`` (mask after the user's
    constraint); tf_keras' constraints are given at build (``masking_constraints``).

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
                variable.constraint = MaskConstraint(variable.constraint, mask=mask)
        setattr(layer, attr.format(name), mask)


def masks_in_forward():
    """True when a Keras 3 layer must multiply its weights by the masks in its forward pass: on JAX, outside a
    ``jax_masks.hold_masks_in_optimizer`` train step (there the constraints hold the zeros)."""
    return jax_masks.on_jax() and not jax_masks.in_masked_step()


def masked_property(name, mask_attr=None):
    """A Keras 3 property over the variable stored as ``_<name>_variable``: when ``masks_in_forward()`` and the mask
    (the attribute ``mask_attr``, default ``<name>_mask_variable``) exists, the variable times the mask; else the
    variable."""
    mask_attr = mask_attr or f"{name}_mask_variable"

    def get(self):
        variable = self.__dict__.get(f"_{name}_variable")
        mask = self.__dict__.get(mask_attr)
        if variable is None or mask is None or not masks_in_forward():
            return variable
        return ops.multiply(variable, ops.cast(mask, variable.dtype))

    def set_(self, value):  # the parent's build assigns the variable (tracked by Layer.__setattr__) or None
        self.__dict__[f"_{name}_variable"] = value
    return property(get, set_)


class KernelBiasMasks(StoredMaskMethods):
    """The masks of a layer with one kernel and an optional bias: ``kernel_mask_variable``, ``bias_mask_variable``."""

    def _masks(self):
        return [getattr(self, "kernel_mask_variable", None), getattr(self, "bias_mask_variable", None)]

    @property
    def bias_mask(self):
        """The bias mask (NumPy, 1 = kept), or None without a bias."""
        mask = getattr(self, "bias_mask_variable", None)
        return None if mask is None else to_numpy(mask)


class TfKerasKernelBias(KernelBiasMasks):
    """A tf_keras layer whose build makes one kernel (the attribute ``_KERNEL``, from the constraint attribute
    ``_KERNEL_CONSTRAINT``) and, when ``_has_bias()``, ``bias`` (from ``bias_constraint``): the masks and their
    constraints, made at build (the layer's config keeps the user's constraints)."""

    _KERNEL, _KERNEL_CONSTRAINT = "kernel", "kernel_constraint"

    def _has_bias(self):
        return bool(getattr(self, "use_bias", False))

    def build(self, input_shape=None):
        attrs = {self._KERNEL_CONSTRAINT: "kernel_mask_variable"}
        if self._has_bias():
            attrs["bias_constraint"] = "bias_mask_variable"
        with masking_constraints(self, self, attrs):
            super().build(input_shape)
        add_masks(self, dict(zip(("kernel", "bias"), self._variables())))

    def _variables(self):
        return [getattr(self, self._KERNEL), getattr(self, "bias", None)]


class Keras3AttrKernelBias(KernelBiasMasks):
    """A Keras 3 layer whose build assigns ``kernel`` and ``bias`` as plain attributes (DepthwiseConv2D, the
    transposed convolutions): both become ``masked_property``s over the stored variables."""

    kernel = masked_property("kernel")
    bias = masked_property("bias")

    def build(self, input_shape):
        super().build(input_shape)
        add_masks(self, dict(zip(("kernel", "bias"), self._variables())))

    def _variables(self):
        return [self.__dict__.get("_kernel_variable"), self.__dict__.get("_bias_variable")]


class Keras3KernelBias(KernelBiasMasks):
    """A Keras 3 layer with one kernel read through the parent's property ``_KERNEL`` (``kernel``; ``embeddings``),
    whose variable is the attribute ``_STORED`` (``_kernel``), and an optional ``bias``. The parent's ``call`` runs
    unchanged: each subclass gets the property ``_KERNEL`` of its own, which returns the parent's (LoRA included)
    masked when ``masks_in_forward()`` or LoRA is enabled (LoRA adds a delta only the property can mask). Its own
    variables are saved in one list (the parent's would save a fixed two-entry one)."""

    _KERNEL, _STORED = "kernel", "_kernel"
    bias = masked_property("bias")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls._KERNEL not in cls.__dict__:  # a subclass's own property stays
            setattr(cls, cls._KERNEL, property(cls._masked_parent_kernel))

    def build(self, input_shape=None):
        # enable_lora() locks the layer's variables: add the masks first, then enable LoRA as the parent would.
        rank, alpha = getattr(self, "lora_rank", None), getattr(self, "lora_alpha", None)
        if rank:
            self.lora_rank = None
        super().build(input_shape)
        add_masks(self, dict(zip(("kernel", "bias"), self._variables())))
        if rank:
            self.enable_lora(rank, lora_alpha=alpha)

    def _variables(self):
        return [self.__dict__.get(self._STORED), self.__dict__.get("_bias_variable")]

    def _parent_kernel(self):
        return getattr(super(Keras3KernelBias, self), self._KERNEL)

    def _masked_parent_kernel(self):
        kernel = self._parent_kernel()
        mask = self.__dict__.get("kernel_mask_variable")  # absent while build() runs
        if mask is None or not (masks_in_forward() or getattr(self, "lora_enabled", False)):
            return kernel
        return ops.multiply(kernel, ops.cast(mask, kernel.dtype))

    def _values(self):
        values = super()._values()
        if getattr(self, "lora_enabled", False):
            values[0] = to_numpy(self._parent_kernel())
        return values

    def _own_variables(self):
        return [v for v in (*self._variables(), *self._masks()) if v is not None]

    def save_own_variables(self, store):
        """Saves the raw kernel and bias and both masks."""
        for i, variable in enumerate(self._own_variables()):
            store[str(i)] = variable

    def load_own_variables(self, store):
        variables = self._own_variables()
        if len(store.keys()) != len(variables):
            raise ValueError(f"layer {self.name!r} expected {len(variables)} variables (kernel, bias, masks), but "
                             f"the file holds {len(store.keys())}")
        for i, variable in enumerate(variables):
            variable.assign(store[str(i)])


def prunable_classes(mixins, names, what, module, attrs=None):
    """The registered prunable classes ``Prunable<name>`` of both stacks: {"tf_keras"|"keras3": {name: class}}.

    Args:
      mixins: (tf_keras mixin, Keras 3 mixin), put before each plain class.
      names: the plain classes' names in ``layers`` of both stacks (``"Conv2DTranspose"``).
      what: the docstring's description of the masked weights.
      module: the defining module's ``__name__``.
      attrs: optional {name: (tf_keras class attributes, Keras 3 class attributes)} for one class.
    """
    out = {}
    for index, (stack, mixin, layers, register) in enumerate((
            ("tf_keras", mixins[0], keras.layers, keras.utils.register_keras_serializable),
            ("keras3", mixins[1], keras3.layers, keras3.saving.register_keras_serializable))):
        out[stack] = {}
        for name in names:
            cls = type(f"Prunable{name}", (mixin, getattr(layers, name)), {
                "__doc__": f"{'tf_keras' if stack == 'tf_keras' else 'Keras 3'} ``{name}`` whose {what} are "
                           f"multiplied by 0/1 masks (held in the variables; see ``{module}``).",
                "__module__": module, **(attrs or {}).get(name, ({}, {}))[index]})
            out[stack][name] = register(package="tfprune")(cls)
    return out


__all__ = ["Keras3AttrKernelBias", "Keras3KernelBias", "KernelBiasMasks", "MaskConstraint", "StoredMaskMethods",
           "TfKerasKernelBias", "add_masks", "masked_property", "masking_constraints", "masks_in_forward",
           "prunable_classes", "to_numpy"]
