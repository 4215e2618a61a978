"""Sweeps as a library: prune a trained model by every method at every k, record each point, write tables and plots.

    from tfprune.experiments import BaselineConfig, SweepConfig, run_sweep
    result = run_sweep(SweepConfig("runs/fm", BaselineConfig(model="lenet_300_100", train_epochs=1)))

For every (method, k) point ``run_sweep`` prunes a copy of the trained baseline, optionally fine-tunes it, and
records test accuracy/loss, achieved sparsity (overall and per layer), remaining weights and sizes (plus TFLite
figures with ``export``). Each finished point is written at once (atomically); ``resume`` skips finished points, so
a killed sweep loses at most the point in flight. ``num_shards``/``shard_index`` split the points across
independent jobs; ``merge`` combines the output dirs of shards into one set of tables and plots. With a
``tf.distribute`` strategy every point runs under it (in a multi-worker cluster every worker calls ``run_sweep``
with the same config, each with its own ``output_dir``: the workers take the resume and config decisions from
their folders together, so they run the same points).
"""

import dataclasses
import os
import time
from typing import Callable, Optional

import numpy as np

from tfprune import distribute
from tfprune.files import io_utils
from tfprune import outputs
from tfprune.layers import registry
from tfprune import stacks
from tfprune.experiments import twin
from tfprune.files import user_model
from tfprune.experiments import baseline as baseline_lib
from tfprune.experiments import config as config_lib
from tfprune.experiments.data import sources as data_sources
from tfprune.experiments.budget import frontier as frontier_lib
from tfprune.experiments.results import histograms as hist_lib
from tfprune.experiments.results import plots
from tfprune.experiments import point as point_lib
from tfprune.experiments import point_export
from tfprune.experiments import preflight
from tfprune.experiments.results import records
from tfprune.experiments.results import store as store_lib
from tfprune.experiments.results import tables
from tfprune.experiments.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Mode:
    """What a study built on the sweep writes: file prefix, title, and compare-only extras."""
    prefix: str = "results"
    plot_prefix: str = ""
    title: str = "tfprune sweep"
    dense_reference: bool = False  # time dense fine-tuning to give each point a time ratio to dense training
    summary: Optional[Callable] = None  # (points, baseline_info) -> Markdown placed after the accuracy table


SWEEP = Mode()
REJECTED_SUFFIX = ".rejected"  # a point file resume could not trust, kept beside the recomputed one


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What ``run_sweep`` wrote: every point of ``output_dir`` (``PointRecord``s), the Markdown tables, and the
    baseline's figures (``baseline.json``)."""
    output_dir: str
    points: tuple
    markdown: str
    baseline_info: dict


def planned_points(methods, ks, num_shards=1, shard_index=0):
    """The (method, k) points of this shard: point i of the full list goes to shard i % num_shards."""
    points = [(m, k) for m in methods for k in ks]
    return [p for i, p in enumerate(points) if i % num_shards == shard_index]


def plan_k(model, plan):
    """The overall percent k of a per-layer plan {layer: fraction}, weighted by kernel size (names its point)."""
    weights = {l.name: int(np.prod(registry.kernel_shape(l))) for l in registry.kernel_layers(model)}
    total = sum(weights.values())
    return round(100.0 * sum(weights[n] * s for n, s in plan.items() if n in weights) / total, 2)


def finish(output_dir, title, command, baseline_info, mode=SWEEP, with_plots=True):
    """Rewrites the tables (and, with ``with_plots``, the plots) from every point in ``output_dir``; returns the
    Markdown text ("" if none)."""
    points = store_lib.load_points([output_dir])
    if not points:
        return ""
    acc = baseline_info.get("test_accuracy")
    summary = mode.summary(points, baseline_info) if mode.summary else None
    markdown = tables.write_tables(points, output_dir, title, command, acc, prefix=mode.prefix, summary=summary)
    if with_plots:
        plots.sweep_plots(points, output_dir, acc, baseline_info.get("test_loss"), baseline_info.get("histograms"),
                          prefix=mode.plot_prefix)
        write_frontier(points, output_dir, mode.plot_prefix)
    return markdown


