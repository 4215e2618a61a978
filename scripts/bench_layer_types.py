"""Masked training cost of each layer type added to the registry against its plain twin, measured side by side.

    scripts/bench.sh layer_types     # Conv1D, Conv3D, DepthwiseConv2D, Embedding on tf_keras (about 6 minutes)
    scripts/bench.sh layer_types --types=Conv2DTranspose,SimpleRNN,GRU,LSTM --train_size=10000 --repeats=5
    scripts/bench.sh layer_types --train_size=10000 --repeats=5 \
        --types=SeparableConv1D,SeparableConv2D,EinsumDense,MultiHeadAttention,Bidirectional

For each type, a small classifier built around two layers of that type is trained on real Fashion-MNIST: rows as a
28-step sequence for Conv1D, SeparableConv1D, EinsumDense, MultiHeadAttention (one self-attention block, 4 heads,
between two Dense layers), the recurrent layers (64 units, the first returning its sequence) and Bidirectional LSTMs
(32 units each way); each image as a 4×7×28 volume for Conv3D; 28×28×1 images for DepthwiseConv2D, SeparableConv2D
and Conv2DTranspose; its pixels in 16 grey levels as 784 tokens for Embedding. One epoch of the plain model and one
of its ``make_prunable`` copy under ``RankPruning`` on TF-MOT's ConstantSparsity(0.9), interleaved and in reverse
order every other round, ``--repeats`` rounds, one TensorFlow thread. Prints per type the median of the per-round
ratios prunable/plain (target: <= 1.10).
"""

import statistics
import time

import numpy as np

from absl import app
from absl import flags

import tfprune  # noqa: F401
from tfprune import callbacks, distribute, pruning
from tfprune.experiments import models
from tfprune.experiments.data import builtin as data
from tfprune._env import keras
import tensorflow_model_optimization as tfmot

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 7, "Interleaved rounds (one epoch of each variant per round).", lower_bound=1)
flags.DEFINE_integer("train_size", 20000, "Training images per epoch (real Fashion-MNIST).", lower_bound=128)
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
flags.DEFINE_string("data_dir", None, "Dataset folder (see tfprune.load_dataset).")
flags.DEFINE_integer("threads", 1, "TensorFlow CPU threads (0: every core).", lower_bound=0)
flags.DEFINE_list("types", None, "Layer types to measure (default: all).")

L = keras.layers


def _head(layers):
    return layers + [L.Flatten(), L.Dense(10, activation="softmax", name="logits")]


BUILDERS = {  # type: (input shape, layers)
    "Conv1D": ((28, 28), lambda: _head([L.Conv1D(64, 3, activation="relu"), L.Conv1D(64, 3, activation="relu"),
                                        L.MaxPooling1D(2)])),
    "Conv3D": ((4, 7, 28, 1), lambda: _head([L.Conv3D(16, 3, padding="same", activation="relu"),
                                             L.Conv3D(16, 3, padding="same", activation="relu"), L.MaxPooling3D(2)])),
    "DepthwiseConv2D": ((28, 28, 1), lambda: _head([L.Conv2D(32, 3, activation="relu"),
                                                    L.DepthwiseConv2D(3, activation="relu"),
                                                    L.DepthwiseConv2D(3, activation="relu"), L.MaxPooling2D(2)])),
    "Embedding": (None, lambda: [L.Embedding(16, 64), L.Conv1D(32, 5, strides=4, activation="relu"),
                                 L.GlobalAveragePooling1D(), L.Dense(10, activation="softmax")]),
    "Conv2DTranspose": ((28, 28, 1), lambda: _head([L.Conv2DTranspose(16, 3, activation="relu"),
                                                    L.Conv2DTranspose(16, 3, strides=2, activation="relu"),
                                                    L.MaxPooling2D(4)])),
    **{name: ((28, 28), lambda cls=getattr(L, name): _head([cls(64, return_sequences=True), cls(64)]))
       for name in ("SimpleRNN", "GRU", "LSTM")},
    "SeparableConv1D": ((28, 28), lambda: _head([L.SeparableConv1D(64, 3, activation="relu"),
                                                 L.SeparableConv1D(64, 3, activation="relu"), L.MaxPooling1D(2)])),
    "SeparableConv2D": ((28, 28, 1), lambda: _head([L.SeparableConv2D(32, 3, activation="relu"),
                                                    L.SeparableConv2D(32, 3, activation="relu"),
                                                    L.MaxPooling2D(2)])),
    "Bidirectional": ((28, 28), lambda: _head([L.Bidirectional(L.LSTM(32, return_sequences=True)),
                                               L.Bidirectional(L.LSTM(32))])),
    "EinsumDense": ((28, 28), lambda: _head([L.EinsumDense("btd,de->bte", (28, 128), bias_axes="e", activation="relu"),
                                             L.EinsumDense("btd,de->bte", (28, 64), bias_axes="e", activation="relu")])),
}


