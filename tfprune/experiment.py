"""One point of a sweep: prune a copy of the trained baseline by one method at one k, fine-tune, measure.

Methods: ``weight`` and ``unit`` (tfprune's rank pruning) and ``tfmot`` (TF-MOT's ``prune_low_magnitude``), all
on the identical schedule, step count, batch size and optimizer, starting from the same trained weights.
"""

import dataclasses
import gzip
import math
import os
import tempfile
import time

import numpy as np

from tfprune import callbacks
from tfprune import distribute
from tfprune import models
from tfprune import pruning
from tfprune._env import keras

METHODS = ("weight", "unit", "tfmot")
SCHEDULES = ("oneshot", "polynomial", "constant")
HIST_EDGES = np.linspace(-5.0, 0.5, 56)  # log10 |w| bins of the magnitude histograms


@dataclasses.dataclass(frozen=True)
class FineTune:
    """How a pruned model is fine-tuned (identical for every method).

    epochs: fine-tune epochs; 0 = one-shot prune and evaluate (the classic experiment; not possible for tfmot).
    schedule: ``oneshot`` (prune at step 0, masks fixed), ``polynomial`` (TF-MOT PolynomialDecay from 0 to the
      target between ``begin_fraction`` and ``end_fraction`` of the fine-tune steps), ``constant`` (TF-MOT
      ConstantSparsity from ``begin_fraction``).
    frequency: pruning steps between mask updates of the polynomial/constant schedules.
    """
    epochs: int = 0
    schedule: str = "polynomial"
    batch_size: int = 128
    learning_rate: float = 1e-3
    begin_fraction: float = 0.0
    end_fraction: float = 0.7
    frequency: int = 100
    verbose: int = 2

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} is not one of {SCHEDULES}")
        if self.epochs < 0:
            raise ValueError(f"fine-tune epochs {self.epochs} must be >= 0")
        if not 0.0 <= self.begin_fraction <= self.end_fraction <= 1.0:
            raise ValueError(f"begin_fraction {self.begin_fraction} and end_fraction {self.end_fraction} must "
                             "satisfy 0 <= begin <= end <= 1")

    def steps(self, num_examples):
        """(begin_step, end_step, total_steps, frequency) of the schedule for ``num_examples`` training images.

        ``frequency`` is ``self.frequency``, lowered on short runs so the ramp still has ~10 mask updates; the ramp
        ``end_step - begin_step`` is rounded down to a multiple of it, so the last update applies the target
        exactly (TF-MOT prunes only at ``begin + i * frequency``).
        """
        total = self.epochs * math.ceil(num_examples / self.batch_size)
        begin = int(self.begin_fraction * total)
        ramp = max(1, int(self.end_fraction * total) - begin)
        frequency = max(1, min(self.frequency, ramp // 10))
        return begin, begin + max(1, ramp // frequency) * frequency, total, frequency

    def tfmot_schedule(self, sparsity, num_examples):
        """The TF-MOT PruningSchedule both tfprune and TF-MOT follow at this target sparsity (fraction)."""
        from tfprune import tfmot_baseline  # pylint: disable=g-import-not-at-top
        begin, end, _, frequency = self.steps(num_examples)
        kind = "constant" if self.schedule == "constant" else "polynomial"
        return tfmot_baseline.make_schedule(kind, sparsity, begin, end if kind == "polynomial" else -1, frequency)


def clone_with_weights(model):
    """A fresh copy of a (plain or prunable) model with the same weights, not compiled."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def model_file_sizes(model):
    """(bytes of the weights as an HDF5 file, bytes of that file gzipped at level 9)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "weights.h5")
        model.save_weights(path)
        with open(path, "rb") as f:
            payload = f.read()
    return len(payload), len(gzip.compress(payload, 9))


def magnitude_histograms(model):
    """Per Dense/Conv2D layer: {"zeros": count, "counts": histogram of log10|w| over HIST_EDGES for w != 0}."""
    out = {}
    for layer in pruning.kernel_layers(model):
        kernel = (layer.masked_kernel() if pruning.is_prunable_layer(layer) else layer.kernel).numpy().ravel()
        nonzero = np.abs(kernel[kernel != 0])
        counts, _ = np.histogram(np.log10(nonzero), bins=HIST_EDGES) if nonzero.size else (np.zeros(55), None)
        out[layer.name] = {"zeros": int(kernel.size - nonzero.size), "counts": [int(c) for c in counts]}
    return out


def _evaluate(model, x, y, strategy=None):
    """(accuracy, loss) of ``model`` on (x, y), in ``strategy``'s scope: on a copy made there unless built there."""
    if strategy is not None and model.distribute_strategy is not strategy:
        with distribute.scope(strategy):
            model = clone_with_weights(model)
    with distribute.scope(strategy):
        models.compile_model(model)
        loss, accuracy = model.evaluate(x, y, batch_size=1024, verbose=0)
    return float(accuracy), float(loss)


def _rank_schedule(sparsity, layers, finetune, num_examples):
    if isinstance(layers, dict):
        return None  # a per-layer plan is applied one-shot, then fine-tuned with the masks fixed
    if finetune.schedule == "oneshot":
        return sparsity
    return finetune.tfmot_schedule(sparsity, num_examples)


def _run_rank(baseline_model, method, sparsity, scope, layers, finetune, x, y, strategy=None):
    with distribute.scope(strategy):
        model = pruning.make_prunable(baseline_model)
        if finetune.epochs == 0:
            return pruning.prune(model, sparsity, method, scope, layers), []
        models.compile_model(model, finetune.learning_rate)
        timer = callbacks.EpochTimer()
        pruner = callbacks.RankPruning(method, _rank_schedule(sparsity, layers, finetune, len(x)), scope, layers)
        model.fit(x, y, batch_size=finetune.batch_size, epochs=finetune.epochs, verbose=finetune.verbose,
                  callbacks=[pruner, timer])
    return model, timer.seconds


def pruned_copy(baseline_model, method, k, x_train, y_train, finetune=FineTune(), scope="layer", layers=None,
                seed=0):
    """A plain (stripped) copy of ``baseline_model`` rank-pruned at ``k`` percent, fine-tuned as ``finetune`` says.

    The same recipe as a sweep point of ``method`` ``weight`` or ``unit`` (``run_point``), for callers that want the
    model rather than its figures (e.g. export benchmarks).

    Args:
      baseline_model: trained plain tf_keras model; not modified.
      method: ``weight`` or ``unit``; k: percent in [0, 100).
      x_train, y_train: fine-tuning images (N, ...) and int labels (N,); unused when ``finetune.epochs`` is 0.

    Raises:
      ValueError: as ``tfprune.prune`` (bad method, sparsity, scope or layers).
    """
    keras.utils.set_random_seed(seed)
    model, _ = _run_rank(baseline_model, method, k / 100.0, scope, layers, finetune, x_train, y_train)
    return pruning.strip(model)


def _run_tfmot(baseline_model, sparsity, layers, finetune, x, y, strategy=None):
    from tfprune import tfmot_baseline  # pylint: disable=g-import-not-at-top
    if finetune.epochs == 0:
        raise ValueError("method 'tfmot' needs fine-tune epochs >= 1: TF-MOT applies its masks during training")
    schedule = finetune.tfmot_schedule(sparsity, len(x))
    result = tfmot_baseline.prune_and_finetune(baseline_model, x, y, schedule, epochs=finetune.epochs,
                                               batch_size=finetune.batch_size,
                                               learning_rate=finetune.learning_rate, layers=layers,
                                               verbose=finetune.verbose, strategy=strategy)
    return result.model, result.epoch_seconds


def dense_finetune(baseline_model, datasets, finetune, seed=0, strategy=None):
    """Fine-tunes an unpruned copy exactly like the pruned points (seeded alike): the reference for time and accuracy.

    ``strategy``: optional ``tf.distribute.Strategy``; the copy is made, compiled, trained and evaluated in its scope.

    Returns:
      dict with dense_seconds_per_epoch (median), dense_finetune_accuracy and dense_finetune_loss.
    """
    (x_train, y_train), (x_test, y_test) = datasets
    keras.utils.set_random_seed(seed)
    with distribute.scope(strategy):
        model = models.compile_model(clone_with_weights(baseline_model), finetune.learning_rate)
        timer = callbacks.EpochTimer()
        model.fit(x_train, y_train, batch_size=finetune.batch_size, epochs=max(1, finetune.epochs),
                  verbose=finetune.verbose, callbacks=[timer])
    accuracy, loss = _evaluate(model, x_test, y_test, strategy)
    return {"dense_seconds_per_epoch": float(np.median(timer.seconds)), "dense_finetune_accuracy": accuracy,
            "dense_finetune_loss": loss}


def run_point(baseline_model, datasets, method, k, scope="layer", layers=None, finetune=FineTune(),
              exporter=None, histograms=True, seed=0, strategy=None):
    """Prunes a copy of ``baseline_model`` at k percent and returns the point's record (a JSON-able dict).

    Args:
      baseline_model: the trained dense model (plain tf_keras); it is not modified.
      datasets: ``((x_train, y_train), (x_test, y_test))``.
      method: ``weight``, ``unit`` or ``tfmot``.
      k: percent in [0, 100) of weights (or units) to prune.
      scope, layers: as ``tfprune.prune`` (tfmot supports layer scope only).
      finetune: a ``FineTune``.
      exporter: optional callable ``(stripped_model, method, k) -> dict`` adding TFLite/shrink figures.
      seed: seeds Python, NumPy and TensorFlow before the point, so its figures (fine-tuning shuffles batches) do not
        depend on the points run before it in the process, on --resume, shards, or a cached baseline.
      strategy: optional ``tf.distribute.Strategy`` (call ``run_point`` outside its scope): the pruned copy is made,
        compiled, fine-tuned (masks updated by ``RankPruning``, or TF-MOT's wrappers) and evaluated in its scope;
        ``finetune.batch_size`` is the global batch. Sizes, histograms and ``exporter`` see a plain stripped copy.
        In a multi-worker cluster every worker must run the same points in the same order.

    Returns:
      dict with method, k, target/achieved sparsity, per-layer sparsity, test accuracy/loss, remaining weights,
      sizes, fine-tune seconds per epoch, distribution_strategy and replicas (``distribute.describe``), and
      whatever ``exporter`` adds.

    Raises:
      ValueError: unknown method, k outside [0, 100), tfmot with 0 epochs or global scope.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {METHODS}")
    if not 0 <= k < 100:
        raise ValueError(f"k {k} is outside [0, 100)")
    if method == "tfmot" and scope != "layer":
        raise ValueError(f"method 'tfmot' prunes per layer only; scope {scope!r} is not supported")
    (x_train, y_train), (x_test, y_test) = datasets
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    sparsity = k / 100.0
    if method == "tfmot":
        model, epoch_seconds = _run_tfmot(baseline_model, sparsity, layers, finetune, x_train, y_train, strategy)
    else:
        model, epoch_seconds = _run_rank(baseline_model, method, sparsity, scope, layers, finetune,
                                         x_train, y_train, strategy)
    if strategy is not None or any(pruning.is_prunable_layer(l) for l in model.layers):
        stripped = pruning.strip(model)  # made outside any scope: a plain model to measure and export
    else:
        stripped = model
    accuracy, loss = _evaluate(stripped, x_test, y_test, strategy)
    report = pruning.sparsity_report(stripped)
    total = sum(r.weights for r in report)
    dense_bytes, gzip_bytes = model_file_sizes(stripped)
    record = {
        "method": method, "k": float(k), "target_sparsity": sparsity,
        "achieved_sparsity": pruning.overall_sparsity(report),
        "layer_sparsity": {r.name: r.sparsity for r in report},
        "units_kept": {r.name: r.units_kept for r in report},
        "test_accuracy": accuracy, "test_loss": loss,
        "remaining_weights": total - sum(r.zeros for r in report), "total_weights": total,
        "dense_size_bytes": dense_bytes, "gzip_size_bytes": gzip_bytes,
        "finetune_epochs": finetune.epochs, "schedule": finetune.schedule if finetune.epochs else "oneshot",
        **distribute.describe(strategy),
    }
    if epoch_seconds:
        record["finetune_seconds_per_epoch"] = float(np.median(epoch_seconds))
    if histograms:
        record["histograms"] = magnitude_histograms(stripped)
    if exporter is not None:
        record.update(exporter(stripped, method, float(k)))
    record["point_seconds"] = time.perf_counter() - start
    return record
