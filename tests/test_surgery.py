"""Tests for tfprune/shrinking/surgery.py: shrunk models compute the same outputs with fewer units, and unsafe units
stay."""

import numpy as np
import pytest

from tfprune import pruning
from tfprune.shrinking import costs
from tfprune.shrinking import surgery
from tfprune.experiments import models
from tfprune._env import keras

L = keras.layers
FRACTIONS = (0.25, 0.5, 0.7, 0.9)
TOL = 1e-5


def _weight_layers(model):
    return [l for l in model.layers if type(l) in (L.Dense, L.Conv2D)]


def _random_biases(model, rng):
    for layer in _weight_layers(model):
        if layer.use_bias:
            layer.bias.assign(rng.normal(0.0, 0.1, layer.bias.shape).astype(np.float32))


def _unit_prune(model, fraction, skip=("logits",)):
    """Zeroes the round(fraction * n) smallest-L2-norm kernel columns (and bias entries) of each weight layer.

    Returns {layer name: units kept}.
    """
    kept = {}
    for layer in _weight_layers(model):
        if layer.name in skip:
            continue
        weights = layer.get_weights()
        kernel = weights[0]
        norms = np.sqrt((kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(axis=0))
        pruned = np.argsort(norms, kind="stable")[:int(round(fraction * len(norms)))]
        weights[0][..., pruned] = 0.0
        if layer.use_bias:
            weights[1][pruned] = 0.0
        layer.set_weights(weights)
        kept[layer.name] = len(norms) - len(pruned)
    return kept


def _expected_params(name, kept):
    """Parameter count of the shrunk reference model, from first principles."""
    if name == "fc_1000":
        dims = [784, kept["fc1"], kept["fc2"], kept["fc3"], kept["fc4"], 10]
        return sum(a * b for a, b in zip(dims, dims[1:]))
    if name == "lenet_300_100":
        dims = [784, kept["fc1"], kept["fc2"], 10]
        return sum(a * b + b for a, b in zip(dims, dims[1:]))
    c = [1, kept["conv1"], kept["conv2"], kept["conv3"], kept["conv4"]]
    convs = sum(9 * a * b + b for a, b in zip(c, c[1:]))
    return convs + 7 * 7 * c[4] * kept["fc1"] + kept["fc1"] + kept["fc1"] * 10 + 10


def _max_diff(a, b, x):
    outs_a, outs_b = a.predict(x, verbose=0), b.predict(x, verbose=0)
    if not isinstance(outs_a, list):
        outs_a, outs_b = [outs_a], [outs_b]
    return max(float(np.abs(p - q).max()) for p, q in zip(outs_a, outs_b))


@pytest.fixture(scope="module")
def trained_lenet(small_fashion):
    (x, y), _ = small_fashion
    keras.utils.set_random_seed(0)
    model = models.compile_model(models.build("lenet_300_100"))
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    return model.get_weights()


def _reference(name, trained_lenet):
    keras.utils.set_random_seed(0)
    if name == "lenet_trained":
        model = models.build("lenet_300_100")
        model.set_weights(trained_lenet)
        return model, "lenet_300_100"
    model = models.build(name)
    _random_biases(model, np.random.default_rng(1))
    return model, name


@pytest.mark.parametrize("fraction", FRACTIONS)
@pytest.mark.parametrize("name", ["fc_1000", "lenet_300_100", "lenet_trained", "small_cnn"])
def test_reference_models_shrink_exactly(name, fraction, trained_lenet, small_fashion):
    model, arch = _reference(name, trained_lenet)
    kept = _unit_prune(model, fraction)
    result = surgery.shrink(model)
    _, (x_test, _) = small_fashion

    assert _max_diff(model, result.model, x_test) <= TOL
    assert result.model.count_params() == _expected_params(arch, kept)
    assert result.report.params_after == _expected_params(arch, kept)
    assert result.report.params_before == model.count_params()
    assert result.report.kept == ()
    previous = None
    for layer in _weight_layers(model):  # each layer loses its dead columns and the rows of the layer before's
        rows = layer.kernel.shape[-2] if previous is None else kept[previous] * (49 if layer.name == "fc1" and
                                                                                   arch == "small_cnn" else 1)
        columns = kept.get(layer.name, layer.kernel.shape[-1])
        assert result.model.get_layer(layer.name).kernel.shape == layer.kernel.shape[:-2] + (rows, columns)
        previous = layer.name
    assert result.report.units_removed == sum(
        l.kernel.shape[-1] for l in _weight_layers(model) if l.name in kept) - sum(kept.values())
    assert result.report.macs_after < result.report.macs_before


def test_flatten_removes_channel_blocks(trained_lenet):
    model, _ = _reference("small_cnn", trained_lenet)
    kept = _unit_prune(model, 0.5)
    fc1 = surgery.shrink(model).model.get_layer("fc1")
    # channels-last Flatten of 7x7xC: channel c is the inputs s*C + c, s = 0..48.
    assert fc1.kernel.shape == (7 * 7 * kept["conv4"], kept["fc1"])
    old = model.get_layer("fc1").kernel.numpy()
    live = np.flatnonzero(model.get_layer("conv4").kernel.numpy().reshape(-1, 32).any(axis=0))
    rows = (np.arange(49)[:, None] * 32 + live[None, :]).ravel()
    live_fc1 = np.flatnonzero(old.any(axis=0))
    np.testing.assert_array_equal(fc1.kernel.numpy(), old[rows][:, live_fc1])


def _kill(layer, units, bias=0.0):
    weights = layer.get_weights()
    weights[0][..., units] = 0.0
    if layer.use_bias:
        weights[1][units] = bias
    layer.set_weights(weights)


def _unsafe_model(case):
    """A functional model where layer ``hidden`` (16 units) sits somewhere removal is unsafe; ``pre`` is safe."""
    inp = keras.Input((784,))
    pre = L.Dense(24, activation="relu", name="pre")(inp)
    act = "sigmoid" if case == "sigmoid" else ("linear" if case == "softmax_layer" else "relu")
    h = L.Dense(16, activation=act, name="hidden")(pre)
    outputs = None
    if case == "residual_add":
        z = L.Add(name="add")([h, L.Dense(16, activation="relu", name="other")(inp)])
    elif case == "two_consumers":
        z = L.Concatenate(name="cat")([L.Dense(8, name="a")(h), L.Dense(8, name="b")(h)])
    elif case == "model_output":
        z = h
        outputs = [L.Dense(10, activation="softmax", name="logits")(z), h]
    elif case == "unknown_layer":
        z = L.LayerNormalization(name="norm")(h)
    elif case == "softmax_layer":
        z = L.Activation("softmax", name="act")(h)
    elif case == "shared_layer":
        shared = L.Dense(16, activation="relu", name="shared")
        z = shared(shared(h))
    else:
        z = h
    if outputs is None:
        outputs = L.Dense(10, activation="softmax", name="logits")(z)
    return keras.Model(inp, outputs)


@pytest.mark.parametrize("case, reason", [
    ("residual_add", "add (Add) joins several inputs"),
    ("two_consumers", "hidden feeds 2 layers (a, b)"),
    ("model_output", "hidden is a model output"),
    ("unknown_layer", "norm (LayerNormalization) is not known to keep channels apart"),
    ("softmax_layer", "act (Activation) is not known to keep channels apart"),
    ("shared_layer", "shared (Dense) is shared (2 calls)"),
    ("sigmoid", "6 of them reach logits as non-zero constants (e.g. 0.5)"),
])
def test_unsafe_units_are_kept_and_reported(case, reason, small_fashion):
    keras.utils.set_random_seed(0)
    model = _unsafe_model(case)
    _random_biases(model, np.random.default_rng(2))
    _kill(model.get_layer("pre"), [1, 5, 7])
    _kill(model.get_layer("hidden"), list(range(6)))
    result = surgery.shrink(model)
    _, (x_test, _) = small_fashion

    assert _max_diff(model, result.model, x_test.reshape(-1, 784)) <= TOL
    assert result.model.get_layer("hidden").kernel.shape == (21, 16)
    assert result.model.get_layer("pre").kernel.shape == (784, 21)
    assert result.report.kept == (f"hidden: 6 dead unit(s) kept: {reason}",)
    assert result.report.units_removed == 3


@pytest.mark.parametrize("bias, kept", [
    (0.0, ()),  # zeros stay zeros around the padding: removed
    (0.5, ("conv1: 2 dead unit(s) kept: their outputs are no longer constant after pad",)),
])
def test_zero_padding_passes_only_zeros(bias, kept, small_fashion):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        L.Reshape((28, 28, 1), input_shape=(28, 28), name="add_channel"),
        L.Conv2D(6, 3, activation="relu", name="conv1"),
        L.ZeroPadding2D(1, name="pad"),
        L.Conv2D(4, 3, activation="relu", name="conv2"),
        L.GlobalAveragePooling2D(name="gap"),
        L.Dense(10, activation="softmax", name="logits"),
    ])
    _kill(model.get_layer("conv1"), [2, 4], bias=bias)
    result = surgery.shrink(model)
    _, (x_test, _) = small_fashion

    assert _max_diff(model, result.model, x_test) <= TOL
    assert result.report.kept == kept
    assert result.model.get_layer("conv2").kernel.shape == (3, 3, 6 if kept else 4, 4)


