"""N:M sparsity (tfprune.select.nm, the nm_<n>x<m> methods): exact N of every M in every layer kind with an inputs axis
on both stacks, ties, dead-first and a frozen pattern, the errors, the pattern held through scheduled fit, check_nm
against TF-MOT's own checker and masks (the tiny sweep of nm_2x4 is in test_nm_tfmot.py, beside TF-MOT's)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tfprune
from conftest import plain_layer
from tfprune import callbacks, pruning
from tfprune.experiments import config as config_lib
from tfprune.experiments import models
from tfprune.experiments import preflight
from tfprune.layers import registry
from tfprune.select import nm
from tfprune.select import scoring
from tfprune._env import keras, keras3, tf

STACKS = {"tf_keras": keras, "keras3": keras3}
KIND_NAMES = list(dict.fromkeys(k.name for k in registry.KINDS))
WITH_INPUTS = ["Dense", "Conv1D", "Conv2D", "Conv3D", "Embedding", "Conv1DTranspose", "Conv2DTranspose",
               "Conv3DTranspose", "SeparableConv1D", "SeparableConv2D", "EinsumDense"]


def _groups(array, m):
    """(..., inputs, units) -> (taps, groups, m, units): the N:M groups, the reference cutting."""
    array = np.asarray(array)
    return array.reshape(-1, array.shape[-2] // m, m, array.shape[-1])


def _model(k, name):
    """A one-layer model of kind ``name`` (``plain_layer``'s builder on stack ``k``), made prunable, and its layer."""
    make, inputs = plain_layer(k.layers, name)
    x = [k.Input(a.shape[1:], dtype="int32" if a.dtype.kind == "i" else "float32") for a in inputs]
    layer = make()
    model = pruning.make_prunable(k.Model(x, layer(*x)))
    return model, next(l for l in model.layers if registry.is_prunable(l))


def _pattern(inputs):
    """2:4 where 4 divides the inputs, else (inputs // 2):inputs (the builders' layers read 2, 3, 4 or 10 inputs)."""
    m = 4 if inputs % 4 == 0 else inputs
    return m // 2, m


def test_every_kind_with_an_inputs_axis_has_one_and_no_other():
    for stack, k in STACKS.items():
        for name in KIND_NAMES:
            _, layer = _model(k, name)
            assert registry.kind_of(layer).has_inputs_axis(layer) == (name in WITH_INPUTS), (stack, name)


@pytest.mark.parametrize("stack", list(STACKS))
@pytest.mark.parametrize("name", WITH_INPUTS)
def test_exact_n_of_m_in_every_group_of_every_kind(stack, name):
    model, layer = _model(STACKS[stack], name)
    shape = registry.kernel_shape(layer)
    n, m = _pattern(shape[-2])
    kernel = registry.effective_kernel(layer)
    tfprune.prune(model, None, f"nm_{n}x{m}")
    keep = registry.kernel_mask(layer)
    assert (_groups(keep, m).sum(axis=2) == n).all()
    # The kept ones are the n largest |w| of their group.
    scores = _groups(np.abs(kernel), m)
    kept, pruned = np.where(_groups(keep, m), scores, np.inf), np.where(_groups(keep, m), -np.inf, scores)
    assert (kept.min(axis=2) >= pruned.max(axis=2)).all()
    report = tfprune.check_nm(model, n, m)[layer.name]
    assert report.ok and report.groups == keep.size // m and report.max_nonzeros <= n
    assert not registry.effective_kernel(layer)[~keep].any()


@pytest.mark.parametrize("stack", list(STACKS))
def test_layers_without_an_inputs_axis_are_skipped_by_default_and_refused_by_name(stack):
    k = STACKS[stack]
    x = k.Input((8, 8, 4))
    y = k.layers.DepthwiseConv2D(3, name="depthwise")(x)
    y = k.layers.Dense(4, name="fc")(k.layers.Reshape((36, 4))(y))
    model = pruning.make_prunable(k.Model(x, k.layers.LSTM(4, name="lstm")(y)))
    tfprune.prune(model, 0.5, "nm_2x4")
    assert (_groups(registry.kernel_mask(model.get_layer("fc")), 4).sum(axis=2) == 2).all()
    assert registry.kernel_mask(model.get_layer("depthwise")).all() and registry.kernel_mask(
        model.get_layer("lstm")).all()
    assert list(tfprune.check_nm(model)) == ["fc"]
    for name, kind in (("depthwise", "DepthwiseConv2D"), ("lstm", "LSTM")):
        with pytest.raises(ValueError, match=rf"layer '{name}' \({kind}\) has no inputs axis .*'nm_2x4'"):
            tfprune.prune(model, 0.5, "nm_2x4", layers=[name])


def _reference_keep(scores, alive, n, m):
    """Group by group: dead first, then the lowest scores, ties by position (lower input first)."""
    keep = np.zeros(scores.shape, bool)
    groups, alive_groups, out = _groups(scores, m), _groups(alive, m), _groups(keep, m)
    for p, g, u in np.ndindex(groups.shape[0], groups.shape[1], groups.shape[3]):
        order = sorted(range(m), key=lambda i: (alive_groups[p, g, i, u], groups[p, g, i, u], i))
        for i in order[m - n:]:
            out[p, g, i, u] = alive_groups[p, g, i, u]
    return out.reshape(scores.shape)


@settings(max_examples=40, deadline=None)
@given(pattern=st.sampled_from([(2, 4), (1, 4), (3, 4), (1, 2), (3, 8)]), groups=st.integers(1, 4),
       units=st.integers(1, 5), taps=st.sampled_from([(), (3,), (2, 2)]), dead=st.floats(0.0, 0.8),
       seed=st.integers(0, 9))
def test_nm_keep_matches_the_reference_with_ties_and_dead_weights(pattern, groups, units, taps, dead, seed):
    n, m = pattern
    rng = np.random.default_rng(seed)
    shape = taps + (groups * m, units)
    scores = rng.integers(0, 3, shape).astype(np.float32)  # many ties
    alive = rng.random(shape) >= dead
    keep = nm.nm_keep(scores, alive, n, m)
    np.testing.assert_array_equal(keep, _reference_keep(scores, alive, n, m))
    assert not (keep & ~alive).any()  # never revives a weight
    counts, alive_counts = _groups(keep, m).sum(axis=2), _groups(alive, m).sum(axis=2)
    np.testing.assert_array_equal(counts, np.minimum(alive_counts, n))
    # Frozen: any scores, the kept mask again -> the same mask.
    np.testing.assert_array_equal(nm.nm_keep(rng.random(shape), keep, n, m), keep)


def test_ties_prune_the_lower_inputs_first():
    keep = nm.nm_keep(np.ones((8, 2)), np.ones((8, 2), bool), 2, 4)
    np.testing.assert_array_equal(keep[:, 0], [False, False, True, True] * 2)
    alive = np.ones((4, 1), bool)
    alive[3] = False  # the dead weight goes first, although its score is the largest
    np.testing.assert_array_equal(nm.nm_keep(np.array([[1.0], [2.0], [3.0], [9.0]]), alive, 2, 4)[:, 0],
                                  [False, True, True, False])


def test_pattern_is_frozen_after_the_first_pruning():
    model = pruning.make_prunable(models.build("lenet_300_100"))
    tfprune.prune(model, 0.5, "nm_2x4")
    before = {l.name: registry.kernel_mask(l).copy() for l in model.layers if registry.is_prunable(l)}
    rng = np.random.default_rng(0)
    for layer in model.layers:  # new weights, everywhere: a second pruning must not move the pattern
        if registry.is_prunable(layer):
            layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32"))
    tfprune.prune(model, None, "nm_2x4")
    for name, mask in before.items():
        np.testing.assert_array_equal(registry.kernel_mask(model.get_layer(name)), mask)


def test_a_pattern_that_does_not_divide_a_layer_is_one_error_naming_it_and_its_shape():
    for k in STACKS.values():
        model, layer = _model(k, "Conv2D")  # 3 input channels
        with pytest.raises(ValueError, match=rf"N:M pattern 2:4 does not divide layer '{layer.name}' kernel of shape "
                                             r"\(3, 3, 3, 4\): its 3 inputs"):
            tfprune.prune(model, 0.5, "nm_2x4")
        assert registry.kernel_mask(layer).all()  # nothing changed
    with pytest.raises(ValueError, match=r"kernel has shape \(8,\): an N:M pattern needs a kernel with an inputs axis"):
        nm.check_pattern((8,), 2, 4)
    with pytest.raises(ValueError, match="1 <= N < M"):
        nm.check_pattern((8, 2), 4, 4, "layer 'fc' kernel")
    for name in ("nm_4x4", "nm_0x4", "nm_5x4"):
        assert not scoring.is_method(name)
    assert scoring.check_method("nm_2x4") is scoring.NM[0] and scoring.check_method("nm_3x8").pattern == (3, 8)
    assert {"nm_2x4", "nm_1x4"} <= set(scoring.METHODS) and not scoring.removes_units("nm_2x4")


def test_sparsity_is_the_patterns_or_zero():
    model = pruning.make_prunable(models.build("lenet_300_100"))
    tfprune.prune(model, 0.0, "nm_2x4")
    assert all(registry.kernel_mask(l).all() for l in model.layers if registry.is_prunable(l))
    for value in (0.3, 0.75, 0.9):
        with pytest.raises(ValueError, match=rf"sparsity of layer 'fc1' {value} does not fit method 'nm_2x4': it keeps "
                                             r"2 of every 4 weights, sparsity 0.5 exactly"):
            tfprune.prune(model, value, "nm_2x4")
    with pytest.raises(ValueError, match="'fc2' 0.5 does not fit method 'nm_1x4'.*sparsity 0.75"):
        tfprune.prune(model, method="nm_1x4", layers={"fc1": 0.75, "fc2": 0.5})
    with pytest.raises(ValueError, match="0.3 does not fit method 'nm_2x4'"):
        callbacks.RankPruning("nm_2x4", 0.3)
    tfprune.prune(model, 0.75, "nm_1x4")
    assert tfprune.overall_sparsity(tfprune.sparsity_report(model)) == 0.75


def test_global_scope_is_refused_with_the_reason():
    model = pruning.make_prunable(models.build("lenet_300_100"))
    reason = r"method 'nm_2x4' keeps 2 of every 4 .*no allocation across layers: scope 'layer' only"
    with pytest.raises(ValueError, match=reason):
        tfprune.prune(model, 0.5, "nm_2x4", scope="global")
    with pytest.raises(ValueError, match=reason):
        scoring.select(scoring.check_method("nm_2x4"), [np.ones((4, 2))], [0.5], [np.ones((4, 2), bool)], "global")
    with pytest.raises(ValueError, match=reason):
        callbacks.RankPruning("nm_2x4", 0.5, scope="global")


def test_preflight_refuses_other_ks_global_scope_and_a_layer_it_cannot_cut():
    model = models.build("lenet_300_100")
    config = config_lib.SweepConfig("/tmp/unused", methods=("weight", "nm_2x4"), sparsities=(0, 50))
    preflight.check_sweep(config, model)
    config = config_lib.SweepConfig("/tmp/unused", methods=("nm_2x4",), sparsities=(0, 50, 90))
    refused = r"--sparsities: --methods=nm_2x4 keeps 2 of every 4 weights, so it prunes k = 50 % exactly \(or " \
              r"nothing at k = 0\), not k = 90 %"
    with pytest.raises(config_lib.ConfigError, match=refused):
        preflight.check_sweep(config, model)
    config = config_lib.SweepConfig("/tmp/unused", methods=("nm_2x4",), sparsities=(50,), scope="global")
    with pytest.raises(config_lib.ConfigError, match="--methods=nm_2x4 keeps 2 of every 4 .*--scope=layer only"):
        preflight.check_sweep(config, model)
    config = config_lib.SweepConfig("/tmp/unused", methods=("nm_3x8",), sparsities=(62.5,))
    with pytest.raises(config_lib.ConfigError, match=r"^--methods=nm_3x8: N:M pattern 3:8 does not divide layer "
                                                     r"'fc2' kernel of shape \(300, 100\): its 300 inputs"):
        preflight.check_sweep(config, model)
    assert config_lib.check_methods(["nm_2x4", "nm_1x8"]) == ("nm_2x4", "nm_1x8")


class _PatternPerStep(keras.callbacks.Callback):
    """After every batch: (step, every prunable kernel exactly 2:4, the masks, the fc1 kernel)."""

    def __init__(self, pruner):
        super().__init__()
        self.pruner, self.seen = pruner, []

    def on_train_batch_end(self, batch, logs=None):
        layers = [l for l in self.model.layers if registry.is_prunable(l)]
        masks = [registry.kernel_mask(l).copy() for l in layers]
        exact = all((_groups(mask, 4).sum(axis=2) == 2).all() for mask in masks)
        self.seen.append((self.pruner.step, exact, masks, registry.effective_kernel(layers[0]).copy()))


@pytest.mark.parametrize("stack", ["2", "3"])
def test_scheduled_nm_applies_its_pattern_at_the_begin_step_and_holds_it(stack, small_fashion):
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
    (x, y), _ = small_fashion
    k = keras if stack == "2" else keras3
    k.utils.set_random_seed(0)
    model = models.compile_model(pruning.make_prunable(models.build("lenet_300_100", keras=stack)))
    # The ramp prunes at steps 5 (to 0 %), 10, ..., 30; the pattern comes whole at its begin step, 5, and stays.
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.5, begin_step=5, end_step=30, frequency=5)
    pruner = callbacks.RankPruning("nm_2x4", schedule)
    recorder = _PatternPerStep(pruner)
    model.fit(x[:1280], y[:1280], epochs=1, batch_size=32, verbose=0, callbacks=[pruner, recorder])
    assert pruner.history == [(5, 0.5)]
    assert all(not exact and all(m.all() for m in masks) for step, exact, masks, _ in recorder.seen if step < 5)
    frozen = next(masks for step, _, masks, _ in recorder.seen if step == 5)
    after = [(exact, masks, kernel) for step, exact, masks, kernel in recorder.seen if step >= 5]
    assert len(after) == 36 and all(exact for exact, _, _ in after)
    for _, masks, _ in after:  # the same pattern to the end of fit
        assert all(np.array_equal(a, b) for a, b in zip(masks, frozen))
    assert not np.allclose(after[0][2], after[-1][2])  # the kept weights trained in between
    stripped = pruning.strip(model)
    assert all(r.ok for r in tfprune.check_nm(stripped).values())


