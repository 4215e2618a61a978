"""Custom layers that opt in to pruning, and the prunable subclass tfprune makes of each.

A custom layer opts in by defining ``get_prunable_weights()`` (the same method as TF-MOT's ``PrunableLayer``: the
list of weight variables to prune, after build), and optionally ``get_unit_axis()`` (the axis of those weights that
indexes its output units, e.g. -1 for a (in, units) kernel; the same size in every weight). Subclassing
``PrunableLayer`` is optional; the methods are what count.

``make_prunable`` replaces such a layer with ``prunable_class(type(layer))``: a subclass (same config) whose masks
are held in the variables (``tfprune.layers.stored_masks``): every prunable weight gets a non-trainable mask and a
constraint that re-applies it after every optimizer update, so the layer's own ``call`` runs unchanged. The unit
kernel is every prunable weight with its unit axis moved last, flattened to (weights, units) and stacked
(``layouts.AxisLayout``); without a unit axis it is (all prunable weights, 1): weight pruning only. Shrinking never
cuts a custom layer. Keras 3's JAX backend applies constraints with the mask values of trace time, so there custom
layers stay dense (listed with the reason).

A model holding prunable custom layers loads in a new process after ``prunable_class(MyLayer)`` has registered
the subclass (``tfprune.custom_objects(MyLayer)`` returns the dict for ``load_model``); a ``strip``-ped model needs
only the user's own class.
"""


from tfprune import stacks
from tfprune.layers.kinds import LayerKind, no_macs
from tfprune.layers.layouts import AxisLayout
from tfprune.layers.stored_masks import MaskConstraint, StoredMaskMethods, to_numpy
from tfprune._env import keras, keras3


class PrunableLayer:
    """The protocol a custom layer implements to be pruned by tfprune (TF-MOT's ``PrunableLayer`` in spirit)."""

    def get_prunable_weights(self):
        """The weight variables to prune (after build). Required."""
        raise NotImplementedError(f"{type(self).__name__}.get_prunable_weights() must return the weights to prune")


def opts_in(layer_or_class):
    """True when a layer (or layer class) defines ``get_prunable_weights``."""
    return callable(getattr(layer_or_class, "get_prunable_weights", None))


def unit_axis(layer):
    """The unit axis a layer declares (``get_unit_axis()``), or None."""
    method = getattr(layer, "get_unit_axis", None)
    return None if method is None else method()


class CustomMasks(StoredMaskMethods):
    """The mixin of every prunable custom layer (see the module docstring): the protocol over
    ``get_prunable_weights()`` and their masks, laid out by ``AxisLayout(get_unit_axis())``."""

    def add_weight(self, *args, **kwargs):
        if isinstance(self, keras3.layers.Layer) or len(args) > 6:  # Keras 3 sets constraints after build
            return super().add_weight(*args, **kwargs)
        late = MaskConstraint(kwargs.pop("constraint", None))  # its mask is set at build, if the weight is pruned
        variable = super().add_weight(*args, constraint=late, **kwargs)
        self.__dict__.setdefault("_tfprune_late", {})[id(variable)] = late
        return variable

    def build(self, input_shape):
        if self.__dict__.get("_tfprune_pairs") is not None:  # built before (a user build need not set ``built``)
            return
        super().build(input_shape)
        pairs = []
        for index, variable in enumerate(self.get_prunable_weights()):
            mask = super().add_weight(name=f"prunable_{index}_mask", shape=tuple(variable.shape),
                                      dtype=variable.dtype, initializer="ones", trainable=False)
            if isinstance(self, keras3.layers.Layer):
                variable.constraint = MaskConstraint(variable.constraint, mask=mask)
            else:
                late = self.__dict__.get("_tfprune_late", {}).get(id(variable))
                if late is None:
                    raise ValueError(f"layer {self.name!r}: prunable weight {variable.name!r} was not made by "
                                     "add_weight(..., constraint=...) with keyword arguments, so tfprune cannot "
                                     "keep its mask")
                late.mask = mask
            pairs.append((variable, mask))
        self._tfprune_pairs = pairs
        self.built = True

    def _layout(self):
        return AxisLayout(unit_axis(self))

    def _variables(self):
        return [v for v, _ in self._tfprune_pairs]

    def _masks(self):
        return [m for _, m in self._tfprune_pairs]

    def _other_weights(self):
        masks = {id(m) for m in self.mask_variables()}
        return [w for w in self.weights if id(w) not in masks]

    def masked_kernel(self):
        """The unit kernel as the layer computes with it (NumPy)."""
        return self._layout().unit_kernel(super().masked_weights())

    def masked_weights(self):
        """The plain layer's weights (its ``get_weights`` order, NumPy) with the masks applied."""
        masks = {id(v): m for v, m in self._tfprune_pairs}
        return [to_numpy(w) * to_numpy(masks[id(w)]) if id(w) in masks else to_numpy(w)
                for w in self._other_weights()]

    def copy_plain(self, plain):
        """Copies the weights of the plain layer ``plain`` (same config); the masks stay."""
        for variable, value in zip(self._other_weights(), plain.get_weights()):
            variable.assign(value)


