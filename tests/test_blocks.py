"""Block pruning (tfprune.select.blocks, the block_* methods): exact block counts, ragged tails, scopes, masks held
through fit, bad block shapes, and TF-MOT's block_size on the same kernels."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tfprune
from tfprune import callbacks, pruning
from tfprune.select import blocks
from tfprune.select import masks
from tfprune.layers import registry
from tfprune.select import scoring
from tfprune.experiments import models
from tfprune._env import keras


def block_view(kernel, block):
    """(positions, input blocks, units...) -> for each block, the set of its entries' values (reference cutting)."""
    units, inputs = block
    flat = np.asarray(kernel).reshape(-1, kernel.shape[-2], kernel.shape[-1])
    out = []
    for p in range(flat.shape[0]):
        for i in range(0, flat.shape[1], inputs):
            for u in range(0, flat.shape[2], units):
                out.append(flat[p, i:i + inputs, u:u + units])
    return out


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 12), taps=st.sampled_from([(), (3,), (2, 2)]),
       block=st.sampled_from([(1, 4), (1, 16), (2, 2), (3, 5), (1, 1)]), sparsity=st.floats(0.0, 0.99),
       norm=st.sampled_from(blocks.NORMS), seed=st.integers(0, 5))
def test_exact_block_counts_whole_blocks_and_tails_first(rows, cols, taps, block, sparsity, norm, seed):
    shape = taps + (rows, cols)
    if block[1] > rows or block[0] > cols:
        with pytest.raises(ValueError, match=r"does not fit kernel of shape"):
            blocks.check_block(shape, block)
        return
    kernel = np.random.default_rng(seed).normal(size=shape)
    scorer = scoring.block_scorer(*block, norm)
    keep = scorer.kernel_keep(masks.keep_live(scorer.scores(kernel), scorer.alive(np.ones(shape, bool)), sparsity),
                              np.ones(shape, bool))
    pieces = block_view(keep, block)
    assert len(pieces) == blocks.count(shape, block)
    assert all(p.all() or not p.any() for p in pieces)  # every block whole: all kept or all pruned
    pruned = [not p.any() for p in pieces]
    assert sum(pruned) == masks.prune_count(sparsity, len(pieces))
    tails = [p.size < block[0] * block[1] for p in block_view(kernel, block)]
    # Tails go first: no whole block is pruned while a tail block is kept.
    assert not (any(t and not d for t, d in zip(tails, pruned)) and any(not t and d for t, d in zip(tails, pruned)))
    # Among whole blocks, every pruned one scores at most every kept one (RMS or mean |w|).
    reduce = (lambda v: np.sqrt(np.mean(np.square(v)))) if norm == "l2" else (lambda v: np.mean(np.abs(v)))
    whole = [(reduce(v), d) for v, d, t in zip(block_view(kernel, block), pruned, tails) if not t]
    if any(d for _, d in whole) and not all(d for _, d in whole):
        assert max(s for s, d in whole if d) <= min(s for s, d in whole if not d)


def test_block_method_names():
    assert scoring.check_method("block_1x16").block == (1, 16)
    assert scoring.check_method("block_2x8") is scoring.block_scorer(2, 8)
    assert scoring.check_method("block_l1_1x4").name == "block_l1_1x4"
    for name in ("block_0x4", "block_1x", "blocks_1x4", "block_l3_1x4"):
        with pytest.raises(ValueError, match="is not one of"):
            scoring.check_method(name)
    assert not scoring.removes_units("block_1x4") and {"block_1x4", "block_1x16"} <= set(scoring.METHODS)


def test_prune_model_exact_per_layer_and_global_and_plan():
    model = pruning.make_prunable(models.build("lenet_300_100"))  # inputs 784, 300, 100: 300 and 100 ragged in 16s
    pruning.prune(model, 0.9, method="block_1x16")
    for layer in model.layers:
        if registry.is_prunable(layer):
            shape, mask = registry.kernel_shape(layer), registry.kernel_mask(layer)
            dead = ~scoring.block_scorer(1, 16).alive(mask)
            assert dead.sum() == masks.prune_count(0.9, blocks.count(shape, (1, 16))), layer.name
            assert not mask[-(shape[0] % 16 or shape[0]):].any() or shape[0] % 16 == 0  # tails pruned first
    glob = pruning.make_prunable(models.build("lenet_300_100"))
    pruning.prune(glob, 0.8, method="block_1x4", scope="global")
    counts = [(~scoring.block_scorer(1, 4).alive(registry.kernel_mask(l))).sum() for l in glob.layers
              if registry.is_prunable(l)]
    total = sum(blocks.count(registry.kernel_shape(l), (1, 4)) for l in glob.layers if registry.is_prunable(l))
    assert sum(counts) == masks.prune_count(0.8, total)
    plan = pruning.make_prunable(models.build("lenet_300_100"))
    pruning.prune(plan, method="block_1x4", layers={"fc1": 0.95, "fc2": 0.5})
    fc1, fc2 = plan.get_layer("fc1"), plan.get_layer("fc2")
    assert (~scoring.block_scorer(1, 4).alive(registry.kernel_mask(fc1))).sum() == masks.prune_count(0.95, 196 * 300)
    assert (~scoring.block_scorer(1, 4).alive(registry.kernel_mask(fc2))).sum() == masks.prune_count(0.5, 75 * 100)
    assert registry.kernel_mask(plan.get_layer("logits")).all()


