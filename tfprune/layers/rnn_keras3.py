"""Prunable Keras 3 recurrent layers (any backend): SimpleRNN, GRU and LSTM with masks on the kernel, recurrent
kernel and bias.

The layout (gates, the unit kernel the pruning library ranks) is ``tfprune.layers.recurrent``'s. Keras 3's recurrent
layers compute in their cell, which reads ``self.kernel``, ``self.recurrent_kernel`` and ``self.bias``. The prunable
layer builds a prunable cell (the same config) whose masks are kept the two ways ``tfprune.layers.kernels_keras3`` keeps
them:

- TensorFlow and PyTorch backends: the variables hold the zeros (``set_masks`` zeroes them, and constraints the
  optimizer applies after every update multiply them by the masks again); the forward pass is the plain cell's.
- JAX backend: the cell's ``kernel``, ``recurrent_kernel`` and ``bias`` are properties returning the masked tensors,
  so a pruned entry's gradient is zero (JAX's stateless optimizer step cannot read the mask variables).

The masks are non-trainable weights of the cell, saved and loaded with the model; the classes are registered
(``tfprune>PrunableLSTM``), so ``keras.models.load_model`` needs no custom_objects once tfprune is imported.
"""


from tfprune.layers import recurrent
from tfprune._env import keras3
from tfprune.layers.rnn import GatedMaskMethods
from tfprune.layers.stored_masks import Keras3Ops, add_masks, masked_property

ops = keras3.ops
_WEIGHTS = ("kernel", "recurrent_kernel", "bias")


class _MaskedCellMixin:
    """Masks for a Keras 3 recurrent cell (``kernel_mask``, ``recurrent_kernel_mask``, ``bias_mask``)."""

    kernel = masked_property("kernel")
    recurrent_kernel = masked_property("recurrent_kernel")
    bias = masked_property("bias")

    def build(self, input_shape):
        super().build(input_shape)
        add_masks(self, {name: self.variable(name) for name in _WEIGHTS}, attr="{}_mask")

    def variable(self, name):
        """The stored variable ``name`` (``kernel``, ``recurrent_kernel``, ``bias``), or None."""
        return self.__dict__.get(f"_{name}_variable")


def _cell_config(cell):
    config = cell.get_config()
    if hasattr(cell, "implementation"):  # not in LSTMCell/GRUCell's config
        config["implementation"] = cell.implementation
    return config


class _MaskedRecurrentMixin(Keras3Ops, GatedMaskMethods):
    """A Keras 3 SimpleRNN/GRU/LSTM that computes with its ``_CELL`` (a ``_MaskedCellMixin`` cell)."""

    _CELL = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = _cell_config(self.cell)
        del self.cell  # untracked, then replaced by the prunable cell with the same config
        self.cell = self._CELL.from_config(config)

    def _variables(self):
        return [self.cell.variable(n) for n in _WEIGHTS]

    def _masks(self):
        return [getattr(self.cell, f"{n}_mask") for n in _WEIGHTS]

    def _reshape_units(self, kernel, recurrent_kernel):
        return ops.reshape(ops.concatenate([kernel, recurrent_kernel], axis=0), (-1, self._GATES, self.cell.units))


@keras3.saving.register_keras_serializable(package="tfprune")
class PrunableSimpleRNNCell(_MaskedCellMixin, keras3.layers.SimpleRNNCell):
    """Keras 3 ``SimpleRNNCell`` with masks (the cell of ``PrunableSimpleRNN``)."""


@keras3.saving.register_keras_serializable(package="tfprune")
class PrunableGRUCell(_MaskedCellMixin, keras3.layers.GRUCell):
    """Keras 3 ``GRUCell`` with masks (the cell of ``PrunableGRU``)."""


@keras3.saving.register_keras_serializable(package="tfprune")
class PrunableLSTMCell(_MaskedCellMixin, keras3.layers.LSTMCell):
    """Keras 3 ``LSTMCell`` with masks (the cell of ``PrunableLSTM``)."""


@keras3.saving.register_keras_serializable(package="tfprune")
class PrunableSimpleRNN(_MaskedRecurrentMixin, keras3.layers.SimpleRNN):
    """Keras 3 ``SimpleRNN`` with 0/1 masks on its kernel (in, u), recurrent kernel (u, u) and bias (u,)."""

    _CELL, _GATES = PrunableSimpleRNNCell, recurrent.GATES["SimpleRNN"]


@keras3.saving.register_keras_serializable(package="tfprune")
class PrunableGRU(_MaskedRecurrentMixin, keras3.layers.GRU):
    """Keras 3 ``GRU`` with 0/1 masks on its kernel (in, 3u), recurrent kernel (u, 3u) and bias."""

    _CELL, _GATES = PrunableGRUCell, recurrent.GATES["GRU"]


@keras3.saving.register_keras_serializable(package="tfprune")
class PrunableLSTM(_MaskedRecurrentMixin, keras3.layers.LSTM):
    """Keras 3 ``LSTM`` with 0/1 masks on its kernel (in, 4u), recurrent kernel (u, 4u) and bias (4u,)."""

    _CELL, _GATES = PrunableLSTMCell, recurrent.GATES["LSTM"]


__all__ = ["PrunableGRU", "PrunableGRUCell", "PrunableLSTM", "PrunableLSTMCell", "PrunableSimpleRNN",
           "PrunableSimpleRNNCell"]
