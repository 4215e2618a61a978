"""MultiHeadAttention and EinsumDense on both Keras stacks: weight pruning over the four projections, head pruning
(a head removed from the query, key, value and output projections), masks held through fit, save/load, strip,
shrinking to fewer heads with the same outputs and the analytic parameter count, TFLite export, the JAX backend;
the compare (against TF-MOT), sensitivity and export commands on a SeparableConv1D + attention model file.

Real data: Fashion-MNIST rows as a sequence (28 steps of 28 features) through a one-block attention classifier.
"""

import json
import os

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from conftest import FASHION_DIR, require, run_on_jax
from tfprune import make_prunable, prune, prune_count, shrink, sparsity_report, stacks, strip, tflite
from tfprune.layers import registry
from tfprune._env import keras, keras3
from tfprune.callbacks import RankPruning
from tfprune.cli import compare as compare_main
from tfprune.cli import export as export_main
from tfprune.cli import sensitivity as sensitivity_main
from tfprune.experiments import models
from tfprune.experiments.results import store
from tfprune.files.user_model import check_prunable

STACKS = {"tf_keras": keras, "keras3": keras3}
HEADS, KEY_DIM, WIDTH = 4, 8, 32


def attention_classifier(k, **attention):
    """Rows -> Dense -> self-attention (residual) -> LayerNorm -> EinsumDense -> mean over steps -> classes."""
    L = k.layers
    rows = k.Input((28, 28))
    x = L.Dense(WIDTH, name="embed")(rows)
    x = L.LayerNormalization(name="norm")(L.Add(name="residual")([x, L.MultiHeadAttention(
        num_heads=HEADS, key_dim=KEY_DIM, name="mha", **attention)(x, x)]))
    x = L.EinsumDense("btd,de->bte", output_shape=(28, 16), bias_axes="e", activation="relu", name="pool")(x)
    return k.Model(rows, L.Dense(10, activation="softmax", name="logits")(L.GlobalAveragePooling1D(name="mean")(x)))


def _params(heads):
    """Parameters with ``heads`` heads left: per head 3 x (32 x 8 + 8) query/key/value weights and biases and 8 x 32
    output weights; the output bias, the embedding, LayerNorm, the EinsumDense and the classifier stay."""
    return (28 * WIDTH + WIDTH) + heads * (3 * (WIDTH * KEY_DIM + KEY_DIM) + KEY_DIM * WIDTH) + WIDTH + 2 * WIDTH \
        + (WIDTH * 16 + 16) + (16 * 10 + 10)


@pytest.fixture(scope="module", params=list(STACKS))
def case(request, small_fashion):
    k = STACKS[request.param]
    (x, y), (xt, yt) = small_fashion
    k.utils.set_random_seed(0)
    model = models.compile_model(attention_classifier(k))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return model, (x, y), (xt[:300], yt[:300])


def _mha_kernel(model):
    return registry.effective_kernel(model.get_layer("mha"))


def test_weight_pruning_ranks_the_four_projections_together(case):
    model, _, _ = case
    pruned = prune(make_prunable(model), 0.5, "weight")
    kernel = _mha_kernel(pruned)
    assert kernel.shape == (3 * WIDTH * KEY_DIM + KEY_DIM * WIDTH, HEADS)
    assert int((kernel == 0).sum()) == prune_count(0.5, kernel.size)
    pool = registry.effective_kernel(pruned.get_layer("pool"))
    assert int((pool == 0).sum()) == prune_count(0.5, pool.size)
    report = {r.name: r for r in sparsity_report(pruned)}
    assert report["mha"].kind == "MultiHeadAttention" and report["mha"].units == HEADS
    assert report["pool"].sparsity == pytest.approx(0.5, abs=1e-3)


def test_head_pruning_zeroes_whole_heads_in_every_projection(case):
    model, _, _ = case
    pruned = prune(make_prunable(model), 0.5, "unit", layers=["mha"])
    kernel = _mha_kernel(pruned)
    dead = ~kernel.any(axis=0)
    assert int(dead.sum()) == prune_count(0.5, HEADS)
    weights = registry.masked_weights(pruned.get_layer("mha"))  # query, key, value: kernels (32, 4, 8), biases (4, 8)
    for kernel_, bias in zip(weights[0:6:2], weights[1:6:2]):
        assert not kernel_[:, dead].any() and not bias[dead].any() and bias[~dead].all()
    assert not weights[6][dead].any() and weights[6][~dead].any()  # the output kernel's rows (4, 8, 32)
    # btd,de->bte is a Dense along the last axis: its 16 units are its kernel's columns and bias entries
    pool = registry.masked_weights(prune(make_prunable(model), 0.5, "unit", layers=["pool"]).get_layer("pool"))
    dead = ~pool[0].any(axis=0)
    assert int(dead.sum()) == prune_count(0.5, 16) and not pool[1][dead].any() and pool[1][~dead].all()
    k = keras if stacks.of(model).version == "2" else keras3  # an EinsumDense whose kernel's last axis is not units
    rows = k.Input((28, 28))
    other = k.Model(rows, k.layers.EinsumDense("btd,dhe->bthe", output_shape=(28, 2, 8), name="split")(rows))
    with pytest.raises(ValueError, match=r"layer 'split' \(EinsumDense\) has no units of its own"):
        prune(make_prunable(other), 0.5, "unit", layers=["split"])


