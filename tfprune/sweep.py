"""How much of this network can I delete? Sweeps pruning methods over k and writes tables and plots.

    python -m tfprune.sweep --flagfile=flags/fashion_mnist_fc1000.flags --output_dir=runs/fm
    python -m tfprune.sweep --flagfile=flags/smoke.flags --output_dir=/tmp/smoke

For every (method, k) point it prunes a copy of the cached trained baseline, optionally fine-tunes, and records
test accuracy/loss, achieved sparsity (overall and per layer), remaining weights and sizes (plus TFLite figures
with --export). Each finished point is written at once (atomically); --resume skips finished points, so a killed
sweep loses at most the point in flight. --num_shards/--shard_index split the points across independent jobs;
--merge combines the output dirs of shards into one set of tables and plots. --distribution_strategy runs every
point under tf.distribute (mirrored over GPUs, or over --cpu_devices to try it; multi_worker_mirrored from
TF_CONFIG, where only the chief writes --output_dir).
"""

import atexit
import dataclasses
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from typing import Callable, Optional

from absl import app
from absl import flags
from absl import logging

from tfprune import baseline as baseline_lib
from tfprune import cli
from tfprune import cli_flags
from tfprune import data as data_lib
from tfprune import distribute
from tfprune import experiment
from tfprune import export
from tfprune import io_utils
from tfprune import plots
from tfprune import results

FLAGS = flags.FLAGS
cli_flags.define_common()
cli_flags.define_pruning_common()
cli_flags.define_model_path()
distribute.define_flags()
flags.DEFINE_list("methods", ["weight", "unit"], "Pruning methods to sweep: weight, unit (tfprune rank pruning), "
                  "tfmot (TF-MOT prune_low_magnitude; needs --finetune_epochs >= 1).")
flags.DEFINE_string("layer_sparsity", None, "A per-layer plan instead of --sparsities: a JSON file written by "
                    "tfprune.sensitivity, or name=percent pairs, e.g. fc1=90,fc2=95.")
flags.DEFINE_enum("scope", "layer", ["layer", "global"], "Rank within each layer, or all selected layers together.")
flags.DEFINE_integer("finetune_epochs", 0, "Fine-tune epochs after/while pruning; 0 = one-shot prune and evaluate.",
                     lower_bound=0)
flags.DEFINE_enum("schedule", "polynomial", list(experiment.SCHEDULES),
                  "Pruning schedule during fine-tuning (TF-MOT's PolynomialDecay/ConstantSparsity, or one-shot).")
