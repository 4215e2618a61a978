"""What the calibration methods cost, measured side by side with evaluations of the same model in one run.

    scripts/bench.sh calibration                        # fc_1000 on Fashion-MNIST (the sweeps' cached baseline)
    scripts/bench.sh calibration --model=resnet50       # keras.applications ResNet50 (weights=None), 64x64 inputs

For each statistic (``input_sq``: Wanda; ``gram``: SparseGPT and the refit; ``grad_sq``: Taylor) it times one
collection over ``--calibration_size`` training images of every prunable layer, and beside it, in alternation,
``model.evaluate`` on the same images (``--repeats`` rounds, medians): the issue's target is statistics collection
<= 3 evaluations' time. Then it times one-shot ``sparsegpt`` of the selected layers at ``--sparsity`` (targets:
fc_1000 <= 60 s, ResNet50 <= 15 min on this 2-core CPU) and prints the test accuracy it leaves (fc_1000) or the
relative output error on the calibration images (ResNet50, untrained: only the cost is meaningful).
"""

import statistics as stats_lib
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

import tfprune
from tfprune import pruning
from tfprune.calibration import data as calibration_data
from tfprune.calibration import reconstruction
from tfprune.calibration import statistics
from tfprune.experiments.baseline import train_baseline
from tfprune.experiments.data import builtin as data
from tfprune.experiments.data import dataset as dataset_lib
from tfprune.layers import registry
from tfprune._env import keras

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "fc_1000", ["fc_1000", "resnet50"], "fc_1000 (the sweeps' cached 10-epoch baseline on "
                  "Fashion-MNIST) or an untrained keras.applications ResNet50 at 64x64 (cost only).")
flags.DEFINE_integer("calibration_size", 1024, "Training images the statistics read.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Calibration batch size.", lower_bound=1)
flags.DEFINE_integer("repeats", 3, "Alternating rounds of (collection, evaluation) per statistic.", lower_bound=1)
flags.DEFINE_float("sparsity", 0.9, "Fraction sparsegpt prunes (ResNet50: 0.5).", lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_string("data_dir", None, "Dataset folder (see tfprune.load_dataset).")


def _fc_1000():
    datasets = data.load_dataset("fashion_mnist", FLAGS.data_dir)
    model = train_baseline("fc_1000", "fashion_mnist", epochs=10, datasets=datasets, verbose=0).model
    (x, y), test = datasets
    x, y = dataset_lib.ArraySplit(x, y).take(FLAGS.calibration_size, 0)
    return model, x, y, test, {f"fc{i}": FLAGS.sparsity for i in range(1, 5)}


def _resnet50():
    (x, y), _ = data.load_dataset("fashion_mnist", FLAGS.data_dir)
    x, y = dataset_lib.ArraySplit(x, y).take(FLAGS.calibration_size, 0)
    images = np.repeat(np.pad(x, ((0, 0), (18, 18), (18, 18)))[..., None], 3, axis=-1).astype("float32")  # 64x64x3
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    kinds = statistics.KINDS
    layers = [l.name for l in model.layers if registry.kind_of(l) is not None and registry.kind_of(l).name in kinds]
    return model, images, y, None, {name: FLAGS.sparsity for name in layers}


def _median_seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    model, x, y, test, plan = _fc_1000() if FLAGS.model == "fc_1000" else _resnet50()
    prunable = pruning.make_prunable(model)
    prunable.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    layers = [prunable.get_layer(name) for name in plan]
    calibration = calibration_data.Calibration(x, y, FLAGS.batch_size)
    weights = sum(registry.effective_kernel(l).size for l in layers)
    print(f"{FLAGS.model}: {len(layers)} layers, {weights:,} weights; {len(x)} calibration images, batch "
          f"{FLAGS.batch_size}; {FLAGS.repeats} alternating rounds (medians)")
    print(f"{'statistic':<12}{'collection s':>14}{'evaluate s':>12}{'ratio':>8}  (target <= 3)")
    for name in ("input_sq", "gram", "grad_sq"):
        collect, evaluate = [], []
        for _ in range(FLAGS.repeats):
            collect.append(_median_seconds(lambda: statistics.collect(prunable, layers, [name], calibration, "bench")))
            evaluate.append(_median_seconds(lambda: prunable.evaluate(x, y, batch_size=FLAGS.batch_size, verbose=0)))
        c, e = stats_lib.median(collect), stats_lib.median(evaluate)
        print(f"{name:<12}{c:>14.2f}{e:>12.2f}{c / e:>8.2f}", flush=True)
    dense_outputs = np.asarray(prunable.predict(x, batch_size=256, verbose=0))
    start = time.perf_counter()
    reconstruction.sparsegpt(prunable, plan, calibration,
                             progress=lambda layer, done, total: print(f"  sparsegpt {done}/{total} {layer} "
                                                                       f"{time.perf_counter() - start:.1f} s",
                                                                       flush=True) if total > 10 and done % 10 == 0
                             else None)
    seconds = time.perf_counter() - start
    report = tfprune.sparsity_report(prunable)
    print(f"sparsegpt at {FLAGS.sparsity:.0%} of {len(layers)} layers: {seconds:.1f} s "
          f"(overall sparsity {tfprune.overall_sparsity(report):.2%})")
    if test is not None:
        print(f"test accuracy {100 * prunable.evaluate(*test, batch_size=1024, verbose=0)[1]:.2f} % "
              f"(dense {100 * model.evaluate(*test, batch_size=1024, verbose=0)[1]:.2f} %)")
    else:
        error = np.linalg.norm(np.asarray(prunable.predict(x, batch_size=256, verbose=0)) - dense_outputs)
        print(f"relative output error on the calibration images {error / np.linalg.norm(dense_outputs):.3f}")


if __name__ == "__main__":
    app.run(main)