def _bn_model():
    return keras.Sequential([
        L.Reshape((28, 28, 1), input_shape=(28, 28), name="add_channel"),
        L.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        L.BatchNormalization(name="bn1"),
        L.MaxPooling2D(2, name="pool1"),
        L.Dropout(0.3, name="drop1"),
        L.Conv2D(8, 3, padding="same", name="conv2"),
        L.BatchNormalization(name="bn2"),
        L.Activation("relu", name="relu2"),
        L.MaxPooling2D(2, name="pool2"),
        L.Flatten(name="flatten"),
        L.Dense(16, activation="relu", name="fc1"),
        L.BatchNormalization(name="bn3"),
        L.Dropout(0.3, name="drop2"),
        L.Dense(10, activation="softmax", name="logits"),
    ])


DEAD = {"conv1": [0, 3], "conv2": [1, 2, 5], "fc1": [0, 1, 2, 3, 4]}
BN_OF = {"conv1": "bn1", "conv2": "bn2", "fc1": "bn3"}


@pytest.mark.parametrize("beta, removed", [
    (0.0, {"conv1", "conv2", "fc1"}),   # BN maps 0 to exactly 0: every dead unit goes
    (-1.0, {"conv2"}),                  # -1 is zeroed by relu2 only after bn2; bn1/bn3 pass -1 on
    (0.5, set()),                        # a positive constant reaches the next weight layer everywhere
])
def test_batch_norm_slices_or_keeps(beta, removed, small_fashion):
    keras.utils.set_random_seed(0)
    model = _bn_model()
    rng = np.random.default_rng(3)
    _random_biases(model, rng)
    for layer, bn_name in BN_OF.items():
        _kill(model.get_layer(layer), DEAD[layer])
        bn = model.get_layer(bn_name)
        gamma, b, mean, var = (rng.normal(1, 0.2, bn.gamma.shape), rng.normal(0, 0.2, bn.gamma.shape),
                               rng.normal(0, 0.3, bn.gamma.shape), rng.uniform(0.5, 2, bn.gamma.shape))
        b[DEAD[layer]], mean[DEAD[layer]] = beta, 0.0
        bn.set_weights([w.astype(np.float32) for w in (gamma, b, mean, var)])
    result = surgery.shrink(model)
    _, (x_test, _) = small_fashion

    assert _max_diff(model, result.model, x_test) <= TOL
    for layer, bn_name in BN_OF.items():
        width = model.get_layer(layer).kernel.shape[-1]
        live = np.setdiff1d(np.arange(width), DEAD[layer]) if layer in removed else np.arange(width)
        assert result.model.get_layer(layer).kernel.shape[-1] == len(live)
        for old, new in zip(model.get_layer(bn_name).get_weights(), result.model.get_layer(bn_name).get_weights()):
            np.testing.assert_array_equal(new, old[live])
        assert any(n.startswith(f"{layer}: ") for n in result.report.kept) == (layer not in removed)
    assert result.report.units_removed == sum(len(DEAD[l]) for l in removed)