def test_conv_blocks_run_along_input_channels_at_each_tap():
    x = keras.Input((8, 8, 8))
    model = keras.Model(x, keras.layers.Dense(3)(keras.layers.Flatten()(keras.layers.Conv2D(6, 3, name="conv")(x))))
    prunable = pruning.make_prunable(model)
    pruning.prune(prunable, 0.5, method="block_1x4", layers=["conv"])
    mask = registry.kernel_mask(prunable.get_layer("conv"))  # (3, 3, 8, 6): blocks of 4 input channels
    grouped = mask.reshape(3, 3, 2, 4, 6)
    assert (grouped.all(axis=3) | ~grouped.any(axis=3)).all()
    assert (~grouped.any(axis=3)).sum() == masks.prune_count(0.5, 3 * 3 * 2 * 6)


def test_impossible_block_is_one_error_naming_layer_and_shape():
    model = pruning.make_prunable(models.build("lenet_300_100"))
    with pytest.raises(ValueError, match=r"block 1x400 .*layer 'fc2' kernel of shape \(300, 100\)"):
        pruning.prune(model, 0.5, method="block_1x400")
    assert all(registry.kernel_mask(l).all() for l in model.layers if registry.is_prunable(l))  # nothing changed


def test_block_masks_held_through_scheduled_fit(small_fashion):
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
    (x, y), _ = small_fashion
    keras.utils.set_random_seed(0)
    model = models.compile_model(pruning.make_prunable(models.build("lenet_300_100")))
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=20, frequency=5)
    model.fit(x[:1024], y[:1024], epochs=1, batch_size=32, verbose=0,
              callbacks=[callbacks.RankPruning("block_1x4", schedule)])
    before = {l.name: registry.kernel_mask(l).copy() for l in model.layers if registry.is_prunable(l)}
    model.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0)  # no callback: the masks alone hold the zeros
    stripped = pruning.strip(model)
    for name, mask in before.items():
        kernel = stripped.get_layer(name).get_weights()[0]
        alive = scoring.block_scorer(1, 4).alive(mask)
        assert (~alive).sum() == masks.prune_count(0.9, blocks.count(mask.shape, (1, 4))), name
        assert not kernel[~mask].any() and np.count_nonzero(kernel[mask]) == mask.sum()


@pytest.mark.slow
def test_tfmot_block_size_prunes_the_same_blocks_of_the_keras_kernel(small_fashion):
    from tfprune.experiments import tfmot_method  # pylint: disable=g-import-not-at-top
    (x, y), _ = small_fashion
    keras.utils.set_random_seed(0)
    model = models.compile_model(models.build("lenet_300_100"))
    schedule = tfmot_method.make_schedule("constant", 0.75, frequency=10)
    result = tfmot_method.prune_and_finetune(model, x[:640], y[:640], schedule, epochs=1, batch_size=64,
                                             block_size=(4, 1))
    for name in ("fc1", "fc2", "logits"):
        kernel = result.model.get_layer(name).get_weights()[0]
        alive = scoring.block_scorer(1, 4).alive(kernel != 0)
        assert 0.7 < 1 - alive.mean() < 0.8, name  # TF-MOT's own rounding of 75 %
        assert np.count_nonzero(kernel) == 4 * alive.sum() - np.count_nonzero(
            scoring.block_scorer(1, 4).kernel_keep(alive, np.ones(kernel.shape, bool)) & (kernel == 0))


def test_public_api_takes_block_methods():
    model = tfprune.make_prunable(models.build("lenet_300_100"))
    tfprune.prune(model, 0.5, method="block_1x16")
    report = {r.name: r for r in tfprune.sparsity_report(model)}
    assert report["fc1"].zeros == 16 * masks.prune_count(0.5, 49 * 300)


def test_sensitivity_scan_takes_a_block_method(trained_lenet):
    from tfprune.experiments import sensitivity  # pylint: disable=g-import-not-at-top
    model, x, y, _ = trained_lenet
    curves = sensitivity.scan(model, x[:500], y[:500], [0, 95], method="block_1x16", layers=["fc1"])
    (k0, dense, _), (k95, pruned, _) = curves["fc1"]
    assert (k0, k95) == (0.0, 95.0)
    assert dense == pytest.approx(float((model.predict(x[:500], verbose=0).argmax(1) == y[:500]).mean()), abs=1e-6)
    assert pruned < dense
