"""Prunable separable convolutions (SeparableConv1D, SeparableConv2D) for tf_keras and Keras 3.

A separable convolution is a depthwise kernel (k..., in, m) followed by a pointwise kernel (1..., in * m, filters)
and a bias (filters,). Which kernels are pruned is the layer's ``pruned_kernels`` (in its config, so it is saved):

- ``"pointwise"`` (the default, as TF-MOT): the unit kernel is the pointwise kernel, whose units are the output
  filters (``registry``'s ``SeparableLayout``). Unit pruning removes filters; a consumer that loses input channel
  ``c`` loses the depthwise kernel's channel ``c`` and the pointwise rows ``c * m ... c * m + m - 1``.
- ``"depthwise"``: the unit kernel is the depthwise kernel (k..., in, m), weight pruning only (its last axis is the
  depth multiplier, not units of the layer), as for a DepthwiseConv2D.
- ``"both"``: the two kernels ranked together by |w|, as one column (weights, 1): weight pruning only.

Every kernel keeps a mask (ones where it is not pruned), so the layer's weights and masks stay aligned.

Both stacks' separable convolutions read their variables in ``call``; the masks are kept in the variables as
``tfprune.layers.stored_masks`` describes (constraints, and masked properties on Keras 3's JAX backend).
"""

import numpy as np

from tfprune.layers.kinds import LayerKind, both_stacks
from tfprune.layers.layouts import SeparableBothLayout, SeparableDepthwiseLayout, SeparableLayout
from tfprune.layers.stored_masks import (StoredMaskMethods, add_masks, masked_property, masking_constraints,
                                         prunable_classes)

_WEIGHTS = ("depthwise_kernel", "pointwise_kernel", "bias")
_CONSTRAINTS = {"depthwise_kernel": "depthwise_constraint", "pointwise_kernel": "pointwise_constraint",
                "bias": "bias_constraint"}


KERNEL_CHOICES = ("pointwise", "depthwise", "both")


def check_pruned_kernels(value):
    """``value`` if it is one of ``KERNEL_CHOICES``.

    Raises:
      ValueError: naming the value and the choices.
    """
    if value not in KERNEL_CHOICES:
        raise ValueError(f"pruned_kernels {value!r} is not one of {', '.join(KERNEL_CHOICES)} (which kernels of a "
                         "separable convolution are pruned)")
    return value


_LAYOUTS = {"pointwise": SeparableLayout(), "depthwise": SeparableDepthwiseLayout(), "both": SeparableBothLayout()}


class _SelectedKernels(StoredMaskMethods):
    """A separable convolution for ``StoredMaskMethods``: ``_variables()``/``_masks()`` are [depthwise kernel,
    pointwise kernel, bias or None]; the layout is the one ``pruned_kernels`` names (``tfprune.layers.layouts``)."""

    def __init__(self, *args, pruned_kernels="pointwise", **kwargs):
        super().__init__(*args, **kwargs)
        self.pruned_kernels = check_pruned_kernels(pruned_kernels)

    def get_config(self):
        return {**super().get_config(), "pruned_kernels": self.pruned_kernels}

    def _masks(self):
        return [getattr(self, f"{n}_mask_variable") for n in _WEIGHTS]

    def _layout(self):
        return _LAYOUTS[self.pruned_kernels]


def unit_shape(layer):
    """The unit kernel's shape of a separable convolution (plain: its pointwise kernel's), None before build."""
    if not layer.built:
        return None
    depthwise, pointwise = (tuple(int(d) for d in w.shape) for w in layer.weights[:2])
    choice = getattr(layer, "pruned_kernels", "pointwise")
    if choice == "both":
        return (int(np.prod(depthwise)) + int(np.prod(pointwise)), 1)
    return depthwise if choice == "depthwise" else pointwise


def has_units(layer):
    """Whether the layer's unit kernel has units of its own (only when the pointwise kernel alone is pruned)."""
    return getattr(layer, "pruned_kernels", "pointwise") == "pointwise"


class _TfKerasSeparable(_SelectedKernels):
    """tf_keras: constraints given to the variables at build (the layer's config keeps the user's own)."""

    def build(self, input_shape):
        names = [n for n in _WEIGHTS if n != "bias" or self.use_bias]
        with masking_constraints(self, self, {_CONSTRAINTS[n]: f"{n}_mask_variable" for n in names}):
            super().build(input_shape)
        add_masks(self, dict(zip(_WEIGHTS, self._variables())))

    def _variables(self):
        return [getattr(self, n) for n in _WEIGHTS]


class _Keras3Separable(_SelectedKernels):
    """Keras 3: masked properties on JAX, constraints on TensorFlow and PyTorch."""

    depthwise_kernel = masked_property("depthwise_kernel", "depthwise_kernel_mask_variable")
    pointwise_kernel = masked_property("pointwise_kernel", "pointwise_kernel_mask_variable")
    bias = masked_property("bias", "bias_mask_variable")

    def build(self, input_shape):
        super().build(input_shape)
        add_masks(self, dict(zip(_WEIGHTS, self._variables())))

    def _variables(self):
        return [self.__dict__.get(f"_{n}_variable") for n in _WEIGHTS]


_CLASSES = prunable_classes((_TfKerasSeparable, _Keras3Separable), ("SeparableConv1D", "SeparableConv2D"),
                            "pointwise kernel (1..., in * m, filters), bias (filters,) and optionally depthwise "
                            "kernel (k..., in, m)", __name__)
TF_KERAS, KERAS3 = _CLASSES["tf_keras"], _CLASSES["keras3"]

def _separable_macs(layer, output_shape):
    """Separable convolutions: the depthwise kernel (k... * in * m) and the pointwise kernel (in * m * filters) at
    every output position."""
    positions = int(np.prod(output_shape[1:-1], dtype=np.int64))
    depthwise, pointwise = (int(np.prod(w.shape, dtype=np.int64)) for w in layer.weights[:2])
    return positions * (depthwise + pointwise)


ORDER = 50  # where these kinds come in the registry's table (and in messages)
KINDS = both_stacks(lambda layers, stack: [
    LayerKind(getattr(layers, name), cls, "filters", macs=_separable_macs, layout=SeparableLayout(),
              kernel_attr="pointwise_kernel", has_units=has_units, unit_shape=unit_shape, options=("pruned_kernels",),
              inputs_axis=has_units)
    for name, cls in _CLASSES[stack].items()])

__all__ = ["KERAS3", "KINDS", "ORDER", "KERNEL_CHOICES", "TF_KERAS", "check_pruned_kernels", "has_units", "unit_shape"]
