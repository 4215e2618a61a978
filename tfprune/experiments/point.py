"""One point of a sweep: prune a copy of the trained baseline by one method at one k, fine-tune, measure.

Methods: ``weight`` and ``unit`` (tfprune's rank pruning) and ``tfmot`` (TF-MOT's ``prune_low_magnitude``; its block
and N:M forms ``tfmot_block_1x4``, ``tfmot_nm_2x4``), all
on the identical schedule, step count, batch size and optimizer, starting from the same trained weights.
"""

import concurrent.futures
import gzip
import os
import tempfile
import time
import weakref

import numpy as np

from tfprune import callbacks
from tfprune.calibration import data as calibration_data
from tfprune.select import scoring
from tfprune import distribute
from tfprune import pruning
from tfprune.layers import registry
from tfprune import stacks
from tfprune.experiments import twin
from tfprune.experiments import config as config_lib
from tfprune.experiments.data import dataset as dataset_lib
from tfprune.experiments.results import histograms as hist_lib
from tfprune.experiments import models
from tfprune.experiments import qat_stage
from tfprune.experiments.results import records
from tfprune.experiments.config import FineTune


def clone_with_weights(model):
    """A fresh copy of a (plain or prunable) model with the same weights, not compiled."""
    copy = stacks.of(model).clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _weights_file(model):
    """The bytes of ``model``'s weights as an HDF5 file (what ``save_weights`` writes)."""
    with tempfile.TemporaryDirectory() as tmp:  # Keras 3 wants the .weights.h5 suffix; both write HDF5
        path = os.path.join(tmp, "weights.h5" if stacks.of(model) is stacks.TF_KERAS else "model.weights.h5")
        model.save_weights(path)
        with open(path, "rb") as f:
            return f.read()


# gzip of a point's weights runs beside its evaluation: zlib releases the GIL.
_GZIP = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfprune-gzip")


def model_file_sizes_future(model):
    """A future of ``model_file_sizes(model)``: the weights are written now, gzipped on a worker thread."""
    payload = _weights_file(model)
    return _GZIP.submit(lambda: (len(payload), len(gzip.compress(payload, records.GZIP_LEVEL))))


def model_file_sizes(model):
    """(bytes of the weights as an HDF5 file, bytes of that file gzipped at ``records.GZIP_LEVEL``)."""
    return model_file_sizes_future(model).result()


def _evaluate(model, split, strategy=None):
    """(accuracy, loss) of ``model`` on a ``dataset`` split, in ``strategy``'s scope: on a copy made there unless
    built there."""
    if strategy is not None and model.distribute_strategy is not strategy:
        with distribute.scope(strategy):
            model = clone_with_weights(model)
    with distribute.scope(strategy):
        models.compile_model(model)
        loss, accuracy = model.evaluate(verbose=0, **split.eval_inputs())
    return float(accuracy), float(loss)


# baseline model -> a compiled plain copy that evaluates its points: each point's weights are set into it, so its
# traced test function serves every point (a new model's first evaluation would trace it again).
_EVALUATORS = weakref.WeakKeyDictionary()


def _layout(model):
    """What a plain copy must share with ``model`` to take its weights: stack and layer names (a prunable layer has
    its plain twin's name)."""
    return stacks.of(model), [layer.name for layer in model.layers]


def _plain_point_model(baseline_model, model):
    """The point's ``model`` (prunable, or plain from TF-MOT) as a plain compiled model, to evaluate, measure and
    export: ``baseline_model``'s evaluator, a plain copy made by the first point whose weights each later point of
    the same layout replaces (``strip(..., into=)``), so its traced test function serves every point (a new
    model's first evaluation would trace it again). Valid until the next point."""
    evaluator = _EVALUATORS.get(baseline_model)
    if evaluator is not None and _layout(evaluator) == _layout(model):
        if any(registry.is_prunable(l) for l in model.layers):
            return pruning.strip(model, into=evaluator)
        evaluator.set_weights(model.get_weights())
        return evaluator
    plain = pruning.strip(model) if any(registry.is_prunable(l) for l in model.layers) else model
    _EVALUATORS[baseline_model] = models.compile_model(plain)
    return plain


