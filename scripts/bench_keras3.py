"""Keras 3 targets, measured side by side: masked training cost per backend, and accuracy against tf_keras.

    scripts/bench.sh keras3                   # both parts (about 15 minutes on 2 CPU cores)
    scripts/bench.sh keras3 --part=speed      # per-epoch cost only
    scripts/bench.sh keras3 --part=accuracy   # Keras 3 vs tf_keras accuracy only

``speed``: fc_1000 (batch 128) on real Fashion-MNIST, one epoch of plain Keras 3 ``Dense`` and one of tfprune's
Keras 3 ``PrunableDense`` (with ``RankPruning`` on a ConstantSparsity schedule, as ``bench_layers.py`` does for
tf_keras), interleaved and in reverse order every other round, ``--repeats`` rounds, in one child process per
backend (TensorFlow and JAX; PyTorch when installed). Prints the median of the per-round ratios prunable/plain
(targets: <= 1.05 on TensorFlow, <= 1.10 on JAX).

``accuracy``: the same sweep (``tfprune.experiments.run_sweep``) of fc_1000 on Fashion-MNIST built in tf_keras and
in Keras 3: a 10-epoch baseline, then weight pruning of every layer ramped to 90 % and 95 % on TF-MOT's
PolynomialDecay over 2 fine-tune epochs, same seed. Prints both accuracies and their difference (target: within
0.5 points) and writes the two sweeps under ``--output_dir``.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("part", "all", ["all", "speed", "accuracy"], "Which measurement to run.")
flags.DEFINE_integer("repeats", 11, "Interleaved rounds of the speed part.", lower_bound=1)
flags.DEFINE_integer("train_size", 15000, "Training images per epoch of the speed part.", lower_bound=128)
flags.DEFINE_string("data_dir", None, "Dataset folder (see tfprune.load_dataset).")
flags.DEFINE_string("output_dir", "docs/results/keras3_fc1000", "Folder of the accuracy part's two sweeps.")
flags.DEFINE_string("child_backend", None, "Internal: run the speed part in this process on this backend.")

TARGETS = {"tensorflow": 1.05, "jax": 1.10, "torch": None}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


def _speed_child():
    """Times plain vs prunable Keras 3 epochs in this process (its backend is ``KERAS_BACKEND``); prints JSON."""
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
    from tfprune import callbacks, distribute, pruning  # pylint: disable=g-import-not-at-top
    from tfprune.experiments import models  # pylint: disable=g-import-not-at-top
    from tfprune.experiments.data import builtin as data
    from tfprune._env import keras3  # pylint: disable=g-import-not-at-top
    distribute.set_threads(1)
    (x, y), _ = data.load_dataset("fashion_mnist", FLAGS.data_dir)
    x, y = data.take((x, y), FLAGS.train_size)
    keras3.utils.set_random_seed(0)
    plain = models.compile_model(models.build("fc_1000", keras="3"))
    prunable = models.compile_model(pruning.make_prunable(plain))
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.9, begin_step=0, frequency=100)
    variants = {"plain": (plain, []), "prunable": (prunable, [callbacks.RankPruning("weight", schedule)])}
    for model, cbs in variants.values():  # warm-up: tracing and first-epoch allocation are not measured
        model.fit(x[:1024], y[:1024], batch_size=128, epochs=1, verbose=0, callbacks=cbs)
    times = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(FLAGS.repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            model, cbs = variants[name]
            start = time.perf_counter()
            model.fit(x, y, batch_size=128, epochs=1, verbose=0, callbacks=cbs)
            times[name].append(time.perf_counter() - start)
        print(f"  round {round_ + 1}/{FLAGS.repeats}: plain {times['plain'][-1]:.2f} s, prunable "
              f"{times['prunable'][-1]:.2f} s", file=sys.stderr, flush=True)
    print(json.dumps({"backend": keras3.backend.backend(), "times": times, "images": len(x)}))


def _speed():
    import importlib.util  # pylint: disable=g-import-not-at-top
    backends = ["tensorflow", "jax"] + (["torch"] if importlib.util.find_spec("torch") else [])
    lines = []
    for backend in backends:
        if importlib.util.find_spec(backend if backend != "tensorflow" else "tensorflow") is None:
            continue
        print(f"{backend}: timing plain vs prunable Keras 3 epochs", flush=True)
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **ONE_THREAD)
        proc = subprocess.run([sys.executable, __file__, f"--child_backend={backend}", f"--repeats={FLAGS.repeats}",
                               f"--train_size={FLAGS.train_size}"] +
                              ([f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else []),
                              stdout=subprocess.PIPE, text=True, env=env, check=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        t = result["times"]
        ratio = statistics.median(a / b for a, b in zip(t["prunable"], t["plain"]))
        target = TARGETS.get(backend)
        verdict = "" if target is None else f" (target <= {target:.2f}: {'met' if ratio <= target else 'NOT met'})"
        lines.append(f"  Keras 3 on {result['backend']:<10} plain {statistics.median(t['plain']):6.2f} s/epoch, "
                     f"prunable {statistics.median(t['prunable']):6.2f} s/epoch, paired ratio {ratio:.3f}x{verdict}")
    print(f"\nfc_1000, batch 128, {FLAGS.train_size} images/epoch, {FLAGS.repeats} interleaved rounds per backend, "
          "one thread; median of per-round ratios prunable/plain:")
    print("\n".join(lines))


def _accuracy():
    # pylint: disable=g-import-not-at-top
    from tfprune.experiments import BaselineConfig, FineTune, SweepConfig, run_sweep
    finetune = FineTune(epochs=2, schedule="polynomial", end_fraction=0.7, frequency=100, verbose=0)
    found = {}
    for keras in ("2", "3"):
        base = BaselineConfig(dataset="fashion_mnist", data_dir=FLAGS.data_dir, model="fc_1000", train_epochs=10,
                              keras=keras, verbose=0)
        out = os.path.join(FLAGS.output_dir, f"keras{keras}")
        result = run_sweep(SweepConfig(out, base, methods=("weight",), sparsities=(90, 95), finetune=finetune,
                                       resume=True),
                           command=f"python scripts/bench_keras3.py --part=accuracy (keras={keras})",
                           report=lambda line: print(f"  [keras {keras}] {line}", flush=True) if line.startswith(
                               ("[", "baseline")) else None)
        found[keras] = {p.k: p for p in result.points}
    print("\nfc_1000 on Fashion-MNIST, weight pruning of every layer, PolynomialDecay over 2 fine-tune epochs:")
    for k in (90.0, 95.0):
        a, b = found["2"][k], found["3"][k]
        diff = 100 * (b.test_accuracy - a.test_accuracy)
        print(f"  k = {k:g} %: tf_keras {100 * a.test_accuracy:.2f} % ({a.keras}), Keras 3 {100 * b.test_accuracy:.2f} "
              f"% ({b.keras}), difference {diff:+.2f} points (target within 0.5: "
              f"{'met' if abs(diff) <= 0.5 else 'NOT met'})")


def main(argv):
    del argv
    if FLAGS.child_backend:
        return _speed_child()
    if FLAGS.part in ("all", "speed"):
        _speed()
    if FLAGS.part in ("all", "accuracy"):
        _accuracy()
    return None


if __name__ == "__main__":
    app.run(main)