flags.DEFINE_float("begin_fraction", 0.0, "Scheduled pruning starts at this fraction of the fine-tune steps.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("end_fraction", 0.7, "The polynomial schedule reaches k at this fraction of the fine-tune steps.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("pruning_frequency", 100, "Steps between mask updates of scheduled pruning.", lower_bound=1)
flags.DEFINE_list("export", [], "TFLite variants to export and verify in LiteRT (accuracy, size, latency) for every "
                  f"point, into OUTPUT_DIR/tflite/<point>/<variant>/; any of {', '.join(export.VARIANTS)}. Unit "
                  "points also export their physically shrunk model.")
flags.DEFINE_integer("export_eval_size", 2000, "Test images used to verify exported TFLite models.", lower_bound=1)
flags.DEFINE_bool("resume", False, "Skip points already finished in --output_dir (else existing points are an error).")
flags.DEFINE_integer("num_shards", 1, "Split the points into this many independent jobs.", lower_bound=1)
flags.DEFINE_integer("shard_index", 0, "Which shard this job runs, in [0, num_shards).", lower_bound=0)
flags.DEFINE_list("merge", None, "Only merge: read the points of these output dirs (shards) and write tables and "
                  "plots into --output_dir.")
flags.DEFINE_integer("verbose", 2, "Keras training output: 0 silent, 1 progress bar, 2 one line per epoch.")
flags.register_validator("methods", lambda v: bool(v) and set(v) <= set(experiment.METHODS) and
                         len(set(v)) == len(v),
                         message=f"--methods must be a non-empty list without repeats of {experiment.METHODS}")
flags.register_validator("model_path", lambda p: p is None or os.path.exists(p),
                         message="--model_path must name an existing .keras/.h5 file (or a SavedModel folder)")
flags.register_multi_flags_validator(["num_shards", "shard_index"], lambda f: f["shard_index"] < f["num_shards"],
                                     message="--shard_index must be < --num_shards")
flags.register_multi_flags_validator(
    ["methods", "finetune_epochs"], lambda f: "tfmot" not in (f["methods"] or []) or f["finetune_epochs"] >= 1,
    message="--methods=tfmot needs --finetune_epochs >= 1 (TF-MOT applies its masks during training)")
flags.register_multi_flags_validator(
    ["methods", "scope"], lambda f: "tfmot" not in (f["methods"] or []) or f["scope"] == "layer",
    message="--methods=tfmot supports --scope=layer only")


def _check_export(values):
    if values:
        bad = [v for v in values if v not in export.VARIANTS]
        if bad:
            raise flags.ValidationError(f"--export: unknown variant(s) {bad}; known: {', '.join(export.VARIANTS)}")
    return True


flags.register_validator("export", _check_export)


@dataclasses.dataclass(frozen=True)
class Mode:
    """What a main built on the sweep writes: file prefix, title, and compare-only extras."""
    command: str = "python -m tfprune.sweep"
    prefix: str = "results"
    plot_prefix: str = ""
    title: str = "tfprune sweep"
    dense_reference: bool = False  # time dense fine-tuning to give each point a time ratio to dense training
    summary: Optional[Callable] = None  # (records, baseline_info) -> Markdown appended to the tables


SWEEP = Mode()


def load_plan(value):
    """A per-layer plan {layer: fraction} from a sensitivity JSON file or ``name=percent,...``.

    Raises:
      ValueError: naming the bad entry (unreadable file, missing '=', percent outside [0, 100)).
    """
    if value.endswith(".json"):
        try:
            with open(value) as f:
                loaded = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"--layer_sparsity {value!r}: cannot read plan ({e})") from None
        return {str(k): float(v) for k, v in loaded.get("layer_sparsity", loaded).items()}
    plan = {}
    for item in value.split(","):
        name, sep, percent = item.partition("=")
        if not sep:
            raise ValueError(f"--layer_sparsity entry {item!r} is not name=percent")
        plan[name.strip()] = cli.parse_percents([percent], f"--layer_sparsity {name}")[0] / 100.0
    return plan


def planned_points(methods, ks, num_shards=1, shard_index=0):
    """The (method, k) points of this shard: point i of the full list goes to shard i % num_shards."""
    points = [(m, k) for m in methods for k in ks]
    return [p for i, p in enumerate(points) if i % num_shards == shard_index]


def _plan_k(model, plan):
    weights = {l.name: int(l.kernel.shape.num_elements()) for l in model.layers if getattr(l, "kernel", None) is not None}
    total = sum(weights.values())
    return round(100.0 * sum(weights[n] * s for n, s in plan.items() if n in weights) / total, 2)


def _command_line(mode):
    return " ".join([mode.command] + [shlex.quote(a) for a in sys.argv[1:]])


def finish(output_dir, title, command, baseline_info, mode=SWEEP):
    """Rewrites tables and plots from every point in ``output_dir``; returns the Markdown text."""
    records = results.load_points([output_dir])
    if not records:
        return ""
    acc = baseline_info.get("test_accuracy")
    summary = mode.summary(records, baseline_info) if mode.summary else None
    markdown = results.write_tables(records, output_dir, title, command, acc, prefix=mode.prefix, summary=summary)
    plots.sweep_plots(records, output_dir, acc, baseline_info.get("test_loss"), baseline_info.get("histograms"),
                      prefix=mode.plot_prefix)
    return markdown