def _rank_schedule(sparsity, layers, finetune, num_examples):
    if isinstance(layers, dict):
        return None  # a per-layer plan is applied one-shot, then fine-tuned with the masks fixed
    if finetune.schedule == "oneshot":
        return sparsity
    return finetune.tfmot_schedule(sparsity, num_examples)


def calibration_for(method, train, size, seed=0):
    """The ``Calibration`` of ``method`` (None when it reads none): ``size`` examples of the train split, a fixed
    subset (``seed``), never the test split."""
    if not scoring.needs_calibration(method):
        return None
    return calibration_data.Calibration(*train.take(size, seed))


def _run_rank(baseline_model, method, sparsity, scope, layers, finetune, train, strategy=None, seed=0):
    calibration = calibration_for(method, train, finetune.calibration_size, seed)
    with distribute.scope(strategy):
        model = pruning.make_prunable(baseline_model)
        if finetune.epochs == 0:
            return pruning.prune(model, sparsity, method, scope, layers, calibration), []
        models.compile_model(model, finetune.learning_rate)
        timer = callbacks.EpochTimer()
        pruner = callbacks.RankPruning(method, _rank_schedule(sparsity, layers, finetune, len(train)), scope,
                                       layers, calibration=calibration)
        model.fit(epochs=finetune.epochs, verbose=finetune.verbose, callbacks=[pruner, timer],
                  **train.fit_inputs(finetune.batch_size, seed))
    return model, timer.seconds


def pruned_copy(baseline_model, method, k, x_train, y_train, finetune=FineTune(), scope="layer", layers=None,
                seed=0):
    """A plain (stripped) copy of ``baseline_model`` rank-pruned at ``k`` percent, fine-tuned as ``finetune`` says.

    The same recipe as a sweep point of ``method`` ``weight`` or ``unit`` (``run_point``), for callers that want the
    model rather than its figures (e.g. export benchmarks).

    Args:
      baseline_model: trained plain model (tf_keras or Keras 3); not modified.
      method: ``weight`` or ``unit``; k: percent in [0, 100).
      x_train, y_train: fine-tuning images (N, ...) and int labels (N,); unused when ``finetune.epochs`` is 0.

    Raises:
      ValueError: as ``tfprune.prune`` (bad method, sparsity, scope or layers).
    """
    stacks.seed_all(seed)
    model, _ = _run_rank(baseline_model, method, k / 100.0, scope, layers, finetune,
                         dataset_lib.ArraySplit(x_train, y_train), seed=seed)
    return pruning.strip(model)


def tfmot_model(baseline_model, x):
    """The model TF-MOT prunes: ``baseline_model`` itself (tf_keras), or for a Keras 3 model its tf_keras twin
    (same layers and weights, outputs checked equal on ``x``: real inputs).

    Raises:
      twin.TwinError: a Keras 3 layer without a faithful tf_keras twin (the message names it).
    """
    if stacks.of(baseline_model) is stacks.TF_KERAS:
        return baseline_model
    return twin.checked_twin(baseline_model, x[:256])


