"""TFLite export of every sweep point (``--export``), and for unit pruning of the physically shrunk model too.

``point.run_point`` calls a ``PointExporter`` with each point's stripped model. Every variant is written to
``<out_dir>/<method>-k<k>/<variant>/`` (``model.tflite``, ``labels.txt``, ``model_card.json``); the shrunk model of
a unit point to ``<variant>-shrunk/`` beside it. Each figure comes from the LiteRT run of the file written.
"""

import os

import numpy as np

from tfprune import outputs
from tfprune.select import scoring
from tfprune.shrinking import surgery
from tfprune import tflite
from tfprune.experiments import config as config_lib
from tfprune.experiments.results import records

# Max |probability difference| allowed between a shrunk model and its source: they differ only in float summation
# order (~1e-7); anything larger is a shrink bug, and no figure of such a model is reported.
SHRINK_TOLERANCE = 1e-4


def nm_pattern(method):
    """``(n, m)`` of an N:M method (``nm_2x4``, ``tfmot_nm_2x4``), else None."""
    name = config_lib.tfmot_nm_method(method) or method
    return scoring.check_method(name).pattern if scoring.is_method(name) else None


class PointExporter:
    """Callable ``(stripped_model, method, k) -> (ShrinkFigures or None, [VariantFigures])`` for one sweep point.

    Args:
      variants: names from ``tflite.VARIANTS``, e.g. ``["float", "int8+sparse"]``.
      x_eval, y_eval: inputs (N, *input shape), preprocessed as for training, and int labels (N,) verifying
        every export.
      representative_data: float32 training images (M, *input shape), M ~ 300, calibrating int8 variants.
      out_dir: folder of the per-point export folders.
      labels: C class names for labels.txt (default ``"0"``..``"C-1"``).
      data_card: the data's entry of every model card (``Dataset.card()``: name, digest, input shape, preprocessing).
      num_threads: LiteRT threads for evaluation and latency.
      bench_runs, bench_warmup: timed and untimed single-image invokes per exported model.
      append_softmax: the files of a model that outputs logits end in a softmax (``tflite.export_variant``).

    Raises:
      ValueError: an unknown variant or none at all (here, before any point runs).
    """

    def __init__(self, variants, x_eval, y_eval, representative_data, out_dir, labels=None, num_threads=1,
                 bench_runs=100, bench_warmup=10, data_card=None, append_softmax=False):
        if not variants:
            raise ValueError(f"no TFLite variant given; choose from {', '.join(tflite.VARIANTS)}")
        for variant in variants:
            tflite.parse_variant(variant)
        self.variants = list(variants)
        self.x_eval, self.y_eval = x_eval, y_eval
        self.representative_data = representative_data
        self.out_dir = out_dir
        self.labels = labels
        self.card_extra = {"data": dict(data_card)} if data_card else None
        self.bench = {"num_threads": num_threads, "bench_runs": bench_runs, "bench_warmup": bench_warmup}
        self.append_softmax = append_softmax

    def __call__(self, stripped_model, method, k, qat=None):
        """Exports one point's model (and, for a unit or group method, its shrunk copy) in every variant.

        Args:
          stripped_model: the point's pruned plain tf_keras model (masks baked in); not modified.
          method: the point's method; ``unit`` and the group methods also shrink the model (``surgery.shrink``).
          k: the point's percent, naming its folder (``unit-k90``).
          qat: optional ``qat_stage.QATStage``: the model the point ships (shrunk, else pruned) is also trained
            quantization-aware and exported in the int8 variants as model ``qat`` (``int8-qat/`` folders); each
            of those files is decoded to check the zeros (``QATStage.check_int8_file``).

        Returns:
          ``(shrink, exports)``: ``records.ShrinkFigures`` of the shrunk model (unit points; else None: parameters
          and MACs per example before and after, dead-unit groups kept for safety, the largest absolute difference
          of the two Keras models' output probabilities on ``x_eval``), and one ``records.VariantFigures`` per
          exported model and variant (the shrunk model's with ``model="shrunk"``).

        Raises:
          ValueError: from ``tflite.export_variant`` (unsupported ops, bad eval data) or ``surgery.shrink`` (a
            subclassed or unbuilt model).
          RuntimeError: a TFLite model runs on no LiteRT path, or the shrunk model's outputs differ from the
            unshrunk ones by more than ``SHRINK_TOLERANCE``. Nothing is exported for the point then.
        """
        folder = os.path.join(self.out_dir, records.point_key(method, k))
        pattern = nm_pattern(method) if k else None  # the card says whether the file keeps it
        shrink, targets = self._targets(stripped_model, method)
        exports = []
        for model, which in targets:
            for variant in self._variants(method, k):
                figures = self._export(model, variant, os.path.join(folder, variant + records.model_suffix(which)),
                                       pattern)
                exports.append(records.VariantFigures(model=which, **figures))
        int8 = config_lib.int8_variants(self._variants(method, k))
        if qat is not None and int8:  # QAT's figures are its int8 files': none, no training
            exports += self._export_qat(qat, *targets[-1], int8, folder, pattern)
        return shrink, exports

    def _export(self, model, variant, out_dir, pattern):
        """``tflite.export_variant`` of one model and variant into ``out_dir``, with this exporter's settings."""
        return tflite.export_variant(model, variant, self.x_eval, self.y_eval, self.representative_data,
                                     out_dir=out_dir, labels=self.labels, card_extra=self.card_extra,
                                     append_softmax=self.append_softmax, **self.bench,
                                     **({"nm": pattern} if pattern else {}))

    def _export_qat(self, qat, model, which, variants, folder, pattern):
        inference = qat(model, which)
        exports = []
        for variant in variants:
            out_dir = os.path.join(folder, variant + records.model_suffix(records.QAT))
            figures = self._export(inference, variant, out_dir, pattern)
            with open(os.path.join(out_dir, "model.tflite"), "rb") as f:
                qat.check_int8_file(f.read())
            exports.append(records.VariantFigures(model=records.QAT, **figures))
        return exports

    def _targets(self, stripped_model, method):
        """``(ShrinkFigures or None, [(model, records.PRUNED | records.SHRUNK)])``: what a point exports."""
        shrink, targets = None, [(stripped_model, records.PRUNED)]
        if scoring.removes_units(method):
            shrunk, shrink = self._shrink(stripped_model)
            targets.append((shrunk, records.SHRUNK))
        return shrink, targets

    def _variants(self, method, k):  # pylint: disable=unused-argument
        """The variants a point of ``method`` at ``k`` exports (subclasses choose per point)."""
        return self.variants

    def _shrink(self, model):
        result, diff = checked_shrink(model, self.x_eval)
        report = result.report
        return result.model, records.ShrinkFigures(
            dense_params=report.params_before, shrunk_params=report.params_after, dense_macs=report.macs_before,
            shrunk_macs=report.macs_after, kept_notes=len(report.kept), max_abs_diff=diff)


