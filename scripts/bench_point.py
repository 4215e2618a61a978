"""The cost of a one-shot sweep point against one test-set evaluation, side by side in one run.

    scripts/bench.sh point                 # or: .venv/bin/python scripts/bench_point.py --rounds=7

Loads (or trains once, cached) fc_1000 on real Fashion-MNIST (10 epochs share the sweeps' cache). Each round times,
interleaved: one evaluation of the trained model on the 10,000 test images (``model.evaluate``, compiled once), a
one-shot weight point at k = 90 % as a sweep runs it (``point.run_point``: copy, prune, strip, evaluate, report,
histograms), and the same point with ``gzip_size=True``. Prints the medians and the ratios point / evaluation
(target: <= 1.5x without gzip), then one point's phases (cProfile, cumulative seconds of tfprune's own steps).
"""

import cProfile
import pstats
import statistics
import time

from absl import app
from absl import flags

import tfprune  # noqa: F401
from tfprune.experiments import point
from tfprune.experiments.data import builtin as data
from tfprune.experiments.baseline import train_baseline
from tfprune.experiments.data.dataset import as_dataset

flags.DEFINE_integer("rounds", 7, "Interleaved timed rounds (after one untimed warm-up round).", lower_bound=1)
flags.DEFINE_float("k", 90.0, "The point's percent of weights pruned.", lower_bound=0.0, upper_bound=99.99)
flags.DEFINE_string("data_dir", None, "Dataset folder (see tfprune.load_dataset).")
FLAGS = flags.FLAGS

PHASES = ("point.py:", "pruning.py:", "histograms.py:", "models.py:", "training.py:2114(evaluate)")


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv):
    del argv
    datasets = as_dataset(data.load_dataset("fashion_mnist", FLAGS.data_dir, download=False))
    base = train_baseline("fc_1000", "fashion_mnist", epochs=10, datasets=datasets, verbose=0)
    model, test = base.model, datasets.test

    def evaluation():
        model.evaluate(verbose=0, **test.eval_inputs())

    def one_shot(gzip_size=False):
        return lambda: point.run_point(model, datasets, "weight", FLAGS.k, gzip_size=gzip_size)

    runs = {"evaluation": evaluation, "point": one_shot(), "point + gzip": one_shot(True)}
    for run in runs.values():  # warm-up: traces, first allocations
        run()
    seconds = {name: [] for name in runs}
    for _ in range(FLAGS.rounds):
        for name, run in runs.items():
            seconds[name].append(_timed(run))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"fc_1000 on Fashion-MNIST, one-shot weight k={FLAGS.k:g} %, {FLAGS.rounds} interleaved rounds (medians):")
    for name, value in median.items():
        ratio = value / median["evaluation"]
        print(f"  {name:<14} {value:6.3f} s  {ratio:5.2f}x one test evaluation")
    profile = cProfile.Profile()
    profile.enable()
    one_shot()()
    profile.disable()
    print("one point's phases (cProfile, cumulative s; profiling adds overhead):")
    stats = pstats.Stats(profile)
    for (filename, line, name), row in sorted(stats.stats.items(), key=lambda item: -item[1][3]):
        where = f"{filename.rsplit('/', 1)[-1]}:{line}({name})"
        if where.startswith(PHASES) and "<" not in name and row[3] >= 0.005:
            print(f"  {row[3]:6.3f}  {where}")


if __name__ == "__main__":
    app.run(main)