def _point_line(record):
    extra = f", {record['finetune_seconds_per_epoch']:.1f} s/epoch" if "finetune_seconds_per_epoch" in record else ""
    tfl = f", tflite float {record['tflite_float_accuracy'] * 100:.2f} %" if "tflite_float_accuracy" in record else ""
    if "shrunk_params" in record:
        tfl += f", shrunk {record['dense_params']:,} -> {record['shrunk_params']:,} params"
    if "tflite_shrunk_float_latency_ms" in record:
        tfl += f", float {record['tflite_float_latency_ms']:.3f} -> {record['tflite_shrunk_float_latency_ms']:.3f} ms"
    return (f"{record['method']:>6} k={record['k']:>5g}%: accuracy {100 * record['test_accuracy']:6.2f} %, "
            f"loss {record['test_loss']:.4f}, sparsity {100 * record['achieved_sparsity']:6.2f} %, "
            f"{record['remaining_weights']:,} weights left, gzip {record['gzip_size_bytes'] / 1024:,.0f} KiB"
            f"{extra}{tfl} ({record['point_seconds']:.1f} s)")


def _merge_only(mode):
    for folder in FLAGS.merge:
        if not os.path.isdir(folder):
            raise app.UsageError(f"--merge: {folder!r} is not a folder")
    records = results.load_points(FLAGS.merge)
    store = results.ResultStore(FLAGS.output_dir)
    for record in records:
        store.write_point(record)
    info = next((_read_json(os.path.join(f, "baseline.json")) for f in FLAGS.merge
                 if os.path.isfile(os.path.join(f, "baseline.json"))), None)
    if info:
        io_utils.write_json_atomic(os.path.join(FLAGS.output_dir, "baseline.json"), info)
    print(finish(FLAGS.output_dir, f"{mode.title} (merged)", _command_line(mode), info or {}, mode))
    print(f"merged {len(records)} points from {len(FLAGS.merge)} dirs into {FLAGS.output_dir}")


# Flags that change a point's figures: resuming into a dir made with other values would mix incomparable points.
# Not --distribution_strategy/--num_gpus: the global batch, schedule, steps and optimizer stay the same, so a sweep
# may continue on other hardware (a killed 2-GPU job resumed on 1 GPU); replicas differ only in float summation
# order (and, for models with BatchNormalization, per-replica batch statistics). Each record names its strategy
# and replica count, so a mixed dir shows it.
RESULT_FLAGS = ("dataset", "model", "model_path", "train_epochs", "train_size", "batch_size", "learning_rate", "seed", "layers",
                "scope", "finetune_epochs", "schedule", "begin_fraction", "end_fraction", "pruning_frequency", "export",
                "export_eval_size")


def _check_same_config(output_dir, plan, model_sha256=None):
    """Records the result-defining flags in sweep_config.json; refuses to add points made with other values.

    ``model_sha256``: digest of the --model_path file, so that another model saved under the same name is refused.

    Returns:
      None when ``output_dir`` may take the points (sweep_config.json written if absent), else the message of the
      refusal (the caller raises it, once every worker of a cluster knows).
    """
    config = {name: FLAGS[name].value for name in RESULT_FLAGS}
    config["layer_sparsity"] = plan
    config["model_sha256"] = model_sha256
    path = os.path.join(output_dir, "sweep_config.json")
    if os.path.isfile(path):
        old = _read_json(path)
        changed = [f"--{n}: {old.get(n)!r} there, {v!r} now" for n, v in config.items() if old.get(n) != v]
        if changed:
            return (f"--output_dir {output_dir!r} holds a sweep made with other flags (" + "; ".join(changed)
                    + "); use another folder")
    else:
        io_utils.write_json_atomic(path, config)
    return None


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def main(argv):
    return execute(argv, SWEEP)


def _model_label():
    return FLAGS.model_path or FLAGS.model


