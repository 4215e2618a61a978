"""Subclassed models pruned in place (``make_prunable(model, in_place=True)``), on both Keras stacks: every layer
object kept with its outputs, exact counts, the output layer found by running the model, masks held through fit,
masks saved with ``save_weights`` and loaded into a new instance, ``strip(model, in_place=True)``, the errors, and
the JAX backend.

Real data: Fashion-MNIST images through three subclassed classifiers a user would write: convolutions of every
kind plus a custom layer; rows as sequences through Conv1D, LSTM, a bidirectional GRU, self-attention and
EinsumDense; and each image as 49 tokens through an Embedding and a SimpleRNN.
"""

import numpy as np
import pytest

from conftest import custom_dense, run_on_jax
from tfprune import make_prunable, prune, prune_count, shrink, sparsity_report, stacks, strip
from tfprune.layers import registry
from tfprune._env import keras, keras3
from tfprune.callbacks import RankPruning
from tfprune.pruning import default_layers, output_layer_names

STACKS = {"tf_keras": keras, "keras3": keras3}
CASES = ("images", "sequences", "tokens")


def _classes(k):
    """A user's custom dense layer (opting in), a container that calls its steps in turn (self-attention with the
    sequence as query and value) and the classifier: the container, then a softmax Dense."""

    unit_dense = custom_dense(k, with_units=True)

    class Steps(k.layers.Layer):
        def __init__(self, steps, **kwargs):
            super().__init__(**kwargs)
            self.steps = steps

        def call(self, x):
            for step in self.steps:
                x = step(x, x) if isinstance(step, k.layers.MultiHeadAttention) else step(x)
            return x

    class Classifier(k.Model):
        def __init__(self, steps, softmax_after=False):
            super().__init__(name="classifier")
            self.body = Steps(steps, name="body")
            self.head = k.layers.Dense(10, activation=None if softmax_after else "softmax", name="logits")
            self.softmax_after = softmax_after

        def call(self, x):
            y = self.head(self.body(x))
            return k.activations.softmax(y) if self.softmax_after else y

    return unit_dense, Classifier


CLASSES = {stack: _classes(k) for stack, k in STACKS.items()}


def _steps(k, case, unit_dense):
    L = k.layers
    if case == "images":
        return [L.Reshape((28, 28, 1), name="image"), L.Conv2D(8, 3, activation="relu", name="conv"),
                L.DepthwiseConv2D(3, depth_multiplier=2, name="dw"), L.SeparableConv2D(8, 3, name="sep"),
                L.Conv2DTranspose(8, 3, name="tconv"), L.GlobalAveragePooling2D(name="gap"),
                unit_dense(16, name="custom")]
    if case == "sequences":
        return [L.Conv1D(16, 3, padding="same", activation="relu", name="conv1d"),
                L.LSTM(16, return_sequences=True, name="lstm"),
                L.Bidirectional(L.GRU(8, return_sequences=True), name="bigru"),
                L.MultiHeadAttention(num_heads=2, key_dim=8, name="attention"),
                L.EinsumDense("btd,de->bte", output_shape=(28, 12), bias_axes="e", name="einsum"),
                L.GlobalAveragePooling1D(name="mean")]
    return [L.Embedding(16, 8, name="embed"), L.SimpleRNN(16, name="rnn")]


def _inputs(case, x):
    """Images as they are; for ``tokens`` each image as 49 tokens (4×4 means in 16 grey levels)."""
    if case != "tokens":
        return x
    means = x.reshape(-1, 7, 4, 7, 4).mean(axis=(2, 4)).reshape(-1, 49)
    return np.minimum((means * 16).astype(np.int32), 15)


def _kind_layers(model):
    return [l for l in registry.model_layers(model) if registry.kind_of(l) is not None]


