"""Calibration statistics and the methods that read them (tfprune.calibration): wanda, taylor, sparsegpt, unit_refit.

Every statistic is checked against NumPy computed from the layer's actual inputs (or a closed-form gradient), on
both stacks, on a graph model and on a subclassed model pruned in place; the methods against the pure functions of
``tfprune.select.importance`` applied by hand, layer by layer.
"""

import numpy as np
import pytest

import keras as keras3

from tfprune import pruning
from tfprune.calibration import data
from tfprune.calibration import reconstruction
from tfprune.calibration import statistics
from tfprune.layers import registry
from tfprune.select import importance
from tfprune.select import masks
from tfprune._env import keras
from tests.conftest import run_on_jax

STACKS = {"tf_keras": keras, "keras3": keras3}
RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 6)).astype("float32")
Y = RNG.integers(0, 3, size=40)


def _mlp(k, seed=0):
    k.utils.set_random_seed(seed)
    x = k.Input((6,))
    h = k.layers.Dense(8, activation="relu", name="fc1")(x)
    h = k.layers.Dense(5, activation="relu", name="fc2")(h)
    return pruning.make_prunable(k.Model(x, k.layers.Dense(3, name="out")(h)))


def _weights(model, name):
    return [np.asarray(w) for w in model.get_layer(name).get_weights()]


def _relu_forward(model, names, x):
    """The inputs of each layer of a ReLU chain (NumPy), from its weights."""
    inputs, h = [], np.asarray(x, np.float64)
    for name in names:
        inputs.append(h)
        kernel, bias = registry.effective_kernel(model.get_layer(name)), _weights(model, name)[1]
        h = np.maximum(h @ kernel + bias, 0)
    return inputs


def _subclassed(k):
    class Net(k.Model):
        def __init__(self):
            super().__init__()
            self.fc1 = k.layers.Dense(8, activation="relu", name="fc1")
            self.fc2 = k.layers.Dense(3, name="out")

        def call(self, x):
            return self.fc2(self.fc1(x))
    model = Net()
    model(X[:2])
    return model


