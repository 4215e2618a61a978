"""Prunable Bidirectional wrappers (tf_keras and Keras 3) around SimpleRNN, GRU and LSTM.

A ``Bidirectional`` runs a forward and a backward copy of its recurrent layer. The prunable wrapper makes both
copies tfprune's prunable recurrent layers (``tfprune.layers.rnn``: masks held in the
variables), and offers the library the usual methods over a **unit kernel that couples the two directions**: hidden
unit ``j`` is unit ``j`` of the forward layer *and* of the backward layer, so the unit kernel is the two layers' unit
kernels stacked, (in + u, gates, 2, u) (``layouts.BidirectionalLayout``). Weight pruning ranks every weight of both
directions together; unit pruning ranks a unit by the L2 norm of its weights in both, and removes it from both, so
the two directions keep the same width and the output channels ``j`` and ``u + j`` (concatenated outputs) go
together. The saved config holds the plain inner layers; the wrapper makes them prunable again when it is built.
"""

import numpy as np

from tfprune.layers import rnn
from tfprune.layers.kinds import LayerKind
from tfprune.layers.layouts import BidirectionalLayout
from tfprune.layers.schedule_step import without_step
from tfprune.layers.stored_masks import StoredMaskMethods
from tfprune._env import keras, keras3

_RECURRENT = ("SimpleRNN", "GRU", "LSTM")
PRUNABLE_INNER = {**{getattr(keras.layers, n): rnn.TF_KERAS[n] for n in _RECURRENT},
                  **{getattr(keras3.layers, n): rnn.KERAS3[n] for n in _RECURRENT}}
PLAIN_INNER = {prunable: plain for plain, prunable in PRUNABLE_INNER.items()}


def _recast(layer, classes):
    """``layer`` re-made as ``classes[type(layer)]`` from its config (unbuilt; the inner layers keep no schedule step:
    the wrapper does), or ``layer`` when not listed."""
    cls = classes.get(type(layer))
    return layer if cls is None else cls.from_config(without_step(layer.get_config()))


class _CoupledDirections(StoredMaskMethods):
    """The protocol over both directions' variables and masks: the forward layer's [kernel, recurrent_kernel, bias
    or None], then the backward layer's, laid out by ``BidirectionalLayout`` (unit kernel (in + u, gates, 2, u))."""

    LAYOUT = BidirectionalLayout()

    def _directions(self):
        return self.forward_layer, self.backward_layer

    def _variables(self):
        return [v for layer in self._directions() for v in layer._variables()]  # pylint: disable=protected-access

    def _masks(self):
        return [m for layer in self._directions() for m in layer._masks()]  # pylint: disable=protected-access

    def _plain_weights(self, plain):
        return plain.forward_layer.get_weights() + plain.backward_layer.get_weights()


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


def _unit_shape(layer):
    """(in + u, gates, 2, u) of a built Bidirectional (its two directions' unit kernels stacked), or None."""
    shape = rnn.recurrent_unit_shape(layer.forward_layer) if layer.built else None
    return None if shape is None else shape[:2] + (2,) + shape[2:]


def _set_width(config, width):
    """The inner layers' configs with ``width`` units (and without Keras 3's build config, which holds the old
    input width)."""
    for key in ("layer", "backward_layer"):
        if config.get(key):
            config[key]["config"]["units"] = int(width)
            config[key].pop("build_config", None)
    return config


ORDER = 90  # where these kinds come in the registry's table (and in messages)
KINDS = tuple(LayerKind(layers.Bidirectional, cls, "units", unsupported=support, macs=rnn.recurrent_macs,
                        layout=BidirectionalLayout(), shrinkable=rnn.recurrent_shrinkable, unit_shape=_unit_shape,
                        unit_channels=unit_channels, set_width=_set_width)
              for layers, cls in ((keras.layers, PrunableBidirectional), (keras3.layers, PrunableBidirectional3)))

__all__ = ["KINDS", "ORDER", "PLAIN_INNER", "PRUNABLE_INNER", "PrunableBidirectional", "PrunableBidirectional3",
"support",
           "unit_channels"]
