"""The TF-MOT method of a sweep or comparison: ``prune_low_magnitude`` fine-tuning, used as TF-MOT documents it.

Nothing here re-implements TF-MOT: schedules are TF-MOT's ``PolynomialDecay`` / ``ConstantSparsity``, the model is
wrapped by ``prune_low_magnitude``, trained with ``UpdatePruningStep`` and stripped by ``strip_pruning``.

How TF-MOT 0.8.1 evaluates a schedule (``tensorflow_model_optimization/python/core/sparsity/keras/``):

- ``UpdatePruningStep.on_train_begin`` sets every wrapper's ``pruning_step`` from -1 to 0 (pruning_callbacks.py:54-65);
  a schedule prunes at steps begin, begin + frequency, ... up to end (pruning_schedule.py:55-64).
- In every training batch the wrapper first increments ``pruning_step``, then asks ``schedule(pruning_step)``
  whether to update the mask, then assigns ``kernel = kernel * mask``, then runs the layer (pruning_wrapper.py:
  285-333). So the i-th training batch (0-based, counted over all epochs; a later ``fit`` continues the count) is
  step ``i + 1``, and its forward pass already sees the new mask. Step 0 is never evaluated:
  ``ConstantSparsity(s, begin_step=0, end_step=0)`` never prunes, and a schedule beginning at step 0 first prunes
  at step ``frequency``.
- A mask update keeps ``k = max(round(float32(n) * (1 - float32(s))), 1)`` weights (``tf.math.round``: halves to
  even) with ``|w| >= `` the k-th largest ``|w|`` (ties at the threshold are all kept) (pruning_impl.py:91-119).
  ``tfmot_prune_count`` gives that count.
- Between batches the optimizer moves pruned weights off zero; they are re-masked at the next batch and at every
  epoch end (pruning_callbacks.py:67-79), so the stripped model holds exact zeros.
"""

import dataclasses
import math

import numpy as np
import tensorflow_model_optimization as tfmot
from absl import logging
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper  # not re-exported publicly

from tfprune import callbacks
from tfprune import distribute
from tfprune.select import masks as masks_lib
from tfprune import pruning
from tfprune.layers import registry
from tfprune._env import keras, tf
from tfprune.experiments import models

sparsity_api = tfmot.sparsity.keras
SCHEDULE_KINDS = ("polynomial", "constant", "oneshot")
FIRST_TRAINING_STEP = 1  # the step TF-MOT evaluates on the first training batch


def _check_step(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} {value!r} is not an integer")
    return int(value)


