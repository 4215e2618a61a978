"""Keras callbacks: rank pruning during ``fit`` on any TF-MOT schedule, and per-layer sparsity summaries.

They are tf_keras callbacks, which Keras 3's ``fit`` also accepts (on every backend), so the same objects serve
both stacks.
"""

import math
import os
import time

import numpy as np

from tfprune.calibration import data as calibration_data
from tfprune.layers import jax_masks
from tfprune.layers import registry
from tfprune.layers import schedule_step
from tfprune import pruning
from tfprune.select import scoring
from tfprune._env import keras, tf


def _to_python(value):
    return value.numpy().item() if hasattr(value, "numpy") else value


def _pattern_step(scorer, schedule):
    """The step at which a fixed pattern (N:M) enters under ``schedule``: its ``begin_step``, at least 1; infinity
    when its target sparsity is 0 (nothing to prune); None for a method without a fixed pattern, or a schedule
    that is not one of TF-MOT's (then its first pruning step above 0 applies it)."""
    target = getattr(schedule, "final_sparsity", getattr(schedule, "target_sparsity", None))
    begin = getattr(schedule, "begin_step", None)
    if scorer.fixed_sparsity is None or target is None or not isinstance(begin, (int, np.integer)):
        return None
    return max(int(begin), 1) if float(_to_python(target)) > 0 else math.inf


