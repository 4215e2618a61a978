"""Group pruning on keras.applications models: parameters, MACs and LiteRT latency of the shrunk model vs dense.

    scripts/bench.sh groups                                   # ResNet50, MobileNetV2, EfficientNetB0, DenseNet121
    scripts/bench.sh groups --models=ResNet50,MobileNetV2 --size=64 --threads=1,4

Builds each model (``weights=None``, ``--size``×``--size``×3 inputs, 10 classes, logits), makes it prunable,
group-prunes it one-shot at ``--sparsity`` % (``tfprune.prune(method="group")``: every coupled channel group loses
that share of its channels), strips and shrinks it, and checks the shrunk model against the masked one on real
Fashion-MNIST test images padded to 32×32, repeated to 3 channels and enlarged to ``--size`` (largest absolute
logit difference). Both models are converted to float TFLite and timed side by side in one run: LiteRT's
Interpreter (XNNPACK), single images, the median of ``--repeats`` interleaved invocations after ``--warmup``, at each
of ``--threads``; and, as an independent check, LiteRT's own ``litert-benchmark`` (CompiledModel API) on the same
files. The machine's CPU count is printed: threads beyond it share cores.

Targets (issue 16): ResNet50's parameters and MACs <= 30 % of dense; the shrunk ResNet50 >= 3x and MobileNetV2
>= 2x faster than dense.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

import tfprune
from tfprune import stacks
from tfprune import tflite as export
from tfprune.experiments import models
from tfprune.experiments.data import builtin as data

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121"],
                  "keras.applications models.")
flags.DEFINE_integer("size", 64, "Input side in pixels.", lower_bound=32)
flags.DEFINE_float("sparsity", 50.0, "Percent of every group's channels pruned.", lower_bound=0, upper_bound=99)
flags.DEFINE_float("mobilenet_alpha", 1.0, "MobileNetV2's width multiplier.")
flags.DEFINE_list("threads", ["1", "4"], "LiteRT thread counts.")
flags.DEFINE_integer("repeats", 40, "Timed single-image invocations per model and thread count.", lower_bound=5)
flags.DEFINE_integer("warmup", 5, "Untimed invocations first.", lower_bound=0)
flags.DEFINE_integer("check_images", 16, "Real test images the shrunk model is checked on.", lower_bound=1)
flags.DEFINE_enum("keras", "3", ["2", "3"], "Keras stack the models are built in.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST folder (default: the usual search).")


def _images(size, count):
    (_, _), (x, _) = data.load_dataset("fashion_mnist", FLAGS.data_dir)
    x = np.pad(x[:count], ((0, 0), (2, 2), (2, 2)))[..., None].repeat(3, axis=-1) * 255.0
    scale = -(-size // 32)
    return np.repeat(np.repeat(x, scale, axis=1), scale, axis=2)[:, :size, :size].astype(np.float32)


class Runner:
    """A LiteRT interpreter for one float TFLite model, single images."""

    def __init__(self, content, threads):
        self.interpreter, self.info = export.load_interpreter(content, batch=1, num_threads=threads)
        self.input = self.interpreter.get_input_details()[0]["index"]

    def timed(self, image):
        self.interpreter.set_tensor(self.input, image[None])
        start = time.perf_counter()
        self.interpreter.invoke()
        return time.perf_counter() - start


def interleaved(runners, images):
    """Median seconds per invoke of each runner, alternating which goes first."""
    for i in range(FLAGS.warmup):
        for run in runners:
            run.timed(images[i % len(images)])
    times = [[] for _ in runners]
    for i in range(FLAGS.repeats):
        for j in (range(len(runners)) if i % 2 == 0 else reversed(range(len(runners)))):
            times[j].append(runners[j].timed(images[i % len(images)]))
    return [statistics.median(t) for t in times]


def litert_benchmark(path, threads):
    """Median milliseconds per run from ``litert-benchmark`` (CompiledModel API), or None when it fails."""
    tool = os.path.join(os.path.dirname(sys.executable), "litert-benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        proc = subprocess.run([tool, "--model", path, "--num_threads", str(threads), "--num_runs",
                               str(FLAGS.repeats), "--warmup_runs", str(FLAGS.warmup), "--result_json", result],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not os.path.exists(result):
            print(f"litert-benchmark failed on {path}: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
            return None
        with open(result) as f:
            report = json.load(f)
    return float(report["latency"]["median_ms"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    stack = stacks.by_version(FLAGS.keras)
    images = _images(FLAGS.size, FLAGS.check_images)
    threads = [int(t) for t in FLAGS.threads]
    rows = []
    for name in FLAGS.models:
        options = {"alpha": FLAGS.mobilenet_alpha} if name == "MobileNetV2" else {}
        stack.set_random_seed(0)
        model = getattr(stack.keras.applications, name)(weights=None, input_shape=(FLAGS.size, FLAGS.size, 3),
                                                        classes=10, classifier_activation=None, **options)
        models.calibrate_batchnorm(model, images)  # untrained: BatchNorm statistics of real images, so the
        start = time.perf_counter()  # logits are not ~0 and the check below means something
        pruned = tfprune.strip(tfprune.prune(tfprune.make_prunable(model), FLAGS.sparsity / 100, "group"))
        result = tfprune.shrink(pruned)
        seconds = time.perf_counter() - start
        logits = stack.to_numpy(pruned(images))
        diff = float(np.abs(stack.to_numpy(result.model(images)) - logits).max() / np.abs(logits).max())
        report = result.report
        with tempfile.TemporaryDirectory() as tmp:
            blobs = [export.to_tflite(pruned), export.to_tflite(result.model)]
            paths = [os.path.join(tmp, f"{which}.tflite") for which in ("dense", "shrunk")]
            for path, blob in zip(paths, blobs):
                with open(path, "wb") as f:
                    f.write(blob)
            latency = {t: interleaved([Runner(b, t) for b in blobs], images) for t in threads}
            tool = {t: [litert_benchmark(p, t) for p in paths] for t in threads}
        rows.append((name, report, [len(b) for b in blobs], latency, tool, diff))
        print(f"{name}: pruned and shrunk in {seconds:.0f} s, max |logit diff| / max |logit| {diff:.1e}, params "
              f"{report.params_before:,} -> {report.params_after:,}", flush=True)

    print(f"\ngroup pruning at {FLAGS.sparsity:g} %, {FLAGS.size}x{FLAGS.size}x3 inputs, {stack.label}, float TFLite; "
          f"LiteRT Interpreter (XNNPACK) median of {FLAGS.repeats} interleaved single-image invokes after "
          f"{FLAGS.warmup} warm-up; litert-benchmark (CompiledModel) median of {FLAGS.repeats} runs; "
          f"{os.cpu_count()} CPUs")
    header = f"{'model':<16}{'params':>9}{'MACs':>8}{'file':>8}"
    for t in threads:
        header += f"{f'dense ms {t}T':>13}{f'shrunk ms {t}T':>15}{'speed-up':>9}{'litert-bench':>13}"
    print(header + f"{'rel. diff':>11}")
    for name, report, sizes, latency, tool, diff in rows:
        line = (f"{name:<16}{report.params_after / report.params_before:>8.1%}{report.macs_after / report.macs_before:>8.1%}"
                f"{sizes[1] / sizes[0]:>8.1%}")
        for t in threads:
            (dense, shrunk), (t0, t1) = latency[t], tool[t]
            check = f"{t0 / t1:.2f}x" if t0 and t1 else "failed"
            line += f"{dense * 1e3:>13.2f}{shrunk * 1e3:>15.2f}{dense / shrunk:>8.2f}x{check:>13}"
        print(line + f"{diff:>11.1e}")
    targets = {"ResNet50": 3.0, "MobileNetV2": 2.0}
    for name, report, _, latency, _, _ in rows:
        if name in targets:
            speedups = {t: latency[t][0] / latency[t][1] for t in threads}
            met = all(s >= targets[name] for s in speedups.values())
            extra = ""
            if name == "ResNet50":
                share = max(report.params_after / report.params_before, report.macs_after / report.macs_before)
                met = met and share <= 0.30
                extra = f", params/MACs at most {share:.1%} of dense (target <= 30 %)"
            print(f"target {name} >= {targets[name]:g}x faster at every thread count{extra}: "
                  f"{'met' if met else 'NOT met'} ({', '.join(f'{t}T {s:.2f}x' for t, s in speedups.items())})")


if __name__ == "__main__":
    app.run(main)