def make_schedule(kind, target_sparsity, begin_step=0, end_step=-1, frequency=100, initial_sparsity=0.0):
    """A TF-MOT ``PruningSchedule`` reaching ``target_sparsity`` (fraction in [0, 1)).

    Args:
      kind: ``"polynomial"`` — ``PolynomialDecay(initial_sparsity -> target_sparsity)`` over steps
        [begin_step, end_step], a mask update every ``frequency`` steps; ``end_step - begin_step`` must be a positive
        multiple of ``frequency`` so that the last update (at ``end_step``) applies the target.
        ``"constant"`` — ``ConstantSparsity(target_sparsity)`` at steps begin_step, begin_step + frequency, ...
        up to end_step (-1: until training ends).
        ``"oneshot"`` — prune to the target once, at step ``max(begin_step, 1)`` (1 = before the forward pass of
        the first training batch, the earliest TF-MOT can prune), then keep the masks fixed:
        ``ConstantSparsity(target, begin_step=b, end_step=b, frequency=1)``; ``end_step``, ``frequency`` and
        ``initial_sparsity`` are not used.
      target_sparsity: fraction of each pruned kernel's weights to zero, in [0, 1).
      begin_step, end_step: training steps as TF-MOT counts them (the i-th batch of ``fit``, 0-based, is step i+1).
      frequency: steps between mask updates (>= 1).
      initial_sparsity: start of the polynomial ramp, in [0, 1), at most ``target_sparsity``.

    Raises:
      ValueError: unknown ``kind``, a sparsity outside [0, 1), non-integer or negative steps, ``end_step <
        begin_step`` (end_step -1 is allowed for ``constant`` only), ``frequency < 1``, a polynomial ramp of zero
        length or not a multiple of ``frequency``, or ``initial_sparsity > target_sparsity``.
    """
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"schedule kind {kind!r} is not one of {SCHEDULE_KINDS}")
    target = masks_lib.check_sparsity(target_sparsity, "target_sparsity")
    begin = _check_step(begin_step, "begin_step")
    end = _check_step(end_step, "end_step")
    frequency = _check_step(frequency, "frequency")
    if begin < 0:
        raise ValueError(f"begin_step {begin} must be >= 0")
    if frequency < 1:
        raise ValueError(f"frequency {frequency} must be >= 1")
    if kind == "oneshot":
        step = max(begin, FIRST_TRAINING_STEP)
        return sparsity_api.ConstantSparsity(target, begin_step=step, end_step=step, frequency=1)
    if end < begin and not (kind == "constant" and end == -1):
        raise ValueError(f"end_step {end} is before begin_step {begin}"
                         + (" (-1, prune until training ends, is allowed for 'constant' only)" if end == -1 else ""))
    if kind == "constant":
        return sparsity_api.ConstantSparsity(target, begin_step=begin, end_step=end, frequency=frequency)
    initial = masks_lib.check_sparsity(initial_sparsity, "initial_sparsity")
    if initial > target:
        raise ValueError(f"initial_sparsity {initial} is above target_sparsity {target}")
    if end == begin or (end - begin) % frequency:
        raise ValueError(f"polynomial ramp from begin_step {begin} to end_step {end} must have a positive length "
                         f"that is a multiple of frequency {frequency}, else TF-MOT never applies the target")
    return sparsity_api.PolynomialDecay(initial, target, begin_step=begin, end_step=end, frequency=frequency)


def steps_for(epochs, num_examples, batch_size):
    """Training steps of ``fit``: ``epochs * ceil(num_examples / batch_size)``.

    Raises:
      ValueError: negative epochs or examples, batch_size < 1.
    """
    epochs, num_examples = _check_step(epochs, "epochs"), _check_step(num_examples, "num_examples")
    batch_size = _check_step(batch_size, "batch_size")
    if epochs < 0 or num_examples < 0 or batch_size < 1:
        raise ValueError(f"epochs {epochs}, num_examples {num_examples} must be >= 0 and batch_size {batch_size} "
                         ">= 1")
    return epochs * math.ceil(num_examples / batch_size)


def tfmot_sparsity_at_step(schedule, step):
    """The sparsity (python float) TF-MOT's mask update applies at training ``step``, or None (no update then)."""
    should_prune, sparsity = schedule(tf.constant(_check_step(step, "step"), tf.int64))
    return float(sparsity.numpy()) if bool(should_prune.numpy()) else None


def tfmot_prune_count(sparsity, n):
    """Weights a TF-MOT mask update at ``sparsity`` zeroes in a kernel of ``n`` weights (no ties at the threshold).

    ``n - max(round(float32(n) * (1 - float32(sparsity))), 1)`` with halves rounded to even. It differs from
    ``tfprune.prune_count`` (round(s·n), halves up, exact arithmetic) by at most one weight: at exact halves,
    where float32 rounding of ``1 - s`` tips the half, and when TF-MOT's keep-at-least-one applies.
    """
    sparsity = masks_lib.check_sparsity(sparsity)
    n = _check_step(n, "n")
    if n < 1:
        raise ValueError(f"kernel size n {n} must be >= 1")
    kept = np.round(np.float32(n) * (np.float32(1.0) - np.float32(sparsity)))
    return n - max(int(kept), 1)


