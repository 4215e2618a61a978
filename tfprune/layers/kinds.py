"""``LayerKind``: the record the registry keeps per prunable Keras layer type (what it is, how it is pruned,
counted, sliced and shrunk). The table of kinds is ``tfprune.layers.registry.KINDS``."""

import dataclasses
from typing import Callable, Optional

import numpy as np

from tfprune.layers.layouts import BidirectionalLayout, GatedLayout, KernelLayout
from tfprune._env import keras, keras3


def _always(layer):  # pylint: disable=unused-argument
    return None


@dataclasses.dataclass(frozen=True)
class LayerKind:
    """One prunable Keras layer type.

    plain: the Keras class (matched exactly: a subclass such as Conv2DTranspose lays its kernel out otherwise).
    prunable: tfprune's masked twin (a subclass of ``plain`` with ``kernel_mask``/``bias_mask`` weights).
    width_key: the config key of the output width (``units``, ``filters``), changed when units are removed.
    unsupported: layer -> None when this instance can be pruned, else the reason it stays dense.
    macs: (layer, output shape of one call) -> multiply-accumulates of that call, per example; None: positions *
      kernel size (``count_macs``).
    layout: how the layer's weights map to the **unit kernel** the methods rank (units last) and how they are sliced
      when units or input channels are removed (``KernelLayout``: one kernel; ``TransposedLayout``: a transposed
      convolution's (k..., units, in); ``SeparableLayout``: a separable convolution's pointwise kernel;
      ``GatedLayout``: recurrent gates).
    flat_input: True when its inputs may be a flattened feature map (a Dense after Flatten): then input channel
      ``c`` of ``C`` is the block of input rows ``s * C + c``.
    shrinkable: layer -> True when dead units may be cut out physically (channels-last layout).
    kernel_attr: the attribute holding the prunable kernel on the plain layer (``depthwise_kernel`` for
      tf_keras' DepthwiseConv2D); ``registry.kernel(layer)`` reads it for plain and prunable layers alike.
    has_units: whether the kernel's last axis is output units of the layer's own (False for DepthwiseConv2D: its
      last axis is the depth multiplier and its channels follow its input); unit methods and shrinking skip it.
      A callable layer -> bool when it depends on the layer (a separable convolution's ``pruned_kernels``); ask
      ``units_in(layer)``.
    unit_shape: layer -> the unit kernel's shape (None before build), for kinds without one kernel variable
      (recurrent, attention); None: the shape follows from ``kernel_attr``'s variable.
    internal_units: True when the units are inside the layer (attention heads): removing them changes neither its
      output width nor its consumers.
    unit_channels: (layer, unit indices) -> the output channels they make (a Bidirectional's unit ``j`` makes
      channels ``j`` and ``u + j``); None: unit ``j`` is channel ``j``.
    set_width: (config, width) -> the config with ``width`` units, for kinds whose width is not the top-level
      ``width_key`` (a Bidirectional's inner layers).
    plain_unit_kernel: plain layer -> its unit kernel (NumPy), for kinds whose prunable weights are not found by
      position among the layer's weights (custom layers); None: ``layout.unit_kernel(weights)``.
    options: the keyword arguments of ``make_prunable`` the prunable twin takes in its config
      (``pruned_kernels`` for separable convolutions).
    build_like: (twin, layer) -> builds the new twin as the built ``layer`` was (in-place conversion), for kinds
      whose build config does not make every weight (tf_keras' MultiHeadAttention builds its projections at
      its first call); None: ``twin.build_from_config(layer.get_build_config())``.
    inputs_axis: whether the unit kernel's axis -2 holds the inputs each unit sums over, as TFLite lays a unit's
      weights out (Dense, convolutions at each tap, transposed convolutions, a separable convolution's pointwise
      kernel, Embedding's vocabulary rows of its one-hot input): N:M groups run along it (``tfprune.select.nm``).
      False (the default) where axis -2 is something else: DepthwiseConv2D (the channel each output reads alone),
      recurrent gates, attention heads, custom layers' flattened weights. A callable layer -> bool when it depends
      on the layer (an EinsumDense's equation); ask ``has_inputs_axis(layer)``.
    """
    plain: type
    prunable: type
    width_key: str
    unsupported: Callable = _always
    macs: Optional[Callable] = None
    layout: object = KernelLayout()
    flat_input: bool = False
    shrinkable: Callable = lambda layer: getattr(layer, "data_format", "channels_last") == "channels_last"
    kernel_attr: str = "kernel"
    has_units: object = True
    unit_shape: Optional[Callable] = None
    internal_units: bool = False
    unit_channels: Optional[Callable] = None
    set_width: Optional[Callable] = None
    plain_unit_kernel: Optional[Callable] = None
    options: tuple = ()
    build_like: Optional[Callable] = None
    inputs_axis: object = False

    @property
    def name(self):
        return self.plain.__name__

    def units_in(self, layer):
        """Whether ``layer`` (of this kind) has units of its own, for the unit methods and shrinking."""
        return self.has_units(layer) if callable(self.has_units) else bool(self.has_units)

    def has_inputs_axis(self, layer):
        """Whether ``layer``'s (of this kind) unit kernel has an inputs axis at -2, for the N:M methods."""
        return self.inputs_axis(layer) if callable(self.inputs_axis) else bool(self.inputs_axis)

    @property
    def recurrent(self):
        return isinstance(self.layout, (GatedLayout, BidirectionalLayout))

    def count_macs(self, layer, output_shape):
        """Multiply-accumulates of one call of ``layer`` with output ``output_shape``, per example: the kind's
        ``macs``, else output positions * kernel size (Dense: in * out; Conv2D: H_out * W_out * kh * kw * C_in * C_out).
        """
        if self.macs is not None:
            return self.macs(layer, output_shape)
        kernel_size = int(np.prod(getattr(layer, self.kernel_attr).shape, dtype=np.int64))
        return int(np.prod(output_shape[1:-1], dtype=np.int64)) * kernel_size

    def slice(self, weights, in_keep=None, out_keep=None):
        """The plain layer's weights with only the input rows ``in_keep`` and the units ``out_keep`` (None: all)."""
        return self.layout.slice(weights, in_keep, out_keep)


def no_macs(layer, output_shape):  # pylint: disable=unused-argument
    """A layer that looks rows up (Embedding) or whose cost is not counted (custom layers): 0."""
    return 0


def conv_support(layer):
    """None for a convolution tfprune prunes, else why it stays dense (grouped convolutions)."""
    if getattr(layer, "groups", 1) != 1:
        return f"grouped {type(layer).__name__} (groups={layer.groups})"
    return None


def both_stacks(make):
    """``make(layers module, stack)`` for tf_keras' then Keras 3's layers ("tf_keras", "keras3"), concatenated: how
    a family writes its kinds once for both stacks."""
    return tuple(make(keras.layers, "tf_keras")) + tuple(make(keras3.layers, "keras3"))


__all__ = ["LayerKind", "both_stacks", "conv_support", "no_macs"]
