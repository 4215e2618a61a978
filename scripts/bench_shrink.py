"""Size and single-image LiteRT latency of unit-pruned fc_1000, zeroed (dense) vs physically shrunk.

    scripts/bench.sh shrink            # or: .venv/bin/python scripts/bench_shrink.py --sparsities=50,70,90

Loads (or trains once, cached) fc_1000 on real Fashion-MNIST for ``--epochs`` (10 shares the sweeps' cache),
unit-prunes every hidden layer at each sparsity k % one-shot (``tfprune.prune(method="unit")``), shrinks it
(``point_export.checked_shrink``: the shrunk Keras model must match the zeroed one on real test images), converts
both to float TFLite (``tflite.to_tflite``) and times them in one interleaved loop in LiteRT (1 thread, XNNPACK,
after warm-up). Prints per sparsity: parameters, file sizes and their ratio, median latencies and the speed-up, the
max abs difference of the two TFLite models' outputs on real test images, and the shrunk model's test accuracy.
Target: at 70 % the shrunk model is >= 5x faster and >= 6x smaller on disk.
"""

import statistics
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

import tfprune  # noqa: F401
from tfprune import pruning
from tfprune import tflite as export
from tfprune.experiments import point_export
from tfprune.experiments.data import builtin as data
from tfprune.experiments.baseline import train_baseline

FLAGS = flags.FLAGS
flags.DEFINE_list("sparsities", ["50", "70", "90"], "Unit sparsities in percent (0 <= k < 100).")
flags.DEFINE_integer("epochs", 10, "Training epochs of the (cached) fc_1000 baseline (10 shares the sweeps' cache).",
                     lower_bound=1)
flags.DEFINE_integer("repeats", 2000, "Timed single-image invocations of each model (interleaved).", lower_bound=10)
flags.DEFINE_integer("warmup", 200, "Untimed invocations of each model first.", lower_bound=0)
flags.DEFINE_integer("check_images", 1000, "Real test images whose TFLite outputs are compared.", lower_bound=1)
flags.DEFINE_string("data_dir", None, "Dataset folder (see tfprune.load_dataset).")
flags.register_validator("sparsities", lambda v: all(0 <= float(k) < 100 for k in v),
                         "every sparsity must be a percent in [0, 100)")


class Runner:
    """A LiteRT interpreter (1 thread, XNNPACK unless it fails) for one float TFLite model, single images."""

    def __init__(self, content):
        self.interpreter, self.info = export.load_interpreter(content, batch=1, num_threads=1)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]

    def __call__(self, image):
        self.interpreter.set_tensor(self.input, image[None])
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)[0]

    def timed(self, image):
        self.interpreter.set_tensor(self.input, image[None])
        start = time.perf_counter()
        self.interpreter.invoke()
        return time.perf_counter() - start


def interleaved_latency(runners, images, repeats, warmup):
    """Median invoke() seconds of each runner, alternating which goes first so drifts hit both alike."""
    for i in range(warmup):
        for run in runners:
            run(images[i % len(images)])
    times = [[] for _ in runners]
    for i in range(repeats):
        order = range(len(runners)) if i % 2 == 0 else reversed(range(len(runners)))
        for j in order:
            times[j].append(runners[j].timed(images[i % len(images)]))
    return [statistics.median(t) for t in times]


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # the TFLite converter logs every SavedModel step at INFO
    datasets = data.load_dataset("fashion_mnist", FLAGS.data_dir)
    (_, _), (x_test, y_test) = datasets
    baseline = train_baseline("fc_1000", "fashion_mnist", epochs=FLAGS.epochs, datasets=datasets, verbose=0)
    print(f"fc_1000 baseline: {FLAGS.epochs} epoch(s), test accuracy {baseline.test_accuracy:.4f} "
          f"({'cached' if baseline.from_cache else 'trained'})", flush=True)
    images = x_test[:FLAGS.check_images].astype(np.float32)
    rows = []
    for k in FLAGS.sparsities:
        dense = pruning.strip(pruning.prune(pruning.make_prunable(baseline.model), float(k) / 100, method="unit"))
        result, keras_diff = point_export.checked_shrink(dense, images)
        blobs = [export.to_tflite(dense), export.to_tflite(result.model)]
        runners = [Runner(b) for b in blobs]
        diff = max(float(np.abs(runners[0](x) - runners[1](x)).max()) for x in images)
        latency = interleaved_latency(runners, images, FLAGS.repeats, FLAGS.warmup)
        accuracy = export.evaluate_tflite(blobs[1], x_test, y_test)["accuracy"]
        rows.append((float(k), result.report.params_before, result.report.params_after, len(blobs[0]), len(blobs[1]),
                     latency[0], latency[1], diff, accuracy, "/".join(r.info["path"] for r in runners)))
        print(f"{k} % done (Keras max|diff| {keras_diff:.1e}): "
              f"{pruning_summary(result.report)}", flush=True)

    print(f"\nfc_1000 unit-pruned, float TFLite, LiteRT 1 thread, median of {FLAGS.repeats} interleaved single-image "
          f"invocations after {FLAGS.warmup} warm-up; diff over {len(images)} real test images; accuracy of the "
          f"shrunk TFLite model on all {len(x_test)} test images")
    print(f"{'sparsity':>8} {'params dense':>13} {'params shrunk':>14} {'file dense':>11} {'file shrunk':>12} "
          f"{'size x':>7} {'dense us':>9} {'shrunk us':>10} {'speed-up':>9} {'max|diff|':>10} {'test acc':>9}  path")
    for k, p0, p1, s0, s1, t0, t1, diff, acc, path in rows:
        print(f"{k:>7.0f}% {p0:>13,} {p1:>14,} {s0:>11,} {s1:>12,} {s0 / s1:>6.2f}x {t0 * 1e6:>9.1f} "
              f"{t1 * 1e6:>10.1f} {t0 / t1:>8.2f}x {diff:>10.2e} {acc:>9.4f}  {path}")
    at70 = [r for r in rows if r[0] == 70]
    if at70:
        _, _, _, s0, s1, t0, t1, _, _, _ = at70[0]
        met = t0 / t1 >= 5 and s0 / s1 >= 6
        print(f"target at 70 %: >= 5x faster and >= 6x smaller: {'met' if met else 'NOT met'} "
              f"({t0 / t1:.2f}x faster, {s0 / s1:.2f}x smaller)")


def pruning_summary(report):
    return (f"{report.units_removed:,} units removed, params {report.params_before:,} -> {report.params_after:,}, "
            f"MACs {report.macs_before:,} -> {report.macs_after:,}")


if __name__ == "__main__":
    app.run(main)
