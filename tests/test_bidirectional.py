"""Bidirectional GRU and LSTM on both Keras stacks: the two directions pruned as one (a unit is unit j of both),
exact counts, masks held through fit, save/load, strip, shrinking both directions (concatenated and summed outputs)
with the same outputs and the analytic parameter count, TFLite export, the JAX backend.

Real data: Fashion-MNIST row by row (each image as 28 steps of 28 features).
"""

import numpy as np
import pytest

from conftest import reloaded_copies, run_on_jax, trained_case
from tfprune import make_prunable, prune, prune_count, shrink, stacks, strip, tflite
from tfprune.layers import recurrent
from tfprune.layers import registry
from tfprune._env import keras, keras3
from tfprune.callbacks import RankPruning
from tfprune.experiments import models
from tfprune.files.user_model import check_prunable

STACKS = {"tf_keras": keras, "keras3": keras3}
UNITS = (8, 6)


def build(k, kind, units=UNITS):
    """A Bidirectional layer returning its sequence (directions concatenated), a Bidirectional one summing the
    directions' last outputs, and a softmax classifier."""
    L, cls = k.layers, getattr(k.layers, kind)
    return k.Sequential([k.Input((28, 28)), L.Bidirectional(cls(units[0], return_sequences=True), name="bi"),
                         L.Bidirectional(cls(units[1]), merge_mode="sum", name="bi2"),
                         L.Dense(10, activation="softmax", name="logits")])


def params(kind, units):
    """Parameters of ``build``'s model with ``units`` left (GRU: reset_after, two biases)."""
    gates, biases = recurrent.GATES[kind], 2 if kind == "GRU" else 1
    first = 2 * gates * (28 * units[0] + units[0] ** 2 + biases * units[0])
    second = 2 * gates * (2 * units[0] * units[1] + units[1] ** 2 + biases * units[1])
    return first + second + units[1] * 10 + 10


