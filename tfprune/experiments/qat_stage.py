"""A sweep point's sparsity-preserving quantization-aware training (``--qat_epochs``): the model the point ships
(pruned, or shrunk for unit and group points) fine-tuned with int8 fake quantization, its zeros kept.

``point_export.PointExporter`` calls a ``QATStage`` on that model and exports what it returns in the int8
variants as model ``qat``; ``check_int8_file`` then decodes each such file's weights to confirm every pruned
weight is still zero there.
"""

import dataclasses

import numpy as np

from tfprune import callbacks
from tfprune import outputs
from tfprune import quantization
from tfprune import stacks
from tfprune.experiments import models
from tfprune.experiments.results import records
from tfprune.tflite import nm_check


class QATStage:
    """Callable ``(model, which) -> inference model`` (``which``: ``records.PRUNED`` or ``SHRUNK``); afterwards
    ``figures`` holds its ``records.QATFigures`` (without the int8 file's, which ``check_int8_file`` adds).

    Args:
      train, test: ``dataset`` splits: QAT fits on ``train``, its Keras accuracy is measured on ``test``.
      finetune: a ``FineTune`` (``qat_epochs``, ``qat_learning_rate``, ``batch_size``, ``verbose``).
      seed: seeds the training shuffle.
    """

    def __init__(self, train, test, finetune, seed=0):
        self.train, self.test, self.finetune, self.seed = train, test, finetune, seed
        self.figures = None
        self._zeros = None

    def __call__(self, model, which=records.PRUNED):
        kind = outputs.output_kind(model, self.train.take(16, self.seed)[0])
        before = quantization.zero_masks(model)
        qat_model = quantization.quantize_aware(model)
        models.compile_model(qat_model, self.finetune.qat_learning_rate, kind=kind)
        timer = callbacks.EpochTimer()
        stacks.seed_all(self.seed)
        qat_model.fit(epochs=self.finetune.qat_epochs, verbose=self.finetune.verbose,
                      callbacks=[timer, *quantization.zero_keepers(qat_model)],
                      **self.train.fit_inputs(self.finetune.batch_size, self.seed))
        loss, accuracy = qat_model.evaluate(verbose=0, **self.test.eval_inputs())
        inference = quantization.to_inference_model(qat_model)
        after = quantization.zero_masks(inference)
        self._zeros = before
        self.figures = records.QATFigures(
            model=which, epochs=self.finetune.qat_epochs, learning_rate=self.finetune.qat_learning_rate,
            seconds_per_epoch=float(np.median(timer.seconds)), accuracy=float(accuracy), loss=float(loss),
            quantized_layers=len(quantization.quantized_layers(qat_model)),
            zeros=int(sum(m.sum() for m in before.values())), zeros_kept=_same_zeros(before, after))
        return inference

    def check_int8_file(self, model_bytes):
        """Adds to ``figures`` whether every weight that was zero before QAT is zero in the int8 file
        ``model_bytes`` (its FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D weights decoded), and how many more
        int8 rounding made zero. With several int8 files (int8, int8+sparse) all must keep them; the larger extra
        count is kept. Returns the updated figures."""
        kept, extra = int8_zeros(model_bytes, self._zeros)
        if self.figures.int8_zeros_kept is not None:
            kept, extra = kept and self.figures.int8_zeros_kept, max(extra, self.figures.int8_extra_zeros)
        self.figures = dataclasses.replace(self.figures, int8_zeros_kept=kept, int8_extra_zeros=extra)
        return self.figures


def _same_zeros(before, after):
    return before.keys() == after.keys() and all(np.array_equal(before[n], after[n]) for n in before)


def int8_zeros(model_bytes, zero_masks):
    """``(kept, extra)``: whether every True of ``zero_masks`` ({Keras layer: kernel zero mask}) is a zero of the
    file's weight for that layer, and how many of the file's zeros were not in the masks. A layer that maps to no
    weight of the file (``nm_check.layer_of``) counts as not kept."""
    weights = {nm_check.layer_of(w, list(zero_masks), prefixes=("", "quant_")): w
               for w in nm_check.weight_kernels(model_bytes)}
    kept, extra = True, 0
    for name, mask in zero_masks.items():
        weight = weights.get(name)
        if weight is None or weight.kernel.size != mask.size:
            kept = False
            continue
        zeros = weight.kernel.reshape(mask.shape) == 0
        kept = kept and bool(np.all(zeros[mask]))
        extra += int(np.sum(zeros & ~mask))
    return kept, extra


__all__ = ["QATStage", "int8_zeros"]
