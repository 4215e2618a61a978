"""Writes tests/fixtures/release-<version>/: prunable models saved by this release, for tests/test_release_files.py.

Three small models per Keras stack (images: Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, Dense;
sequences: LSTM, Bidirectional(GRU), MultiHeadAttention, Dense; tokens: Embedding, Conv1D, SimpleRNN, Dense), made
prunable and pruned to 50 % of their weights, saved as .keras (and .h5 on tf_keras), with ``expected.npz``: the
inputs (the first 8 MNIST test images), each file's outputs on them and its per-layer zero counts. A later release
must load these files and reproduce both (the registered names ``tfprune>PrunableX`` do not depend on module paths).

    .venv/bin/python scripts/make_release_fixtures.py   # run once per release, before any change to the layers
"""

import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tfprune  # noqa: E402
from tfprune import stacks  # noqa: E402

MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist", "mnist.npz")


def images(k):
    L = k.layers
    x = k.Input((28, 28, 1))
    h = L.Conv2D(8, 3, activation="relu", name="conv")(x)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="dw")(h)
    h = L.SeparableConv2D(8, 3, activation="relu", name="sep")(h)
    h = L.Conv2DTranspose(8, 3, activation="relu", name="deconv")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    h = L.Dense(16, activation="relu", name="fc")(h)
    return k.Model(x, L.Dense(10, activation="softmax", name="logits")(h), name="images")


def sequences(k):
    L = k.layers
    x = k.Input((28, 28))
    h = L.LSTM(16, return_sequences=True, name="lstm")(x)
    h = L.Bidirectional(L.GRU(8, return_sequences=True), name="bigru")(h)
    h = L.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(h, h)
    h = L.GlobalAveragePooling1D(name="gap")(h)
    return k.Model(x, L.Dense(10, activation="softmax", name="logits")(h), name="sequences")


def tokens(k):
    L = k.layers
    x = k.Input((784,), dtype="int32")
    h = L.Embedding(16, 8, name="embed")(x)
    h = L.Conv1D(8, 16, strides=16, activation="relu", name="conv1d")(h)
    h = L.SimpleRNN(8, name="rnn")(h)
    return k.Model(x, L.Dense(10, activation="softmax", name="logits")(h), name="tokens")


BUILDERS = {"images": images, "sequences": sequences, "tokens": tokens}


def inputs(name, x):
    """The model ``name``'s input batch from MNIST test images ``x`` (8, 28, 28) uint8."""
    if name == "images":
        return (x[..., None] / 255.0).astype("float32")
    if name == "sequences":
        return (x / 255.0).astype("float32")
    return (x.reshape(len(x), -1) // 16).astype("int32")


def main():
    with np.load(MNIST) as f:
        x = f["x_test"][:8]
    folder = os.path.join(ROOT, "tests", "fixtures", f"release-{tfprune.__version__}")
    os.makedirs(folder, exist_ok=True)
    expected, files = {}, []
    for stack in stacks.STACKS:
        for name, build in BUILDERS.items():
            stack.set_random_seed(0)
            model = tfprune.prune(tfprune.make_prunable(build(stack.keras)), 0.5)
            batch = inputs(name, x)
            for suffix in (".keras", ".h5") if stack is stacks.TF_KERAS else (".keras",):
                file = f"{stack.name}-{name}{suffix}"
                model.save(os.path.join(folder, file))
                files.append(file)
                expected[f"{file}/outputs"] = stacks.of(model).to_numpy(model(batch))
                expected[f"{file}/zeros"] = np.array([r.zeros for r in tfprune.sparsity_report(model)])
            expected[f"{name}/inputs"] = batch
    np.savez_compressed(os.path.join(folder, "expected.npz"), **expected)
    with open(os.path.join(folder, "files.json"), "w", encoding="utf-8") as f:
        json.dump({"version": tfprune.__version__, "files": files}, f, indent=1)
    print(f"wrote {len(files)} files to {folder}")


if __name__ == "__main__":
    main()
