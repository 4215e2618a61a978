"""Prunable tf_keras recurrent layers: SimpleRNN, GRU and LSTM with masks on the kernel, recurrent kernel and bias.

The layout (gates, the unit kernel the pruning library ranks) is ``tfprune.recurrent``'s. tf_keras' recurrent
layers read their cell's variables directly (``standard_lstm(kernel=self.cell.kernel, ...)``), so the mask cannot
enter the forward pass without rewriting it. Instead **the variables hold the zeros**: ``set_masks`` zeroes the
pruned entries, and each variable carries a constraint that multiplies it by its mask after every optimizer update
(every tf_keras optimizer applies variable constraints, in ``fit`` and in ``apply_gradients``), so the layer
computes with exact zeros at the pruned entries through any training, and costs nothing in the forward pass.

The masks (``kernel_mask`` over the unit kernel, ``mask_variables()``) are non-trainable weights of the layer and are
saved and loaded with it. The user's own constraints still apply, before the mask.
"""

import numpy as np

from tfprune import recurrent
from tfprune._env import keras, tf

_WEIGHTS = ("kernel", "recurrent_kernel", "bias")
_CONSTRAINTS = {"kernel": "kernel_constraint", "recurrent_kernel": "recurrent_constraint", "bias": "bias_constraint"}


class MaskedThenInner:
    """A variable constraint: the user's constraint (if any), then the mask the layer holds under ``attr``."""

    def __init__(self, layer, attr, inner):
        self.layer, self.attr, self.inner = layer, attr, inner

    def __call__(self, w):
        w = self.inner(w) if self.inner is not None else w
        return w * tf.cast(getattr(self.layer, self.attr), w.dtype)


class TfKerasOps:
    """How the mask mixins multiply and read tf_keras variables."""

    @staticmethod
    def _multiply(variable, mask):
        return variable * mask

    @staticmethod
    def _numpy(variable):
        return variable.numpy()


class GatedMaskMethods:
    """The methods the pruning library uses, for a recurrent layer of either stack, over its hooks:
    ``_variables()`` / ``_masks()`` -> [kernel, recurrent_kernel, bias or None], ``_unit_kernel(kernel,
    recurrent_kernel)``, ``_multiply(variable, mask)``, ``_numpy(variable)``, and ``_GATES``."""

    _GATES = 1

    def mask_variables(self):
        """The mask variables (kernel, recurrent kernel, and bias when there is one)."""
        return [m for m in self._masks() if m is not None]

    @property
    def kernel_mask(self):
        """The mask of the unit kernel (in + units, gates, units): 1 = kept."""
        masks = self._masks()
        return self._unit_kernel(masks[0], masks[1])

    def masked_weights(self):
        """``[kernel, recurrent_kernel, bias?]`` with the masks applied: the weights of the plain twin."""
        return [self._multiply(v, m) for v, m in zip(self._variables(), self._masks()) if v is not None]

    def masked_kernel(self):
        """The unit kernel (in + units, gates, units) as the layer computes with it."""
        kernel, recurrent_kernel = self.masked_weights()[:2]
        return self._unit_kernel(kernel, recurrent_kernel)

    def copy_plain(self, plain):
        """Copies the weights of the plain layer ``plain`` (same config); the masks stay as they are."""
        for variable, value in zip([v for v in self._variables() if v is not None], plain.get_weights()):
            variable.assign(value)

    def set_masks(self, kernel_keep, bias_keep=None):
        """Sets the masks and zeroes the pruned weights' variables.

        Args:
          kernel_keep: bool array of the unit kernel's shape (in + units, gates, units), True = kept.
          bias_keep: bool vector (units,) (spread over every gate) or None (bias mask left as it is).
        """
        (kernel, recurrent_kernel, bias), masks = self._variables(), self._masks()
        keeps = recurrent.split_unit_kernel(np.asarray(kernel_keep, bool), int(kernel.shape[0]))
        for variable, mask, keep in zip((kernel, recurrent_kernel), masks, keeps):
            mask.assign(keep.astype(self._numpy(mask).dtype))
            variable.assign(self._numpy(variable) * keep)
        if bias is not None and bias_keep is not None:
            keep = recurrent.bias_of_units(np.asarray(bias_keep, bool), tuple(bias.shape), self._GATES)
            masks[2].assign(keep.astype(self._numpy(masks[2]).dtype))
            bias.assign(self._numpy(bias) * keep)


class _MaskedRecurrentMixin(TfKerasOps, GatedMaskMethods):
    """Masks for a tf_keras SimpleRNN/GRU/LSTM: one per cell variable (``kernel``, ``recurrent_kernel``, ``bias``),
    kept in the variables by constraints (see the module docstring)."""

    def build(self, input_shape):
        cell = self.cell
        names = [n for n in _WEIGHTS if n != "bias" or cell.use_bias]
        originals = {n: getattr(cell, _CONSTRAINTS[n]) for n in names}
        for name in names:  # the cell's build gives its variables these constraints; its config is restored below
            setattr(cell, _CONSTRAINTS[name], MaskedThenInner(self, f"{name}_mask_variable", originals[name]))
        try:
            super().build(input_shape)
        finally:
            for name, constraint in originals.items():
                setattr(cell, _CONSTRAINTS[name], constraint)
        for name in _WEIGHTS:
            variable = getattr(cell, name) if name in names else None
            mask = None if variable is None else self.add_weight(
                name=f"{name}_mask", shape=variable.shape, dtype=variable.dtype,
                initializer=keras.initializers.Ones(), trainable=False)
            setattr(self, f"{name}_mask_variable", mask)

    def _variables(self):
        return [getattr(self.cell, n) if n != "bias" or self.cell.use_bias else None for n in _WEIGHTS]

    def _masks(self):
        return [getattr(self, f"{n}_mask_variable") for n in _WEIGHTS]

    def _unit_kernel(self, kernel, recurrent_kernel):
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


__all__ = ["GatedMaskMethods", "MaskedThenInner", "TfKerasOps", "PrunableGRU", "PrunableLSTM", "PrunableSimpleRNN"]