def _completes_a_curve(todo, i):
    """True when point ``i`` of ``todo`` [(method, k)] is the last one of its method in a row (its curve is drawn
    in full) or the last of all: the plots are redrawn then, the tables after every point. Drawing the five
    figures takes about as long as a one-shot point of the smoke sweep, so redrawing them after each point tripled
    its time."""
    return i == len(todo) - 1 or todo[i + 1][0] != todo[i][0]


def write_frontier(points, output_dir, prefix=""):
    """``<prefix>frontier.md`` (every exported file, the Pareto-optimal ones marked) and ``<prefix>frontier.png``
    when the points exported TFLite files; returns the PNG's path or None."""
    items = frontier_lib.candidates(points)
    if not items:
        return None
    path, _ = plots.frontier(items, os.path.join(output_dir, prefix + "frontier.png"))
    io_utils.write_text_atomic(os.path.join(output_dir, prefix + "frontier.md"), "\n".join([
        "# Which model to ship: accuracy against file size and latency", "",
        "Every exported TFLite file of this sweep, as LiteRT measured it (accuracy on the export's test images, "
        "single-image latency in the Interpreter). On a frontier: no other file is at least as accurate and at "
        "most as large (or as slow). Plot: frontier.png.", "", frontier_lib.table(items), ""]))
    return path


def point_line(record):
    """One progress line for a finished point."""
    extra = "" if record.finetune_seconds_per_epoch is None else f", {record.finetune_seconds_per_epoch:.1f} s/epoch"
    gzipped = "" if record.gzip_size_bytes is None else f", gzip {record.gzip_size_bytes / 1024:,.0f} KiB"
    float_figures, shrunk_float = record.export("float"), record.export("float", records.SHRUNK)
    tfl = "" if float_figures is None else f", tflite float {float_figures.accuracy * 100:.2f} %"
    if record.shrink is not None:
        tfl += f", shrunk {record.shrink.dense_params:,} -> {record.shrink.shrunk_params:,} params"
    if float_figures is not None and shrunk_float is not None:
        tfl += f", float {float_figures.latency_ms:.3f} -> {shrunk_float.latency_ms:.3f} ms"
    return (f"{record.method:>6} k={records.format_k(record.k):>5}%: accuracy {100 * record.test_accuracy:6.2f} %, "
            f"loss {record.test_loss:.4f}, sparsity {100 * record.achieved_sparsity:6.2f} %, "
            f"{record.remaining_weights:,} weights left{gzipped}{extra}{tfl} ({record.point_seconds:.1f} s)")


def _check_mergeable(folders):
    """Raises ConfigError when the folders' points were made from different data or with different settings."""
    for attribute, what in (("data_digest", "different data"), ("config_digest", "different settings")):
        seen = {}
        for folder in folders:
            for record in store_lib.load_points([folder]):
                seen.setdefault(getattr(record, attribute), []).append(f"{folder}/{store_lib.POINTS}/{record.key}")
        if len(seen) > 1:
            groups = "; ".join(f"{digest or 'not recorded'}: {paths[0]}" + (f" and {len(paths) - 1} more"
                                                                             if len(paths) > 1 else "")
                               for digest, paths in seen.items())
            raise ConfigError(f"--merge: the folders hold points made from {what} ({groups}); merge only the "
                              "shards of one sweep")


def merge(folders, output_dir, mode=SWEEP, command=None, report=print):
    """Combines the points of several output dirs (shards) into ``output_dir`` with one set of tables and plots.

    Returns:
      ``SweepResult`` of ``output_dir``.

    Raises:
      ConfigError: a folder that does not exist, folders whose points were made from different data or with
        different settings, ``output_dir`` in use by another run. RecordError: an unreadable point file (named).
    """
    for folder in folders:
        if not os.path.isdir(folder):
            raise ConfigError(f"--merge: {folder!r} is not a folder")
    with store_lib.output_lock(output_dir):
        return _merge(folders, output_dir, mode, command, report)