def _tfmot_checker():
    """TF-MOT's m_by_n helpers (``is_pruned_m_by_n``, which its ``check_sparsity_m_by_n`` tool runs, and its masks)."""
    from tensorflow_model_optimization.python.core.sparsity.keras import (  # pylint: disable=g-import-not-at-top
        pruning_utils)
    return pruning_utils


def test_check_nm_catches_a_broken_group_and_agrees_with_tfmots_checker():
    pruning_utils = _tfmot_checker()
    x = keras.Input((6, 6, 8))
    y = keras.layers.Conv2D(4, 3, name="conv")(x)
    model = pruning.make_prunable(keras.Model(x, keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(y))))
    tfprune.prune(model, 0.5, "nm_2x4")
    stripped = pruning.strip(model)
    kernels = {name: stripped.get_layer(name).get_weights()[0] for name in ("conv", "fc")}
    for kernel in kernels.values():
        assert tfprune.check_nm(kernel).ok and pruning_utils.is_pruned_m_by_n(tf.constant(kernel), (2, 4))
    broken = kernels["conv"].copy()
    tap = broken[1, 2, 4:8, 3]  # one group of 4 input channels of unit 3 at tap (1, 2)
    broken[1, 2, 4 + int(np.flatnonzero(tap == 0)[0]), 3] = 0.5  # 3 non-zeros of 4
    report = tfprune.check_nm(broken, 2, 4)
    assert (report.violations, report.max_nonzeros, report.groups, report.ok) == (1, 3, 3 * 3 * 2 * 4, False)
    assert not pruning_utils.is_pruned_m_by_n(tf.constant(broken), (2, 4))
    dead = kernels["fc"].copy()
    dead[:, 0] = 0  # a dead unit: fewer than n non-zeros still satisfies the pattern
    assert tfprune.check_nm(dead).ok
    rng, verdicts = np.random.default_rng(0), []
    for shape in ((8, 3), (10, 3), (2, 2, 8, 3), (3, 3, 6, 2)):  # ragged inputs too: TF-MOT's last, shorter group
        for n, m in ((2, 4), (1, 4), (3, 4)):
            padded = shape[:-2] + (-(-shape[-2] // m) * m, shape[-1])
            for _ in range(6):  # an N:M kernel (cut to the shape), half of them then broken at one random weight
                weights = rng.normal(size=padded)
                kernel = (weights * nm.nm_keep(np.abs(weights), np.ones(padded, bool), n, m))[..., :shape[-2], :].copy()
                if rng.random() < 0.5:
                    kernel[np.unravel_index(rng.integers(kernel.size), shape)] = 1.0
                verdicts.append(tfprune.check_nm(kernel, n, m).ok)
                assert verdicts[-1] == pruning_utils.is_pruned_m_by_n(tf.constant(kernel), (m - n, m)), (shape, n, m)
    assert 0 < sum(verdicts) < len(verdicts)
    with pytest.raises(ValueError, match="inputs axis"):
        tfprune.check_nm(np.ones(8))


def test_same_masks_as_tfmots_m_by_n_on_the_same_kernels():
    """tfprune's nm_<n>x<m> is TF-MOT's sparsity_m_by_n=(m - n, m): TF-MOT counts zeros, tfprune kept weights."""
    pruning_utils = _tfmot_checker()
    rng = np.random.default_rng(1)
    for shape in ((16, 5), (3, 3, 8, 4)):
        kernel = rng.normal(size=shape).astype(np.float32)  # no ties
        for n, m in ((2, 4), (3, 4), (1, 4)):
            prepared = pruning_utils.weights_rearrange(tf.constant(kernel))
            theirs = pruning_utils.m_by_n_sparsity_mask_prepare(
                pruning_utils.generate_m_by_n_mask(prepared, (m - n, m)), tf.TensorShape(shape)).numpy() > 0.5
            np.testing.assert_array_equal(nm.nm_keep(np.abs(kernel), np.ones(shape, bool), n, m), theirs)
