"""One matrix for fc_1000: pruned models x TFLite variants, with file size, gzip size, LiteRT latency and accuracy.

    scripts/bench.sh export            # or: .venv/bin/python scripts/bench_export.py --bench_runs=500

Models, from the cached fc_1000 baseline trained --epochs on --dataset (the cache the sweeps use): dense (k = 0);
weight-pruned at each --weight_sparsities k % of the --weight_layers (default the hidden layers fc1..fc4: the
200x10 classifier stays dense, as in the comparison presets and TF-MOT's guide; overall sparsity is then 0.08 points
lower); unit-pruned at each --unit_sparsities k % (all but the classifier) and then physically shrunk
(``tfprune.shrinking.surgery.shrink``, checked to compute the same outputs). Each pruned model is fine-tuned --finetune_epochs
while its sparsity ramps up on TF-MOT's PolynomialDecay (the recipe of the sweep presets; 0 = one-shot), so the
accuracy column is that of a model one would ship. Every model is exported in every --variants by
``tfprune.tflite.export_variant``:
converted, verified on --eval_images real test images in LiteRT, and timed with 1 thread (median of --bench_runs
single-image invokes after --bench_warmup). Ratios and targets compare with this run's dense float row:

  * weight 99 % + int8+sparse: file <= 1/40 of the dense float file;
  * unit 90 % shrunk + int8: >= 20x faster than dense float.

Writes ``matrix.md`` (with the command line) and ``matrix.json`` to --output_dir, atomically.
"""

import os
import shlex
import sys
import time

from absl import app
from absl import flags
from absl import logging

import tfprune
from tfprune.shrinking import costs
from tfprune.files import io_utils
from tfprune import tflite as export
from tfprune.cli import app as cli
from tfprune.experiments import config, point_export
from tfprune.experiments.data import builtin as data
from tfprune.experiments import point as experiment

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "fashion_mnist", sorted(data.DATASETS), "Dataset of the baseline and the evaluation.")
flags.DEFINE_string("data_dir", None, "Folder searched first for the dataset (see tfprune.load_dataset).")
flags.DEFINE_integer("epochs", 10, "Training epochs of the cached fc_1000 baseline (10 shares the sweeps' cache).",
                     lower_bound=1)
flags.DEFINE_list("weight_layers", ["fc1", "fc2", "fc3", "fc4"], "Layers weight pruning prunes (empty: all).")
flags.DEFINE_integer("finetune_epochs", 2, "Fine-tune epochs of each pruned model while its sparsity ramps up "
                     "(0: one-shot pruning).", lower_bound=0)
flags.DEFINE_list("weight_sparsities", ["90", "99"], "Percents k of weight pruning (the dense k = 0 row is always "
                  "measured).")
flags.DEFINE_list("unit_sparsities", ["70", "90"], "Percents k of unit pruning; each model is shrunk.")
flags.DEFINE_list("variants", list(export.VARIANTS), f"TFLite variants, from {', '.join(export.VARIANTS)}; must "
                  "include float (the reference of the ratios).")
flags.DEFINE_integer("eval_images", None, "Test images verifying each export (default: all).", lower_bound=1)
flags.DEFINE_integer("representative_size", 300, "Training images calibrating int8 variants.", lower_bound=1)
flags.DEFINE_integer("bench_runs", 200, "Timed single-image invokes per exported model.", lower_bound=1)
flags.DEFINE_integer("bench_warmup", 20, "Untimed invokes before timing.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed of the evaluation and calibration subsets.")
flags.DEFINE_string("output_dir", "docs/results/export_fc1000", "Folder for matrix.md and matrix.json.")
cli.register_list_validator("weight_sparsities", lambda v: config.check_percents(v, "--weight_sparsities"))
cli.register_list_validator("unit_sparsities", lambda v: config.check_percents(v, "--unit_sparsities"))


def _check_variants(values):
    for value in values:
        export.parse_variant(value)
    if "float" not in values:
        raise ValueError("--variants must include float: the dense float row is the reference of ratios and targets")


cli.register_list_validator("variants", _check_variants)

