"""The channel pass-through rules (``tfprune.select.channel_rules``) on both Keras stacks: GroupNormalization (only
whole groups go, its group count drops) and PReLU (alpha sliced) group-pruned and shrunk with the same outputs; a user's
channel-wise layer (a learned per-channel scale) that blocks its channels until a rule is registered, then is
grouped, group-pruned and shrunk (coupled groups and plain chains) with its scale sliced; the registration errors.

Real data: Fashion-MNIST images (``small_fashion``), models trained one epoch.
"""

import numpy as np
import pytest

from conftest import squeeze_and_excite
import tfprune
from tfprune import make_prunable, prune, shrink, stacks, strip
from tfprune.select import channel_rules
from tfprune.layers import registry
from tfprune._env import keras, keras3
from tfprune.experiments import models
from tfprune.select.groups import channel_groups

STACKS = {"tf_keras": keras, "keras3": keras3}
TOL = 1e-5


def _scale_class(k, name):
    """A per-channel learned scale ``y = x * scale`` (scale: (C,)) for Keras module ``k``."""
    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(int(input_shape[-1]),), initializer="ones")

    return type(name, (k.layers.Layer,), {"build": build, "call": lambda self, x: x * self.scale,
                                          "__module__": __name__})


SCALES = {stack: _scale_class(k, "ChannelScale") for stack, k in STACKS.items()}  # no rule: blocks its channels
RULED = {stack: tfprune.register_channel_rule(_scale_class(k, "RuledScale")) for stack, k in STACKS.items()}


def _normalized(k):
    """a (8 filters) -> GroupNormalization (4 groups of 2) -> PReLU (one alpha per channel) -> b (6 filters) ->
    PReLU (one alpha per position and channel) -> pooled -> out."""
    L = k.layers
    x = k.Input((28, 28))
    a = L.Conv2D(8, 3, strides=2, padding="same", name="a")(L.Reshape((28, 28, 1), name="image")(x))
    p = L.PReLU(shared_axes=[1, 2], name="prelu")(L.GroupNormalization(groups=4, name="gn")(a))
    b = L.PReLU(name="prelu_full")(L.Conv2D(6, 3, strides=2, padding="same", name="b")(p))
    return k.Model(x, L.Dense(10, activation="softmax", name="out")(L.GlobalAveragePooling2D(name="gap")(b)))


def _scaled(k, scale_class):
    """a (8 filters, relu) -> a learned per-channel scale -> b (6 filters) -> pooled -> out."""
    L = k.layers
    x = k.Input((28, 28))
    a = L.Conv2D(8, 3, strides=2, activation="relu", name="a")(L.Reshape((28, 28, 1), name="image")(x))
    b = L.Conv2D(6, 3, strides=2, name="b")(scale_class(name="scale")(a))
    return k.Model(x, L.Dense(10, activation="softmax", name="out")(L.GlobalAveragePooling2D(name="gap")(b)))


def _trained(k, model, small_fashion):
    (x, y), (xt, _) = small_fashion
    k.utils.set_random_seed(0)
    models.compile_model(model).fit(x[:1024], y[:1024], epochs=1, batch_size=64, verbose=0)
    return model, xt[:200]


def _dead_units(layer):
    return np.flatnonzero(~registry.kernel_mask(layer).reshape(-1, registry.kernel_shape(layer)[-1]).any(axis=0))


def _outputs(model, x):
    return stacks.of(model).to_numpy(model(x))