def test_weight_pruned_zero_column_of_prunable_model(small_fashion):
    keras.utils.set_random_seed(0)
    model = pruning.make_prunable(models.build("lenet_300_100"))
    _random_biases(model, np.random.default_rng(4))
    pruning.prune(model, 0.5, method="weight")
    fc1 = model.get_layer("fc1")
    keep = fc1.kernel_mask > 0.5
    keep[:, [7, 8, 9]] = False  # three columns that weight pruning happened to empty
    fc1.set_masks(keep)
    bias = fc1.bias.numpy()
    bias[[7, 8, 9]] = [0.0, -0.5, 0.5]
    fc1.bias.assign(bias)
    result = surgery.shrink(model)
    _, (x_test, _) = small_fashion

    assert _max_diff(model, result.model, x_test) <= TOL
    # bias 0 -> relu 0, bias -0.5 -> relu 0: removed; bias +0.5 -> constant 0.5 into fc2: kept.
    assert result.model.get_layer("fc1").kernel.shape == (784, 298)
    assert result.model.get_layer("fc2").kernel.shape == (298, 100)
    assert result.report.kept == ("fc1: 1 dead unit(s) kept: 1 of them reach fc2 as non-zero constants (e.g. 0.5)",)
    assert not any(hasattr(l, "kernel_mask") for l in result.model.layers)