_CLASSES = {}


def prunable_class(cls):
    """The registered prunable subclass of the custom layer class ``cls`` (made once, ``Prunable<Name>``).

    Raises:
      ValueError: ``cls`` does not define ``get_prunable_weights``.
    """
    if not opts_in(cls):
        raise ValueError(f"{cls.__name__} does not define get_prunable_weights(); see tfprune.PrunableLayer")
    if cls not in _CLASSES:
        register = (keras3.saving.register_keras_serializable if issubclass(cls, keras3.layers.Layer)
                    else keras.utils.register_keras_serializable)
        _CLASSES[cls] = register(package="tfprune")(type(f"Prunable{cls.__name__}", (CustomMasks, cls), {
            "__doc__": f"{cls.__name__} with its prunable weights masked (``tfprune.layers.custom``).",
            "__module__": __name__}))
    return _CLASSES[cls]


def plain_class(prunable):
    """The user's class under a prunable subclass."""
    return prunable.__bases__[1]


def support(layer):
    """None when a custom layer can be pruned, else why it stays dense."""
    if isinstance(layer, keras3.layers.Layer) and keras3.backend.backend() == "jax":
        return (f"custom layer {type(layer).__name__}: its masks are kept by constraints, which Keras 3's JAX "
                "backend applies with trace-time values; prune it on the TensorFlow backend")
    return None


def plain_unit_kernel(layer):
    """The unit kernel of a plain (or stripped) custom layer, NumPy."""
    return AxisLayout(unit_axis(layer)).unit_kernel([stacks.of(layer).to_numpy(w)
                                                     for w in layer.get_prunable_weights()])


def unit_shape(layer):
    """The unit kernel's shape of a built custom layer (from its weights' shapes, nothing read), or None."""
    if not layer.built:
        return None
    return AxisLayout(unit_axis(layer)).unit_shape([tuple(int(d) for d in w.shape)
                                                    for w in layer.get_prunable_weights()])


_KINDS = {}


def kind_for(cls):
    """The ``LayerKind`` of a custom layer class that opts in (or of its prunable subclass), made once per class."""
    plain = plain_class(cls) if issubclass(cls, CustomMasks) else cls
    if plain not in _KINDS:
        _KINDS[plain] = LayerKind(
            plain, prunable_class(plain), "", unsupported=support, macs=no_macs, shrinkable=lambda layer: False,
            has_units=callable(getattr(plain, "get_unit_axis", None)), unit_shape=unit_shape,
            plain_unit_kernel=plain_unit_kernel)
    return _KINDS[plain]


__all__ = ["CustomMasks", "PrunableLayer", "kind_for", "opts_in", "plain_class", "plain_unit_kernel", "prunable_class",
           "support", "unit_axis", "unit_shape"]
