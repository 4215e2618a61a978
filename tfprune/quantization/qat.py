"""Sparsity-preserving QAT: a pruned model made to train with int8 fake quantization, its zeros kept.

The model is first made plain (``pruning.plain_model``: tfprune's masks baked in, TF-MOT's pruning wrappers
stripped); its zeros are then the mask QAT keeps:

- **tf_keras**: TF-MOT's ``quantize_apply(quantize_annotate_model(model), Default8BitPrunePreserveQuantizeScheme())``
  (TF-MOT's own PQAT: its weight quantizers multiply each kernel by the mask of its non-zeros, taken when QAT
  begins). The TFLite converter reads the trained fake-quant ranges.
- **Keras 3**: every Dense, Conv1D/2D/3D and DepthwiseConv1D/2D becomes its ``fake_quant`` twin, the same config
  and weights plus a ``sparsity_mask`` of its non-zeros. ``to_inference_model`` gives the trained model back as
  plain layers with the masked kernels, which the converter quantizes to int8 from representative data: per
  channel from max|w|, the very grid the training emulated.

TF-MOT's scheme does not preserve DepthwiseConv2D kernels (its registry disables them: TF-MOT cannot prune them);
``ZeroKeeper`` (``zero_keepers(qat_model)``) re-zeroes those after every training batch, as TF-MOT's pruning
wrapper does, so every forward pass and the trained model hold the zeros.

Either way, train the returned model with ``fit(..., callbacks=zero_keepers(qat_model))`` (a masked weight's
gradient is zero, so it stays zero), then convert ``to_inference_model(qat_model)`` with
``tflite.to_tflite(..., quantization="int8", representative_data=...)``.
"""

import numpy as np

from tfprune import pruning
from tfprune._env import keras
from tfprune import stacks
from tfprune.layers import registry
from tfprune.quantization import fake_quant
from tfprune.structure import graph


class QATError(ValueError):
    """A model QAT cannot be applied to; the message names the layer or model and why."""


def _tfmot_qat(model):
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top (TF-MOT is heavy)
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (  # noqa
        default_8bit_prune_preserve_quantize_scheme as prune_preserve)
    quantize = tfmot.quantization.keras
    try:
        annotated = quantize.quantize_annotate_model(model)
        return quantize.quantize_apply(annotated, prune_preserve.Default8BitPrunePreserveQuantizeScheme())
    except (ValueError, RuntimeError, TypeError) as e:
        raise QATError(f"TF-MOT's prune-preserving QAT cannot quantize model {model.name!r}: {e}") from e


def check_quantizable(model):
    """Raises ``QATError`` naming the model or layer when ``quantize_aware`` cannot take ``model`` (before any
    training): not a built Sequential/functional model; on Keras 3 a Dense/Conv layer TFLite's int8 kernels do not
    run as it is configured (channels_first, LoRA enabled, already quantized)."""
    try:
        graph.check_graph_model(model, "quantizes", built=True)
    except ValueError as e:
        raise QATError(str(e)) from None
    if stacks.of(model) is stacks.TF_KERAS:
        return
    for layer in model.layers:
        reason = fake_quant.unsupported_reason(layer) if type(layer) in fake_quant.QAT_CLASSES else None
        if reason:
            raise QATError(f"layer {layer.name!r} ({type(layer).__name__}) cannot be fake-quantized: {reason}")


def _keras3_qat(model):
    qat_model = graph.clone(model, lambda layer: fake_quant.to_qat(layer) if type(layer) in fake_quant.QAT_CLASSES
                            else layer.__class__.from_config(layer.get_config()))

    def copy(old, new):
        if fake_quant.is_qat(new):
            values = new.get_weights()
            values[:len(old.get_weights())] = old.get_weights()  # kernel, bias, then the QAT variables
            new.set_weights(values)
            new.set_sparsity_mask_from_kernel()
        else:
            new.set_weights(old.get_weights())
    graph.copy_weights(model, qat_model, copy)
    return qat_model


# Layers whose kernel TF-MOT's Default8BitPrunePreserveQuantizeScheme quantizes without its sparsity mask
# (prune_preserve_quantize_registry._DISABLE_PRUNE_PRESERVE in TF-MOT 0.8.1).
_TFMOT_UNPRESERVED = ("DepthwiseConv2D",)


class ZeroKeeper(keras.callbacks.Callback):
    """Sets the given kernel variables back to ``variable * mask`` after every training batch (and now).

    Args:
      pairs: [(variable, mask)]: the masks (1 keeps) as NumPy arrays of the variables' shapes.
    """

    def __init__(self, pairs):
        super().__init__()
        self.pairs = [(v, np.asarray(m, np.float32)) for v, m in pairs]
        self._apply()

    def _apply(self):
        for variable, mask in self.pairs:
            variable.assign(variable * mask)

    def on_train_batch_end(self, batch, logs=None):
        self._apply()