def final_pruning_step(schedule, total_steps):
    """Last step in [1, total_steps] at which ``schedule`` updates masks, or None (never during that training).

    ``schedule``: a TF-MOT ``ConstantSparsity`` or ``PolynomialDecay`` (reads its begin/end step and frequency).
    """
    total_steps = _check_step(total_steps, "total_steps")
    end = total_steps if schedule.end_step == -1 else min(schedule.end_step, total_steps)
    first = schedule.begin_step
    if first < FIRST_TRAINING_STEP:
        first += schedule.frequency
    if end < first:
        return None
    return first + (end - first) // schedule.frequency * schedule.frequency


def achieved_sparsity(model):
    """Fraction of zero kernel weights per Dense/Conv2D layer name, and ``"overall"`` over all of them.

    Works on plain models (e.g. the result of ``strip_pruning``) and tfprune prunable ones.
    """
    report = pruning.sparsity_report(model)
    out = {r.name: r.sparsity for r in report}
    out["overall"] = pruning.overall_sparsity(report)
    return out


def _retarget(schedule, sparsity):
    """The same schedule with the target replaced by ``sparsity`` (for per-layer plans)."""
    config = dict(schedule.get_config()["config"])
    if isinstance(schedule, sparsity_api.ConstantSparsity):
        config["target_sparsity"] = sparsity
    elif isinstance(schedule, sparsity_api.PolynomialDecay):
        config["final_sparsity"] = sparsity
        config["initial_sparsity"] = min(config["initial_sparsity"], sparsity)
    else:
        raise ValueError(f"a per-layer plan needs a ConstantSparsity or PolynomialDecay schedule, got "
                         f"{type(schedule).__name__}")
    return type(schedule)(**config)


def m_by_n_layers(model):
    """The layers of ``model`` TF-MOT's ``sparsity_m_by_n`` is used on here: exactly Dense and Conv2D (not their
    subclasses, e.g. Conv2DTranspose), whose kernels it groups along the inputs in TFLite's layout.

    What TF-MOT 0.8.1 itself does with other layers (``pruning_impl._update_mask_sparsity_m_by_n``,
    ``pruning_utils.weights_rearrange``): it rearranges any rank-2 or rank-4 prunable weight as if it were a Dense
    (transposed) or Conv2D (out, kh, kw, in) kernel, so an Embedding's groups run along the vocabulary, a
    Conv2DTranspose's (kh, kw, out, in) along its outputs and a recurrent kernel's along its inputs; a Conv1D,
    SeparableConv1D or Conv3D weight (rank 3 or 5) fails when the mask update is traced ("weight tensor with shape
    ... is not supported"); DepthwiseConv2D has no prunable weight in its registry and is left dense."""
    return [l for l in registry.kernel_layers(model) if type(l) in (keras.layers.Dense, keras.layers.Conv2D)]


def _layer_schedules(model, schedule, layers, block_size=(1, 1), m_by_n=None):
    """{layer name: schedule} for the layers to wrap; None means the whole model (TF-MOT's default). With blocks,
    TF-MOT takes 2-D kernels only: the whole model means its Dense-like layers, and another named layer is refused.
    With ``m_by_n`` the whole model means its Dense and Conv2D layers (``m_by_n_layers``); others are refused."""
    blocked = tuple(block_size) != (1, 1)
    if m_by_n is not None:
        kernel_names = [l.name for l in m_by_n_layers(model)]
    else:
        kernel_names = [l.name for l in registry.kernel_layers(model)
                        if not blocked or len(registry.kernel_shape(l)) == 2]
    if layers is None:
        return {name: schedule for name in kernel_names} if blocked or m_by_n is not None else None
    plan = pruning.select_layers(model, layers, schedule)
    if isinstance(layers, dict):
        plan = {name: _retarget(schedule, masks_lib.check_sparsity(s, f"sparsity of layer {name!r}"))
                for name, s in plan.items()}
    for name in plan:
        if name not in kernel_names:
            what = "Dense (2-D kernel)" if blocked and m_by_n is None else "Dense/Conv2D"
            which = " m_by_n" if m_by_n is not None else " block" if blocked else ""
            raise ValueError(f"layer {name!r} is not a {what} layer of model {model.name!r}; TF-MOT{which} prunable "
                             f"layers: {', '.join(kernel_names)}")
    return plan


