"""Group pruning (``method="group"``, ``group_mean``, ``group_max``) and shrinking by groups, on both Keras stacks:
exact counts per group, the same channels removed from every member, importance as stated, global scope, masks
held through fit on a schedule, the errors; shrinking to the analytic parameter count with the masked model's
outputs; keras.applications ResNet50, MobileNetV2, EfficientNetB0 and DenseNet121 shrunk with the same logits and
ResNet50 below 30 % of its parameters and MACs.

Real data: Fashion-MNIST images through a residual model with a depthwise follower, a concatenation and a Dense
head (the groups of ``test_groups``' model); the applications models run on Fashion-MNIST padded to 32×32×3.
"""

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from conftest import FASHION_DIR, require
from tfprune import make_prunable, prune, prune_count, shrink, stacks, strip
from tfprune.layers import registry
from tfprune._env import keras, keras3
from tfprune.callbacks import RankPruning
from tfprune.cli import compare as compare_main
from tfprune.experiments import models
from tfprune.experiments.results import store
from tfprune.select.group_pruning import channel_scores
from tfprune.select.groups import channel_groups

STACKS = {"tf_keras": keras, "keras3": keras3}


def residual(k):
    """a, b joined by an Add (one group); c with a depthwise follower read by e; e and the Add concatenated, pooled
    and read by h; out gives the classes."""
    L = k.layers
    x = k.Input((28, 28))
    a = L.ReLU(name="relu_a")(L.BatchNormalization(name="bn_a")(L.Conv2D(8, 3, strides=2, padding="same", name="a")(
        L.Reshape((28, 28, 1), name="image")(x))))
    b = L.BatchNormalization(name="bn_b")(L.Conv2D(8, 3, padding="same", name="b")(a))
    s = L.Add(name="add")([a, b])
    d = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(L.Conv2D(4, 1, name="c")(s))
    f = L.Concatenate(name="cat")([L.Conv2D(6, 1, activation="relu", name="e")(d), s])
    h = L.Dense(5, activation="relu", name="h")(L.GlobalAveragePooling2D(name="gap")(f))
    return k.Model(x, L.Dense(10, activation="softmax", name="out")(h))


def _params(a, c, e, h):
    """Parameters of ``residual`` with a (= b), c, e, h channels left."""
    return ((9 * a + a) + 4 * a + (9 * a * a + a) + 4 * a + (a * c + c) + (9 * 2 * c + 2 * c) + (2 * c * e + e)
            + ((e + a) * h + h) + (h * 10 + 10))


@pytest.fixture(scope="module", params=list(STACKS))
def trained(request, small_fashion):
    """(a prunable copy maker of the residual model trained one epoch, (x, y), test images)."""
    k = STACKS[request.param]
    (x, y), (xt, _) = small_fashion
    x, y, xt = x[:1024], y[:1024], xt[:200]
    k.utils.set_random_seed(0)
    model = models.compile_model(residual(k))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return (lambda: make_prunable(model)), (x, y), xt


def _dead_units(layer):
    return np.flatnonzero(~registry.kernel_mask(layer).reshape(-1, registry.kernel_shape(layer)[-1]).any(axis=0))


def test_each_group_loses_exact_counts_and_every_member_the_same_channels(trained):
    copy, _, _ = trained
    model = prune(copy(), 0.5, "group")
    dead = {n: _dead_units(model.get_layer(n)) for n in ("a", "b", "c", "e", "h", "out")}
    assert {n: len(d) for n, d in dead.items()} == {"a": 4, "b": 4, "c": 2, "e": 3, "h": 3, "out": 0}
    np.testing.assert_array_equal(dead["a"], dead["b"])  # joined by the Add: one group
    keep = registry.kernel_mask(model.get_layer("b"))
    assert not keep[:, :, dead["a"], :].any()  # b reads a: its rows of the removed channels go too
    rows = registry.kernel_mask(model.get_layer("h"))  # h reads [e (6), add (8)]
    assert not rows[dead["e"]].any() and not rows[6 + dead["a"]].any()
    dw = registry.kernel_mask(model.get_layer("dw"))
    assert not dw[:, :, dead["c"], :].any() and dw[:, :, np.setdiff1d(np.arange(4), dead["c"]), :].all()
    e_rows = registry.kernel_mask(model.get_layer("e"))[0, 0]  # e reads dw's outputs 2c and 2c + 1
    assert not e_rows[np.concatenate([2 * dead["c"], 2 * dead["c"] + 1])].any()