def _merge(folders, output_dir, mode, command, report):
    points = store_lib.load_points(folders)
    _check_mergeable(folders)
    store = store_lib.ResultStore(output_dir)
    for record in points:
        store.write_point(record)
    info = next((store_lib.read_json(os.path.join(f, "baseline.json")) for f in folders
                 if os.path.isfile(os.path.join(f, "baseline.json"))), None)
    if info:
        io_utils.write_json_atomic(os.path.join(output_dir, "baseline.json"), info)
    markdown = finish(output_dir, f"{mode.title} (merged)", command, info or {}, mode)
    report(markdown)
    report(f"merged {len(points)} points from {len(folders)} dirs into {output_dir}")
    return SweepResult(output_dir, tuple(store_lib.load_points([output_dir])), markdown, info or {})


def load_data(baseline):
    """The ``Dataset`` of a ``BaselineConfig``, training split subset to ``train_size`` (reproducibly, by seed)."""
    data = data_sources.load(baseline.dataset, baseline.data_dir, memory_bytes=baseline.data_memory_mib << 20)
    # The same subset for the baseline (train_baseline takes it again: a no-op) and for fine-tuning every point.
    return data.subset_train(baseline.train_size, baseline.seed)


def load_start_model(baseline, datasets, strategy=None, report=print, data_digest=None):
    """The trained model a study starts from: the ``model_path`` file (checked, nothing trained) or the cached
    reference model (trained when absent).

    Returns:
      ``(Baseline, sha256 of the model file or None)``.

    Raises:
      ConfigError: a model file that cannot be loaded, is unsafe or does not fit the data (the message names it).
    """
    if not baseline.model_path:
        return baseline_lib.train_baseline(
            baseline.model, baseline.dataset, epochs=baseline.train_epochs, batch_size=baseline.batch_size,
            learning_rate=baseline.learning_rate, seed=baseline.seed, cache_dir=baseline.cache_dir,
            train_size=baseline.train_size, datasets=datasets, verbose=baseline.verbose, strategy=strategy,
            data_digest=data_digest, keras=baseline.keras,
            on_wait=lambda holder: report(f"waiting for {holder}: it is training the same baseline")), None
    try:  # loaded outside the strategy: run_point copies it into the scope
        base, check = baseline_lib.file_baseline(baseline.model_path, datasets, baseline.allow_unsafe)
    except ValueError as e:
        raise ConfigError(f"--model_path: {e}") from None
    kind = outputs.output_kind(base.model)
    report(f"{baseline.model_path}: a {stacks.of(base.model).label} model "
           f"(written by Keras {user_model.keras_version(baseline.model_path) or 'of unknown version'}) that outputs "
           f"{kind}" + ("; its losses are cross-entropy from logits" if kind == outputs.LOGITS else ""))
    for name, reason in check.skipped.items():
        report(f"{baseline.model_path}: layer {name!r} is not pruned: {reason}")
    return base, user_model.file_digest(baseline.model_path)


DENSE_KEYS = ("dense_seconds_per_epoch", "dense_finetune_accuracy", "dense_finetune_loss")


def _recorded_dense_reference(output_dir):
    """The dense-reference figures an earlier run wrote into ``output_dir``/baseline.json ({} if none, or if the
    file is damaged: it is rewritten by this run, so the reference is then simply measured again)."""
    path = os.path.join(output_dir, "baseline.json")
    try:
        old = store_lib.read_json(path) if os.path.isfile(path) else {}
    except records.RecordError:
        return {}
    return {k: old[k] for k in DENSE_KEYS if k in old and isinstance(old[k], (int, float))}


def _baseline_info(config, base, datasets, mode, strategy, dense, dense_recorded, report, data_digest):
    """Writes ``output_dir``/baseline.json; ``dense``: the dense-reference figures this folder's baseline.json
    holds; ``dense_recorded``: whether (the chief's) baseline.json holds them, else a comparison fine-tunes the
    dense model now."""
    b, finetune = config.baseline, config.finetune
    info = {"model": b.label, "dataset": b.dataset, "data_digest": data_digest, **_data_facts(datasets),
            "test_accuracy": base.test_accuracy,
            "test_loss": base.test_loss, "train_epochs": b.train_epochs, "seed": b.seed,
            **distribute.describe(strategy), "histograms": hist_lib.magnitude_histograms(base.model)}
    if mode.dense_reference and finetune.epochs:
        if not dense_recorded:
            report(f"dense reference: fine-tuning the unpruned model {finetune.epochs} epoch(s) for the time ratio")
            dense = point_lib.dense_finetune(base.model, datasets, finetune, seed=b.seed, strategy=strategy)
        info.update({k: dense[k] for k in DENSE_KEYS if k in dense})  # a non-chief worker has none recorded
    io_utils.write_json_atomic(os.path.join(config.output_dir, "baseline.json"), info)
    return info