@pytest.fixture(scope="module", params=[(kind, stack) for kind in ("GRU", "LSTM") for stack in STACKS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def case(request, small_fashion):
    return trained_case(request, small_fashion, STACKS, build)


def test_weight_and_unit_pruning_cover_both_directions(case):
    kind, model, _, _ = case
    gates = recurrent.GATES[kind]
    pruned = prune(make_prunable(model), 0.5, "weight")
    kernel = registry.effective_kernel(pruned.get_layer("bi"))
    assert kernel.shape == (28 + 8, gates, 2, 8)  # both directions' unit kernels, stacked
    assert int((kernel == 0).sum()) == prune_count(0.5, kernel.size)
    units = prune(make_prunable(model), 0.5, "unit")
    for name, width in (("bi", 8), ("bi2", 6)):
        layer = units.get_layer(name)
        dead = ~registry.kernel_mask(layer).reshape(-1, width).any(axis=0)
        assert int(dead.sum()) == prune_count(0.5, width), name
        columns = recurrent.gate_columns(np.flatnonzero(dead), width, gates)
        for direction in (layer.forward_layer, layer.backward_layer):  # the same units die in both directions
            for w in registry.masked_weights(direction):
                assert not stacks.of(layer).to_numpy(w)[..., columns].any(), name


@pytest.mark.slow
def test_masks_hold_through_fit_and_strip_bakes_them_in(case):
    _, model, (x, y), xt = case
    prunable = models.compile_model(make_prunable(model))
    prunable.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0, callbacks=[RankPruning("weight", 0.7)])
    for name in ("bi", "bi2"):
        layer = prunable.get_layer(name)
        keep = registry.kernel_mask(layer)
        assert int((~keep).sum()) == prune_count(0.7, keep.size), name
        assert not registry.effective_kernel(layer)[~keep].any()
    plain = strip(prunable)
    assert type(plain.get_layer("bi")) is type(model.get_layer("bi"))
    assert type(plain.get_layer("bi").forward_layer) is type(model.get_layer("bi").forward_layer)
    assert plain.count_params() == model.count_params()
    stack = stacks.of(plain)
    np.testing.assert_allclose(stack.to_numpy(plain(xt[:64])), stack.to_numpy(prunable(xt[:64])), atol=1e-6)


@pytest.mark.slow
def test_save_and_load_keep_the_masks(case, tmp_path):
    _, model, _, xt = case
    pruned = prune(make_prunable(model), 0.6, "unit")
    stack = stacks.of(pruned)
    for loaded in reloaded_copies(pruned, tmp_path):
        assert registry.is_prunable(loaded.get_layer("bi"))
        for name in ("bi", "bi2"):
            np.testing.assert_array_equal(registry.kernel_mask(loaded.get_layer(name)),
                                          registry.kernel_mask(pruned.get_layer(name)))
        np.testing.assert_allclose(stack.to_numpy(loaded(xt[:64])), stack.to_numpy(pruned(xt[:64])), atol=1e-6)


@pytest.mark.slow
def test_unit_pruned_model_shrinks_both_directions(case):
    kind, model, _, xt = case
    plain = strip(prune(make_prunable(model), 0.5, "unit"))
    result = shrink(plain)
    left = tuple(u - prune_count(0.5, u) for u in UNITS)
    for name, width in zip(("bi", "bi2"), left):
        layer = result.model.get_layer(name)
        assert layer.forward_layer.units == layer.backward_layer.units == width, name
    assert plain.count_params() == params(kind, UNITS)
    assert result.model.count_params() == result.report.params_after == params(kind, left)
    assert not result.report.kept
    stack = stacks.of(plain)
    np.testing.assert_allclose(stack.to_numpy(result.model(xt)), stack.to_numpy(plain(xt)), atol=1e-5)


@pytest.mark.slow
def test_shrunk_model_exports_to_tflite_with_the_same_outputs(case):
    _, model, _, xt = case
    plain = strip(prune(make_prunable(model), 0.5, "unit"))
    interpreter, _ = tflite.load_interpreter(tflite.to_tflite(shrink(plain).model), batch=50)
    np.testing.assert_allclose(tflite.predict_tflite(interpreter, xt[:200]),
                               stacks.of(plain).to_numpy(plain(xt[:200])), atol=1e-5)


def test_bidirectional_layers_tfprune_cannot_prune_are_listed():
    L = keras.layers
    rows = keras.Input((28, 28))
    x = L.Bidirectional(L.LSTM(4, return_sequences=True), name="ok")(rows)
    x = L.Concatenate()(L.Bidirectional(L.LSTM(4), merge_mode=None, name="two")(x))
    model = keras.Model(rows, L.Dense(10, name="logits")(x))
    check = check_prunable(model)
    assert "ok" in check.prunable and "two" not in check.prunable
    assert check.skipped["two"] == "Bidirectional with merge_mode=None (two outputs)"


JAX_RUN = """
import json, sys
import numpy as np, keras, tfprune
from tfprune.experiments import models
from tfprune.experiments.data import builtin as data
sys.path.insert(0, sys.argv[2])
import test_bidirectional as t
(x, y), _ = data.load_dataset("fashion_mnist", sys.argv[3], download=False)
x, y = x[:128], y[:128]
keras.utils.set_random_seed(0)
model = models.compile_model(tfprune.make_prunable(t.build(keras, "LSTM")))
tfprune.prune(model, 0.5, "unit")
model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[tfprune.callbacks.RankPruning("weight", 0.6)])
model.save(sys.argv[1] + "/bi.keras")
reloaded = keras.models.load_model(sys.argv[1] + "/bi.keras")
plain = tfprune.strip(model)
shrunk = tfprune.shrink(plain).model
expected = np.asarray(model(x[:64], training=False))
print(json.dumps({"backend": keras.backend.backend(),
                  "units": [shrunk.get_layer(n).forward_layer.units for n in ("bi", "bi2")],
                  "diffs": [float(np.abs(np.asarray(m(x[:64], training=False)) - expected).max())
                            for m in (reloaded, plain, shrunk)]}))
"""


@pytest.mark.slow
def test_masks_hold_on_the_jax_backend(tmp_path):
    result = run_on_jax(JAX_RUN, tmp_path)
    assert result["backend"] == "jax" and result["units"] == [4, 3]
    assert max(result["diffs"]) <= 1e-5