class RankPruning(keras.callbacks.Callback):
    """Prunes a prunable model during ``fit`` by rank, on a fixed or scheduled sparsity.

    Args:
      method: any method ``tfprune.prune`` takes (``"weight"``, ``"unit"``, ``"block_1x4"``..., ``"group"``...,
        ``"nm_2x4"``...; ``tfprune.select.scoring.SCORERS``).
      schedule: a float in [0, 1) — one-shot: prune once at train begin, then fine-tune with the masks fixed — or
        any TF-MOT ``PruningSchedule`` (``PolynomialDecay``, ``ConstantSparsity``...), evaluated exactly as TF-MOT
        evaluates it: the step counter is incremented before every training batch (so batch ``i`` of the first
        epoch, 0-based, is step ``i + 1``), ``schedule(step)`` says whether to prune and to which sparsity, and
        pruning happens before that batch's forward pass. The counter lives in the model, as TF-MOT's
        ``pruning_step`` does: it is written into every prunable layer before each batch (``pruning_step`` in the
        layer's config) and read back when training begins, so it persists across ``fit`` calls and through a
        model saved and loaded mid-fine-tune (``.keras``/``.h5``, either stack): a restored model resumes its
        schedule where it was. A weights-only checkpoint (``save_weights``) does not hold it. May be None
        when ``layers`` is a dict (a one-shot per-layer plan).
      scope: ``"layer"`` or ``"global"``.
      layers: None, a list of layer names, or a dict name -> sparsity (one-shot only).
      update_every: evaluate the schedule only every this many steps (1 = every step, like TF-MOT).
      calibration: for a method that reads calibration data (``wanda``, ``taylor``, ``sparsegpt``...): a
        ``tfprune.Calibration`` or ``(x, y)`` of training examples; the statistics are taken again at every pruning
        step, from the weights as fine-tuned so far.

    Masks only shrink: a weight pruned at one step stays pruned later.

    An N:M method (``"nm_2x4"``) prunes its whole pattern or nothing (the schedule's ramp values, 0.1, 0.2..., are
    not N:M patterns), so under a TF-MOT schedule whose target is above 0 it applies the full pattern (sparsity
    ``1 - n/m``) at the schedule's ``begin_step`` (at the earliest the first training batch, step 1), and the
    pattern is then frozen: every group keeps the same N weights to the end of training, as TF-MOT freezes
    ``sparsity_m_by_n`` (TF-MOT applies it at step 1 whatever the schedule says; tfprune still lets
    ``begin_step`` delay it). Measured on fc_1000 (2:4, 2 fine-tune epochs, PolynomialDecay from step 0): the
    pattern at the ramp's first pruning step (step 65) gave 88.60 %, at step 1 89.23 %
    (``docs/results/nm_2x4_fashion_mnist_fc1000*``). Another schedule callable: the first step it prunes above 0.
    A one-shot float must be ``1 - n/m`` (or 0).

    Raises:
      ValueError: a bad method/scope/sparsity/update_every (at construction), or a model/layer error at train begin
      (see ``tfprune.prune``).
    """

    def __init__(self, method="weight", schedule=0.5, scope="layer", layers=None, update_every=1, calibration=None):
        super().__init__()
        self._scorer = scoring.check_method(method)
        self.calibration = calibration_data.as_calibration(calibration, method) if scoring.needs_calibration(
            method) else None
        self._scorer.check_scope(scope)
        if int(update_every) < 1:
            raise ValueError(f"update_every {update_every!r} must be at least 1")
        self.one_shot = schedule is None or isinstance(schedule, (int, float, np.floating))
        if self.one_shot:
            if schedule is None and not isinstance(layers, dict):
                raise ValueError("schedule None needs a per-layer plan: layers as a dict name -> sparsity")
            if schedule is not None:
                self._scorer.check_sparsity(schedule)
        elif not callable(schedule):
            raise ValueError(f"schedule {schedule!r} is neither a sparsity nor a TF-MOT PruningSchedule")
        elif isinstance(layers, dict):
            raise ValueError("a per-layer plan (layers as a dict) is one-shot: pass schedule=None or a float")
        self.method, self.schedule, self.scope, self.layers = method, schedule, scope, layers
        self.update_every = int(update_every)
        self._pattern_step = None if self.one_shot else _pattern_step(self._scorer, schedule)
        self.step = 0  # the model's step, read at train begin (``schedule_step``)
        self.history = []  # (step, sparsity) of every mask update
        self._step_layers = []

    def _prune(self, sparsity):
        if self._scorer.fixed_sparsity is not None and sparsity > 0:
            sparsity = self._scorer.fixed_sparsity  # an N:M pattern is whole or absent: frozen from its first step
        if self.history and self.history[-1][1] == sparsity and not self.one_shot:
            # The same sparsity again (ConstantSparsity, or a polynomial ramp past its end): the count is already
            # pruned and masks only shrink, so the masks cannot change; skip the work.
            self.history.append((self.step, sparsity))
            return
        # Keras 3 on JAX keeps the variables' values in its training loop state: sync them into the variables
        # first, so the masks are computed from the current weights, and the loop reads the new masks back.
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        pruning.prune(self.model, sparsity, self.method, self.scope, self.layers, self.calibration)
        self.history.append((self.step, sparsity))

    def set_model(self, model):
        super().set_model(jax_masks.hold_masks_in_optimizer(model))  # fit makes its train function after this

    def on_train_begin(self, logs=None):
        pruning.resolve_plan(self.model, 0.0 if self.schedule is None or not self.one_shot else self.schedule,
                             self.method, self.layers)
        if self.one_shot and not self.history:
            self._prune(self.schedule)
        self._step_layers = [layer for layer in registry.kernel_layers(self.model) if registry.is_prunable(layer)]
        self.step = max([schedule_step.step_of(layer) for layer in self._step_layers], default=self.step)

    def _cannot_prune_now(self):
        """True when a TF-MOT schedule surely says no at this step: outside [begin_step, end_step] or off its
        frequency (the arithmetic of TF-MOT's ``_should_prune_in_step``, in Python, so that most batches run no
        TensorFlow op here). Other callables are always asked."""
        begin, end, frequency = (getattr(self.schedule, a, None) for a in ("begin_step", "end_step", "frequency"))
        if not all(isinstance(v, (int, np.integer)) for v in (begin, end, frequency)) or frequency < 1:
            return False
        in_range = self.step >= begin and (end < 0 or self.step <= end)
        return not (in_range and (self.step - begin) % frequency == 0)

    def on_train_batch_begin(self, batch, logs=None):
        self.step += 1
        for layer in self._step_layers:
            schedule_step.set_step(layer, self.step)
        if self._pattern_step is not None:  # N:M under a TF-MOT schedule: the whole pattern once, then frozen
            if not self.history and self.step >= self._pattern_step:
                self._prune(self._scorer.fixed_sparsity)
            return
        if self.one_shot or self.step % self.update_every or self._cannot_prune_now():
            return
        should_prune, sparsity = self.schedule(self.step)
        if _to_python(should_prune):
            self._prune(float(_to_python(sparsity)))


class SparsitySummaries(keras.callbacks.Callback):
    """Writes each prunable layer's sparsity (and the overall one) every epoch as TensorBoard scalars.

    Like TF-MOT's ``PruningSummaries``: scalars ``sparsity/<layer>`` and ``sparsity/overall`` in ``log_dir/train``,
    beside the epoch's logs (``epoch_loss``, ``epoch_accuracy``...). Works with tf_keras and Keras 3 models (any
    backend: the events are written with TensorFlow's summary writer); add Keras' own TensorBoard callback for
    graphs and histograms.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = str(log_dir)
        self._writer = None

    def on_train_begin(self, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))

    def on_epoch_end(self, epoch, logs=None):
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        report = pruning.sparsity_report(self.model)
        with self._writer.as_default():
            for name, value in (logs or {}).items():
                if isinstance(value, (int, float, np.floating)):
                    tf.summary.scalar(f"epoch_{name}", float(value), step=epoch)
            for r in report:
                tf.summary.scalar(f"sparsity/{r.name}", r.sparsity, step=epoch)
            tf.summary.scalar("sparsity/overall", pruning.overall_sparsity(report), step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every training epoch in ``seconds`` (a list, in order)."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
