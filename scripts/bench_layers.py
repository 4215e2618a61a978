"""Per-epoch training cost of prunable layers vs plain Dense vs TF-MOT's wrapper, measured side by side.

    scripts/bench.sh layers            # or: .venv/bin/python scripts/bench_layers.py --repeats=5

Trains fc_1000 (batch 128) on real Fashion-MNIST: one epoch of each variant in turn (interleaved, and in reverse
order every other round, so a slow-down of the machine hits all three alike), ``--repeats`` rounds. Prints the
median per-epoch times and, per pair, the median of the per-round ratios (each round's variants ran back to back,
so this ratio cancels the drift of a shared machine): prunable/plain (target <= 1.10) and TF-MOT/plain.
"""

import statistics
import time

from absl import app
from absl import flags

import tfprune  # noqa: F401
from tfprune import callbacks, distribute, pruning
from tfprune.experiments import models
from tfprune.experiments.data import builtin as data
from tfprune._env import keras
import tensorflow_model_optimization as tfmot

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 11, "Interleaved rounds (one epoch of each variant per round).", lower_bound=1)
flags.DEFINE_integer("train_size", 15000, "Training images per epoch (real Fashion-MNIST).", lower_bound=128)
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
flags.DEFINE_string("model", "fc_1000", "Reference model.")
flags.DEFINE_string("data_dir", None, "Dataset folder (see tfprune.load_dataset).")
flags.DEFINE_integer("threads", 1, "TensorFlow CPU threads (0: its default, every core). 1 by default: on the 2-vCPU "
                     "machine these numbers come from, two-thread epochs alternate between two speeds ~1.5x apart.",
                     lower_bound=0)


def _variants(model_name):
    keras.utils.set_random_seed(0)
    plain = models.compile_model(models.build(model_name))
    prunable = models.compile_model(pruning.make_prunable(plain))
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.9, begin_step=0, frequency=100)
    wrapped = models.compile_model(tfmot.sparsity.keras.prune_low_magnitude(plain, pruning_schedule=schedule))
    return {
        "plain Dense": (plain, []),
        "tfprune PrunableDense": (prunable, [callbacks.RankPruning("weight", schedule)]),
        "TF-MOT prune_low_magnitude": (wrapped, [tfmot.sparsity.keras.UpdatePruningStep()]),
    }


def main(argv):
    del argv
    distribute.set_threads(FLAGS.threads)  # before any TensorFlow op
    (x, y), _ = data.load_dataset("fashion_mnist", FLAGS.data_dir)
    x, y = data.take((x, y), FLAGS.train_size)
    variants = _variants(FLAGS.model)
    times = {name: [] for name in variants}
    for name, (model, cbs) in variants.items():  # warm-up: tracing and first-epoch allocation are not measured
        model.fit(x[:1024], y[:1024], batch_size=FLAGS.batch_size, epochs=1, verbose=0, callbacks=cbs)
    names = list(variants)
    for round_ in range(FLAGS.repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            model, cbs = variants[name]
            start = time.perf_counter()
            model.fit(x, y, batch_size=FLAGS.batch_size, epochs=1, verbose=0, callbacks=cbs)
            times[name].append(time.perf_counter() - start)
        print(f"round {round_ + 1}/{FLAGS.repeats}: " +
              ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
    median = {name: statistics.median(t) for name, t in times.items()}

    def paired(a, b):  # median over rounds of time(a) / time(b), both measured in the same round
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    plain, ours, tfmot_ = "plain Dense", "tfprune PrunableDense", "TF-MOT prune_low_magnitude"
    threads = FLAGS.threads or "default"
    print(f"\n{FLAGS.model}, batch {FLAGS.batch_size}, {len(x)} images/epoch, {FLAGS.repeats} interleaved rounds, "
          f"TensorFlow threads: {threads}")
    for name, seconds in median.items():
        print(f"  {name:<28} median {seconds:7.2f} s/epoch   paired ratio to plain {paired(name, plain):5.3f}x")
    ratio = paired(ours, plain)
    print(f"prunable/plain = {ratio:.3f} (target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'}); "
          f"TF-MOT/plain = {paired(tfmot_, plain):.3f}; TF-MOT/prunable = {paired(tfmot_, ours):.3f} "
          f"(medians of per-round ratios; ratio of medians: {median[ours] / median[plain]:.3f}, "
          f"{median[tfmot_] / median[plain]:.3f}, {median[tfmot_] / median[ours]:.3f})")


if __name__ == "__main__":
    app.run(main)