def checked_shrink(model, x):
    """``surgery.shrink(model)``, returned only once the shrunk model has run on ``x`` and matched ``model``.

    Args:
      model: a built Sequential/functional tf_keras model, plain or prunable; not modified.
      x: float32 images (N, *input shape) both models are run on.

    Returns:
      ``(surgery.ShrinkResult, max_abs_diff)``: the largest absolute difference of the two models' output
      probabilities on ``x`` (a logits model's after a softmax).

    Raises:
      ValueError: from ``surgery.shrink`` (a subclassed or unbuilt model).
      RuntimeError: the difference exceeds ``SHRINK_TOLERANCE`` (or is NaN): the shrunk model computes something
        else, and no figure of it may be reported.
    """
    result = surgery.shrink(model)
    kind = outputs.output_kind(model, x[:16])  # logits are compared as probabilities, under the same tolerance
    diff = float(np.max(np.abs(outputs.as_probabilities(result.model.predict(x, batch_size=1024, verbose=0), kind)
                               - outputs.as_probabilities(model.predict(x, batch_size=1024, verbose=0), kind))))
    if not diff <= SHRINK_TOLERANCE:  # also catches NaN
        raise RuntimeError(f"the shrunk model's outputs differ from the unshrunk model's by up to {diff:.3g} "
                           f"(> {SHRINK_TOLERANCE:g}) on {len(x)} images; not exporting it")
    return result, diff
