"""Where sparsity pays on the device: unstructured vs 1x4 vs 1x16 block pruning, in float, int8 and dynamic range.

    scripts/bench.sh blocks            # or: .venv/bin/python scripts/bench_blocks.py --models=lenet_300_100

For each --models network (a baseline trained --epochs on --dataset, cached like the sweeps'), each --methods
(``weight``: unstructured |w|; ``block_1x4``/``block_1x16``: blocks of 4/16 consecutive inputs of one unit, TFLite's
float and int8 sparse-kernel layouts) and each --sparsities k %, the model is pruned on TF-MOT's PolynomialDecay
ramp over --finetune_epochs of fine-tuning (--layers: the hidden layers by default) and exported in every --variants
by ``tfprune.tflite.export_variant``: converted, checked against the Keras model in both LiteRT APIs on
--eval_images real test images, and timed. Latency is the median of --bench_runs single-image runs after
--bench_warmup, for each --threads, in the Interpreter, in CompiledModel, and by LiteRT's own ``litert-benchmark``
command (CompiledModel, an independent process; it reports 0.01 ms steps). Dense float, dynamic and int8 files of
the baseline are the references.

Targets (fc_1000, 1 thread, Interpreter; ratios of this run's own rows): block_1x4 float at 90/95/99 % >= 2x/3x/8x
faster than dense float; block_1x16 int8 at 95 % faster than dense int8; block accuracy within 0.5 points of
unstructured at 90 and 95 %. Writes ``<output_dir>/results.md`` (command, table, targets) and ``results.json``.
"""

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

import tfprune
from tfprune.files import io_utils
from tfprune import pruning
from tfprune import tflite as export
from tfprune.cli import app as cli
from tfprune.experiments import config
from tfprune.experiments.data import builtin as data
from tfprune.experiments import point as experiment
from tfprune.tflite import compiled

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["fc_1000", "lenet_300_100"], "Reference networks.")
flags.DEFINE_enum("dataset", "fashion_mnist", sorted(data.DATASETS), "Dataset of the baselines and the evaluation.")
flags.DEFINE_string("data_dir", None, "Folder searched first for the dataset (see tfprune.load_dataset).")
flags.DEFINE_integer("epochs", 10, "Training epochs of the cached baselines.", lower_bound=1)
flags.DEFINE_integer("finetune_epochs", 2, "Fine-tune epochs of each pruned model while its sparsity ramps up.",
                     lower_bound=0)
