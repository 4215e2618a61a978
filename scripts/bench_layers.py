"""Per-epoch training cost of prunable layers vs plain Dense vs TF-MOT's wrapper, measured side by side.

    scripts/bench.sh layers            # or: .venv/bin/python scripts/bench_layers.py --repeats=5

Trains fc_1000 (batch 128) on real Fashion-MNIST: one epoch of each variant in turn (interleaved, so a
slow-down of the machine hits all three alike), ``--repeats`` rounds, and prints the median per-epoch times and
the ratios prunable/plain (target <= 1.10) and TF-MOT/plain.
"""

import statistics
import time

from absl import app
from absl import flags

import tfprune  # noqa: F401
from tfprune import callbacks, data, models, pruning
from tfprune._env import keras
import tensorflow_model_optimization as tfmot

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Interleaved rounds (one epoch of each variant per round).", lower_bound=1)
flags.DEFINE_integer("train_size", 30000, "Training images per epoch (real Fashion-MNIST).", lower_bound=128)
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
flags.DEFINE_string("model", "fc_1000", "Reference model.")
flags.DEFINE_string("data_dir", None, "Dataset folder (see tfprune.load_dataset).")


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
    (x, y), _ = data.load_dataset("fashion_mnist", FLAGS.data_dir)
    x, y = data.take((x, y), FLAGS.train_size)
    variants = _variants(FLAGS.model)
    times = {name: [] for name in variants}
    for name, (model, cbs) in variants.items():  # warm-up: tracing and first-epoch allocation are not measured
        model.fit(x[:1024], y[:1024], batch_size=FLAGS.batch_size, epochs=1, verbose=0, callbacks=cbs)
    for round_ in range(FLAGS.repeats):
        for name, (model, cbs) in variants.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=FLAGS.batch_size, epochs=1, verbose=0, callbacks=cbs)
            times[name].append(time.perf_counter() - start)
        print(f"round {round_ + 1}/{FLAGS.repeats}: " +
              ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
    median = {name: statistics.median(t) for name, t in times.items()}
    plain = median["plain Dense"]
    print(f"\n{FLAGS.model}, batch {FLAGS.batch_size}, {len(x)} images/epoch, median of {FLAGS.repeats} "
          "interleaved epochs")
    for name, seconds in median.items():
        print(f"  {name:<28} {seconds:7.2f} s/epoch   ratio to plain {seconds / plain:5.2f}x")
    ratio = median["tfprune PrunableDense"] / plain
    print(f"prunable/plain = {ratio:.3f} (target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'}); "
          f"TF-MOT/plain = {median['TF-MOT prune_low_magnitude'] / plain:.3f}; "
          f"TF-MOT/prunable = {median['TF-MOT prune_low_magnitude'] / median['tfprune PrunableDense']:.3f}")


if __name__ == "__main__":
    app.run(main)