def _load_baseline(datasets, strategy):
    """The trained model the points start from: a --model_path file (checked, nothing trained) or the cached
    reference baseline. Returns (Baseline, sha256 of the model file or None)."""
    if not FLAGS.model_path:
        return baseline_lib.train_baseline(FLAGS.model, FLAGS.dataset, epochs=FLAGS.train_epochs,
                                           batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
                                           seed=FLAGS.seed, cache_dir=FLAGS.cache_dir, train_size=FLAGS.train_size,
                                           datasets=datasets, verbose=FLAGS.verbose, strategy=strategy), None
    from tfprune import user_model  # pylint: disable=g-import-not-at-top
    try:  # loaded outside the strategy: run_point copies it into the scope
        base, check = user_model.file_baseline(FLAGS.model_path, datasets, FLAGS.allow_unsafe_deserialization)
    except ValueError as e:
        raise app.UsageError(f"--model_path: {e}") from None
    for name, reason in check.skipped.items():
        print(f"{FLAGS.model_path}: layer {name!r} is not pruned: {reason}", flush=True)
    return base, user_model.file_digest(FLAGS.model_path)


DENSE_KEYS = ("dense_seconds_per_epoch", "dense_finetune_accuracy", "dense_finetune_loss")


def _recorded_dense_reference():
    """The dense-reference figures an earlier run wrote into --output_dir/baseline.json ({} if none)."""
    path = os.path.join(FLAGS.output_dir, "baseline.json")
    old = _read_json(path) if os.path.isfile(path) else {}
    return {k: old[k] for k in DENSE_KEYS if k in old}


def _baseline_info(base, datasets, finetune, mode, strategy, dense_recorded):
    """Writes --output_dir/baseline.json; ``dense_recorded``: whether (the chief's) baseline.json already holds the
    dense reference, else a compare run fine-tunes the dense model now."""
    info = {"model": _model_label(), "dataset": FLAGS.dataset, "test_accuracy": base.test_accuracy,
            "test_loss": base.test_loss, "train_epochs": FLAGS.train_epochs, "seed": FLAGS.seed,
            **distribute.describe(strategy), "histograms": experiment.magnitude_histograms(base.model)}
    if mode.dense_reference and finetune.epochs:
        dense = _recorded_dense_reference()
        if not dense_recorded:
            print(f"dense reference: fine-tuning the unpruned model {finetune.epochs} epoch(s) for the time ratio",
                  flush=True)
            dense = experiment.dense_finetune(base.model, datasets, finetune, seed=FLAGS.seed, strategy=strategy)
        info.update({k: dense[k] for k in DENSE_KEYS if k in dense})  # a non-chief worker has none recorded
    io_utils.write_json_atomic(os.path.join(FLAGS.output_dir, "baseline.json"), info)
    return info


def _make_strategy():
    """The strategy of the distribution flags (None for ``off``), built before any TensorFlow op.

    A non-chief worker of a cluster gets a throwaway --output_dir (Model Garden style): every worker runs every
    point (the training steps are collectives), only the chief's files are kept.
    """
    strategy = cli_flags.make_strategy()
    described = distribute.describe(strategy)
    if described["distribution_strategy"] == "off":
        return None  # no scope at all: the library's plain code path
    note = ""
    if not distribute.is_chief(strategy):
        FLAGS.output_dir = tempfile.mkdtemp(prefix="tfprune_worker_")  # read by every writer below, the exporter too
        atexit.register(shutil.rmtree, FLAGS.output_dir, ignore_errors=True)
        note = f"; not the chief: results go to the throwaway {FLAGS.output_dir}"
    print(f"distribution: {described['distribution_strategy']}, {described['replicas']} replicas in sync{note}",
          flush=True)
    return strategy


