"""The recurrent family, both stacks: SimpleRNN, GRU and LSTM with masks on the kernel, recurrent kernel and bias.

The layout (gates, the unit kernel (in + u, gates, u) the pruning library ranks) is ``tfprune.layers.recurrent``'s,
mapped once in ``layouts.GatedLayout``. Masks are held in the variables (``tfprune.layers.stored_masks``):

- tf_keras' recurrent layers read their cell's variables directly (``standard_lstm(kernel=self.cell.kernel, ...)``):
  the cell's build gets masking constraints, and the masks are weights of the layer;
- Keras 3's recurrent layers compute in their cell, which reads ``self.kernel``, ``self.recurrent_kernel`` and
  ``self.bias``: the layer builds a prunable cell (the same config) whose properties return the masked tensors on
  JAX outside ``jax_masks``' train step; the masks are weights of the cell.

The classes are registered (``tfprune>PrunableLSTM``), so loading needs no custom_objects once tfprune is imported.
"""


from tfprune.structure import graph
from tfprune.layers import recurrent
from tfprune.layers.kinds import LayerKind, both_stacks
from tfprune.layers.layouts import GatedLayout
from tfprune.layers.stored_masks import StoredMaskMethods, add_masks, masked_property, masking_constraints
from tfprune._env import keras, keras3

_WEIGHTS = ("kernel", "recurrent_kernel", "bias")
_CONSTRAINTS = {"kernel": "kernel_constraint", "recurrent_kernel": "recurrent_constraint", "bias": "bias_constraint"}


class _Gated(StoredMaskMethods):
    """A recurrent layer for ``StoredMaskMethods``: [kernel, recurrent_kernel, bias or None], ``_GATES`` gates."""

    _GATES = 1

    def _layout(self):
        return GatedLayout(self._GATES)


class _TfKerasRecurrent(_Gated):
    """tf_keras: one mask per cell variable, weights of the layer, kept by constraints given at build."""

    def build(self, input_shape):
        cell = self.cell
        names = [n for n in _WEIGHTS if n != "bias" or cell.use_bias]
        with masking_constraints(cell, self, {_CONSTRAINTS[n]: f"{n}_mask_variable" for n in names}):
            super().build(input_shape)
        add_masks(self, {n: getattr(cell, n) if n in names else None for n in _WEIGHTS})

    def _variables(self):
        return [getattr(self.cell, n) if n != "bias" or self.cell.use_bias else None for n in _WEIGHTS]

    def _masks(self):
        return [getattr(self, f"{n}_mask_variable") for n in _WEIGHTS]


class _MaskedCell:
    """Masks for a Keras 3 recurrent cell (``kernel_mask_variable``, ``recurrent_kernel_mask_variable``,
    ``bias_mask_variable``)."""

    kernel = masked_property("kernel")
    recurrent_kernel = masked_property("recurrent_kernel")
    bias = masked_property("bias")

    def build(self, input_shape):
        super().build(input_shape)
        add_masks(self, {name: self.variable(name) for name in _WEIGHTS})

    def variable(self, name):
        """The stored variable ``name`` (``kernel``, ``recurrent_kernel``, ``bias``), or None."""
        return self.__dict__.get(f"_{name}_variable")


def _cell_config(cell):
    config = cell.get_config()
    if hasattr(cell, "implementation"):  # not in LSTMCell/GRUCell's config
        config["implementation"] = cell.implementation
    return config


class _Keras3Recurrent(_Gated):
    """Keras 3: the layer computes with its ``_CELL`` (a ``_MaskedCell`` cell, same config)."""

    _CELL = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = _cell_config(self.cell)
        del self.cell  # untracked, then replaced by the prunable cell with the same config
        self.cell = self._CELL.from_config(config)

    def _variables(self):
        return [self.cell.variable(n) for n in _WEIGHTS]

    def _masks(self):
        return [getattr(self.cell, f"{n}_mask_variable") for n in _WEIGHTS]


def _classes(stack):
    """{name: prunable class} of one stack (Keras 3's cells registered too)."""
    out = {}
    for name, gates in recurrent.GATES.items():
        if stack == "tf_keras":
            bases, register, cell = (_TfKerasRecurrent, getattr(keras.layers, name)), keras.utils, None
        else:
            register = keras3.saving
            plain_cell = getattr(keras3.layers, f"{name}Cell")
            cell = register.register_keras_serializable(package="tfprune")(type(
                f"Prunable{name}Cell", (_MaskedCell, plain_cell), {
                    "__doc__": f"Keras 3 ``{name}Cell`` with masks (the cell of ``Prunable{name}``).",
                    "__module__": __name__}))
            bases = (_Keras3Recurrent, getattr(keras3.layers, name))
        out[name] = register.register_keras_serializable(package="tfprune")(type(f"Prunable{name}", bases, {
            "__doc__": f"{'tf_keras' if cell is None else 'Keras 3'} ``{name}`` with 0/1 masks on its kernel (in, "
                       f"{gates}u), recurrent kernel (u, {gates}u) and bias.",
            "__module__": __name__, "_GATES": gates, "_CELL": cell}))
    return out


TF_KERAS, KERAS3 = _classes("tf_keras"), _classes("keras3")
_BY_STACK = {"tf_keras": TF_KERAS, "keras3": KERAS3}


def recurrent_macs(layer, output_shape):  # pylint: disable=unused-argument
    """SimpleRNN/GRU/LSTM (and Bidirectional, per direction): timesteps * (in + units) * gates * units."""
    steps = graph.input_shape(layer)[1] or 1
    cell = getattr(layer, "forward_layer", layer).cell
    size = (int(cell.kernel.shape[0]) + int(cell.units)) * int(cell.recurrent_kernel.shape[1])
    return int(steps) * size * (2 if hasattr(layer, "forward_layer") else 1)


def recurrent_shrinkable(layer):
    """Dead units are cut out of a recurrent layer with one output (no ``return_state``), batch-major."""
    return not getattr(layer, "return_state", False) and not getattr(layer, "time_major", False)


def recurrent_unit_shape(layer):
    """(in + u, gates, u) of a built SimpleRNN/GRU/LSTM (``tfprune.layers.recurrent``), or None."""
    cell = layer.cell
    if not layer.built or getattr(cell, "recurrent_kernel", None) is None:
        return None
    units = int(cell.units)
    return (int(cell.kernel.shape[0]) + units, int(cell.recurrent_kernel.shape[1]) // units, units)


ORDER = 60  # where these kinds come in the registry's table (and in messages)
KINDS = both_stacks(lambda layers, stack: [
    LayerKind(getattr(layers, name), _BY_STACK[stack][name], "units", macs=recurrent_macs, layout=GatedLayout(gates),
              shrinkable=recurrent_shrinkable, unit_shape=recurrent_unit_shape)
    for name, gates in recurrent.GATES.items()])

__all__ = ["KERAS3", "KINDS", "ORDER", "TF_KERAS", "recurrent_macs", "recurrent_shrinkable", "recurrent_unit_shape"]