@pytest.mark.slow
def test_masks_hold_through_fit_and_strip_bakes_them_in(case):
    model, (x, y), (xt, _) = case
    prunable = models.compile_model(make_prunable(model))
    prunable.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0, callbacks=[RankPruning("weight", 0.7)])
    for name in ("mha", "pool"):
        keep = registry.kernel_mask(prunable.get_layer(name))
        assert int((~keep).sum()) == prune_count(0.7, keep.size), name
        assert not registry.effective_kernel(prunable.get_layer(name))[~keep].any(), name
    plain = strip(prunable)
    assert type(plain.get_layer("mha")) is type(model.get_layer("mha"))
    assert not any(registry.is_prunable(l) for l in plain.layers)
    np.testing.assert_allclose(stacks.of(plain).to_numpy(plain(xt[:64])),
                               stacks.of(prunable).to_numpy(prunable(xt[:64])), atol=1e-6)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_load_keep_the_masks(case, tmp_path, suffix):
    model, _, (xt, _) = case
    stack = stacks.of(model)
    if suffix == ".h5" and stack is stacks.KERAS3:
        pytest.skip("Keras 3 saves .keras files (its .h5 is legacy)")
    pruned = prune(make_prunable(model), 0.5, "unit", layers=["mha"])
    prune(pruned, 0.6, "weight", layers=["pool"])
    path = str(tmp_path / f"pruned{suffix}")
    pruned.save(path)
    loaded = stack.load_model(path)
    for name in ("mha", "pool"):
        np.testing.assert_array_equal(registry.kernel_mask(loaded.get_layer(name)),
                                      registry.kernel_mask(pruned.get_layer(name)))
    np.testing.assert_allclose(stack.to_numpy(loaded(xt[:64])), stack.to_numpy(pruned(xt[:64])), atol=1e-6)


