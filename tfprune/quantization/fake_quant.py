"""Keras 3 layers that train with int8 fake quantization and a fixed sparsity mask (tfprune's QAT on Keras 3).

Keras 3.15 quantizes for inference (``Model.quantize("int8")``: int8 weights, activations quantized per call) and
offers the differentiable op ``keras.quantizers.fake_quant_with_min_max_vars``, but no quantization-aware training
and nothing a TFLite converter reads. These layers are that training: Dense, Conv1D/2D/3D and DepthwiseConv1D/2D
whose forward pass is the one TFLite's full-int8 kernels compute, as TF-MOT's Default8Bit scheme emulates it:

- the kernel is fake-quantized per output channel to int8, symmetric over ``[-max|w|, max|w|]`` with 255 levels
  (``narrow_range``): TFLite's per-channel int8 weight, in which 0 is exactly 0;
- the output (after the activation, which TFLite fuses) is fake-quantized to int8 over a moving-average range
  (``OUTPUT_EMA``; the first training batch sets it), as a calibrated int8 tensor.

Gradients pass straight through the rounding, times the fixed ``sparsity_mask`` (1 where the weight was non-zero
when QAT began): a pruned weight gets a zero gradient and stays exactly zero. ``to_plain`` turns a layer back into
its Keras parent with the masked kernel, for the TFLite converter (``qat.to_inference_model``).
"""

from tfprune._env import keras3

ops = keras3.ops
OUTPUT_EMA = 0.99  # weight of the old range per training batch (TF-MOT: 0.999, made for long QAT runs)
_MIN_RANGE = 1e-8


