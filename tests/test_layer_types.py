"""Conv1D, Conv3D, DepthwiseConv2D, Conv2DTranspose, SeparableConv1D/2D and Embedding on both Keras stacks: exact
counts, masks held through fit, save/load, strip, and shrinking with outputs equal and the analytic parameter count.

Real data: Fashion-MNIST rows as a sequence (28 steps of 28 features) for Conv1D and SeparableConv1D, each image as
a 4×7×28 volume for Conv3D, 28×28×1 images for DepthwiseConv2D, Conv2DTranspose and SeparableConv2D, and each image
as 784 tokens (its pixels in 16 grey levels) for Embedding.
"""

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from conftest import FASHION_DIR, require, run_on_jax
from tfprune import make_prunable, prune, prune_count, shrink, stacks, strip, tflite
from tfprune.layers import registry
from tfprune._env import keras, keras3
from tfprune.callbacks import RankPruning
from tfprune.cli import compare as compare_main
from tfprune.experiments import models
from tfprune.experiments.results import store

STACKS = {"tf_keras": keras, "keras3": keras3}


def _conv1d(k):
    L = k.layers
    return k.Sequential([k.Input((28, 28)), L.Conv1D(16, 3, padding="causal", activation="relu", name="c1"),
                         L.Conv1D(16, 3, activation="relu", name="c2"), L.MaxPooling1D(2, name="pool"),
                         L.Flatten(name="flatten"), L.Dense(10, activation="softmax", name="logits")])


def _conv3d(k):
    L = k.layers
    return k.Sequential([k.Input((4, 7, 28, 1)), L.Conv3D(8, 3, padding="same", activation="relu", name="c1"),
                         L.Conv3D(8, 3, padding="same", activation="relu", name="c2"),
                         L.MaxPooling3D(2, name="pool"), L.Flatten(name="flatten"),
                         L.Dense(10, activation="softmax", name="logits")])


def _depthwise(k):
    L = k.layers
    return k.Sequential([k.Input((28, 28, 1)), L.Conv2D(8, 3, activation="relu", name="c1"),
                         L.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="dw"),
                         L.Conv2D(8, 1, activation="relu", name="c2"), L.GlobalAveragePooling2D(name="gap"),
                         L.Dense(10, activation="softmax", name="logits")])


def _transposed(k):
    L = k.layers
    return k.Sequential([k.Input((28, 28, 1)), L.Conv2DTranspose(8, 3, padding="same", activation="relu", name="c1"),
                         L.Conv2DTranspose(8, 3, activation="relu", name="c2"), L.GlobalAveragePooling2D(name="gap"),
                         L.Dense(10, activation="softmax", name="logits")])


def _separable(k):
    L = k.layers
    return k.Sequential([k.Input((28, 28, 1)),
                         L.SeparableConv2D(8, 3, depth_multiplier=2, padding="same", activation="relu", name="c1"),
                         L.SeparableConv2D(8, 3, depth_multiplier=2, activation="relu", name="c2"),
                         L.GlobalAveragePooling2D(name="gap"), L.Dense(10, activation="softmax", name="logits")])


def _separable1d(k):
    L = k.layers
    return k.Sequential([k.Input((28, 28)), L.SeparableConv1D(16, 3, padding="same", activation="relu", name="c1"),
                         L.SeparableConv1D(16, 3, depth_multiplier=3, activation="relu", name="c2"),
                         L.Flatten(name="flatten"), L.Dense(10, activation="softmax", name="logits")])


def _embedding(k):
    L = k.layers
    return k.Sequential([k.Input((784,), dtype="int32"), L.Embedding(16, 16, name="c1"),
                         L.Conv1D(16, 3, activation="relu", name="c2"), L.GlobalAveragePooling1D(name="gap"),
                         L.Dense(10, activation="softmax", name="logits")])


def _tokens(x):
    """Each image as 784 tokens: its pixels in 16 grey levels."""
    return np.minimum((x * 16).astype(np.int32), 15).reshape(-1, 784)