@pytest.mark.parametrize("stack", list(STACKS))
def test_group_normalization_and_prelu_group_prune_and_shrink_with_the_same_outputs(stack, small_fashion):
    k = STACKS[stack]
    model, xt = _trained(k, _normalized(k), small_fashion)
    groups = {g.name: g for g in channel_groups(model)}
    a = groups["a"]
    assert a.prunable and a.size == 4  # the normalization's groups are the channels: two units each
    assert [(m.layer, m.role) for m in a.members] == [("a", "source"), ("gn", "follower"), ("prelu", "follower"),
                                                      ("b", "consumer")]
    np.testing.assert_array_equal(a.members[0].index, np.arange(8).reshape(4, 2))
    assert groups["b"].prunable and [m.layer for m in groups["b"].members] == ["b", "prelu_full", "out"]
    pruned = prune(make_prunable(model), 0.5, "group")
    dead = _dead_units(pruned.get_layer("a"))
    assert len(dead) == 4 and set(dead // 2) == set(dead[::2] // 2) and len(set(dead // 2)) == 2  # whole groups
    assert len(_dead_units(pruned.get_layer("b"))) == 3
    expected = _outputs(pruned, xt)
    result = shrink(pruned)
    np.testing.assert_allclose(_outputs(result.model, xt), expected, atol=TOL)
    assert result.model.get_layer("gn").groups == 2
    assert result.model.get_layer("prelu").get_weights()[0].shape == (1, 1, 4)
    alive = np.setdiff1d(np.arange(8), dead)
    np.testing.assert_array_equal(result.model.get_layer("gn").get_weights()[0],
                                  model.get_layer("gn").get_weights()[0][alive])
    np.testing.assert_array_equal(result.model.get_layer("prelu").get_weights()[0],
                                  model.get_layer("prelu").get_weights()[0][..., alive])
    assert result.model.get_layer("prelu_full").get_weights()[0].shape == (7, 7, 3)
    params = (9 * 4 + 4) + 2 * 4 + 4 + (9 * 4 * 3 + 3) + 7 * 7 * 3 + (3 * 10 + 10)
    assert result.report.params_after == params == result.model.count_params()
    assert not result.report.kept


@pytest.mark.parametrize("stack", list(STACKS))
def test_a_group_normalization_loses_whole_groups_only(stack):
    k = STACKS[stack]
    norm = k.layers.GroupNormalization(groups=2, name="gn")
    norm(k.Input((3, 3, 4)))
    rule = channel_rules.rule_for(norm)
    assert [t.tolist() for t in rule.tied(norm)] == [[0, 1], [2, 3]]
    assert rule.config(norm, [2, 3])["groups"] == 1
    assert [w.shape for w in rule.sliced(norm, [2, 3])] == [(2,), (2,)]
    with pytest.raises(ValueError, match=r"gn \(GroupNormalization\) can only lose whole groups of 2 channels; "
                                         r"channels \[0, 1\] are cut through"):
        rule.sliced(norm, [1, 2, 3])


def _kill(layer, units):
    """Zeroes the kernel columns and bias entries of ``units`` of a plain layer."""
    kernel, bias = layer.get_weights()
    kernel[..., units], bias[units] = 0.0, 0.0
    layer.set_weights([kernel, bias])


@pytest.mark.parametrize("stack", list(STACKS))
def test_a_registered_channel_wise_layer_is_grouped_pruned_and_shrunk(stack, small_fashion):
    k = STACKS[stack]
    model, xt = _trained(k, _scaled(k, RULED[stack]), small_fashion)
    scale = model.get_layer("scale").get_weights()[0]
    assert np.std(scale) > 0  # learned: slicing it wrongly would change the outputs
    a = {g.name: g for g in channel_groups(model)}["a"]
    assert a.prunable and [(m.layer, m.role) for m in a.members] == [("a", "source"), ("scale", "follower"),
                                                                     ("b", "consumer")]
    pruned = prune(make_prunable(model), 0.5, "group")
    expected = _outputs(pruned, xt)
    result = shrink(pruned)
    np.testing.assert_allclose(_outputs(result.model, xt), expected, atol=TOL)
    alive = np.setdiff1d(np.arange(8), _dead_units(pruned.get_layer("a")))
    np.testing.assert_array_equal(result.model.get_layer("scale").get_weights()[0], scale[alive])
    assert result.report.params_after == (9 * 4 + 4) + 4 + (9 * 4 * 3 + 3) + (3 * 10 + 10) and not result.report.kept
    plain = strip(make_prunable(model))  # a plain chain: dead units of a followed through the scale
    _kill(plain.get_layer("a"), [1, 5])
    result = shrink(plain)
    np.testing.assert_allclose(_outputs(result.model, xt), _outputs(plain, xt), atol=TOL)
    assert result.model.get_layer("scale").get_weights()[0].shape == (6,) and not result.report.kept


@pytest.mark.parametrize("stack", list(STACKS))
def test_without_a_rule_a_users_layer_blocks_its_channels_with_the_reason(stack, small_fashion):
    k = STACKS[stack]
    model, xt = _trained(k, _scaled(k, SCALES[stack]), small_fashion)
    hint = " (register a rule: tfprune.register_channel_rule(ChannelScale, rule))"
    a = {g.name: g for g in channel_groups(model)}["a"]
    assert a.reasons == ("scale (ChannelScale) reads them in a way tfprune does not map" + hint,)
    with pytest.raises(ValueError, match="channel group 'a' cannot be pruned: scale \\(ChannelScale\\) reads them"):
        prune(make_prunable(model), 0.5, "group", layers=["a"])
    _kill(model.get_layer("a"), [1, 5])
    result = shrink(model)
    np.testing.assert_allclose(_outputs(result.model, xt), _outputs(model, xt), atol=TOL)
    assert result.report.kept == ("a: 2 dead unit(s) kept: scale (ChannelScale) is not known to keep channels "
                                  "apart" + hint,)
    assert result.model.get_layer("a").kernel.shape[-1] == 8


def test_registration_errors_are_named():
    with pytest.raises(TypeError, match="takes a Keras layer class; got 3"):
        tfprune.register_channel_rule(3)
    with pytest.raises(TypeError, match="takes a tfprune ChannelRule; got str"):
        tfprune.register_channel_rule(SCALES["keras3"], "one_to_one")
    with pytest.raises(ValueError, match="a user's channel rule is one of one_to_one, grouped, merge; got 'flatten'"):
        tfprune.register_channel_rule(SCALES["keras3"], tfprune.ChannelRule("flatten"))
    with pytest.raises(ValueError, match="ReLU is a Keras layer type: tfprune's own table decides its channels"):
        tfprune.register_channel_rule(keras3.layers.ReLU)
    opted = type("Opted", (keras3.layers.Layer,), {"get_prunable_weights": lambda self: []})
    with pytest.raises(ValueError, match="Opted opts in to pruning"):
        tfprune.register_channel_rule(opted)
    with pytest.raises(ValueError, match="channel rule kind 'sideways' is not one of one_to_one, depthwise"):
        tfprune.ChannelRule("sideways")
    with pytest.raises(ValueError, match="a 'grouped' channel rule needs group_size"):
        tfprune.ChannelRule("grouped")
    assert channel_rules.rule_for(SCALES["keras3"](name="s")) is None


@pytest.mark.parametrize("stack", list(STACKS))
def test_prelu_slices_a_per_channel_alpha_and_keeps_a_shared_one(stack):
    k = STACKS[stack]
    per_channel, shared = k.layers.PReLU(shared_axes=[1, 2]), k.layers.PReLU(shared_axes=[1, 2, 3])
    for layer in (per_channel, shared):
        layer(k.Input((3, 3, 4)))
        layer.set_weights([np.arange(np.prod(layer.get_weights()[0].shape), dtype=np.float32).reshape(
            layer.get_weights()[0].shape)])
    (alpha,) = channel_rules.rule_for(per_channel).sliced(per_channel, [1, 3])
    np.testing.assert_array_equal(alpha, [[[1.0, 3.0]]])
    (alpha,) = channel_rules.rule_for(shared).sliced(shared, [1, 3])
    np.testing.assert_array_equal(alpha, [[[0.0]]])


@pytest.mark.parametrize("stack", list(STACKS))
def test_a_reshape_with_an_inferred_last_axis_follows_its_channels(stack):
    model = squeeze_and_excite(STACKS[stack], (1, 1, -1), lambda L, x: L.GlobalAveragePooling2D(name="pool")(x))
    group = {g.name: g for g in channel_groups(model)}["conv"]
    assert group.prunable and ("shape", "follower") in [(m.layer, m.role) for m in group.members]