def test_shrinking_removes_the_dead_heads_with_the_same_outputs(case):
    model, _, (xt, _) = case
    plain = strip(prune(make_prunable(model), 0.5, "unit", layers=["mha"]))
    result = shrink(plain)
    assert result.model.get_layer("mha").get_config()["num_heads"] == HEADS // 2
    assert plain.count_params() == _params(HEADS)
    assert result.model.count_params() == result.report.params_after == _params(HEADS // 2)
    assert result.report.macs_after < result.report.macs_before
    row = next(r for r in result.report.layers if r.name == "mha")  # the report counts heads
    assert (row.units_before, row.units_after) == (HEADS, HEADS // 2)
    stack = stacks.of(plain)
    np.testing.assert_allclose(stack.to_numpy(result.model(xt)), stack.to_numpy(plain(xt)), atol=1e-5)


def test_shrunk_attention_exports_to_tflite_with_the_same_outputs(case):
    model, _, (xt, _) = case
    plain = strip(prune(make_prunable(model), 0.5, "unit", layers=["mha"]))
    shrunk = shrink(plain).model
    interpreter, _ = tflite.load_interpreter(tflite.to_tflite(shrunk), batch=50)
    stack = stacks.of(plain)
    np.testing.assert_allclose(tflite.predict_tflite(interpreter, xt[:200]), stack.to_numpy(plain(xt[:200])),
                               atol=1e-5)


def test_gated_attention_is_listed_with_its_reason():
    model = attention_classifier(keras3, use_gate=True)
    report = check_prunable(model)
    assert "mha" not in report.prunable and "pool" in report.prunable
    assert report.skipped["mha"] == "MultiHeadAttention with use_gate=True (a fifth, gating projection)"
    assert registry.is_prunable(make_prunable(model).get_layer("pool"))
    assert not registry.is_prunable(make_prunable(model).get_layer("mha"))


JAX_RUN = """
import json, sys
import numpy as np, keras, tfprune
from tfprune.experiments import models
from tfprune.experiments.data import builtin as data
sys.path.insert(0, sys.argv[2])
import test_attention as t
(x, y), _ = data.load_dataset("fashion_mnist", sys.argv[3], download=False)
x, y = x[:128], y[:128]
keras.utils.set_random_seed(0)
model = models.compile_model(tfprune.make_prunable(t.attention_classifier(keras)))
tfprune.prune(model, 0.5, "unit", layers=["mha"])
model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[tfprune.callbacks.RankPruning("weight", 0.6)])
model.save(sys.argv[1] + "/attention.keras")
reloaded = keras.models.load_model(sys.argv[1] + "/attention.keras")
plain = tfprune.strip(model)
shrunk = tfprune.shrink(plain).model
expected = np.asarray(model(x[:64], training=False))
print(json.dumps({"backend": keras.backend.backend(),
                  "sparsity": {r.name: r.sparsity for r in tfprune.sparsity_report(plain)},
                  "heads": shrunk.get_layer("mha").get_config()["num_heads"],
                  "diffs": [float(np.abs(np.asarray(m(x[:64], training=False)) - expected).max())
                            for m in (reloaded, plain, shrunk)]}))
"""


@pytest.mark.slow
def test_masks_hold_on_the_jax_backend(tmp_path):
    result = run_on_jax(JAX_RUN, tmp_path)
    assert result["backend"] == "jax" and result["heads"] == HEADS // 2
    for name in ("mha", "pool"):  # the dead heads stayed dead under the weight ramp; the ramp reached 60 %
        assert result["sparsity"][name] == pytest.approx(0.6, abs=0.01), name
    assert max(result["diffs"]) <= 1e-5


def separable_attention_classifier(k):
    """Rows -> SeparableConv1D -> self-attention (residual) -> EinsumDense -> mean over steps -> classes."""
    L = k.layers
    rows = k.Input((28, 28))
    x = L.SeparableConv1D(WIDTH, 3, padding="same", activation="relu", name="sep")(rows)
    x = L.Add(name="residual")([x, L.MultiHeadAttention(num_heads=HEADS, key_dim=KEY_DIM, name="mha")(x, x)])
    x = L.EinsumDense("btd,de->bte", output_shape=(28, 16), bias_axes="e", activation="relu", name="pool")(x)
    return k.Model(rows, L.Dense(10, activation="softmax", name="logits")(L.GlobalAveragePooling1D(name="mean")(x)))


@pytest.mark.slow
def test_compare_sensitivity_and_export_take_a_separable_attention_model_file(small_fashion, tmp_path, capsys):
    (x, y), _ = small_fashion
    keras.utils.set_random_seed(0)
    model = models.compile_model(separable_attention_classifier(keras))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    path, pruned_path = str(tmp_path / "attention.keras"), str(tmp_path / "pruned.keras")
    model.save(path)
    prune(make_prunable(model), 0.5, "unit").save(pruned_path)
    data_dir = require(FASHION_DIR)
    out = str(tmp_path / "cmp")
    with flagsaver.flagsaver():
        flags.FLAGS(compare_main.with_defaults([
            "compare", f"--model_path={path}", f"--data_dir={data_dir}", "--train_size=2000", "--sparsities=60",
            "--finetune_epochs=1", "--layers=sep,mha", "--verbose=0", f"--output_dir={out}"]))
        compare_main.main(["compare"])
    assert "## tfprune weight pruning vs TF-MOT" in capsys.readouterr().out
    points = {p.key: p for p in store.load_points([out])}
    assert sorted(points) == ["tfmot-k60", "unit-k60", "weight-k60"]
    for key in ("weight-k60", "tfmot-k60"):  # TF-MOT prunes the pointwise kernel and the four projections too
        for name in ("sep", "mha"):
            assert points[key].layer_sparsity[name] == pytest.approx(0.6, abs=0.01), (key, name)
        assert points[key].layer_sparsity["pool"] == 0.0
    assert points["unit-k60"].units_kept["sep"] == WIDTH - prune_count(0.6, WIDTH)
    assert points["unit-k60"].units_kept["mha"] == HEADS - prune_count(0.6, HEADS)  # heads
    sens = str(tmp_path / "sens")
    with flagsaver.flagsaver():
        flags.FLAGS(["sensitivity", f"--model_path={path}", "--dataset=fashion_mnist", f"--data_dir={data_dir}",
                     "--method=unit", "--sparsities=0,50", "--eval_size=500", "--max_drop=100",
                     f"--output_dir={sens}"])
        sensitivity_main.main(["sensitivity"])
    with open(os.path.join(sens, "plan.json")) as f:  # the classifier is never cut
        assert json.load(f)["layer_sparsity"] == {"sep": 0.5, "mha": 0.5, "pool": 0.5}
    export_dir = str(tmp_path / "export")
    with flagsaver.flagsaver(model_path=pruned_path, variants=["float", "int8"], data_dir=data_dir,
                             eval_images=300, representative_size=50, bench_runs=5, export_dir=export_dir):
        export_main.main(["export"])
    with open(os.path.join(export_dir, "export.json")) as f:
        accuracy = {r["variant"]: r["accuracy"] for r in json.load(f)["variants"]}
    assert set(accuracy) == {"float", "int8"} and abs(accuracy["float"] - accuracy["int8"]) <= 0.05
