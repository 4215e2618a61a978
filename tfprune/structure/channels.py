"""Layers that pass channels through one to one (activations, dropout, pooling, padding, BatchNormalization over
the last axis, Flatten's blocks): what shrinking may walk through from a dead unit to the next kernel."""

from typing import Optional

import numpy as np

from tfprune.structure import graph
from tfprune._env import keras, keras3

L, L3 = keras.layers, keras3.layers

# Activations computed element by element (so a unit's output depends on that unit only).
ELEMENTWISE_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "elu", "selu", "gelu", "tanh", "sigmoid", "hard_sigmoid", "swish", "silu",
    "softplus", "softsign", "exponential", "leaky_relu", "mish", "hard_silu", "hard_swish"})

# Layers that map channel c of their input (last axis) to channel c of their output and nothing else, at inference
# (in both stacks; Keras 3 dropped ThresholdedReLU).
_CHANNELWISE_NAMES = (
    "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "SpatialDropout3D", "GaussianDropout", "GaussianNoise", "AlphaDropout", "BatchNormalization") + tuple(
    f"{kind}{rank}D" for rank in (1, 2, 3) for kind in (
        "MaxPooling", "AveragePooling", "GlobalMaxPooling", "GlobalAveragePooling", "ZeroPadding", "Cropping",
        "UpSampling"))
CHANNELWISE_TYPES = tuple(getattr(module, name) for module in (L, L3) for name in _CHANNELWISE_NAMES
                          if hasattr(module, name))


def activation_name(layer):
    """The name of a layer's activation function (``"relu"``), or None when it has none."""
    return getattr(getattr(layer, "activation", None), "__name__", None)


def is_elementwise(layer):
    """True when the layer's activation is computed element by element (its units are independent)."""
    return activation_name(layer) in ELEMENTWISE_ACTIVATIONS


def is_channelwise(layer):
    """True when ``layer`` maps channel c of its input's last axis to channel c of its output only (at inference),
    so a constant channel stays one channel; its per-channel weights (BatchNormalization's) are sliced along -1."""
    if not isinstance(layer, CHANNELWISE_TYPES) or getattr(layer, "data_format", "channels_last") != "channels_last":
        return False
    if isinstance(layer, (L.Activation, L3.Activation)):
        return is_elementwise(layer)
    if isinstance(layer, (L.BatchNormalization, L3.BatchNormalization)):
        rank = len(graph.input_shape(layer))
        axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
        return [a % rank for a in axes] == [rank - 1]
    return True


def flatten_blocks(layer) -> Optional[int]:
    """For a channels-last Flatten: how many blocks of the input's channels its output holds (H * W...); else None.

    Through such a Flatten, channel ``c`` of ``C`` becomes the inputs ``s * C + c`` for ``s`` in range(blocks).
    """
    if type(layer) in (L.Flatten, L3.Flatten) and getattr(layer, "data_format", "channels_last") == "channels_last":
        return int(np.prod(graph.input_shape(layer)[1:-1], dtype=np.int64))
    return None



__all__ = ["CHANNELWISE_TYPES", "ELEMENTWISE_ACTIVATIONS", "activation_name", "flatten_blocks", "is_channelwise",
           "is_elementwise"]
