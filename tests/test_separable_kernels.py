"""Which kernels of a separable convolution are pruned (``make_prunable(model, pruned_kernels=...)``), on both Keras
stacks: the depthwise kernel alone or both kernels ranked together, exact counts, masks held through fit, the
choice and the masks saved and loaded, strip; unit pruning refused for them; a bad choice named.

Real data: Fashion-MNIST images through two SeparableConv2D layers (the pointwise default is covered by
``test_layer_types``).
"""

import numpy as np
import pytest

from conftest import reloaded_copies
from tfprune import make_prunable, prune, prune_count, sparsity_report, stacks, strip
from tfprune.layers import registry
from tfprune._env import keras, keras3
from tfprune.experiments import models

STACKS = {"tf_keras": keras, "keras3": keras3}


def _model(k):
    L = k.layers
    return k.Sequential([k.Input((28, 28, 1)), L.SeparableConv2D(8, 3, depth_multiplier=2, activation="relu",
                                                                 name="c1"),
                         L.SeparableConv2D(8, 3, activation="relu", name="c2"), L.GlobalAveragePooling2D(name="gap"),
                         L.Dense(10, activation="softmax", name="logits")])


def _kernels(layer):
    """(depthwise, pointwise) as the layer computes with them, NumPy."""
    weights = registry.masked_weights(layer) if registry.is_prunable(layer) else layer.get_weights()
    return np.asarray(weights[0]), np.asarray(weights[1])


@pytest.fixture(scope="module", params=[(c, s) for c in ("depthwise", "both") for s in STACKS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def pruned(request, small_fashion):
    """(choice, the trained model weight-pruned to 50 % with that choice, the dense kernels, (x, y), test images)."""
    choice, stack = request.param
    k = STACKS[stack]
    (x, y), (xt, _) = small_fashion
    x, y, xt = x[:512, ..., None], y[:512], xt[:200, ..., None]
    k.utils.set_random_seed(0)
    model = models.compile_model(_model(k))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    dense = {n: _kernels(model.get_layer(n)) for n in ("c1", "c2")}
    prunable = make_prunable(model, pruned_kernels=choice)
    prune(prunable, 0.5)
    return choice, prunable, dense, (x, y), xt


def test_the_chosen_kernels_are_pruned_to_exact_counts(pruned):
    choice, model, dense, _, _ = pruned
    rows = {r.name: r for r in sparsity_report(model)}
    for name in ("c1", "c2"):
        layer = model.get_layer(name)
        assert layer.pruned_kernels == choice
        depthwise, pointwise = _kernels(layer)
        dw_zeros, pw_zeros = int((depthwise == 0).sum()), int((pointwise == 0).sum())
        if choice == "depthwise":
            assert dw_zeros == prune_count(0.5, depthwise.size)
            np.testing.assert_array_equal(pointwise, dense[name][1])  # untouched
            assert rows[name].weights == depthwise.size
        else:
            assert dw_zeros + pw_zeros == prune_count(0.5, depthwise.size + pointwise.size)
            assert dw_zeros and pw_zeros  # ranked together: both lose weights
            assert rows[name].weights == depthwise.size + pointwise.size
        assert rows[name].zeros == dw_zeros + (pw_zeros if choice == "both" else 0)


def test_unit_pruning_is_refused_for_them(pruned):
    _, model, _, _, _ = pruned
    with pytest.raises(ValueError, match="'c1'.*no units of its own"):
        prune(model, 0.5, "unit", layers=["c1"])


def test_masks_hold_through_fit_save_load_and_strip(pruned, tmp_path):
    choice, model, _, (x, y), xt = pruned
    keeps = {n: registry.kernel_mask(model.get_layer(n)) for n in ("c1", "c2")}
    models.compile_model(model).fit(x, y, epochs=1, batch_size=64, verbose=0)
    for name, keep in keeps.items():
        np.testing.assert_array_equal(registry.kernel_mask(model.get_layer(name)), keep)
        assert not np.any(registry.effective_kernel(model.get_layer(name))[~keep])
    predicted = stacks.of(model).to_numpy(model(xt))
    for reloaded in reloaded_copies(model, tmp_path):
        assert reloaded.get_layer("c1").pruned_kernels == choice
        np.testing.assert_array_equal(registry.kernel_mask(reloaded.get_layer("c1")), keeps["c1"])
        np.testing.assert_allclose(stacks.of(reloaded).to_numpy(reloaded(xt)), predicted, atol=1e-6)
    plain = strip(model)
    for name in ("c1", "c2"):
        assert not registry.is_prunable(plain.get_layer(name))
        ours, theirs = _kernels(plain.get_layer(name)), _kernels(model.get_layer(name))
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(stacks.of(plain).to_numpy(plain(xt)), predicted, atol=1e-5)


def test_a_bad_choice_is_named():
    with pytest.raises(ValueError, match="pruned_kernels 'all' is not one of pointwise, depthwise, both"):
        make_prunable(_model(keras3), pruned_kernels="all")