@pytest.fixture(scope="module", params=[(c, s) for c in CASES for s in STACKS], ids=lambda p: f"{p[0]}-{p[1]}")
def case(request, small_fashion):
    """(stack, a function giving a new instance of the trained classifier, inputs, labels, test inputs)."""
    kind, stack = request.param
    k, (unit_dense, classifier) = STACKS[stack], CLASSES[stack]
    (x, y), (xt, _) = small_fashion
    x, y, xt = _inputs(kind, x[:512]), y[:512], _inputs(kind, xt[:200])
    k.utils.set_random_seed(0)
    trained = classifier(_steps(k, kind, unit_dense))
    trained.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    trained.fit(x, y, epochs=1, batch_size=64, verbose=0)
    weights = trained.get_weights()

    def fresh():
        model = classifier(_steps(k, kind, unit_dense))
        model(x[:2])
        model.set_weights(weights)
        return model
    return stacks.of(trained), fresh, x, y, xt


def _predict(model, x):
    return stacks.of(model).to_numpy(model(x))


def test_in_place_keeps_every_layer_object_and_output_and_prunes_exact_counts(case):
    _, fresh, _, _, xt = case
    model = fresh()
    before = _predict(model, xt)
    layers = {id(l): l.name for l in _kind_layers(model)}
    assert make_prunable(model, in_place=True) is model
    after = _kind_layers(model)
    assert {id(l): l.name for l in after} == layers
    assert all(registry.is_prunable(l) for l in after)
    np.testing.assert_allclose(_predict(model, xt), before, atol=1e-6)

    prune(model, 0.6, "weight")
    report = sparsity_report(model)
    assert {r.name for r in report} == set(layers.values())
    for r in report:
        assert r.zeros >= prune_count(0.6, r.weights), r  # exact, plus weights that were already exactly 0
        assert r.zeros == prune_count(0.6, r.weights) or r.kind == "Bidirectional", r


@pytest.mark.slow
def test_unit_pruned_masks_hold_through_fit_save_weights_and_strip(case, tmp_path):
    stack, fresh, x, y, xt = case
    model = make_prunable(fresh(), in_place=True)
    assert output_layer_names(model) == {"logits"}
    plan = default_layers(model, "unit")
    assert "logits" not in plan and plan
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[RankPruning("unit", 0.5)])
    rows = {r.name: r for r in sparsity_report(model)}
    for name in plan:
        assert rows[name].units - rows[name].units_kept == prune_count(0.5, rows[name].units), rows[name]
    assert rows["logits"].units_kept == 10
    keeps = {l.name: registry.kernel_mask(l) for l in _kind_layers(model)}
    for layer in _kind_layers(model):  # pruned entries are exactly zero after training
        assert not np.any(registry.effective_kernel(layer)[~keeps[layer.name]]), layer.name
    masked = _predict(model, xt)

    path = str(tmp_path / ("masks.h5" if stack.version == "2" else "masks.weights.h5"))
    model.save_weights(path)
    again = make_prunable(fresh(), in_place=True)
    again.load_weights(path)
    np.testing.assert_allclose(_predict(again, xt), masked, atol=1e-6)
    for layer in _kind_layers(again):
        np.testing.assert_array_equal(registry.kernel_mask(layer), keeps[layer.name])

    zeros = {r.name: r.zeros for r in sparsity_report(model)}
    assert strip(model, in_place=True) is model
    assert not any(registry.is_prunable(l) for l in registry.model_layers(model))
    np.testing.assert_allclose(_predict(model, xt), masked, atol=1e-5)
    assert {r.name: r.zeros for r in sparsity_report(model)} == zeros


@pytest.mark.parametrize("stack", list(STACKS))
def test_an_operation_after_the_last_layer_still_finds_the_output_layer(stack, small_fashion):
    k, (_, classifier) = STACKS[stack], CLASSES[stack]
    model = classifier([k.layers.Flatten(name="flat"), k.layers.Dense(32, name="hidden")], softmax_after=True)
    model(small_fashion[0][0][:2])
    make_prunable(model, in_place=True)
    assert output_layer_names(model) == {"logits"}
    assert default_layers(model, "unit") == ["hidden"]


