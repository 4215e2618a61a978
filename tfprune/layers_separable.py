"""Prunable separable convolutions (SeparableConv1D, SeparableConv2D) for tf_keras and Keras 3.

A separable convolution is a depthwise kernel (k..., in, m) followed by a pointwise kernel (1..., in * m, filters)
and a bias (filters,). tfprune prunes the **pointwise kernel** (as TF-MOT does): its unit kernel is the pointwise
kernel, whose units are the output filters (``registry``'s ``SeparableLayout``). Unit pruning removes filters; a
consumer that loses input channel ``c`` loses the depthwise kernel's channel ``c`` and the pointwise rows
``c * m ... c * m + m - 1``. The depthwise kernel keeps a mask of ones (saved with the layer), so the layer's weights
and masks stay aligned; pruning the depthwise kernel itself is not offered yet.

Both stacks' separable convolutions read their variables in ``call``; the masks are kept in the variables as
``tfprune.stored_masks`` describes (constraints, and masked properties on Keras 3's JAX backend).
"""

from tfprune.stored_masks import (Keras3Ops, StoredMaskMethods, TfKerasOps, add_masks, masked_property,
                                  masking_constraints, prunable_classes)

_WEIGHTS = ("depthwise_kernel", "pointwise_kernel", "bias")
_CONSTRAINTS = {"depthwise_kernel": "depthwise_constraint", "pointwise_kernel": "pointwise_constraint",
                "bias": "bias_constraint"}


class _PointwiseUnits(StoredMaskMethods):
    """The unit kernel of a separable convolution, for ``StoredMaskMethods``: ``_variables()``/``_masks()`` are
    [depthwise kernel, pointwise kernel, bias or None]; the unit kernel is the pointwise kernel."""

    def _masks(self):
        return [getattr(self, f"{n}_mask_variable") for n in _WEIGHTS]

    def _unit_kernel(self, arrays):
        return arrays[1]

    def _variable_keeps(self, kernel_keep, bias_keep):
        return [None, kernel_keep, bias_keep]


class _TfKerasSeparable(TfKerasOps, _PointwiseUnits):
    """tf_keras: constraints given to the variables at build (the layer's config keeps the user's own)."""

    def build(self, input_shape):
        names = [n for n in _WEIGHTS if n != "bias" or self.use_bias]
        with masking_constraints(self, self, {_CONSTRAINTS[n]: f"{n}_mask_variable" for n in names}):
            super().build(input_shape)
        add_masks(self, dict(zip(_WEIGHTS, self._variables())))

    def _variables(self):
        return [getattr(self, n) for n in _WEIGHTS]


class _Keras3Separable(Keras3Ops, _PointwiseUnits):
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
                            "pointwise kernel (1..., in * m, filters) and bias (filters,)", __name__)
TF_KERAS, KERAS3 = _CLASSES["tf_keras"], _CLASSES["keras3"]

__all__ = ["KERAS3", "TF_KERAS"]