def _run_tfmot(baseline_model, sparsity, layers, finetune, train, strategy=None, seed=0, block_size=(1, 1),
               m_by_n=None):
    """TF-MOT's point on ``baseline_model``, a tf_keras model (see ``tfmot_model``), in ``block_size`` blocks or
    with ``sparsity_m_by_n=m_by_n`` (on the same schedule as ``tfmot``: TF-MOT then sets the pattern at step 1). At
    k = 0 an N:M point prunes nothing, as tfprune's ``nm_<n>x<m>`` at 0: it fine-tunes TF-MOT's wrappers at 0 %."""
    from tfprune.experiments import tfmot_method  # pylint: disable=g-import-not-at-top (TF-MOT is heavy)
    if finetune.epochs == 0:
        raise ValueError("method 'tfmot' needs fine-tune epochs >= 1: TF-MOT applies its masks during training")
    schedule = finetune.tfmot_schedule(sparsity, len(train))
    result = tfmot_method.prune_and_finetune(baseline_model, train, None, schedule, epochs=finetune.epochs,
                                               batch_size=finetune.batch_size,
                                               learning_rate=finetune.learning_rate, layers=layers,
                                               verbose=finetune.verbose, strategy=strategy, seed=seed,
                                               block_size=block_size,
                                               sparsity_m_by_n=m_by_n if sparsity > 0 else None)
    return result.model, result.epoch_seconds


def dense_finetune(baseline_model, datasets, finetune, seed=0, strategy=None):
    """Fine-tunes an unpruned copy exactly like the pruned points (seeded alike): the reference for time and accuracy.

    ``strategy``: optional ``tf.distribute.Strategy``; the copy is made, compiled, trained and evaluated in its scope.

    Returns:
      dict with dense_seconds_per_epoch (median), dense_finetune_accuracy and dense_finetune_loss.
    """
    data = dataset_lib.as_dataset(datasets)
    stacks.seed_all(seed)
    with distribute.scope(strategy):
        model = models.compile_model(clone_with_weights(baseline_model), finetune.learning_rate)
        timer = callbacks.EpochTimer()
        model.fit(epochs=max(1, finetune.epochs), verbose=finetune.verbose, callbacks=[timer],
                  **data.train.fit_inputs(finetune.batch_size, seed))
    accuracy, loss = _evaluate(model, data.test, strategy)
    return {"dense_seconds_per_epoch": float(np.median(timer.seconds)), "dense_finetune_accuracy": accuracy,
            "dense_finetune_loss": loss}