def test_nothing_dead_gives_equivalent_model(small_fashion):
    keras.utils.set_random_seed(0)
    model = models.build("lenet_300_100")
    _random_biases(model, np.random.default_rng(5))
    result = surgery.shrink(model)
    _, (x_test, _) = small_fashion

    assert _max_diff(model, result.model, x_test) == 0.0
    assert result.report.units_removed == 0
    assert result.report.params_after == result.report.params_before == model.count_params()
    assert result.report.kept == ()
    assert "0 units removed" in surgery.format_shrink_report(result.report)


def test_all_dead_layer_keeps_one_unit(small_fashion):
    keras.utils.set_random_seed(0)
    model = models.build("lenet_300_100")
    _kill(model.get_layer("fc2"), list(range(100)))
    result = surgery.shrink(model)
    _, (x_test, _) = small_fashion

    assert _max_diff(model, result.model, x_test) <= TOL
    # fc2 reads nothing any more, so fc1's units are unread and go too (its group keeps one)
    assert result.model.get_layer("fc1").kernel.shape == (784, 1)
    assert result.model.get_layer("fc2").kernel.shape == (1, 1)
    assert result.report.kept == ("group fc1: 1 unread channel kept: a layer needs at least one unit",
                                  "fc2: 1 dead unit kept: every unit is dead and a layer needs at least one")


def test_input_model_is_not_modified():
    keras.utils.set_random_seed(0)
    model = models.build("lenet_300_100")
    _unit_prune(model, 0.5)
    before = [w.copy() for w in model.get_weights()]
    surgery.shrink(model)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("name, macs", [
    ("lenet_300_100", 784 * 300 + 300 * 100 + 100 * 10),
    ("fc_1000", 784 * 1000 + 1000 * 1000 + 1000 * 500 + 500 * 200 + 200 * 10),
    ("small_cnn", 28 * 28 * 9 * (1 * 16 + 16 * 16) + 14 * 14 * 9 * (16 * 32 + 32 * 32) + 7 * 7 * 32 * 128 + 1280),
])
def test_count_params_and_macs(name, macs):
    model = models.build(name)
    cost = costs.count_params_and_macs(model)
    assert cost.params == model.count_params()
    assert cost.macs == macs
    assert [r.name for r in cost.layers] == [l.name for l in _weight_layers(model)]
    prunable = costs.count_params_and_macs(pruning.make_prunable(model))  # masks are not parameters
    assert (prunable.params, prunable.macs) == (cost.params, cost.macs)


def test_bad_models_raise():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        surgery.shrink(Sub())
    with pytest.raises(ValueError, match="unbuilt Sequential"):
        surgery.shrink(keras.Sequential([L.Dense(3)]))
    with pytest.raises(ValueError, match=r"expected a Keras Model \(tf_keras or Keras 3\)"):
        costs.count_params_and_macs("model")