@pytest.mark.parametrize("stack", list(STACKS))
@pytest.mark.parametrize("subclassed", [False, True])
def test_input_statistics_are_the_layers_own_inputs(stack, subclassed):
    k = STACKS[stack]
    model = pruning.make_prunable(_subclassed(k), in_place=True) if subclassed else _mlp(k)
    layers = [l for l in registry.model_layers(model) if registry.is_prunable(l)]
    found = statistics.collect(model, layers, ["input_sq", "gram"], data.Calibration(X, batch_size=16), "wanda")
    fc1_out = np.maximum(X.astype(np.float64) @ registry.effective_kernel(layers[0]) + _weights(model, "fc1")[1], 0)
    for layer, x in zip(layers[:2], [X.astype(np.float64), fc1_out]):
        np.testing.assert_allclose(found[layer.name]["input_sq"], np.square(x).sum(axis=0), rtol=1e-5)
        ones = np.concatenate([x, np.ones((len(x), 1))], axis=1)
        np.testing.assert_allclose(found[layer.name]["gram"], ones.T @ ones, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stack", list(STACKS))
def test_gradient_statistics_match_the_closed_form(stack):
    k = STACKS[stack]
    k.utils.set_random_seed(0)
    x = k.Input((6,))
    model = pruning.make_prunable(k.Model(x, k.layers.Dense(3, name="out")(x)))
    layer = model.get_layer("out")
    found = statistics.collect(model, [layer], ["grad_sq", "unit_taylor_sq"], data.Calibration(X, Y, 20), "taylor")
    kernel, bias = _weights(model, "out")[:2]
    grad_sq, unit_sq = 0.0, 0.0
    for start in (0, 20):  # mean cross-entropy of logits: dL/dW = xᵀ(softmax - onehot) / n
        xb, yb = X[start:start + 20].astype(np.float64), Y[start:start + 20]
        logits = xb @ kernel + bias
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        grad = xb.T @ (probs - np.eye(3)[yb]) / len(xb)
        grad_sq, unit_sq = grad_sq + grad ** 2, unit_sq + (kernel * grad).sum(axis=0) ** 2
    np.testing.assert_allclose(found["out"]["grad_sq"], grad_sq, rtol=1e-4)
    np.testing.assert_allclose(found["out"]["unit_taylor_sq"], unit_sq, rtol=1e-4)


@pytest.mark.parametrize("stack", list(STACKS))
def test_wanda_keeps_each_units_share_by_weight_times_input_norm(stack):
    model = _mlp(STACKS[stack])
    kernel = registry.effective_kernel(model.get_layer("fc1"))
    pruning.prune(model, 0.5, "wanda", layers=["fc1"], calibration=X)
    expected = importance.per_output_masks(importance.wanda_scores(kernel, importance.input_norms(X)), 0.5)
    np.testing.assert_array_equal(registry.kernel_mask(model.get_layer("fc1")), expected)
    assert (~expected).sum(axis=0).tolist() == [3] * 8  # exactly 3 of the 6 inputs of every unit


@pytest.mark.parametrize("stack", list(STACKS))
def test_wanda_kernel_and_taylor_rank_the_whole_kernel(stack):
    model = _mlp(STACKS[stack])
    kernel = registry.effective_kernel(model.get_layer("fc1"))
    scores = np.abs(kernel) * importance.input_norms(X)[:, None]
    pruning.prune(model, 0.75, "wanda_kernel", layers=["fc1"], calibration=X)
    np.testing.assert_array_equal(registry.kernel_mask(model.get_layer("fc1")),
                                  masks.keep_live(scores, np.ones(48, bool), 0.75).reshape(6, 8))
    other = _mlp(STACKS[stack])
    pruning.prune(other, 0.75, "taylor", calibration=(X, Y))
    for layer in ("fc1", "fc2", "out"):
        assert (~registry.kernel_mask(other.get_layer(layer))).sum() == masks.prune_count(
            0.75, registry.effective_kernel(other.get_layer(layer)).size)


@pytest.mark.parametrize("stack", list(STACKS))
def test_sparsegpt_prunes_layer_by_layer_on_pruned_inputs(stack):
    k = STACKS[stack]
    model, reference = _mlp(k), _mlp(k)
    pruning.prune(model, 0.5, "sparsegpt", layers=["fc1", "fc2"], calibration=data.Calibration(X, batch_size=7))
    for name in ("fc1", "fc2"):  # by hand: obs_prune on each layer's inputs with the layers before it pruned
        x = _relu_forward(reference, ["fc1", "fc2"], X)[["fc1", "fc2"].index(name)]
        new, keep = importance.obs_prune(registry.effective_kernel(reference.get_layer(name)), x.T @ x, 0.5,
                                         damp=0.01)
        reference.get_layer(name).set_masks(keep)
        statistics.kernel_variable(reference.get_layer(name)).assign(new.astype("float32"))
        np.testing.assert_allclose(registry.effective_kernel(model.get_layer(name)), new, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(registry.kernel_mask(model.get_layer(name)), keep)
    assert registry.kernel_mask(model.get_layer("out")).all()


def test_sparsegpt_leaves_a_layer_planned_at_zero_and_still_reports_it():
    model, reference = _mlp(keras), _mlp(keras)
    seen = []
    reconstruction.sparsegpt(model, {"fc1": 0.0, "fc2": 0.5}, data.Calibration(X, batch_size=8),
                             progress=lambda name, done, total: seen.append((name, done, total)))
    assert seen == [("fc1", 1, 2), ("fc2", 2, 2)]
    np.testing.assert_array_equal(registry.effective_kernel(model.get_layer("fc1")),
                                  registry.effective_kernel(reference.get_layer("fc1")))
    assert registry.kernel_mask(model.get_layer("fc1")).all()
    assert (~registry.kernel_mask(model.get_layer("fc2"))).sum() == masks.prune_count(0.5, 8 * 5)


@pytest.mark.parametrize("stack", list(STACKS))
def test_unit_refit_matches_least_squares_and_beats_plain_unit_pruning(stack):
    k = STACKS[stack]
    model, plain, dense = _mlp(k), _mlp(k), _mlp(k)
    assert pruning.prune(model, 0.5, "unit_refit", layers=["fc1"], calibration=X) is model
    pruning.prune(plain, 0.5, "unit", layers=["fc1"])
    keep = registry.kernel_mask(model.get_layer("fc1")).all(axis=0)
    np.testing.assert_array_equal(keep, registry.kernel_mask(plain.get_layer("fc1")).all(axis=0))
    x_fc2 = _relu_forward(dense, ["fc1", "fc2"], X)[1]
    target = x_fc2 @ registry.effective_kernel(dense.get_layer("fc2")) + _weights(dense, "fc2")[1]
    centred = np.concatenate([x_fc2[:, keep], np.ones((len(X), 1))], axis=1)
    gram = centred.T @ centred
    solved = np.linalg.solve(gram + np.diag(np.r_[np.full(keep.sum(), 0.01 * np.diag(gram)[:-1].mean()), 0]),
                             centred.T @ target)
    kernel, bias = _weights(model, "fc2")[:2]
    np.testing.assert_allclose(kernel[keep], solved[:-1], rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(kernel[~keep], 0)
    np.testing.assert_allclose(bias, solved[-1], rtol=1e-3, atol=1e-4)
    outputs = {n: np.asarray(m(X)) for n, m in (("refit", model), ("plain", plain), ("dense", dense))}
    assert (np.linalg.norm(outputs["refit"] - outputs["dense"]) < np.linalg.norm(outputs["plain"] - outputs["dense"]))


def test_errors_name_the_method_the_layer_and_the_missing_data():
    model = _mlp(keras)
    with pytest.raises(ValueError, match="method 'wanda' reads calibration statistics"):
        pruning.prune(model, 0.5, "wanda")
    with pytest.raises(ValueError, match="needs labels"):
        pruning.prune(model, 0.5, "taylor", calibration=X)
    with pytest.raises(ValueError, match="scope 'layer' only"):
        pruning.prune(model, 0.5, "sparsegpt", scope="global", calibration=X)
    assert registry.kernel_mask(model.get_layer("fc1")).all()
    x = keras.Input((4, 3))
    rnn = pruning.make_prunable(keras.Model(x, keras.layers.Dense(2, name="out")(keras.layers.LSTM(5, name="lstm")(x))))
    with pytest.raises(ValueError, match="layer 'lstm' is LSTM"):
        pruning.prune(rnn, 0.5, "sparsegpt", calibration=np.zeros((4, 4, 3), "float32"))
    assert registry.kernel_mask(rnn.get_layer("out")).all()
    with pytest.raises(ValueError, match="labels have 3 rows but the inputs 40"):
        data.Calibration(X, Y[:3])


def test_obs_prune_keeps_earlier_zeros_pruned():
    kernel = RNG.normal(size=(8, 4))
    keep = np.ones((8, 4), bool)
    keep[0, :] = False
    x = RNG.normal(size=(50, 8))
    new, kept = importance.obs_prune(kernel, x.T @ x, 0.5, block_size=4, keep=keep)
    assert not kept[0].any() and (~kept).sum() == 16 and np.all(new[~kept] == 0)


_JAX_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[2] + "/..")
import keras
from tfprune import pruning
from tfprune.experiments.data import builtin
from tfprune.layers import registry
(x, y), (xt, yt) = builtin.load_dataset("fashion_mnist", sys.argv[3], download=False)
x, xt = x[:3000].reshape(-1, 784), xt[:1000].reshape(-1, 784)
keras.utils.set_random_seed(0)
inp = keras.Input((784,))
h = keras.layers.Dense(256, activation="relu", name="fc1")(inp)
model = keras.Model(inp, keras.layers.Dense(10, name="out")(keras.layers.Dense(128, activation="relu", name="fc2")(h)))
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
model.fit(x, y[:3000], epochs=1, batch_size=128, verbose=0)
out = {"dense": model.evaluate(xt, yt[:1000], verbose=0)[1]}
for method, s in (("weight", 0.9), ("sparsegpt", 0.9), ("taylor", 0.5), ("unit", 0.7), ("unit_refit", 0.7)):
    pruned = pruning.make_prunable(model)
    layers = ["fc1", "fc2"]
    pruning.prune(pruned, s, method, layers=layers, calibration=(x[:512], y[:512]))
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    out[method] = pruned.evaluate(xt, yt[:1000], verbose=0)[1]
    out[method + "_zeros"] = int(sum((~registry.kernel_mask(pruned.get_layer(n))).sum() for n in layers))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_statistics_methods_on_jax_with_real_data(tmp_path):
    out = run_on_jax(_JAX_SCRIPT, tmp_path)
    assert out["sparsegpt"] > out["weight"] + 0.05, out  # reconstruction beats magnitude at 90 %
    assert out["unit_refit"] > out["unit"], out
    assert out["sparsegpt_zeros"] == masks.prune_count(0.9, 784 * 256) + masks.prune_count(0.9, 256 * 128)
    assert out["taylor_zeros"] == masks.prune_count(0.5, 784 * 256) + masks.prune_count(0.5, 256 * 128)


def _cnn(k):
    k.utils.set_random_seed(1)
    x = k.Input((10, 10, 3))
    h = k.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv1")(x)
    h = k.layers.BatchNormalization(name="bn")(h)
    h = k.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(h)
    h = k.layers.Conv2D(6, 3, activation="relu", name="conv2")(h)
    out = k.layers.Dense(3, name="out")(k.layers.GlobalAveragePooling2D(name="gap")(h))
    return pruning.make_prunable(k.Model(x, out))


IMAGES = np.random.default_rng(3).normal(size=(24, 10, 10, 3)).astype("float32")


@pytest.mark.parametrize("stack", list(STACKS))
def test_convolution_statistics_are_their_patches(stack):
    from tfprune.select import patches  # pylint: disable=g-import-not-at-top
    model = _cnn(STACKS[stack])
    layer = model.get_layer("conv1")
    found = statistics.collect(model, [layer, model.get_layer("dw")], ["input_sq", "gram"],
                               data.Calibration(IMAGES, batch_size=10), "wanda")
    rows = patches.conv_patches(IMAGES.astype(np.float64), (3, 3), (2, 2), "same")
    np.testing.assert_allclose(found["conv1"]["input_sq"], np.square(rows).sum(axis=0).reshape(3, 3, 3), rtol=1e-5)
    ones = np.concatenate([rows, np.ones((len(rows), 1))], axis=1)
    np.testing.assert_allclose(found["conv1"]["gram"], ones.T @ ones, rtol=1e-5, atol=1e-5)
    assert found["dw"]["gram"].shape == (8, 9, 9) and found["dw"]["input_sq"].shape == (3, 3, 8)


@pytest.mark.parametrize("stack", list(STACKS))
def test_sparsegpt_and_unit_refit_on_convolutions(stack):
    k = STACKS[stack]
    dense, model, magnitude = _cnn(k), _cnn(k), _cnn(k)
    pruning.prune(model, 0.5, "sparsegpt", layers=["conv1", "dw", "conv2"], calibration=IMAGES)
    pruning.prune(magnitude, 0.5, "weight", layers=["conv1", "dw", "conv2"])
    for name in ("conv1", "conv2"):
        kernel = registry.effective_kernel(model.get_layer(name))
        assert (kernel == 0).sum() == masks.prune_count(0.5, kernel.size)
    dw = registry.effective_kernel(model.get_layer("dw"))  # per channel: 4 of its 9 taps (prune_count(0.5, 9))
    assert ((dw == 0).reshape(9, 8).sum(axis=0) == masks.prune_count(0.5, 9)).all()
    target = np.asarray(dense(IMAGES))
    error = {n: np.linalg.norm(np.asarray(m(IMAGES)) - target) for n, m in (("obs", model), ("mag", magnitude))}
    assert error["obs"] < error["mag"], error
    refit, plain = _cnn(k), _cnn(k)
    pruning.prune(refit, 0.5, "unit_refit", layers=["conv1"], calibration=IMAGES)
    pruning.prune(plain, 0.5, "unit", layers=["conv1"])
    conv2 = registry.effective_kernel(refit.get_layer("conv2"))
    removed = ~registry.kernel_mask(refit.get_layer("conv1")).all(axis=(0, 1, 2))
    assert removed.sum() == 4 and np.all(conv2[:, :, removed, :] == 0)  # the removed channels' rows, every tap
    error_refit = np.linalg.norm(np.asarray(refit(IMAGES)) - target)
    assert error_refit < np.linalg.norm(np.asarray(plain(IMAGES)) - target)


@pytest.mark.parametrize("stack", list(STACKS))
def test_a_subclassed_model_pruned_in_place_by_sparsegpt_and_taylor(stack):
    k = STACKS[stack]
    for method, calibration in (("sparsegpt", X), ("taylor", (X, Y)), ("wanda", X)):
        model = pruning.make_prunable(_subclassed(k), in_place=True)
        dense = np.asarray(model(X))
        pruning.prune(model, 0.5, method, layers=["fc1", "out"], calibration=calibration)
        for layer in (model.fc1, model.fc2):
            kernel = registry.effective_kernel(layer)
            assert (kernel == 0).sum() == masks.prune_count(0.5, kernel.size), (method, layer.name)
        assert not np.allclose(np.asarray(model(X)), dense)


@pytest.mark.parametrize("stack", list(STACKS))
def test_a_pass_for_one_layer_stops_at_it(stack):
    import functools  # pylint: disable=g-import-not-at-top
    from tfprune.calibration import capture  # pylint: disable=g-import-not-at-top
    model = _mlp(STACKS[stack])
    later, original = model.get_layer("out"), model.get_layer("out").call
    ran = []

    @functools.wraps(original)
    def counted(inputs, *args, **kwargs):
        ran.append(len(inputs))
        return original(inputs, *args, **kwargs)
    later.call = counted
    seen = []
    capture.run(model, data.Calibration(X, batch_size=16), [model.get_layer("fc2")], lambda l, x: seen.append(len(x)))
    assert seen == [16, 16, 8] and not ran  # fc2's inputs, then the batch stops: 'out' never runs
    capture.run(model, data.Calibration(X, batch_size=16), [model.get_layer("fc1"), model.get_layer("fc2")],
                lambda l, x: None)
    assert ran == [16, 16, 8]  # two layers: the whole model runs


def test_unit_refit_says_which_layers_it_could_not_refit():
    x = keras.Input((6,))
    a = keras.layers.Dense(4, activation="relu", name="a")(x)
    b = keras.layers.Dense(4, name="b")(a)
    model = pruning.make_prunable(keras.Model(x, keras.layers.Dense(3, name="out")(keras.layers.Add()([a, b]))))
    with pytest.warns(UserWarning, match=r"'b' \(its units are coupled"):
        pruning.prune(model, 0.5, "unit_refit", layers=["b"], calibration=X)
    assert (~registry.kernel_mask(model.get_layer("b")).all(axis=0)).sum() == 2  # pruned all the same