def _data_facts(data):
    """What baseline.json records of the data besides its digest: shape, dtype, classes, sizes, preprocessing."""
    return {"input_shape": list(data.input_shape), "input_dtype": str(data.input_dtype),
            "class_names": list(data.class_names), "preprocessing": dict(data.preprocessing),
            "split_sizes": {s: len(getattr(data, s)) for s in ("train", "val", "test") if getattr(data, s) is not None}}


def _make_exporter(config, data):
    seed = config.baseline.seed
    x_eval, y_eval = data.test.take(config.export_eval_size, seed)
    representative = data.train.take(300, seed)[0]  # int8 calibration: training inputs, preprocessed alike
    return point_export.PointExporter(config.export, x_eval, y_eval, representative,
                                      os.path.join(config.output_dir, "tflite"), labels=list(data.class_names),
                                      data_card=data.card(), append_softmax=config.export_softmax)


def run_sweep(config, mode=SWEEP, strategy=None, command=None, report=print):
    """Runs (or resumes) a sweep and writes its points, tables and plots into ``config.output_dir``.

    Args:
      config: a ``SweepConfig``.
      mode: ``SWEEP``, or another ``Mode`` (``compare.COMPARE`` adds a dense reference and a head-to-head table).
      strategy: optional ``tf.distribute.Strategy`` every point runs under (None: no strategy at all).
      command: the command line shown in the tables ("Produced by"), or None.
      report: called with each progress line (default ``print``).

    Everything the sweep checks happens before ``output_dir`` is created or a baseline trained: the data loads and
    validates, the layer selection and k's fit the model (``preflight``). Then the folder is locked (a second run
    into it is refused), and on resume every finished point file is validated (readable, its own point, made with
    these settings and data) before it is skipped; a bad one is reported and computed again.

    Returns:
      ``SweepResult``.

    Raises:
      ConfigError: before any point runs: finished points in ``output_dir`` without ``resume``, a folder made with
        other settings or data, a folder in use by another run, layers or k's that do not fit the model, an
        unusable model file. DatasetError: the data cannot be found or is corrupt (the file is named).
        RecordError: the folder's sweep_config.json is damaged.
    """
    b = config.baseline
    datasets = load_data(b)
    report(datasets.describe())
    data_digest = datasets.digest()
    start_model = None
    if b.model_path:  # a model file is only loaded and evaluated: checked before the folder is touched
        start_model = load_start_model(b, datasets, strategy, report, data_digest)
        shapes = start_model[0].model
    else:  # an untrained build of the reference model: its layers and shapes, in a fraction of a second
        shapes = preflight.architecture(b, datasets)
    preflight.check_sweep(config, shapes)
    with store_lib.output_lock(config.output_dir):
        return _run_locked(config, mode, strategy, command, report, datasets, data_digest, start_model, shapes)


