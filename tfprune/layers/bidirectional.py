"""Prunable Bidirectional wrappers (tf_keras and Keras 3) around SimpleRNN, GRU and LSTM.

A ``Bidirectional`` runs a forward and a backward copy of its recurrent layer. The prunable wrapper makes both
copies tfprune's prunable recurrent layers (``tfprune.layers.rnn``, ``rnn_keras3``: masks held in the
variables), and offers the library the usual methods over a **unit kernel that couples the two directions**: hidden
unit ``j`` is unit ``j`` of the forward layer *and* of the backward layer, so the unit kernel is the two layers' unit
kernels stacked, (in + u, gates, 2, u) (``layouts.BidirectionalLayout``). Weight pruning ranks every weight of both
directions together; unit pruning ranks a unit by the L2 norm of its weights in both, and removes it from both, so
the two directions keep the same width and the output channels ``j`` and ``u + j`` (concatenated outputs) go
together. The saved config holds the plain inner layers; the wrapper makes them prunable again when it is built.
"""

import numpy as np

from tfprune.layers import rnn as prunable_rnn
from tfprune.layers import rnn_keras3 as prunable_rnn3
from tfprune import stacks
from tfprune.layers.schedule_step import ScheduleStep, without_step
from tfprune._env import keras, keras3

_RECURRENT = ("SimpleRNN", "GRU", "LSTM")
PRUNABLE_INNER = {**{getattr(keras.layers, n): getattr(prunable_rnn, f"Prunable{n}") for n in _RECURRENT},
                  **{getattr(keras3.layers, n): getattr(prunable_rnn3, f"Prunable{n}") for n in _RECURRENT}}
PLAIN_INNER = {prunable: plain for plain, prunable in PRUNABLE_INNER.items()}


def _recast(layer, classes):
    """``layer`` re-made as ``classes[type(layer)]`` from its config (unbuilt; the inner layers keep no schedule step:
    the wrapper does), or ``layer`` when not listed."""
    cls = classes.get(type(layer))
    return layer if cls is None else cls.from_config(without_step(layer.get_config()))


class _CoupledDirections(ScheduleStep):
    """The library's methods over ``forward_layer`` and ``backward_layer`` (both prunable recurrent layers)."""

    def _directions(self):
        return self.forward_layer, self.backward_layer

    def mask_variables(self):
        """The mask variables of both directions."""
        return [m for layer in self._directions() for m in layer.mask_variables()]

    def masked_weights(self):
        """The plain wrapper's weights, masks applied: the forward layer's, then the backward layer's."""
        return [w for layer in self._directions() for w in layer.masked_weights()]

    def _stacked(self, arrays):
        to_numpy = stacks.of(self).to_numpy
        return np.stack([to_numpy(a) for a in arrays], axis=-2)

    def masked_kernel(self):
        """The unit kernel (in + u, gates, 2, u) as the layer computes with it (NumPy)."""
        return self._stacked([layer.masked_kernel() for layer in self._directions()])

    @property
    def kernel_mask(self):
        """The unit kernel's mask (NumPy, 1 = kept)."""
        return self._stacked([layer.kernel_mask for layer in self._directions()])

    def copy_plain(self, plain):
        """Copies the weights of the plain Bidirectional ``plain`` (same config); the masks stay."""
        for mine, theirs in zip(self._directions(), (plain.forward_layer, plain.backward_layer)):
            mine.copy_plain(theirs)

    def set_masks(self, kernel_keep, bias_keep=None):
        """Sets both directions' masks.

        Args:
          kernel_keep: bool array (in + u, gates, 2, u), True = kept (``[..., 0, :]`` forward, ``[..., 1, :]``
            backward).
          bias_keep: bool vector (u,) for both directions, or None.
        """
        kernel_keep = np.asarray(kernel_keep, bool)
        for index, layer in enumerate(self._directions()):
            layer.set_masks(kernel_keep[..., index, :], bias_keep)


class _PrunableInner:
    """Both stacks: the inner layers passed in (plain, from a config) become prunable ones."""

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        super().__init__(_recast(layer, PRUNABLE_INNER), merge_mode=merge_mode, weights=weights,
                         backward_layer=None if backward_layer is None else _recast(backward_layer, PRUNABLE_INNER),
                         **kwargs)


class _TfKerasConfig(_PrunableInner):
    def get_config(self):
        """The config of the plain wrapper (plain inner layers): ``from_config`` makes them prunable again."""
        config = super().get_config()
        config["layer"] = keras.layers.serialize(_recast(self.layer, PLAIN_INNER))
        if "backward_layer" in config:
            config["backward_layer"] = keras.layers.serialize(_recast(self.backward_layer, PLAIN_INNER))
        return config


class _Keras3Config(_PrunableInner):
    def get_config(self):
        """The config of the plain wrapper (plain inner layers): ``from_config`` makes them prunable again."""
        config = super().get_config()
        for key, layer in (("layer", self.forward_layer), ("backward_layer", self.backward_layer)):
            config[key] = keras3.saving.serialize_keras_object(_recast(layer, PLAIN_INNER))
        return config


PrunableBidirectional = keras.utils.register_keras_serializable(package="tfprune")(type(
    "PrunableBidirectional", (_TfKerasConfig, _CoupledDirections, keras.layers.Bidirectional), {
        "__doc__": "tf_keras ``Bidirectional`` whose forward and backward SimpleRNN/GRU/LSTM are tfprune's prunable "
                   "recurrent layers, pruned as one (see ``tfprune.layers.bidirectional``).",
        "__module__": __name__}))
PrunableBidirectional3 = keras3.saving.register_keras_serializable(package="tfprune")(type(
    "PrunableBidirectional", (_Keras3Config, _CoupledDirections, keras3.layers.Bidirectional), {
        "__doc__": "Keras 3 ``Bidirectional`` whose forward and backward SimpleRNN/GRU/LSTM are tfprune's prunable "
                   "recurrent layers, pruned as one (see ``tfprune.layers.bidirectional``).",
        "__module__": __name__}))


def support(layer):
    """None when a Bidirectional can be pruned, else why it stays dense."""
    inner = type(layer.forward_layer)
    if inner not in PRUNABLE_INNER and inner not in PLAIN_INNER:
        return f"Bidirectional wraps a {inner.__name__}: tfprune prunes Bidirectional SimpleRNN/GRU/LSTM only"
    if type(layer.backward_layer) not in (inner, PRUNABLE_INNER.get(inner), PLAIN_INNER.get(inner)):
        return "Bidirectional whose backward layer is of another type than its forward layer"
    if layer.merge_mode is None:
        return "Bidirectional with merge_mode=None (two outputs)"
    return None


def unit_channels(layer, units):
    """The output channels of coupled units ``units``: ``j`` and ``u + j`` when the directions are concatenated,
    ``j`` when they are summed, averaged or multiplied."""
    units = np.asarray(units, np.int64)
    if layer.merge_mode != "concat":
        return units
    return np.concatenate([units, units + int(layer.forward_layer.cell.units)])


__all__ = ["PLAIN_INNER", "PRUNABLE_INNER", "PrunableBidirectional", "PrunableBidirectional3", "support",
           "unit_channels"]
