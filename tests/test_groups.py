"""Coupled channel groups (``tfprune.select.groups``) on both Keras stacks: synthetic graphs whose groups are known by
hand (a residual join, a depthwise follower, a concatenation, squeeze-and-excite, Flatten), the cases that keep a group
(LayerNormalization, a softmax, a model input in a join, the model output; not a sigmoid, whose readers lose the
channel too), and the
groups of keras.applications ResNet50, MobileNetV2, EfficientNetB0 and DenseNet121.
"""

import numpy as np
import pytest

from conftest import squeeze_and_excite
from tfprune import make_prunable, prune, stacks
from tfprune._env import keras, keras3
from tfprune.select.group_pruning import channels_kept
from tfprune.select.groups import channel_groups, format_groups

STACKS = {"tf_keras": keras, "keras3": keras3}


def _by_name(groups):
    return {g.name: g for g in groups}


def _index(group, layer, role=None):
    (member,) = [m for m in group.members if m.layer == layer and role in (None, m.role)]
    return member.role, member.index


def _residual(k):
    """a, b joined by an Add; c with a depthwise follower (multiplier 2) read by e; e and the Add concatenated and
    read by h through global pooling; out is the model output."""
    L = k.layers
    x = k.Input((8, 8, 3))
    a = L.ReLU(name="relu_a")(L.BatchNormalization(name="bn_a")(L.Conv2D(8, 3, padding="same", name="a")(x)))
    b = L.BatchNormalization(name="bn_b")(L.Conv2D(8, 3, padding="same", name="b")(a))
    s = L.Add(name="add")([a, b])
    c = L.Conv2D(4, 1, name="c")(s)
    d = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(c)
    e = L.Conv2D(6, 1, name="e")(d)
    f = L.Concatenate(name="cat")([e, s])
    h = L.Dense(5, activation="relu", name="h")(L.GlobalAveragePooling2D(name="gap")(f))
    return k.Model(x, L.Dense(3, name="out")(h))


@pytest.mark.parametrize("stack", list(STACKS))
def test_residual_depthwise_and_concatenated_groups_are_the_hand_made_ones(stack):
    groups = _by_name(channel_groups(_residual(STACKS[stack])))
    assert list(groups) == ["a", "c", "e", "h", "out"]
    a = groups["a"]
    assert a.size == 8 and a.prunable
    assert [(m.layer, m.role) for m in a.members] == [
        ("a", "source"), ("bn_a", "follower"), ("b", "consumer"), ("b", "source"), ("bn_b", "follower"),
        ("c", "consumer"), ("h", "consumer")]
    for layer, role in (("a", "source"), ("b", "source"), ("b", "consumer"), ("bn_a", None), ("bn_b", None),
                        ("c", None)):
        np.testing.assert_array_equal(_index(a, layer, role)[1], np.arange(8)[:, None])
    np.testing.assert_array_equal(_index(a, "h")[1], 6 + np.arange(8)[:, None])  # after e's 6 channels
    c = groups["c"]
    np.testing.assert_array_equal(_index(c, "dw")[1], np.arange(4)[:, None])
    np.testing.assert_array_equal(_index(c, "e")[1], np.arange(8).reshape(4, 2))  # rows 2j, 2j + 1
    np.testing.assert_array_equal(_index(groups["e"], "h")[1], np.arange(6)[:, None])
    assert [m.layer for m in groups["h"].members] == ["h", "out"]
    assert groups["out"].reasons == ("a model output (its channels are the classes)",)
    assert format_groups(list(groups.values())).splitlines()[-1] == \
        "5 groups, 4 prunable, 23 of 26 channels in prunable groups"
    model = prune(make_prunable(_residual(STACKS[stack])), 0.5, "group")
    kept = channels_kept(model)
    assert kept == {"a": 4, "c": 2, "e": 3, "h": 2, "out": 3}
    table = format_groups(channel_groups(model), kept)
    assert "8 (4)" in table.splitlines()[1] and table.splitlines()[-1].endswith(", 14 kept")