@ops.custom_gradient
def _snap_to_grid(channels, mask):
    """``channels`` (rows, out channels) rounded to int8 per channel; gradient: upstream × ``mask`` (none to it).
    ``channels`` holds zeros where ``mask`` is 0 (the gradient keeps them there)."""
    inverse = ops.stop_gradient(127.0 / ops.maximum(ops.max(ops.abs(channels), axis=0), _MIN_RANGE))
    snapped = ops.divide(ops.round(ops.multiply(channels, inverse)), inverse)

    def grad(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream
        return ops.multiply(upstream, mask), ops.zeros_like(mask)
    return snapped, grad


class FakeQuantMixin:
    """Fake quantization for a Keras 3 layer with a kernel; the subclass gives ``_kernel_weight`` and ``_linear``."""

    def build(self, input_shape):
        super().build(input_shape)
        kernel = self._kernel_weight()
        self.sparsity_mask = self.add_weight(name="sparsity_mask", shape=kernel.shape, initializer="ones",
                                             trainable=False)
        self.output_min = self.add_weight(name="output_min", shape=(), initializer="zeros", trainable=False)
        self.output_max = self.add_weight(name="output_max", shape=(), initializer="zeros", trainable=False)
        self.output_ranged = self.add_weight(name="output_ranged", shape=(), initializer="zeros", trainable=False)

    def set_sparsity_mask_from_kernel(self):
        """Fixes the mask to the kernel's current non-zeros: the zeros QAT must keep."""
        kernel = self._kernel_weight()
        self.sparsity_mask.assign(ops.cast(ops.not_equal(kernel, 0), self.sparsity_mask.dtype))

    def quantized_kernel(self):
        """The kernel fake-quantized per output channel (int8, symmetric, narrow range): each weight rounded to its
        channel's grid ``max|w| / 127`` (a zero stays 0). The gradient passes straight through (identity, as
        ``fake_quant_with_min_max_vars``' does inside the range, which here holds every weight) times the sparsity
        mask, so a pruned weight's gradient is zero and it stays zero. Written out rather than calling that op:
        its TensorFlow gradient also reduces over the kernel for the range's gradient, which made a QAT epoch of
        fc_1000 3.6x a plain one (``scripts/bench.sh qat --keras=3``)."""
        kernel = self._kernel_weight()
        shape = ops.shape(kernel)
        channels = ops.reshape(kernel, (-1, self._output_channels(kernel)))  # (taps·in, out channels)
        mask = ops.reshape(ops.cast(self.sparsity_mask, self.compute_dtype), ops.shape(channels))
        return ops.reshape(_snap_to_grid(channels, mask), shape)

    def _output_channels(self, kernel):
        return kernel.shape[-1] if not self._depthwise else kernel.shape[-2] * kernel.shape[-1]

    def _quantized_output(self, outputs, training):
        if training:
            low = ops.minimum(ops.min(ops.stop_gradient(outputs)), 0.0)
            high = ops.maximum(ops.max(ops.stop_gradient(outputs)), 0.0)
            ranged = ops.cast(self.output_ranged, "bool")
            self.output_min.assign(ops.where(ranged, OUTPUT_EMA * self.output_min + (1 - OUTPUT_EMA) * low, low))
            self.output_max.assign(ops.where(ranged, OUTPUT_EMA * self.output_max + (1 - OUTPUT_EMA) * high, high))
            self.output_ranged.assign(1.0)
        low = self.output_min
        high = ops.maximum(self.output_max, low + _MIN_RANGE)
        return keras3.quantizers.fake_quant_with_min_max_vars(outputs, low, high, num_bits=8)

    def call(self, inputs, training=None):
        outputs = self._linear(inputs, self.quantized_kernel())
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return self._quantized_output(outputs, training)


class QATDense(FakeQuantMixin, keras3.layers.Dense):
    _depthwise = False

    def _kernel_weight(self):
        return self._kernel

    def _linear(self, inputs, kernel):
        return ops.matmul(inputs, kernel)


def _conv_class(parent):
    class QATConv(FakeQuantMixin, parent):
        _depthwise = False

        def _kernel_weight(self):
            return self._kernel

        def _linear(self, inputs, kernel):
            return self.convolution_op(inputs, kernel)
    QATConv.__name__ = QATConv.__qualname__ = "QAT" + parent.__name__
    return QATConv


def _depthwise_class(parent):
    class QATDepthwise(FakeQuantMixin, parent):
        _depthwise = True

        def _kernel_weight(self):
            return self.kernel

        def _linear(self, inputs, kernel):
            return ops.depthwise_conv(inputs, kernel, strides=self.strides, padding=self.padding,
                                      dilation_rate=self.dilation_rate, data_format=self.data_format)
    QATDepthwise.__name__ = QATDepthwise.__qualname__ = "QAT" + parent.__name__
    return QATDepthwise


_layers = keras3.layers
# {Keras 3 class: its fake-quantized subclass}: exact classes only (a user's subclass may compute something else).
QAT_CLASSES = {_layers.Dense: QATDense,
               **{c: _conv_class(c) for c in (_layers.Conv1D, _layers.Conv2D, _layers.Conv3D)},
               **{c: _depthwise_class(c) for c in (_layers.DepthwiseConv1D, _layers.DepthwiseConv2D)}}
PLAIN_CLASSES = {qat: plain for plain, qat in QAT_CLASSES.items()}


def unsupported_reason(layer):
    """Why ``layer`` (one of ``QAT_CLASSES``) cannot be fake-quantized, or None."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"data_format {layer.data_format!r} (TFLite runs channels_last)"
    if getattr(layer, "lora_enabled", False):
        return "LoRA is enabled (merge it first)"
    if getattr(layer, "quantization_mode", None):
        return f"it is already quantized ({layer.quantization_mode!r})"
    return None


def to_qat(layer):
    """A fake-quantized copy (unbuilt) of a Keras 3 Dense/Conv/DepthwiseConv layer, same config."""
    return QAT_CLASSES[type(layer)].from_config(layer.get_config())


def to_plain(layer):
    """The plain Keras 3 parent (unbuilt) of a fake-quantized layer, same config."""
    return PLAIN_CLASSES[type(layer)].from_config(layer.get_config())


def is_qat(layer):
    return type(layer) in PLAIN_CLASSES


__all__ = ["OUTPUT_EMA", "QAT_CLASSES", "QATDense", "is_qat", "to_plain", "to_qat", "unsupported_reason"]