def _wrap(model, schedule, layers, block_size=(1, 1), m_by_n=None):
    """A private copy of ``model`` (weights copied) with TF-MOT pruning wrappers on the selected layers."""
    if any(registry.is_prunable(l) for l in model.layers):
        raise ValueError(f"model {model.name!r} has tfprune prunable layers; pass a plain model "
                         "(tfprune.strip(model))")
    plan = _layer_schedules(model, schedule, layers, block_size, m_by_n)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    # TF-MOT wraps the layer objects it is given, so it only ever sees the private copy, never the caller's layers.
    if plan is None:
        return sparsity_api.prune_low_magnitude(copy, pruning_schedule=schedule)

    def wrap_selected(layer):
        if layer.name in plan:
            return sparsity_api.prune_low_magnitude(layer, pruning_schedule=plan[layer.name],
                                                    block_size=tuple(block_size), sparsity_m_by_n=m_by_n)
        return layer

    return keras.models.clone_model(copy, clone_function=wrap_selected)


def _warn_if_target_missed(schedules, total_steps):
    configs = {}
    for schedule in schedules:  # one warning per distinct schedule, not one per wrapped layer
        configs.setdefault(repr(schedule.get_config()), schedule)
    for schedule in configs.values():
        last = final_pruning_step(schedule, total_steps)
        final = getattr(schedule, "final_sparsity", getattr(schedule, "target_sparsity", None))
        reached = None if last is None else tfmot_sparsity_at_step(schedule, last)
        if reached is None or (final is not None and reached < np.float32(final)):
            logging.warning("TF-MOT schedule %s updates masks last at step %s of %d (sparsity %s): the target %s is "
                            "not reached in this training", schedule.get_config(), last, total_steps, reached, final)


@dataclasses.dataclass
class TfmotResult:
    """Outcome of ``prune_and_finetune``.

    model: the ``strip_pruning`` model (plain Keras layers, zeros in the kernels), compiled for ``evaluate``.
    epoch_seconds: wall time of each fine-tune epoch, in order.
    history: ``History.history`` of the fit (loss/accuracy per epoch, val_* when validation data was given).
    steps: training steps run (the final TF-MOT ``pruning_step``).
    """
    model: keras.Model
    epoch_seconds: list
    history: dict
    steps: int