def run_point(baseline_model, datasets, method, k, scope="layer", layers=None, finetune=FineTune(),
              exporter=None, histograms=True, seed=0, strategy=None, tfmot_baseline=None, gzip_size=False):
    """Prunes a copy of ``baseline_model`` at k percent and returns the point's record (a JSON-able dict).

    Args:
      baseline_model: the trained dense model (plain, tf_keras or Keras 3); it is not modified.
      datasets: a ``Dataset`` (in memory or streamed), or ``((x_train, y_train), (x_test, y_test))`` arrays.
      method: ``weight``, ``unit`` or ``tfmot``.
      k: percent in [0, 100) of weights (or units) to prune.
      scope, layers: as ``tfprune.prune`` (tfmot supports layer scope only).
      finetune: a ``FineTune``.
      exporter: optional callable ``(stripped_model, method, k) -> (ShrinkFigures or None, [VariantFigures])``
        adding TFLite and shrink figures (``point_export.PointExporter``); with ``finetune.qat_epochs`` it is
        called with ``qat=`` a ``qat_stage.QATStage`` too (QAT needs the export: its figures are its int8 files').
      seed: seeds Python, NumPy and TensorFlow before the point, so its figures (fine-tuning shuffles batches) do not
        depend on the points run before it in the process, on --resume, shards, or a cached baseline.
      strategy: optional ``tf.distribute.Strategy`` (call ``run_point`` outside its scope): the pruned copy is made,
        compiled, fine-tuned (masks updated by ``RankPruning``, or TF-MOT's wrappers) and evaluated in its scope;
        ``finetune.batch_size`` is the global batch. Sizes, histograms and ``exporter`` see a plain stripped copy.
        In a multi-worker cluster every worker must run the same points in the same order.
      tfmot_baseline: for ``tfmot``, the tf_keras model TF-MOT prunes when the caller has built it already
        (``tfmot_model``: a checked twin of a Keras 3 ``baseline_model``); built here when None.
      gzip_size: also measure the weights as an HDF5 file and gzipped (``model_file_sizes``; costly beside a
        one-shot point's evaluation, docs/DESIGN_NOTES.md, so only when asked); else both sizes are None.

    Returns:
      a ``records.PointRecord`` (method, k, target/achieved sparsity, per-layer sparsity, test accuracy/loss,
      remaining weights, sizes, fine-tune seconds per epoch, distribution strategy and replicas, histograms, and
      the exporter's figures).

    Raises:
      ValueError: unknown method, k outside [0, 100), tfmot with 0 epochs or global scope.
    """
    if not config_lib.is_sweep_method(method):
        raise ValueError(f"method {method!r} is not one of {config_lib.SWEEP_METHODS}")
    if not 0 <= k < 100:
        raise ValueError(f"k {k} is outside [0, 100)")
    if config_lib.is_tfmot(method) and scope != "layer":
        raise ValueError(f"method {method!r} prunes per layer only; scope {scope!r} is not supported")
    if config_lib.tfmot_nm_method(method) is not None:  # its one k (or 0), as nm_<n>x<m>'s
        scoring.check_method(config_lib.tfmot_nm_method(method)).check_sparsity(k / 100.0)
    data = dataset_lib.as_dataset(datasets)
    start = time.perf_counter()
    stacks.seed_all(seed)
    sparsity = k / 100.0
    if config_lib.is_tfmot(method):
        tfmot_baseline = tfmot_baseline or tfmot_model(baseline_model, data.train.take(256, seed)[0])
        model, epoch_seconds = _run_tfmot(tfmot_baseline, sparsity, layers, finetune, data.train, strategy, seed,
                                          config_lib.tfmot_block_size(method), config_lib.tfmot_m_by_n(method))
    else:
        model, epoch_seconds = _run_rank(baseline_model, method, sparsity, scope, layers, finetune, data.train,
                                         strategy, seed)
    if strategy is not None:
        stripped = pruning.strip(model)  # made outside any scope: a plain model to measure and export
    else:
        stripped = _plain_point_model(baseline_model, model)
    sizes = model_file_sizes_future(stripped) if gzip_size else None  # gzipped while the point is evaluated
    if strategy is None:
        loss, accuracy = stripped.evaluate(verbose=0, **data.test.eval_inputs())
        accuracy, loss = float(accuracy), float(loss)
    else:
        accuracy, loss = _evaluate(stripped, data.test, strategy)
    report = pruning.sparsity_report(stripped)
    total = sum(r.weights for r in report)
    qat = qat_stage.QATStage(data.train, data.test, finetune, seed) if finetune.qat_epochs and exporter else None
    shrink, exports = exporter(stripped, method, float(k), **({"qat": qat} if qat else {})) if exporter else (
        None, ())
    dense_bytes, gzip_bytes = sizes.result() if sizes is not None else (None, None)
    twinned = stacks.of(stripped) is not stacks.of(baseline_model)
    ran_on = stacks.of(stripped).label + (" (tf_keras twin)" if twinned else "")
    return records.PointRecord(
        method=method, keras=ran_on, k=float(k), target_sparsity=sparsity,
        achieved_sparsity=pruning.overall_sparsity(report),
        layer_sparsity={r.name: r.sparsity for r in report}, units_kept={r.name: r.units_kept for r in report},
        test_accuracy=accuracy, test_loss=loss, remaining_weights=total - sum(r.zeros for r in report),
        total_weights=total, dense_size_bytes=dense_bytes, gzip_size_bytes=gzip_bytes,
        finetune_epochs=finetune.epochs, schedule=finetune.schedule if finetune.epochs else "oneshot",
        **distribute.describe(strategy),
        finetune_seconds_per_epoch=float(np.median(epoch_seconds)) if epoch_seconds else None,
        histograms=hist_lib.magnitude_histograms(stripped) if histograms else None,
        shrink=shrink, exports=tuple(exports), qat=qat.figures if qat else None,
        point_seconds=time.perf_counter() - start)