# (description, (method, k, variant) of the row, figure, minimum ratio dense float figure / row figure)
TARGETS = (
    ("99 % weight sparsity + int8+sparse file <= 1/40 of the dense float file", ("weight", 99.0, "int8+sparse"),
     "size_bytes", 40.0),
    ("unit 90 % shrunk + int8 >= 20x faster than dense float", ("unit", 90.0, "int8"), "latency_ms", 20.0),
)
COLUMNS = (  # (header, width, row -> text); the first two and the last are left-aligned
    ("model", 22, lambda r: r["model"]),
    ("variant", 14, lambda r: r["variant"]),
    ("params", 9, lambda r: f"{r['params']:,}"),
    ("sparsity %", 10, lambda r: f"{100 * r['sparsity']:.1f}"),
    ("file KiB", 9, lambda r: f"{r['size_bytes'] / 1024:,.1f}"),
    ("gzip KiB", 9, lambda r: f"{r['gzip_size_bytes'] / 1024:,.1f}"),
    ("x smaller", 9, lambda r: f"{r['size_ratio']:.1f}"),
    ("latency ms", 10, lambda r: f"{r['latency_ms']:.4f}"),
    ("x faster", 8, lambda r: f"{r['speedup']:.1f}"),
    ("accuracy %", 10, lambda r: f"{100 * r['accuracy']:.2f}"),
    ("path", 7, lambda r: r["path"]),
)


def pruned_models(baseline_model, weight_ks, unit_ks, train, x_check, finetune):
    """[(label, method, k, plain model)]: dense, weight-pruned per k %, unit-pruned per k % and shrunk (checked on
    images ``x_check``); each pruned model fine-tuned on ``train`` = (x, y) as ``finetune`` says."""
    out = [("dense", "dense", 0.0, baseline_model)]
    for k in weight_ks:
        model = experiment.pruned_copy(baseline_model, "weight", k, *train, finetune, layers=FLAGS.weight_layers or None,
                                       seed=FLAGS.seed)
        scope = f" ({FLAGS.weight_layers[0]}-{FLAGS.weight_layers[-1]})" if FLAGS.weight_layers else ""
        out.append((f"weight {k:g} %{scope}", "weight", k, model))
    for k in unit_ks:
        model = experiment.pruned_copy(baseline_model, "unit", k, *train, finetune, seed=FLAGS.seed)
        result, diff = point_export.checked_shrink(model, x_check)
        print(f"unit {k:g} %: shrunk {result.report.params_before:,} -> {result.report.params_after:,} params, "
              f"max |diff| {diff:.2e}", flush=True)
        out.append((f"unit {k:g} % shrunk", "unit", k, result.model))
    return out


def format_matrix(rows, markdown=False):
    """The rows as one aligned text table (or a Markdown table)."""
    if markdown:
        lines = ["| " + " | ".join(c[0] for c in COLUMNS) + " |", "|---|---|" + "---:|" * (len(COLUMNS) - 3) + "---|"]
        return "\n".join(lines + ["| " + " | ".join(c[2](r) for c in COLUMNS) + " |" for r in rows])
    def line(texts):
        return "  ".join(t.ljust(c[1]) if i < 2 or i == len(COLUMNS) - 1 else t.rjust(c[1])
                         for i, (t, c) in enumerate(zip(texts, COLUMNS))).rstrip()
    return "\n".join([line([c[0] for c in COLUMNS])] + [line([c[2](r) for c in COLUMNS]) for r in rows])


def check_targets(rows):
    """[{target, met, ratio, minimum}] against the dense float row of ``rows``; ``met`` None when not measured."""
    by_key = {(r["method"], r["k"], r["variant"]): r for r in rows}
    reference = by_key[("dense", 0.0, "float")]
    out = []
    for text, key, figure, minimum in TARGETS:
        row = by_key.get(key)
        ratio = reference[figure] / row[figure] if row else None
        out.append({"target": text, "met": None if row is None else ratio >= minimum, "ratio": ratio,
                    "minimum": minimum})
    return out


def target_lines(targets):
    return [f"target: {t['target']}: " + ("not measured (row not in this run)" if t["met"] is None else
                                          f"{'met' if t['met'] else 'NOT met'} (measured {t['ratio']:.1f}x, "
                                          f"needs >= {t['minimum']:g}x)")
            for t in targets]