def _attention(rows):
    """MultiHeadAttention: rows -> Dense(64) -> self-attention (4 heads of 16) + residual -> Dense(64) -> classes."""
    x = L.Dense(64, activation="relu")(rows)
    x = L.Add()([x, L.MultiHeadAttention(num_heads=4, key_dim=16)(x, x)])
    x = L.Dense(64, activation="relu")(x)
    return L.Dense(10, activation="softmax", name="logits")(L.Flatten()(x))


FUNCTIONAL = {"MultiHeadAttention": ((28, 28), _attention)}  # type: (input shape, inputs -> outputs)


def _inputs(shape, x):
    """Real images as the model's inputs; for Embedding, 784 tokens (the pixels in 16 grey levels)."""
    if shape is None:
        return np.minimum((x * 16).astype(np.int32), 15).reshape(-1, 784)
    return x.reshape((-1,) + shape)


def _pair(kind):
    keras.utils.set_random_seed(0)
    if kind in FUNCTIONAL:
        shape, build = FUNCTIONAL[kind]
        rows = keras.Input(shape)
        plain = models.compile_model(keras.Model(rows, build(rows)))
    else:
        shape, layers = BUILDERS[kind]
        first = keras.Input((784,), dtype="int32") if shape is None else keras.Input(shape)
        plain = models.compile_model(keras.Sequential([first] + layers()))
    prunable = models.compile_model(pruning.make_prunable(plain))
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.9, begin_step=0, frequency=100)
    return shape, {"plain": (plain, []), "prunable": (prunable, [callbacks.RankPruning("weight", schedule)])}


def _measure(kind, x, y):
    shape, variants = _pair(kind)
    x = _inputs(shape, x)
    for model, cbs in variants.values():  # warm-up: tracing and first-epoch allocation are not measured
        model.fit(x[:1024], y[:1024], batch_size=FLAGS.batch_size, epochs=1, verbose=0, callbacks=cbs)
    times = {name: [] for name in variants}
    for round_ in range(FLAGS.repeats):
        for name in list(variants) if round_ % 2 == 0 else reversed(list(variants)):
            model, cbs = variants[name]
            start = time.perf_counter()
            model.fit(x, y, batch_size=FLAGS.batch_size, epochs=1, verbose=0, callbacks=cbs)
            times[name].append(time.perf_counter() - start)
    ratio = statistics.median(a / b for a, b in zip(times["prunable"], times["plain"]))
    print(f"{kind:<16} plain {statistics.median(times['plain']):6.2f} s/epoch, prunable "
          f"{statistics.median(times['prunable']):6.2f} s/epoch: prunable/plain {ratio:.3f} "
          f"(target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})", flush=True)
    return ratio


def main(argv):
    del argv
    known = list(BUILDERS) + list(FUNCTIONAL)
    kinds = FLAGS.types or known
    bad = [k for k in kinds if k not in known]
    if bad:
        raise app.UsageError(f"--types: unknown type(s) {bad}; known: {', '.join(known)}")
    distribute.set_threads(FLAGS.threads)  # before any TensorFlow op
    (x, y), _ = data.load_dataset("fashion_mnist", FLAGS.data_dir)
    x, y = data.take((x, y), FLAGS.train_size)
    print(f"tf_keras, batch {FLAGS.batch_size}, {len(x)} images/epoch, {FLAGS.repeats} interleaved rounds, "
          f"TensorFlow threads: {FLAGS.threads or 'default'}")
    ratios = {kind: _measure(kind, x, y) for kind in kinds}
    print("summary: " + ", ".join(f"{k} {r:.3f}x" for k, r in ratios.items()))


if __name__ == "__main__":
    app.run(main)