def zero_keepers(qat_model):
    """The callbacks ``fit`` of ``qat_model`` needs so that no zero weight moves: a ``ZeroKeeper`` for the
    tf_keras layers TF-MOT's scheme leaves unmasked (DepthwiseConv2D), their zeros taken now; [] when there are
    none (every Keras 3 QAT layer masks its own kernel)."""
    pairs = []
    for layer in qat_model.layers:
        inner = _inner(layer)
        if inner is not None and type(inner).__name__ in _TFMOT_UNPRESERVED:
            variable = _kernel_variable(layer)
            pairs.append((variable, stacks.of(layer).to_numpy(variable) != 0))
    return [ZeroKeeper(pairs)] if pairs else []


def quantize_aware(model):
    """A copy of ``model`` that trains with int8 fake quantization while its zero weights stay zero.

    Args:
      model: a built Sequential/functional model, tf_keras or Keras 3 (any backend), plain, tfprune prunable or
        TF-MOT pruned; not modified. Its zero weights when this is called are the ones kept.

    Returns:
      the QAT model, not compiled: compile and ``fit`` it, then ``to_inference_model``.

    Raises:
      QATError: a subclassed model; a layer TF-MOT cannot quantize (tf_keras) or a Dense/Conv layer with a
        configuration TFLite's int8 kernels do not run (Keras 3: channels_first, LoRA, already quantized).
    """
    check_quantizable(model)
    plain = pruning.plain_model(model)  # may be ``model`` itself: both paths below build a new model
    if stacks.of(plain) is stacks.TF_KERAS:
        return _tfmot_qat(plain)
    return _keras3_qat(plain)


def to_inference_model(qat_model):
    """What the TFLite converter takes of a trained QAT model: the model itself on tf_keras (its fake-quant ranges
    become the int8 file's), on Keras 3 a plain model of the masked trained weights."""
    if not any(fake_quant.is_qat(l) for l in qat_model.layers):
        return qat_model
    plain = graph.clone(qat_model, lambda layer: fake_quant.to_plain(layer) if fake_quant.is_qat(layer)
                        else layer.__class__.from_config(layer.get_config()))

    def copy(old, new):
        values = old.get_weights()
        if fake_quant.is_qat(old):
            mask = stacks.of(old).to_numpy(old.sparsity_mask)
            values = [values[0] * mask] + values[1:len(new.get_weights())]
        new.set_weights(values)
    graph.copy_weights(qat_model, plain, copy)
    return plain


def _inner(layer):
    """The layer a TF-MOT wrapper (QAT's ``QuantizeWrapper``, pruning's ``PruneLowMagnitude``) wraps, else None."""
    inner = getattr(layer, "layer", None)
    wrapper = type(layer).__name__.startswith(("QuantizeWrapper", "PruneLowMagnitude"))
    return inner if wrapper and inner is not None else None


def quantized_layers(qat_model):
    """Names of the layers of a QAT model whose kernels are fake-quantized (a TF-MOT wrapper's inner layer's)."""
    names = []
    for layer in qat_model.layers:
        inner = _inner(layer)
        if fake_quant.is_qat(layer):
            names.append(layer.name)
        elif inner is not None and registry.kind_of(inner) is not None:
            names.append(inner.name)
    return names


def _kernel_variable(wrapper):
    """A TF-MOT wrapper's kernel variable (it sets the inner layer's ``kernel`` attribute to a tensor), or None."""
    found = [w for w in wrapper.weights if w.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel")]
    return found[0] if found else None


def _kernel_of(layer):
    """The effective kernel of a plain, prunable, TF-MOT-wrapped or QAT layer as NumPy, or None."""
    if _inner(layer) is not None:
        variable = _kernel_variable(layer)
        return None if variable is None else stacks.of(layer).to_numpy(variable)
    if registry.is_prunable(layer):
        return registry.effective_kernel(layer)
    if fake_quant.is_qat(layer):
        to_numpy = stacks.of(layer).to_numpy
        return to_numpy(layer._kernel_weight()) * to_numpy(layer.sparsity_mask)  # pylint: disable=protected-access
    for name in ("kernel", "depthwise_kernel"):
        value = getattr(layer, name, None)
        if value is not None and len(getattr(value, "shape", ())) >= 2:
            return stacks.of(layer).to_numpy(value)
    return None


def zero_masks(model):
    """{layer name: bool array of the kernel's shape, True where the weight is exactly zero} of every layer with a
    kernel (Dense, convolutions, ...), for a plain, prunable, TF-MOT or QAT model (a TF-MOT wrapper under its inner
    layer's name): compare two of them to check that QAT kept every zero (and made none)."""
    found = {}
    for layer in model.layers:
        kernel = _kernel_of(layer)
        if kernel is not None:
            found[(_inner(layer) or layer).name] = np.asarray(kernel) == 0
    return found


__all__ = ["QATError", "ZeroKeeper", "check_quantizable", "quantize_aware", "quantized_layers", "to_inference_model",
           "zero_keepers", "zero_masks"]