def measure(candidates, variants, x_eval, y_eval, representative):
    """Exports every candidate model in every variant (the first row must be dense float); prints each row."""
    rows, total = [], len(candidates) * len(variants)
    for label, method, k, model in candidates:
        params = costs.count_params_and_macs(model).params
        for variant in variants:
            start = time.perf_counter()
            figures = export.export_variant(model, variant, x_eval, y_eval, representative, num_threads=1,
                                            bench_runs=FLAGS.bench_runs, bench_warmup=FLAGS.bench_warmup)
            row = dict(figures, model=label, method=method, k=k, params=params)
            reference = rows[0] if rows else row
            row.update(size_ratio=reference["size_bytes"] / row["size_bytes"],
                       speedup=reference["latency_ms"] / row["latency_ms"])
            rows.append(row)
            line = format_matrix([row]).splitlines()[1]
            print(f"[{len(rows)}/{total}] {line}  ({time.perf_counter() - start:.1f} s)", flush=True)
    return rows


def write_results(output_dir, report, notes):
    """Writes ``report`` to ``matrix.json`` and as ``matrix.md`` (command line, setup, table, targets, ``notes``)."""
    markdown = "\n".join(["# TFLite export matrix: fc_1000", "", "Produced by:", "", "```sh", report["command"], "```",
                          "", report["setup"] + ".", "", format_matrix(report["rows"], markdown=True), ""]
                         + [f"- {line}" for line in target_lines(report["targets"]) + notes] + [""])
    io_utils.write_text_atomic(os.path.join(output_dir, "matrix.md"), markdown)
    io_utils.write_json_atomic(os.path.join(output_dir, "matrix.json"), report)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # the TFLite converter logs every step at INFO
    os.makedirs(FLAGS.output_dir, exist_ok=True)  # fail before the work, not after it
    command = " ".join(["python scripts/bench_export.py"] + [shlex.quote(a) for a in sys.argv[1:]])
    datasets = data.load_dataset(FLAGS.dataset, FLAGS.data_dir)
    (x_train, y_train), (x_test, y_test) = datasets
    x_eval, y_eval = data.take((x_test, y_test), FLAGS.eval_images, FLAGS.seed)
    representative = data.take((x_train, x_train), FLAGS.representative_size, FLAGS.seed)[0]
    base = tfprune.train_baseline("fc_1000", FLAGS.dataset, epochs=FLAGS.epochs, datasets=datasets, verbose=2)
    print(f"fc_1000 baseline: {FLAGS.epochs} epoch(s) on {FLAGS.dataset}, test accuracy "
          f"{100 * base.test_accuracy:.2f} % ({'cached' if base.from_cache else 'trained'})", flush=True)
    finetune = config.FineTune(epochs=FLAGS.finetune_epochs, schedule="polynomial", verbose=0)
    candidates = pruned_models(base.model, config.check_percents(FLAGS.weight_sparsities, "--weight_sparsities"),
                               config.check_percents(FLAGS.unit_sparsities, "--unit_sparsities"), (x_train, y_train),
                               x_eval, finetune)
    variants = ["float"] + [v for v in FLAGS.variants if v != "float"]  # the reference row first
    rows = measure(candidates, variants, x_eval, y_eval, representative)
    targets = check_targets(rows)
    recipe = (f"pruning ramped over {FLAGS.finetune_epochs} fine-tune epoch(s) (PolynomialDecay to k at 70 % of the "
              "steps, batch 128, Adam 1e-3)" if FLAGS.finetune_epochs else "one-shot pruning, no fine-tuning")
    setup = (f"fc_1000 ({FLAGS.epochs} epoch(s), test accuracy {100 * base.test_accuracy:.2f} %), {recipe}; "
             f"accuracy on {len(x_eval)} {FLAGS.dataset} test images; latency: LiteRT, 1 thread, median of "
             f"{FLAGS.bench_runs} single-image invokes after {FLAGS.bench_warmup}; ratios vs dense float; "
             f"tfprune {tfprune.__version__}")
    fallbacks = [f"{r['model']} {r['variant']}: ran builtin kernels ({r['fallback_reason']})"
                 for r in rows if r["fallback_reason"]]
    print(f"\n{setup}\n{format_matrix(rows)}\n" + "\n".join(target_lines(targets) + fallbacks))
    report = {"command": command, "setup": setup, "dataset": FLAGS.dataset, "epochs": FLAGS.epochs,
              "finetune_epochs": FLAGS.finetune_epochs,
              "baseline_accuracy": base.test_accuracy, "eval_images": len(x_eval), "bench_runs": FLAGS.bench_runs,
              "bench_warmup": FLAGS.bench_warmup, "num_threads": 1, "rows": rows, "targets": targets}
    write_results(FLAGS.output_dir, report, fallbacks)
    print(f"wrote {FLAGS.output_dir}/matrix.md and matrix.json")


if __name__ == "__main__":
    cli.run(main)
