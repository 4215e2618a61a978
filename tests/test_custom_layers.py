"""Custom layers that opt in through ``get_prunable_weights`` (and ``get_unit_axis``), on both Keras stacks: exact
counts, masks held through fit in the variables, save/load, strip back to the user's class, and the listing of the
layers that do not opt in.

Real data: Fashion-MNIST images, flattened, through a custom dense layer written as a user would.
"""

import numpy as np
import pytest

from conftest import custom_dense
from tfprune import custom_objects, make_prunable, prune, prune_count, sparsity_report, stacks, strip
from tfprune.layers import registry
from tfprune._env import keras, keras3
from tfprune.callbacks import RankPruning
from tfprune.experiments import models
from tfprune.files.user_model import check_prunable


STACKS = {"tf_keras": keras, "keras3": keras3}
CLASSES = {(stack, units): custom_dense(k, units) for stack, k in STACKS.items() for units in (False, True)}


def _model(k, cls):
    return k.Sequential([k.Input((28, 28)), k.layers.Flatten(name="flatten"), cls(64, name="custom"),
                         k.layers.Dense(10, activation="softmax", name="logits")])


@pytest.fixture(scope="module", params=list(CLASSES), ids=lambda p: f"{p[0]}-{'units' if p[1] else 'weights'}")
def case(request, small_fashion):
    stack, with_units = request.param
    k, cls = STACKS[stack], CLASSES[request.param]
    (x, y), (xt, _) = small_fashion
    k.utils.set_random_seed(0)
    model = models.compile_model(_model(k, cls))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return cls, with_units, model, (x, y), xt[:300]


def test_custom_layers_that_opt_in_are_pruned_exactly(case):
    cls, with_units, model, _, _ = case
    assert "custom" in check_prunable(model).prunable
    pruned = prune(make_prunable(model), 0.5, "weight")
    layer = pruned.get_layer("custom")
    assert registry.is_prunable(layer) and isinstance(layer, cls)
    kernel = registry.effective_kernel(layer)
    assert kernel.shape == ((784 + 1, 64) if with_units else (784 * 64 + 64, 1))  # w and b, units last
    assert int((kernel == 0).sum()) == prune_count(0.5, kernel.size)
    report = {r.name: r for r in sparsity_report(pruned)}
    assert report["custom"].kind == cls.__name__ and report["custom"].sparsity == pytest.approx(0.5, abs=1e-3)
    if with_units:
        units = prune(make_prunable(model), 0.25, "unit")
        kernel = registry.effective_kernel(units.get_layer("custom"))
        assert int((~kernel.any(axis=0)).sum()) == prune_count(0.25, 64)  # whole columns of w, and b's entries
    else:
        with pytest.raises(ValueError, match=r"layer 'custom' \(MyDense\) has no units of its own"):
            prune(make_prunable(model), 0.25, "unit", layers=["custom"])


def test_masks_hold_through_fit_and_strip_gives_the_users_class(case):
    cls, _, model, (x, y), xt = case
    prunable = models.compile_model(make_prunable(model))
    prunable.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0, callbacks=[RankPruning("weight", 0.7)])
    layer = prunable.get_layer("custom")
    keep = registry.kernel_mask(layer)
    assert int((~keep).sum()) == prune_count(0.7, keep.size)
    stored = np.concatenate([stacks.of(layer).to_numpy(layer.w), stacks.of(layer).to_numpy(layer.b)[None]])
    if keep.shape[-1] == 1:
        stored = np.concatenate([stacks.of(layer).to_numpy(layer.w).ravel(),
                                 stacks.of(layer).to_numpy(layer.b)])[:, None]
    assert not stored[~keep].any() and stored[keep].any()  # the variables themselves hold the zeros
    plain = strip(prunable)
    assert type(plain.get_layer("custom")) is cls
    assert plain.count_params() == model.count_params()
    stack = stacks.of(plain)
    np.testing.assert_allclose(stack.to_numpy(plain(xt[:64])), stack.to_numpy(prunable(xt[:64])), atol=1e-6)


def test_save_and_load_keep_the_masks(case, tmp_path):
    cls, _, model, _, xt = case
    pruned = prune(make_prunable(model), 0.6, "weight")
    stack = stacks.of(pruned)
    path = str(tmp_path / "custom.keras")
    pruned.save(path)
    loaded = stack.load_model(path, custom_objects=custom_objects(cls))
    np.testing.assert_array_equal(registry.kernel_mask(loaded.get_layer("custom")),
                                  registry.kernel_mask(pruned.get_layer("custom")))
    np.testing.assert_allclose(stack.to_numpy(loaded(xt[:64])), stack.to_numpy(pruned(xt[:64])), atol=1e-6)


def test_custom_layers_without_the_protocol_are_listed_with_how_to_opt_in():
    class Plain(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(int(input_shape[-1]), 4))

        def call(self, x):
            return x @ self.w

    model = keras.Sequential([keras.Input((8,)), Plain(name="plain"), keras.layers.Dense(2, name="logits")])
    reason = check_prunable(model).skipped["plain"]
    assert reason.startswith("custom layer class Plain") and "get_prunable_weights()" in reason