def test_importance_is_the_l2_norm_over_the_groups_weights(trained):
    copy, _, _ = trained
    model = copy()
    group = {g.name: g for g in channel_groups(model)}["c"]
    layers = {l.name: l for l in model.layers}
    c, dw, e = (registry.effective_kernel(model.get_layer(n)) for n in ("c", "dw", "e"))
    by_hand = np.sqrt(np.square(c[0, 0]).sum(axis=0) + np.square(dw).sum(axis=(0, 1, 3))
                      + np.square(e[0, 0]).reshape(4, 2, 6).sum(axis=(1, 2)))
    np.testing.assert_allclose(channel_scores(group, layers, "group"), by_hand, rtol=1e-6)
    norms = np.stack([np.sqrt(np.square(c[0, 0]).sum(axis=0)), np.sqrt(np.square(dw).sum(axis=(0, 1, 3))),
                      np.sqrt(np.square(e[0, 0]).reshape(4, 2, 6).sum(axis=(1, 2)))])
    np.testing.assert_allclose(channel_scores(group, layers, "group_mean"), norms.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(channel_scores(group, layers, "group_max"), norms.max(axis=0), rtol=1e-6)
    for method in ("group_mean", "group_max"):
        assert len(_dead_units(prune(copy(), 0.5, method).get_layer("c"))) == 2


def test_global_scope_prunes_the_count_over_all_groups(trained):
    copy, _, _ = trained
    model = prune(copy(), 0.5, "group", scope="global")
    sizes = {"a": 8, "c": 4, "e": 6, "h": 5}
    dead = sum(len(_dead_units(model.get_layer(n))) for n in sizes)
    assert dead == prune_count(0.5, sum(sizes.values()))


@pytest.mark.slow
def test_masks_hold_through_fit_on_a_schedule_and_shrinking_keeps_the_outputs(trained):
    copy, (x, y), xt = trained
    schedule = lambda step: (True, min(0.5, 0.1 * step))  # pylint: disable=unnecessary-lambda-assignment
    model = models.compile_model(copy())
    model.fit(x, y, epochs=1, batch_size=128, verbose=0, callbacks=[RankPruning("group", schedule)])
    counts = {n: len(_dead_units(model.get_layer(n))) for n in ("a", "b", "c", "e", "h")}
    assert counts == {"a": 4, "b": 4, "c": 2, "e": 3, "h": 3}
    keeps = {l.name: registry.kernel_mask(l) for l in model.layers if registry.is_prunable(l)}
    models.compile_model(model).fit(x, y, epochs=1, batch_size=128, verbose=0)
    for name, keep in keeps.items():
        assert not np.any(registry.effective_kernel(model.get_layer(name))[~keep]), name
    masked = stacks.of(model).to_numpy(model(xt))
    result = shrink(model)
    np.testing.assert_allclose(stacks.of(model).to_numpy(result.model(xt)), masked, atol=1e-5)
    assert result.report.params_after == _params(4, 2, 3, 2)
    assert result.model.count_params() == _params(4, 2, 3, 2)
    assert not result.report.kept


def test_groups_that_cannot_be_pruned_are_named(trained):
    copy, _, _ = trained
    with pytest.raises(ValueError, match="channel group 'out' cannot be pruned: a model output"):
        prune(copy(), 0.5, "group", layers=["out"])
    with pytest.raises(ValueError, match="'nope' is not a channel group.*groups: a, c, e, h"):
        prune(copy(), 0.5, "group", layers=["nope"])
    plain = strip(copy())
    with pytest.raises(ValueError, match="no channel group tfprune can prune \\(call make_prunable first"):
        prune(plain, 0.5, "group")
    model = prune(copy(), 0.5, "group", layers={"b": 0.25})  # a source's name selects its group
    assert len(_dead_units(model.get_layer("a"))) == 2 and len(_dead_units(model.get_layer("c"))) == 0


def _padded(small_fashion, n):
    (_, _), (xt, _) = small_fashion
    return np.repeat(np.pad(xt[:n, ..., None], ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1) * 255.0


APPLICATIONS = [("keras3", "ResNet50"), ("keras3", "MobileNetV2"), ("keras3", "EfficientNetB0"),
                ("keras3", "DenseNet121")]  # tf_keras: the residual model above (and scripts/bench.sh groups --keras=2)


@pytest.mark.parametrize("stack,name", APPLICATIONS, ids=[f"{s}-{n}" for s, n in APPLICATIONS])
@pytest.mark.slow
def test_applications_shrink_by_groups_with_the_same_logits(stack, name, small_fashion):
    k = STACKS[stack]
    options = {"alpha": 0.35} if name == "MobileNetV2" else {}
    model = getattr(k.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10,
                                          classifier_activation=None, **options)
    x = _padded(small_fashion, 8)
    models.calibrate_batchnorm(model, x)  # untrained: BatchNorm statistics of real images, so the logits are not ~0
    pruned = prune(make_prunable(model), 0.5, "group")
    logits = stacks.of(model).to_numpy(pruned(x))
    assert np.std(logits) > 0.01
    result = shrink(pruned)
    np.testing.assert_allclose(stacks.of(model).to_numpy(result.model(x)), logits, atol=1e-5 * np.abs(logits).max(),
                               rtol=1e-5)
    params, macs = (result.report.params_after / result.report.params_before,
                    result.report.macs_after / result.report.macs_before)
    assert params < 0.32 and macs < 0.33
    if name == "ResNet50":
        assert params <= 0.30 and macs <= 0.30


@pytest.fixture(scope="module")
def residual_file(small_fashion, tmp_path_factory):
    """The tf_keras residual model trained one epoch, as a ``.keras`` file."""
    (x, y), _ = small_fashion
    keras.utils.set_random_seed(0)
    model = models.compile_model(residual(keras))
    model.fit(x[:1024], y[:1024], epochs=1, batch_size=64, verbose=0)
    path = str(tmp_path_factory.mktemp("residual") / "residual.keras")
    model.save(path)
    return path


def _command(main_module, path, out, *extra):
    """Runs a command's main on the model file; returns its points by key."""
    argv = ["cmd", f"--model_path={path}", f"--data_dir={require(FASHION_DIR)}", "--train_size=2000", "--verbose=0",
            f"--output_dir={out}", *extra]
    with flagsaver.flagsaver():
        flags.FLAGS(main_module.with_defaults(argv) if main_module is compare_main else argv)
        main_module.main(["cmd"])
    return {p.key: p for p in store.load_points([out])}


@pytest.mark.slow
def test_compare_runs_group_pruning_on_a_residual_model_file_and_exports_it_shrunk(residual_file, tmp_path, capsys):
    points = _command(compare_main, residual_file, str(tmp_path / "cmp"), "--methods=group,tfmot",
                      "--sparsities=50", "--finetune_epochs=1", "--export=float", "--export_eval_size=500")
    assert "Group pruning" in capsys.readouterr().out
    assert sorted(points) == ["group-k50", "tfmot-k50"]
    group = points["group-k50"]
    assert {n: group.units_kept[n] for n in ("a", "b", "c", "e", "h", "out")} == \
        {"a": 4, "b": 4, "c": 2, "e": 3, "h": 2, "out": 10}
    assert group.shrink.shrunk_params == _params(4, 2, 3, 2) and group.shrink.kept_notes == 0
    assert group.shrink.max_abs_diff <= 1e-5
    shrunk = [e for e in group.exports if e.model == "shrunk"]
    assert [e.variant for e in shrunk] == ["float"]
    assert shrunk[0].size_bytes < [e for e in group.exports if e.model == "pruned"][0].size_bytes