def _run_locked(config, mode, strategy, command, report, datasets, data_digest, start_model, shapes):
    """The sweep in its locked folder: folder and resume checks first, then the baseline (trained if need be)."""
    b = config.baseline
    store = store_lib.ResultStore(config.output_dir)
    model_sha256 = start_model[1] if start_model else None
    ks = [plan_k(shapes, config.layer_sparsity)] if config.layer_sparsity is not None else config.sparsities
    points = planned_points(config.methods, ks, config.num_shards, config.shard_index)
    fields = dict(config.result_fields(), model_sha256=model_sha256, data_sha256=data_digest)
    refusal = store_lib.check_same_config(config.output_dir, fields)
    digest = store_lib.config_digest(fields)
    checked = [store_lib.finished_point(store.path(*p), digest) for p in points]
    dense = _recorded_dense_reference(config.output_dir)
    # Workers of a cluster must run the same points: decide from the chief's output_dir (the others' are empty).
    *finished, refused, dense_recorded = distribute.any_worker(
        strategy, [ok for ok, _ in checked] + [refusal is not None, bool(dense)])
    if refused:
        raise ConfigError(refusal or "the chief refused --output_dir: it holds a sweep made with other settings")
    done = [p for p, f in zip(points, finished) if f]
    if done and not config.resume:
        raise ConfigError(f"--output_dir {config.output_dir!r} already holds {len(done)} of these points (e.g. "
                          f"{records.point_key(*done[0])}); pass --resume (resume=True) or another folder")
    for p, (_, problem) in zip(points, checked):
        if problem:  # kept aside, not lost, and out of the tables until the point is computed again
            os.replace(store.path(*p), store.path(*p) + REJECTED_SUFFIX)
            report(f"{problem}; computing it again (the file is kept as {os.path.basename(store.path(*p))}"
                   f"{REJECTED_SUFFIX})")
    store.records()  # every other point file of the folder must read too (the tables hold them): else named now
    base, _ = start_model or load_start_model(b, datasets, strategy, report, data_digest)
    todo = [p for p, f in zip(points, finished) if not f]
    tfmot_baseline = None
    if any(config_lib.is_tfmot(m) for m, _ in todo) and stacks.of(base.model) is not stacks.TF_KERAS:
        try:  # TF-MOT runs on tf_keras only: on a twin of the model, checked to compute the same outputs
            tfmot_baseline = point_lib.tfmot_model(base.model, datasets.train.take(256, b.seed)[0])
            report(f"TF-MOT runs on a tf_keras twin of this {stacks.of(base.model).label} model (same layers and "
                   "weights, outputs checked equal on real images)")
        except twin.TwinError as e:
            report(f"TF-MOT cannot prune this model ({e}); the comparison runs tfprune's methods alone")
            todo = [p for p in todo if not config_lib.is_tfmot(p[0])]
    shard = f" (shard {config.shard_index}/{config.num_shards})" if config.num_shards > 1 else ""
    report(f"baseline {b.label} on {b.dataset}: test accuracy {100 * base.test_accuracy:.2f} % "
           f"({'cached' if base.from_cache else 'trained'}); {len(todo)} of {len(points)} points to run{shard}")
    info = _baseline_info(config, base, datasets, mode, strategy, dense, dense_recorded, report, data_digest)
    exporter = _make_exporter(config, datasets) if config.export else None
    layers = config.layer_sparsity if config.layer_sparsity is not None else config.layers
    layers = list(layers) if isinstance(layers, tuple) else layers
    title = f"{mode.title}: {b.label} on {b.dataset}"
    start = time.perf_counter()
    markdown = None
    for i, (method, k) in enumerate(todo, 1):
        record = point_lib.run_point(base.model, datasets, method, k, config.scope, layers, config.finetune,
                                     exporter, seed=b.seed, strategy=strategy, tfmot_baseline=tfmot_baseline,
                                     gzip_size=config.gzip_size)
        record = dataclasses.replace(record, data_digest=data_digest, config_digest=digest)
        if "dense_seconds_per_epoch" in info and record.finetune_seconds_per_epoch is not None:
            record = dataclasses.replace(
                record, time_ratio_to_dense=record.finetune_seconds_per_epoch / info["dense_seconds_per_epoch"])
        store.write_point(record)
        report(f"[{i}/{len(todo)}] {point_line(record)}")
        markdown = finish(config.output_dir, title, command, info, mode, with_plots=_completes_a_curve(todo, i - 1))
    if markdown is None:  # nothing left to run (a finished sweep resumed): the files are written again
        markdown = finish(config.output_dir, title, command, info, mode)
    report(f"\n{markdown}\nwrote {config.output_dir}/{mode.prefix}.{{csv,json,md}} and plots "
           f"in {time.perf_counter() - start:.0f} s")
    return SweepResult(config.output_dir, tuple(store.records()), markdown, info)


__all__ = ["Mode", "SWEEP", "SweepResult", "finish", "load_data", "load_start_model", "merge", "plan_k",
           "planned_points", "point_line", "run_sweep"]