def _params_after(kind, f1, f2):
    """Parameters of the model with f1 and f2 units left (the analytic count shrinking must reach)."""
    if kind == "conv1d":  # causal keeps 28 steps, valid 3 leaves 26, pooling 13
        return (3 * 28 * f1 + f1) + (3 * f1 * f2 + f2) + (13 * f2 * 10 + 10)
    if kind == "embedding":  # 16 tokens x f1 dimensions, a Conv1D on them, global pooling, the classifier
        return 16 * f1 + (3 * f1 * f2 + f2) + (f2 * 10 + 10)
    if kind == "transposed":  # kernels (3, 3, units, in), global pooling, the classifier
        return (9 * f1 * 1 + f1) + (9 * f2 * f1 + f2) + (f2 * 10 + 10)
    if kind == "separable":  # depthwise (3, 3, in, 2), pointwise (1, 1, 2 in, units), bias; pooling, classifier
        return (9 * 1 * 2 + 2 * 1 * f1 + f1) + (9 * f1 * 2 + 2 * f1 * f2 + f2) + (f2 * 10 + 10)
    if kind == "separable1d":  # depthwise (3, in, m), pointwise (1, m in, units), bias; 26 steps flattened
        return (3 * 28 + 28 * f1 + f1) + (3 * f1 * 3 + 3 * f1 * f2 + f2) + (26 * f2 * 10 + 10)
    return (27 * 1 * f1 + f1) + (27 * f1 * f2 + f2) + (2 * 3 * 14 * f2 * 10 + 10)  # pooled 4x7x28 -> 2x3x14


BUILD = {"conv1d": (_conv1d, (28, 28)), "conv3d": (_conv3d, (4, 7, 28, 1)), "depthwise": (_depthwise, (28, 28, 1)),
         "transposed": (_transposed, (28, 28, 1)), "separable": (_separable, (28, 28, 1)),
         "separable1d": (_separable1d, (28, 28)), "embedding": (_embedding, None)}


def inputs_for(kind, x):
    """The real images ``x`` (N, 28, 28) as the inputs of ``kind``'s model."""
    shape = BUILD[kind][1]
    return _tokens(x) if shape is None else x.reshape((-1,) + shape)