@pytest.mark.parametrize("stack", list(STACKS))
def test_subclassed_models_get_one_clear_error_for_what_needs_a_graph(stack, small_fashion):
    k = STACKS[stack]
    _, classifier = CLASSES[stack]
    model = classifier([k.layers.Flatten(name="flat"), k.layers.Dense(32, name="hidden")])
    model(small_fashion[0][0][:2])
    with pytest.raises(ValueError, match=r"subclassed.*make_prunable\(model, in_place=True\)"):
        make_prunable(model)
    make_prunable(model, in_place=True)
    with pytest.raises(ValueError, match=r"strip\(model, in_place=True\)"):
        strip(model)
    with pytest.raises(ValueError, match="subclassed"):
        shrink(model)


@pytest.mark.parametrize("stack", list(STACKS))
def test_a_model_that_cannot_be_run_must_name_its_unit_pruned_layers(stack, small_fashion):
    k = STACKS[stack]

    class TwoInputs(k.Model):
        def __init__(self):
            super().__init__(name="two_inputs")
            self.left, self.right = k.layers.Dense(8, name="left"), k.layers.Dense(8, name="right")
            self.out = k.layers.Dense(10, name="out")

        def call(self, inputs):
            return self.out(self.left(inputs[0]) + self.right(inputs[1]))

    x = small_fashion[0][0][:4].reshape(4, -1)
    model = TwoInputs()
    model([x, x])
    make_prunable(model, in_place=True)
    with pytest.raises(ValueError, match="two_inputs.*layers=\\[...\\]"):
        prune(model, 0.5, "unit")
    prune(model, 0.5, "unit", layers=["left", "right"])
    assert [r.units_kept for r in sparsity_report(model)] == [4, 4, 10]


@pytest.mark.parametrize("stack", list(STACKS))
def test_two_prunable_layers_with_one_name_are_refused(stack, small_fashion):
    k = STACKS[stack]
    _, classifier = CLASSES[stack]
    model = classifier([k.layers.Flatten(name="flat"), k.layers.Dense(32, name="twin"),
                        k.layers.Dense(32, name="twin")])
    model(small_fashion[0][0][:2])
    with pytest.raises(ValueError, match="several layers named 'twin'"):
        make_prunable(model, in_place=True)


JAX_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import keras
import tfprune
from tfprune.layers import registry
from tfprune.experiments.data import builtin as data

(x, y), _ = data.load_dataset("fashion_mnist", sys.argv[3], download=False)
x, y = x[:512], y[:512]

class Classifier(keras.Model):
    def __init__(self):
        super().__init__()
        self.flat = keras.layers.Flatten()
        self.hidden = [keras.layers.Dense(64, activation="relu", name="h1"), keras.layers.Dense(32, name="h2")]
        self.head = keras.layers.Dense(10, activation="softmax", name="logits")
    def call(self, x):
        x = self.flat(x)
        for layer in self.hidden:
            x = layer(x)
        return self.head(x)

keras.utils.set_random_seed(0)
model = Classifier()
model(x[:2])
tfprune.make_prunable(model, in_place=True)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[tfprune.callbacks.RankPruning("unit", 0.5)])
report = {r.name: r.units_kept for r in tfprune.sparsity_report(model)}
masked = np.asarray(model(x[:100]))
held = all(not np.any(registry.effective_kernel(l)[~registry.kernel_mask(l)]) for l in model.hidden)
tfprune.strip(model, in_place=True)
print(json.dumps({"backend": keras.backend.backend(), "units": report, "held": bool(held),
                  "plain": [type(l).__name__ for l in model.hidden],
                  "diff": float(np.abs(np.asarray(model(x[:100])) - masked).max())}))
"""


@pytest.mark.slow
def test_in_place_pruning_on_the_jax_backend(tmp_path):
    out = run_on_jax(JAX_SCRIPT, tmp_path)
    assert out["backend"] == "jax"
    assert out["units"] == {"h1": 32, "h2": 16, "logits": 10}
    assert out["held"] and out["plain"] == ["Dense", "Dense"]
    assert out["diff"] < 1e-5