flags.DEFINE_list("methods", ["weight", "block_1x4", "block_1x16"], "Pruning methods.")
flags.DEFINE_float("end_fraction", 0.7, "The PolynomialDecay ramp reaches k at this fraction of the fine-tune steps "
                   "(the sweeps' default 0.7).", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_list("layers", None, "Layers to prune (default: every layer but the classifier, as TF-MOT's guide and "
                  "the comparison presets do: a 10-unit classifier in 16-input blocks keeps too few blocks per class).")
flags.DEFINE_list("sparsities", ["80", "90", "95", "97", "99"], "Percents k.")
flags.DEFINE_list("variants", ["float+sparse", "int8+sparse", "dynamic+sparse"], "TFLite variants of pruned models.")
flags.DEFINE_list("threads", ["1", "4"], "LiteRT thread counts timed.")
flags.DEFINE_integer("eval_images", 2000, "Test images verifying each export (accuracy: all 10,000 in Keras).",
                     lower_bound=1)
flags.DEFINE_integer("representative_size", 300, "Training images calibrating int8 variants.", lower_bound=1)
flags.DEFINE_integer("bench_runs", 200, "Timed single-image runs per file, API and thread count.", lower_bound=1)
flags.DEFINE_integer("bench_warmup", 20, "Untimed runs before timing.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed of the subsets and the fine-tuning.")
flags.DEFINE_string("output_dir", "docs/results/bench_blocks", "Folder for results.md and results.json.")
flags.DEFINE_bool("litert_benchmark", True, "Also time every file with the litert-benchmark command.")
cli.register_list_validator("sparsities", lambda v: config.check_percents(v, "--sparsities"))
REFERENCES = ("float", "dynamic", "int8")
TARGETS = (  # (text, (method, k, variant), reference variant of the dense row, minimum speedup)
    ("block_1x4 float 90 % >= 2x faster than dense float", ("block_1x4", 90.0, "float+sparse"), "float", 2.0),
    ("block_1x4 float 95 % >= 3x faster than dense float", ("block_1x4", 95.0, "float+sparse"), "float", 3.0),
    ("block_1x4 float 99 % >= 8x faster than dense float", ("block_1x4", 99.0, "float+sparse"), "float", 8.0),
    ("block_1x16 int8 95 % faster than dense int8", ("block_1x16", 95.0, "int8+sparse"), "int8", 1.0),
)


def litert_benchmark(model_bytes, threads):
    """``litert-benchmark``'s median ms for the file (None when the command fails or is missing)."""
    command = os.path.join(os.path.dirname(sys.executable), "litert-benchmark")
    with tempfile.TemporaryDirectory() as folder:
        path, result = os.path.join(folder, "model.tflite"), os.path.join(folder, "result.json")
        with open(path, "wb") as f:
            f.write(model_bytes)
        run = subprocess.run([command, "--model", path, "--num_threads", str(threads), "--num_runs",
                              str(FLAGS.bench_runs), "--warmup_runs", str(FLAGS.bench_warmup), "--result_json",
                              result], capture_output=True, text=True, check=False)
        if run.returncode or not os.path.exists(result):
            return None
        with open(result) as f:
            return json.load(f)["latency"]["median_ms"]


def timings(model_bytes):
    """{threads: {"interpreter", "compiled_model", "litert_benchmark"}} median milliseconds."""
    out = {}
    for threads in (int(t) for t in FLAGS.threads):
        out[threads] = {
            "interpreter": export.benchmark_tflite(model_bytes, threads, FLAGS.bench_runs, FLAGS.bench_warmup)[
                "median_ms"],
            "compiled_model": compiled.benchmark_compiled(model_bytes, threads, FLAGS.bench_runs, FLAGS.bench_warmup)[
                "median_ms"],
            "litert_benchmark": litert_benchmark(model_bytes, threads) if FLAGS.litert_benchmark else None}
    return out


def measure_row(network, method, k, model, variant, x_eval, y_eval, representative, keras_accuracy):
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:  # the verified file itself is timed, not a second conversion
        figures = export.export_variant(model, variant, x_eval, y_eval, representative, bench_runs=1,
                                        bench_warmup=0, out_dir=folder)
        with open(os.path.join(folder, "model.tflite"), "rb") as f:
            model_bytes = f.read()
    row = dict(network=network, method=method, k=k, variant=variant, size_bytes=figures["size_bytes"],
               accuracy=figures["accuracy"], keras_accuracy=keras_accuracy, apis=figures["apis"],
               kernels=figures["kernels"], sparsity=figures["sparsity"], latency=timings(model_bytes))
    one = row["latency"][int(FLAGS.threads[0])]
    print(f"{network} {method} k={k:g} {variant}: {row['size_bytes'] / 1024:,.1f} KiB, acc {100 * row['accuracy']:.2f}"
          f" %, {one['interpreter']:.4f} ms (CompiledModel {one['compiled_model']:.4f}, litert-benchmark "
          f"{one['litert_benchmark']}), {row['kernels']}, {row['apis']} ({time.perf_counter() - start:.0f} s)",
          flush=True)
    return row


def keras_accuracy(model, x, y):
    return float((model.predict(x, batch_size=1024, verbose=0).argmax(1) == y).mean())


def run_network(network, datasets, x_eval, y_eval, representative):
    (x_train, y_train), (x_test, y_test) = datasets
    base = tfprune.train_baseline(network, FLAGS.dataset, epochs=FLAGS.epochs, datasets=datasets, verbose=2)
    print(f"{network}: {FLAGS.epochs} epoch(s), test accuracy {100 * base.test_accuracy:.2f} %", flush=True)
    rows = [measure_row(network, "dense", 0.0, base.model, variant, x_eval, y_eval, representative,
                        base.test_accuracy) for variant in REFERENCES]
    finetune = config.FineTune(epochs=FLAGS.finetune_epochs, schedule="polynomial", verbose=0,
                               end_fraction=FLAGS.end_fraction)
    layers = FLAGS.layers or pruning.default_layers(pruning.make_prunable(base.model), "unit")  # not the outputs
    for method in FLAGS.methods:
        for k in config.check_percents(FLAGS.sparsities, "--sparsities"):
            model = experiment.pruned_copy(base.model, method, k, x_train, y_train, finetune, layers=list(layers),
                                           seed=FLAGS.seed)
            accuracy = keras_accuracy(model, x_test, y_test)
            rows += [measure_row(network, method, k, model, variant, x_eval, y_eval, representative, accuracy)
                     for variant in FLAGS.variants]
    return rows


def _ms(value):
    return "" if value is None else f"{value:.4f}" if value < 0.1 else f"{value:.3f}"


def table(rows):
    threads = [int(t) for t in FLAGS.threads]
    head = ["network", "method", "k %", "variant", "Keras acc %", "TFLite acc %", "file KiB"]
    for t in threads:
        head += [f"{t}T Interp ms", f"{t}T Compiled ms", f"{t}T litert-bench ms", f"{t}T x vs dense float"]
    head += ["kernels", "APIs"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---|" + "---:|" * (len(head) - 6) + "---|---|"]
    dense = {(r["network"], r["variant"]): r for r in rows if r["method"] == "dense"}
    for r in rows:
        cells = [r["network"], r["method"], f"{r['k']:g}", r["variant"], f"{100 * r['keras_accuracy']:.2f}",
                 f"{100 * r['accuracy']:.2f}", f"{r['size_bytes'] / 1024:,.1f}"]
        for t in threads:
            lat, ref = r["latency"][t], dense[(r["network"], "float")]["latency"][t]
            cells += [_ms(lat["interpreter"]), _ms(lat["compiled_model"]), _ms(lat["litert_benchmark"]),
                      f"{ref['interpreter'] / lat['interpreter']:.1f}"]
        cells += [r["kernels"], "both" if r["apis"] == "interpreter,compiled_model" else r["apis"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows):
    by_key = {(r["network"], r["method"], r["k"], r["variant"]): r for r in rows}
    lines = []
    for text, (method, k, variant), reference, minimum in TARGETS:
        row, ref = by_key.get(("fc_1000", method, k, variant)), by_key.get(("fc_1000", "dense", 0.0, reference))
        if row is None or ref is None:
            lines.append(f"{text}: not measured in this run")
            continue
        first = int(FLAGS.threads[0])
        ratios = {api: ref["latency"][first][api] / row["latency"][first][api]
                  for api in ("interpreter", "compiled_model", "litert_benchmark")
                  if row["latency"][first][api] and ref["latency"][first][api]}
        met = ratios["interpreter"] > minimum if minimum == 1.0 else ratios["interpreter"] >= minimum
        lines.append(f"{text}: {'met' if met else 'NOT met'}, " + ", ".join(
            f"{api} {ratio:.1f}x" for api, ratio in ratios.items()))
    for network in FLAGS.models:
        for k in (90.0, 95.0):
            unstructured = by_key.get((network, "weight", k, "float+sparse"))
            for method in ("block_1x4", "block_1x16"):
                block = by_key.get((network, method, k, "float+sparse"))
                if unstructured and block:
                    gap = 100 * (unstructured["keras_accuracy"] - block["keras_accuracy"])
                    lines.append(f"{network} {method} at {k:g} %: accuracy {100 * block['keras_accuracy']:.2f} % vs "
                                 f"unstructured {100 * unstructured['keras_accuracy']:.2f} % ({gap:+.2f} points "
                                 f"behind; target within 0.5: {'met' if gap <= 0.5 else 'NOT met'})")
    return lines


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for method in FLAGS.methods:
        if method != "weight" and not method.startswith("block_"):
            raise app.UsageError(f"--methods: {method!r} is not weight or a block method")
    for variant in FLAGS.variants:
        export.parse_variant(variant)
    logging.set_verbosity(logging.WARNING)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    command = " ".join(["python scripts/bench_blocks.py"] + [shlex.quote(a) for a in sys.argv[1:]])
    datasets = data.load_dataset(FLAGS.dataset, FLAGS.data_dir)
    (x_train, _), (x_test, y_test) = datasets
    x_eval, y_eval = data.take((x_test, y_test), FLAGS.eval_images, FLAGS.seed)
    representative = data.take((x_train, x_train), FLAGS.representative_size, FLAGS.seed)[0]
    rows = []
    for network in FLAGS.models:
        rows += run_network(network, datasets, x_eval, y_eval, representative)
    goal_lines = targets(rows)
    setup = (f"{FLAGS.dataset}; baselines {FLAGS.epochs} epochs; each pruned model fine-tuned {FLAGS.finetune_epochs} "
             f"epoch(s) while its sparsity ramps up (PolynomialDecay to k at {100 * FLAGS.end_fraction:g} % of the "
             "steps, batch 128, Adam 1e-3), "
             f"layers pruned: {', '.join(FLAGS.layers) if FLAGS.layers else 'all but the classifier'}; Keras "
             "accuracy on all 10,000 test images, TFLite accuracy on "
             f"{len(x_eval)} of them (Interpreter); latency: single image, median of {FLAGS.bench_runs} runs after "
             f"{FLAGS.bench_warmup}, on {os.cpu_count()} CPU core(s) (the 4-thread figures on a 2-core machine are "
             f"bounded by the cores); tfprune {tfprune.__version__}")
    markdown = "\n".join(["# Where sparsity pays: unstructured vs block pruning in LiteRT", "", "Produced by:", "",
                          "```sh", command, "```", "", setup + ".", "", table(rows), ""]
                         + [f"- {line}" for line in goal_lines] + [""])
    io_utils.write_text_atomic(os.path.join(FLAGS.output_dir, "results.md"), markdown)
    io_utils.write_json_atomic(os.path.join(FLAGS.output_dir, "results.json"),
                               {"command": command, "setup": setup, "rows": rows, "targets": goal_lines})
    print("\n".join([""] + goal_lines + [f"wrote {FLAGS.output_dir}/results.md and results.json"]))


if __name__ == "__main__":
    cli.run(main)