def execute(argv, mode):
    """The sweep (or, with another ``mode``, the comparison): validated flags in, point records and tables out."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    strategy = None if FLAGS.merge else _make_strategy()
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    if FLAGS.merge:
        return _merge_only(mode)
    try:
        plan = load_plan(FLAGS.layer_sparsity) if FLAGS.layer_sparsity else None
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    store = results.ResultStore(FLAGS.output_dir)
    ks = cli.parse_percents(FLAGS.sparsities)
    datasets = data_lib.load_dataset(FLAGS.dataset, FLAGS.data_dir)
    # The same subset for the baseline (train_baseline takes it again: a no-op) and for fine-tuning every point.
    datasets = (data_lib.take(datasets[0], FLAGS.train_size, FLAGS.seed), datasets[1])
    base, model_sha256 = _load_baseline(datasets, strategy)
    if plan is not None:
        ks = [_plan_k(base.model, plan)]
    points = planned_points(FLAGS.methods, ks, FLAGS.num_shards, FLAGS.shard_index)
    refusal = _check_same_config(FLAGS.output_dir, plan, model_sha256)
    # Workers of a cluster must run the same points: decide from the chief's --output_dir (the others' are empty).
    *finished, refused, dense_recorded = distribute.any_worker(
        strategy, [store.has(*p) for p in points] + [refusal is not None, bool(_recorded_dense_reference())])
    done = [p for p, f in zip(points, finished) if f]
    if done and not FLAGS.resume:
        raise app.UsageError(f"--output_dir {FLAGS.output_dir!r} already holds {len(done)} of these points "
                             "(e.g. " + results.point_key(*done[0]) + "); pass --resume or another folder")
    if refused:
        raise app.UsageError(refusal or "the chief refused --output_dir: it holds a sweep made with other flags")
    todo = [p for p, f in zip(points, finished) if not f]
    finetune = experiment.FineTune(epochs=FLAGS.finetune_epochs, schedule=FLAGS.schedule,
                                   batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
                                   begin_fraction=FLAGS.begin_fraction, end_fraction=FLAGS.end_fraction,
                                   frequency=FLAGS.pruning_frequency,
                                   verbose=FLAGS.verbose)
    print(f"baseline {_model_label()} on {FLAGS.dataset}: test accuracy {100 * base.test_accuracy:.2f} %"
          f" ({'cached' if base.from_cache else 'trained'}); {len(todo)} of {len(points)} points to run"
          f"{f' (shard {FLAGS.shard_index}/{FLAGS.num_shards})' if FLAGS.num_shards > 1 else ''}", flush=True)
    info = _baseline_info(base, datasets, finetune, mode, strategy, dense_recorded)
    exporter = _make_exporter(datasets) if FLAGS.export else None
    layers = plan if plan is not None else FLAGS.layers
    title = f"{mode.title}: {_model_label()} on {FLAGS.dataset}"
    command = _command_line(mode)
    start = time.perf_counter()
    for i, (method, k) in enumerate(todo, 1):
        record = experiment.run_point(base.model, datasets, method, k, FLAGS.scope, layers, finetune, exporter,
                                      seed=FLAGS.seed, strategy=strategy)
        if "dense_seconds_per_epoch" in info and "finetune_seconds_per_epoch" in record:
            record["time_ratio_to_dense"] = record["finetune_seconds_per_epoch"] / info["dense_seconds_per_epoch"]
        store.write_point(record)
        print(f"[{i}/{len(todo)}] {_point_line(record)}", flush=True)
        finish(FLAGS.output_dir, title, command, info, mode)
    markdown = finish(FLAGS.output_dir, title, command, info, mode)
    print(f"\n{markdown}\nwrote {FLAGS.output_dir}/{mode.prefix}.{{csv,json,md}} and plots "
          f"in {time.perf_counter() - start:.0f} s")


def _make_exporter(datasets):
    from tfprune import point_export  # pylint: disable=g-import-not-at-top
    (x_train, _), (x_test, y_test) = datasets
    x_eval, y_eval = data_lib.take((x_test, y_test), FLAGS.export_eval_size, FLAGS.seed)
    representative = data_lib.take((x_train, x_train), 300, FLAGS.seed)[0]
    return point_export.PointExporter(FLAGS.export, x_eval, y_eval, representative,
                                      os.path.join(FLAGS.output_dir, "tflite"),
                                      labels=data_lib.CLASS_NAMES.get(FLAGS.dataset))


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