@pytest.fixture(scope="module", params=[(kind, stack) for kind in BUILD for stack in STACKS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def case(request, small_fashion):
    kind, stack = request.param
    build = BUILD[kind][0]
    (x, y), (xt, yt) = small_fashion
    x, xt = inputs_for(kind, x), inputs_for(kind, xt)
    k = STACKS[stack]
    k.utils.set_random_seed(0)
    model = models.compile_model(build(k))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return kind, model, (x, y), (xt[:300], yt[:300])


def _kernel(layer):
    return registry.effective_kernel(layer)


def test_weight_and_unit_pruning_are_exact(case):
    kind, model, _, _ = case
    pruned = prune(make_prunable(model), 0.5, "weight")
    for name in ("c1", "c2", "logits") + (("dw",) if kind == "depthwise" else ()):
        kernel = _kernel(pruned.get_layer(name))
        assert int((kernel == 0).sum()) == prune_count(0.5, kernel.size), name
    units = prune(make_prunable(model), 0.5, "unit")
    for name in ("c1", "c2"):
        kernel = _kernel(units.get_layer(name))
        dead = np.all(kernel.reshape(-1, kernel.shape[-1]) == 0, axis=0)
        assert int(dead.sum()) == prune_count(0.5, kernel.shape[-1]), name
    assert not np.any(np.all(_kernel(units.get_layer("logits")) == 0, axis=0))  # the classes are never pruned
    assert isinstance(units.get_layer("c1"), registry.PRUNABLE_CLASSES)


def test_masks_hold_through_fit_and_strip_bakes_them_in(case):
    _, model, (x, y), (xt, _) = case
    prunable = models.compile_model(make_prunable(model))
    prunable.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0, callbacks=[RankPruning("weight", 0.7)])
    names = ("c1", "c2", "logits") + (("dw",) if "dw" in [l.name for l in model.layers] else ())
    masks = {n: registry.kernel_mask(prunable.get_layer(n)) for n in names}
    for name, keep in masks.items():
        assert int((~keep).sum()) == prune_count(0.7, keep.size), name
        assert np.all(_kernel(prunable.get_layer(name))[~keep] == 0)
    plain = strip(prunable)
    assert type(plain.get_layer("c1")) is type(model.get_layer("c1"))
    for name, keep in masks.items():
        np.testing.assert_array_equal(registry.effective_kernel(plain.get_layer(name))[~keep], 0)
    np.testing.assert_allclose(stacks.of(plain).to_numpy(plain(xt[:64])),
                               stacks.of(prunable).to_numpy(prunable(xt[:64])), atol=1e-6)


def test_save_and_load_keep_the_masks(case, tmp_path):
    _, model, _, (xt, _) = case
    pruned = prune(make_prunable(model), 0.6, "weight")
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    stack = stacks.of(pruned)
    loaded = stack.load_model(path)
    assert isinstance(loaded.get_layer("c2"), registry.PRUNABLE_CLASSES)
    np.testing.assert_array_equal(registry.kernel_mask(loaded.get_layer("c2")),
                                  registry.kernel_mask(pruned.get_layer("c2")))
    np.testing.assert_allclose(stack.to_numpy(loaded(xt[:64])), stack.to_numpy(pruned(xt[:64])), atol=1e-6)


def test_unit_pruned_model_shrinks_to_the_analytic_size(case):
    kind, model, _, (xt, _) = case
    if kind == "depthwise":
        pytest.skip("see test_depthwise_layers_have_no_units_and_shrinking_keeps_what_feeds_them")
    plain = strip(prune(make_prunable(model), 0.5, "unit"))
    result = shrink(plain)
    first, second = (int(registry.kernel_shape(model.get_layer(n))[-1]) for n in ("c1", "c2"))
    assert registry.kernel_shape(result.model.get_layer("c1"))[-1] == first - prune_count(0.5, first)
    assert result.model.get_layer("c2").filters == second - prune_count(0.5, second)
    assert result.model.count_params() == _params_after(kind, first // 2, second // 2)
    assert result.report.params_after == result.model.count_params() < result.report.params_before
    stack = stacks.of(plain)
    np.testing.assert_allclose(stack.to_numpy(result.model(xt)), stack.to_numpy(plain(xt)), atol=1e-5)


def test_depthwise_layers_have_no_units_and_shrinking_keeps_what_feeds_them(small_fashion):
    (x, y), (xt, _) = small_fashion
    for k in STACKS.values():
        model = _depthwise(k)
        model(xt[:2, :, :, None])
        prunable = make_prunable(model)
        assert isinstance(prunable.get_layer("dw"), registry.PRUNABLE_CLASSES)
        assert registry.kernel(prunable.get_layer("dw")).shape == (3, 3, 8, 2)
        units = prune(prunable, 0.5, "unit")  # by default unit pruning leaves the depthwise layer alone
        assert registry.kernel_mask(units.get_layer("dw")).all()
        with pytest.raises(ValueError, match=r"layer 'dw' \(DepthwiseConv2D\) has no units of its own \(its "
                                             r"channels follow its input\); prune it with method='weight'"):
            prune(make_prunable(model), 0.5, "unit", layers=["dw"])
        plain = strip(units)
        result = shrink(plain)
        assert result.model.get_layer("c1").filters == 8  # its dead filters feed the depthwise layer: kept
        assert result.model.get_layer("c2").filters == 4
        assert any(n.startswith("c1: 4 dead unit(s) kept: dw (DepthwiseConv2D) is not known to keep channels apart")
                   for n in result.report.kept)
        stack = stacks.of(plain)
        np.testing.assert_allclose(stack.to_numpy(result.model(xt[:100, :, :, None])),
                                   stack.to_numpy(plain(xt[:100, :, :, None])), atol=1e-5)


# One of each masking mixin on JAX (Conv3D and SeparableConv1D share Conv1D's and SeparableConv2D's, each checked on
# TensorFlow above): the XLA compile of each model is most of this child's time.
JAX_KINDS = ("conv1d", "depthwise", "transposed", "separable", "embedding")

JAX_RUN = """
import json, sys
import numpy as np, keras, tfprune
from tfprune.experiments import models
from tfprune.experiments.data import builtin as data
sys.path.insert(0, sys.argv[2])
import test_layer_types as t
(x, y), _ = data.load_dataset("fashion_mnist", sys.argv[3], download=False)
x, y = x[:128], y[:128]
out = {}
for kind in t.JAX_KINDS:
    build = t.BUILD[kind][0]
    keras.utils.set_random_seed(0)
    xs = t.inputs_for(kind, x)
    model = models.compile_model(tfprune.make_prunable(build(keras)))
    model.fit(xs, y, epochs=1, batch_size=64, verbose=0, callbacks=[tfprune.callbacks.RankPruning("weight", 0.6)])
    model.save(sys.argv[1] + f"/{kind}.keras")
    reloaded = keras.models.load_model(sys.argv[1] + f"/{kind}.keras")
    plain = tfprune.strip(model)
    expected = np.asarray(model(xs[:64], training=False))
    out[kind] = {"sparsity": tfprune.overall_sparsity(tfprune.sparsity_report(plain)),
                 "diffs": [float(np.abs(np.asarray(m(xs[:64], training=False)) - expected).max())
                           for m in (reloaded, plain)]}
print(json.dumps({"backend": keras.backend.backend(), "kinds": out}))
"""


@pytest.mark.slow
def test_masks_hold_on_the_jax_backend(tmp_path):
    result = run_on_jax(JAX_RUN, tmp_path)
    assert result["backend"] == "jax" and set(result["kinds"]) == set(JAX_KINDS)
    for kind, figures in result["kinds"].items():
        assert figures["sparsity"] == pytest.approx(0.6, abs=0.01), kind
        # The stripped model (zeros baked into plain layers) computes what the prunable one did: on JAX the masks
        # act in the forward pass (DepthwiseConv2D's own masked call included), whatever the optimizer did to
        # the raw variables; and the saved file reloads to the same outputs.
        assert max(figures["diffs"]) <= 1e-5, kind


@pytest.mark.slow
def test_token_id_models_export_to_tflite_with_the_same_outputs(small_fashion):
    (x, y), (xt, yt) = small_fashion
    keras.utils.set_random_seed(0)
    model = models.compile_model(_embedding(keras))
    model.fit(_tokens(x), y, epochs=1, batch_size=64, verbose=0)
    plain = models.compile_model(strip(prune(make_prunable(model), 0.5, "unit")))
    tokens = _tokens(xt[:200])
    interpreter, _ = tflite.load_interpreter(tflite.to_tflite(shrink(plain).model), batch=50)
    np.testing.assert_allclose(tflite.predict_tflite(interpreter, tokens), plain.predict(tokens, verbose=0),
                               atol=1e-5)
    int8 = tflite.export_variant(plain, "int8", tokens, yt[:200], _tokens(x[:100]), bench_runs=5)
    assert abs(int8["accuracy"] - plain.evaluate(tokens, yt[:200], verbose=0)[1]) <= 0.03  # ids stay int32


@pytest.mark.parametrize("kind", ["separable", "separable1d"])
@pytest.mark.slow
def test_shrunk_separable_models_export_to_tflite_with_the_same_outputs(kind, small_fashion):
    (x, y), (xt, _) = small_fashion
    keras.utils.set_random_seed(0)
    model = models.compile_model(BUILD[kind][0](keras))
    model.fit(inputs_for(kind, x[:1000]), y[:1000], epochs=1, batch_size=64, verbose=0)
    plain = strip(prune(make_prunable(model), 0.5, "unit"))
    shrunk = shrink(plain).model
    assert shrunk.get_layer("c2").get_weights()[0].shape[-2] == plain.get_layer("c1").filters // 2  # depthwise in
    images = inputs_for(kind, xt[:200])
    interpreter, _ = tflite.load_interpreter(tflite.to_tflite(shrunk), batch=50)
    np.testing.assert_allclose(tflite.predict_tflite(interpreter, images), plain.predict(images, verbose=0),
                               atol=1e-5)


@pytest.mark.slow
def test_compare_runs_on_a_conv1d_and_lstm_model_file(small_fashion, tmp_path, capsys):
    (x, y), _ = small_fashion
    keras.utils.set_random_seed(0)
    L = keras.layers
    model = models.compile_model(keras.Sequential([
        keras.Input((28, 28)), L.Conv1D(16, 3, padding="causal", activation="relu", name="c1"), L.LSTM(8, name="c2"),
        L.Dense(10, activation="softmax", name="logits")]))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    path = str(tmp_path / "rows.keras")
    model.save(path)
    out = str(tmp_path / "cmp")
    with flagsaver.flagsaver():
        flags.FLAGS(compare_main.with_defaults([
            "compare", f"--model_path={path}", f"--data_dir={require(FASHION_DIR)}", "--train_size=2000",
            "--sparsities=60", "--finetune_epochs=1", "--layers=c1,c2", "--verbose=0", f"--output_dir={out}"]))
        compare_main.main(["compare"])
    assert "## tfprune weight pruning vs TF-MOT" in capsys.readouterr().out
    points = {p.key: p for p in store.load_points([out])}
    assert sorted(points) == ["tfmot-k60", "unit-k60", "weight-k60"]
    for key in ("weight-k60", "tfmot-k60"):  # --layers picked the Conv1D and the LSTM; the classifier stays dense
        for name in ("c1", "c2"):  # TF-MOT prunes the LSTM's kernel and recurrent kernel, tfprune ranks them as one
            assert points[key].layer_sparsity[name] == pytest.approx(0.6, abs=0.01), (key, name)
        assert points[key].layer_sparsity["logits"] == 0.0
    assert points["unit-k60"].units_kept == {"c1": 6, "c2": 3, "logits": 10}