@pytest.mark.parametrize("stack", list(STACKS))
def test_squeeze_and_excite_and_flatten(stack):
    model = squeeze_and_excite(STACKS[stack], (1, 1, 8), lambda L, x: L.Flatten(name="flat")(
        L.Conv2D(5, 1, name="mix")(x)), squeeze=4)
    groups = _by_name(channel_groups(model))
    conv_group = groups["conv"]
    assert conv_group.prunable  # sigmoid(0) = 0.5 only multiplies a channel that is 0
    assert [(m.layer, m.role) for m in conv_group.members] == [
        ("conv", "source"), ("squeeze", "consumer"), ("excite", "source"), ("shape", "follower"),
        ("mix", "consumer")]
    np.testing.assert_array_equal(_index(groups["squeeze"], "excite")[1], np.arange(4)[:, None])
    role, rows = _index(groups["mix"], "out")  # through Flatten: channel c of 5 is every input s * 5 + c
    assert role == "consumer"
    np.testing.assert_array_equal(rows, np.arange(4 * 4 * 5).reshape(16, 5).T)


def _kept(k, build):
    L = k.layers
    x = k.Input((6, 6, 3))
    return _by_name(channel_groups(k.Model(x, L.Dense(2, name="out")(L.GlobalAveragePooling2D(name="gap")(
        build(L, x))))))


@pytest.mark.parametrize("stack", list(STACKS))
def test_what_keeps_a_group_is_named(stack):
    k = STACKS[stack]
    norm = _kept(k, lambda L, x: L.Conv2D(4, 1, name="c2")(L.LayerNormalization(name="ln")(
        L.Conv2D(4, 1, name="c1")(x))))
    assert norm["c1"].reasons == ("ln (LayerNormalization) normalizes across the channels",)
    assert norm["c2"].prunable
    sigmoid = _kept(k, lambda L, x: L.Conv2D(4, 1, name="c2")(L.Conv2D(4, 1, activation="sigmoid", name="c1")(x)))
    assert sigmoid["c1"].prunable  # c2's rows of a removed channel are zeroed too: its sigmoid(0) is never read
    softmax = _kept(k, lambda L, x: L.Dense(4, activation="softmax", name="c1")(x))
    assert softmax["c1"].reasons == ("c1's activation 'softmax' mixes its units",)
    joined = _kept(k, lambda L, x: L.Add(name="add")([x, L.Conv2D(3, 1, name="c1")(x)]))
    assert joined["c1"].reasons == ("a model input",)
    assert not joined["out"].prunable


@pytest.mark.parametrize("stack", list(STACKS))
@pytest.mark.slow
def test_resnet50_stages_are_one_group_each_and_mobilenet_depthwise_layers_follow(stack):
    k = STACKS[stack]
    model = k.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    resnet = channel_groups(model)
    stages = [g for g in resnet if len(g.role("source")) > 1]
    assert [(g.name, g.size, len(g.role("source"))) for g in stages] == [
        ("conv2_block1_0_conv", 256, 4), ("conv3_block1_0_conv", 512, 5), ("conv4_block1_0_conv", 1024, 7),
        ("conv5_block1_0_conv", 2048, 4)]
    assert all(g.prunable for g in resnet if g.name != "predictions")
    # every unit of every convolution and Dense is one channel of one group
    convs = [l for l in model.layers if isinstance(l, (k.layers.Conv2D, k.layers.Dense))]
    assert sum(g.size * len(g.role("source")) for g in resnet) == sum(int(l.kernel.shape[-1]) for l in convs)
    mobilenet = k.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10, alpha=0.35)
    groups = channel_groups(mobilenet)
    followed = [m.layer for g in groups for m in g.role("follower")
                if isinstance(mobilenet.get_layer(m.layer), k.layers.DepthwiseConv2D)]
    assert sorted(followed) == sorted(l.name for l in mobilenet.layers if isinstance(l, k.layers.DepthwiseConv2D))
    assert [g.name for g in groups if not g.prunable] == ["predictions"]


@pytest.mark.slow
def test_efficientnet_excitations_join_their_blocks_and_densenet_concatenations_stay_apart():
    k = keras3
    efficientnet = channel_groups(k.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=10))
    excites = {m.layer: g.name for g in efficientnet for m in g.role("source") if m.layer.endswith("se_expand")}
    assert len(excites) == 16 and excites["block1a_se_expand"] == "stem_conv"
    assert excites["block2a_se_expand"] == "block2a_expand_conv"
    assert [g.name for g in efficientnet if not g.prunable] == ["predictions"]
    densenet = k.applications.DenseNet121(weights=None, input_shape=(32, 32, 3), classes=10)
    groups = channel_groups(densenet)
    convs = [l for l in densenet.layers if isinstance(l, (k.layers.Conv2D, k.layers.Dense))]
    assert [(g.name, g.size) for g in groups] == [(l.name, int(l.kernel.shape[-1])) for l in convs]
    assert stacks.of(densenet) is stacks.KERAS3
