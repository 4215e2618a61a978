"""Prunable tf_keras recurrent layers: SimpleRNN, GRU and LSTM with masks on the kernel, recurrent kernel and bias.

The layout (gates, the unit kernel the pruning library ranks) is ``tfprune.layers.recurrent``'s. tf_keras' recurrent
layers read their cell's variables directly (``standard_lstm(kernel=self.cell.kernel, ...)``), so the mask cannot
enter the forward pass without rewriting it. Instead **the variables hold the zeros**: ``set_masks`` zeroes the
pruned entries, and each variable carries a constraint that multiplies it by its mask after every optimizer update
(every tf_keras optimizer applies variable constraints, in ``fit`` and in ``apply_gradients``), so the layer
computes with exact zeros at the pruned entries through any training, and costs nothing in the forward pass.

The masks (``kernel_mask`` over the unit kernel, ``mask_variables()``) are non-trainable weights of the layer and are
saved and loaded with it; the methods over them are ``tfprune.layers.stored_masks``'. The user's own constraints still
apply, before the mask.
"""

from tfprune.layers import recurrent
from tfprune._env import keras, tf
from tfprune.layers.stored_masks import StoredMaskMethods, TfKerasOps, add_masks, masking_constraints

_WEIGHTS = ("kernel", "recurrent_kernel", "bias")
_CONSTRAINTS = {"kernel": "kernel_constraint", "recurrent_kernel": "recurrent_constraint", "bias": "bias_constraint"}


class GatedMaskMethods(StoredMaskMethods):
    """The unit kernel of a recurrent layer of either stack, for ``StoredMaskMethods``: ``_variables()`` and
    ``_masks()`` are [kernel, recurrent_kernel, bias or None]; the unit kernel is (in + units, gates, units)."""

    _GATES = 1

    def _unit_kernel(self, arrays):
        return self._reshape_units(arrays[0], arrays[1])

    def _variable_keeps(self, kernel_keep, bias_keep):
        kernel, _, bias = self._variables()
        keeps = list(recurrent.split_unit_kernel(kernel_keep, int(kernel.shape[0])))
        if bias is None or bias_keep is None:
            return keeps + [None]
        return keeps + [recurrent.bias_of_units(bias_keep, tuple(bias.shape), self._GATES)]


class _MaskedRecurrentMixin(TfKerasOps, GatedMaskMethods):
    """Masks for a tf_keras SimpleRNN/GRU/LSTM: one per cell variable (``kernel``, ``recurrent_kernel``, ``bias``),
    kept in the variables by constraints (see the module docstring)."""

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

    def _reshape_units(self, kernel, recurrent_kernel):
        return tf.reshape(tf.concat([kernel, recurrent_kernel], axis=0), (-1, self._GATES, self.cell.units))


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableSimpleRNN(_MaskedRecurrentMixin, keras.layers.SimpleRNN):
    """``tf_keras.layers.SimpleRNN`` with 0/1 masks on its kernel (in, u), recurrent kernel (u, u) and bias (u,)."""

    _GATES = recurrent.GATES["SimpleRNN"]


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableGRU(_MaskedRecurrentMixin, keras.layers.GRU):
    """``tf_keras.layers.GRU`` with 0/1 masks on its kernel (in, 3u), recurrent kernel (u, 3u) and bias."""

    _GATES = recurrent.GATES["GRU"]


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableLSTM(_MaskedRecurrentMixin, keras.layers.LSTM):
    """``tf_keras.layers.LSTM`` with 0/1 masks on its kernel (in, 4u), recurrent kernel (u, 4u) and bias (4u,)."""

    _GATES = recurrent.GATES["LSTM"]


__all__ = ["GatedMaskMethods", "PrunableGRU", "PrunableLSTM", "PrunableSimpleRNN"]
