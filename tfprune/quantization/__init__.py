"""Sparsity-preserving quantization-aware training (QAT) of a pruned model, then full-int8 TFLite.

- ``qat``: ``quantize_aware`` turns a pruned model (plain, tfprune prunable or TF-MOT wrapped) into a model that
  trains with int8 fake quantization while every zero weight stays zero: on tf_keras with TF-MOT's
  ``quantize_apply(Default8BitPrunePreserveQuantizeScheme)``, on Keras 3 with tfprune's own fake-quantized layers
  (``fake_quant``); ``zero_keepers`` gives the callbacks its ``fit`` needs where TF-MOT leaves a kernel unmasked
  (DepthwiseConv2D). ``zero_masks`` reads which weights are zero, to check they are the same before and after.
- ``fake_quant``: Keras 3 Dense/Conv/DepthwiseConv layers that fake-quantize their kernels (int8 per output channel,
  symmetric, as TFLite stores them) and their outputs (int8, moving-average ranges), with a fixed sparsity mask.
"""

from tfprune.quantization.qat import (QATError, ZeroKeeper, check_quantizable, quantize_aware, quantized_layers,
                                      to_inference_model, zero_keepers, zero_masks)

__all__ = ["QATError", "ZeroKeeper", "check_quantizable", "quantize_aware", "quantized_layers", "to_inference_model",
           "zero_keepers", "zero_masks"]