def prune_and_finetune(model, x_train, y_train, schedule, epochs, batch_size, learning_rate=1e-3, log_dir=None,
                       validation_data=None, verbose=0, layers=None, strategy=None, shuffle=True, seed=0,
                       block_size=(1, 1), sparsity_m_by_n=None):
    """Prunes a copy of ``model`` with TF-MOT ``prune_low_magnitude`` while fine-tuning it, then strips it.

    Args:
      model: a trained plain Sequential/functional tf_keras model; it is not modified.
      x_train, y_train: training inputs (N, ...) and int labels (N,); or a ``dataset`` split (in memory or
        streamed) as ``x_train`` with ``y_train`` None.
      schedule: a TF-MOT ``PruningSchedule`` (see ``make_schedule``); steps count from 1 at the first batch.
      epochs: fine-tune epochs (>= 1: TF-MOT prunes during training only).
      batch_size: examples per step.
      learning_rate: Adam learning rate (loss: sparse categorical cross-entropy on the softmax output).
      log_dir: when given, TF-MOT ``PruningSummaries`` writes TensorBoard events there (mask sparsity and
        threshold of every wrapped layer at each epoch begin under ``log_dir/metrics``, losses under ``train``).
      validation_data: passed to ``fit``.
      verbose: passed to ``fit``.
      layers: None (wrap the whole model: every Dense/Conv2D kernel is pruned), a list of Dense/Conv2D layer names
        (only those are wrapped, with ``schedule``), or a dict name -> sparsity (each wrapped with ``schedule``
        retargeted to that sparsity; ConstantSparsity or PolynomialDecay only).
      strategy: optional ``tf.distribute.Strategy``; the copy is built, wrapped and compiled in its scope.
      shuffle: passed to ``fit`` (arrays); seed: the shuffle seed of a streamed split.
      block_size: TF-MOT's ``block_size`` of the Keras kernel ``(inputs, units)``: ``(4, 1)`` prunes blocks of four
        consecutive inputs of one unit (tfprune's ``block_1x4``), ranked by their mean |w| (TF-MOT's AVG pooling);
        TF-MOT then prunes 2-D kernels only (Dense), so the whole model means its Dense layers.
      sparsity_m_by_n: TF-MOT's ``(zeros, of)`` pattern, e.g. ``(2, 4)`` (tfprune's ``nm_2x4``: ``nm_<n>x<m>`` is
        ``(m - n, m)``), or None. TF-MOT then ignores the schedule's sparsity and steps: each wrapped kernel's mask
        is set once, at step 1 (the first training batch, ``pruning_impl.conditional_mask_update``), to the largest
        |w| of every group, and held; the schedule is still required and is the same object as without it. The
        whole model means its Dense and Conv2D layers (``m_by_n_layers``).

    Returns:
      a ``TfmotResult``.

    Raises:
      ValueError: epochs < 1, batch_size < 1, learning_rate <= 0, mismatched x/y lengths, a schedule that is not a
      TF-MOT PruningSchedule, bad ``layers`` (unknown or non-Dense/Conv2D name, bad sparsity), a tfprune prunable
      model.
    """
    epochs, batch_size = _check_step(epochs, "epochs"), _check_step(batch_size, "batch_size")
    if epochs < 1:
        raise ValueError(f"epochs {epochs} must be >= 1: TF-MOT applies its masks during training")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate {learning_rate!r} must be > 0")
    train = x_train if y_train is None and hasattr(x_train, "fit_inputs") else None
    if train is None and len(x_train) != len(y_train):
        raise ValueError(f"x_train has {len(x_train)} examples but y_train has {len(y_train)}")
    inputs = train.fit_inputs(batch_size, seed) if train is not None else {
        "x": x_train, "y": y_train, "batch_size": batch_size}
    if "batch_size" in inputs:  # arrays: Keras shuffles them as the caller says
        inputs["shuffle"] = shuffle
    if not isinstance(schedule, sparsity_api.PruningSchedule):
        raise ValueError(f"schedule {schedule!r} is not a TF-MOT PruningSchedule (see make_schedule)")
    total_steps = steps_for(epochs, len(x_train), batch_size)
    with distribute.scope(strategy):
        pruned = models.compile_model(_wrap(model, schedule, layers, block_size, sparsity_m_by_n), learning_rate)
    wrappers = pruning_wrapper.collect_prunable_layers(pruned)  # the layers UpdatePruningStep steps
    if sparsity_m_by_n is None:  # with m_by_n the mask is set at step 1 whatever the schedule says
        _warn_if_target_missed([w.pruning_schedule for w in wrappers], total_steps)
    timer = callbacks.EpochTimer()
    fit_callbacks = [sparsity_api.UpdatePruningStep(), timer]
    if log_dir is not None:
        fit_callbacks.append(sparsity_api.PruningSummaries(log_dir=str(log_dir)))
    history = pruned.fit(epochs=epochs, verbose=verbose, validation_data=validation_data, callbacks=fit_callbacks,
                         **inputs)
    steps = int(wrappers[0].pruning_step.numpy()) if wrappers else 0
    with distribute.scope(strategy):
        stripped = models.compile_model(sparsity_api.strip_pruning(pruned), learning_rate)
    return TfmotResult(model=stripped, epoch_seconds=list(timer.seconds), history=dict(history.history),
                       steps=steps)

