"""Keras 3 (issue 14): the library on Keras 3 models, on the TensorFlow backend in-process and on JAX (and PyTorch
when installed) in child processes; the commands on Keras 3 model files; TF-MOT through a tf_keras twin."""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

import tfprune
from conftest import FASHION_DIR, REPO, error_lines, require, run_smoke_sweep
from tfprune import stacks, tflite
from tfprune.experiments import twin
from tfprune.files import user_model
from tfprune.experiments import models
from tfprune.experiments.results import store
from tfprune._env import keras3 as keras

L = keras.layers
ATOL = 1e-5


def _functional(activation="softmax"):
    """Conv2D -> BatchNorm -> a residual Add -> pooling -> Dense: every kind of layer the issue names."""
    inputs = keras.Input((28, 28), name="image")
    x = L.Reshape((28, 28, 1), name="channel")(inputs)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    y = L.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.Add(name="skip")([x, y])
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv3")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(32, activation="relu", name="fc1")(x)
    return keras.Model(inputs, L.Dense(10, activation=activation, name="logits")(x), name="residual")


@pytest.fixture(scope="module")
def data(small_fashion):
    (x_train, y_train), (x_test, y_test) = small_fashion
    return x_train[:1024], y_train[:1024], x_test[:256], y_test[:256]


@pytest.fixture(scope="module", params=["sequential", "functional"])
def trained(request, data):
    x, y, _, _ = data
    keras.utils.set_random_seed(0)
    model = models.build("small_cnn", keras="3") if request.param == "sequential" else _functional()
    models.compile_model(model).fit(x, y, epochs=1, batch_size=128, verbose=0)
    return model


def _predict(model, x):
    return stacks.KERAS3.to_numpy(model(x, training=False))


def test_the_stack_is_decided_from_the_model(trained):
    assert stacks.of(trained) is stacks.KERAS3 and stacks.of(models.build("lenet_300_100")) is stacks.TF_KERAS
    prunable = tfprune.make_prunable(trained)
    assert stacks.of(prunable) is stacks.KERAS3
    assert ({type(l).__module__ for l in prunable.layers if tfprune.is_prunable_layer(l)}
            == {"tfprune.layers.dense", "tfprune.layers.conv"})


@pytest.mark.parametrize("method, scope", [("weight", "layer"), ("weight", "global"), ("unit", "layer"),
                                           ("unit", "global")])
def test_prune_is_exact_and_strip_bakes_the_zeros_in(trained, data, method, scope):
    _, _, x, _ = data
    prunable = tfprune.make_prunable(trained)
    np.testing.assert_allclose(_predict(prunable, x), _predict(trained, x), atol=ATOL)
    tfprune.prune(prunable, 0.5, method=method, scope=scope)
    report = {r.name: r for r in tfprune.sparsity_report(prunable)}
    if scope == "layer" and method == "weight":
        assert all(r.zeros == int(np.floor(0.5 * r.weights + 0.5)) for r in report.values())
    if scope == "layer" and method == "unit":
        assert report["logits"].units_kept == 10
        assert all(r.units - r.units_kept == int(np.floor(0.5 * r.units + 0.5)) for n, r in report.items()
                   if n != "logits")
    plain = tfprune.strip(prunable)
    assert not any(tfprune.is_prunable_layer(l) for l in plain.layers) and stacks.of(plain) is stacks.KERAS3
    np.testing.assert_allclose(_predict(plain, x), _predict(prunable, x), atol=ATOL)
    assert [r.zeros for r in tfprune.sparsity_report(plain)] == [r.zeros for r in report.values()]


@pytest.mark.slow
def test_rank_pruning_on_a_tfmot_schedule_holds_the_masks_through_fit(trained, data, tmp_path):
    x, y, _, _ = data
    model = models.compile_model(tfprune.make_prunable(trained))
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=8, frequency=2)
    pruner = tfprune.callbacks.RankPruning("weight", schedule)
    model.fit(x, y, epochs=2, batch_size=128, verbose=0,
              callbacks=[pruner, tfprune.callbacks.SparsitySummaries(str(tmp_path))])
    assert [s for s, _ in pruner.history] == [2, 4, 6, 8]
    for layer in (l for l in model.layers if tfprune.is_prunable_layer(l)):
        mask = stacks.KERAS3.to_numpy(layer.kernel_mask) == 0
        # The effective kernel (what the layer computes with) holds exact zeros; the optimizer's momentum may move
        # the raw variable, as in the tf_keras layers, and strip() bakes the zeros in.
        assert (stacks.KERAS3.to_numpy(layer.kernel)[mask] == 0).all()
        assert mask.sum() == tfprune.prune_count(0.8, mask.size)
    assert os.listdir(tmp_path / "train")


def test_shrink_keeps_the_outputs_and_the_residual_join_safe(trained, data):
    _, _, x, _ = data
    prunable = tfprune.prune(tfprune.make_prunable(trained), 0.5, method="unit")
    result = tfprune.shrink(prunable)
    np.testing.assert_allclose(_predict(result.model, x), _predict(tfprune.strip(prunable), x), atol=ATOL)
    assert result.report.params_after < result.report.params_before
    if trained.name == "residual":  # units feeding the Add are kept (their branches died apart), and say why
        assert any("skip (Add) joins several inputs" in note for note in result.report.kept)


@pytest.mark.slow
def test_save_and_load_keep_the_masks_in_a_fresh_process(trained, data, tmp_path):
    _, _, x, _ = data
    prunable = tfprune.prune(tfprune.make_prunable(trained), 0.7, method="weight")
    path = str(tmp_path / "pruned.keras")
    prunable.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", _predict(prunable, x))
    child = ("import numpy as np, keras, tfprune, sys\n"  # importing tfprune registers its layers: no custom_objects
             f"m = keras.models.load_model({path!r})\n"
             f"x = np.load({str(tmp_path / 'x.npy')!r}); e = np.load({str(tmp_path / 'expected.npy')!r})\n"
             "print(type(m.get_layer('fc1')).__name__, float(np.abs(np.asarray(m(x, training=False)) - e).max()))\n"
             "print(tfprune.overall_sparsity(tfprune.sparsity_report(m)))\n")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    name, diff = proc.stdout.split()[:2]
    assert name == "PrunableDense" and float(diff) <= ATOL
    assert float(proc.stdout.split()[2]) == pytest.approx(0.7, abs=1e-3)
    with zipfile.ZipFile(path) as archive:
        assert json.loads(archive.read("metadata.json"))["keras_version"].startswith("3.")
    assert user_model.file_stack(path) is stacks.KERAS3


def test_tflite_predictions_equal_keras(trained, data):
    _, _, x, y = data
    shrunk = tfprune.shrink(tfprune.prune(tfprune.make_prunable(trained), 0.5, method="unit")).model
    interpreter, info = tflite.load_interpreter(tflite.to_tflite(shrunk), batch=len(x))
    np.testing.assert_allclose(tflite.predict_tflite(interpreter, x), _predict(shrunk, x), atol=ATOL)
    assert info["path"] == "xnnpack"


def test_the_tf_keras_twin_computes_the_same_outputs(trained, data):
    _, _, x, _ = data
    prunable = tfprune.prune(tfprune.make_prunable(trained), 0.5)
    copy = twin.checked_twin(prunable, x)
    assert stacks.of(copy) is stacks.TF_KERAS and not any(tfprune.is_prunable_layer(l) for l in copy.layers)
    np.testing.assert_allclose(np.asarray(copy(x, training=False)), _predict(prunable, x), atol=ATOL)


def test_a_layer_without_a_tf_keras_twin_is_named():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2, activation="softmax")(L.RMSNormalization(name="rms")(inputs)))
    with pytest.raises(twin.TwinError, match=r"layer 'rms' \(RMSNormalization\) has no tf_keras twin"):
        twin.checked_twin(model, np.ones((2, 4), np.float32))


# ---------------------------------------------------------------------------------------------- other backends

BACKEND_RUN = """
import json, sys
import numpy as np, keras, tfprune
import tensorflow_model_optimization as tfmot
from tfprune.experiments import models
out = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.random((256, 28, 28)).astype("float32"); y = rng.integers(0, 10, 256)
keras.utils.set_random_seed(0)
model = models.compile_model(tfprune.make_prunable(models.build("small_cnn", keras="3")))
schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=2)
model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[tfprune.callbacks.RankPruning("weight", schedule)])
held = all(bool((np.asarray(keras.ops.convert_to_numpy(l.kernel))[
    np.asarray(keras.ops.convert_to_numpy(l.kernel_mask)) == 0] == 0).all())
    for l in model.layers if tfprune.is_prunable_layer(l))
units = tfprune.prune(tfprune.make_prunable(tfprune.strip(model)), 0.5, method="unit")
small = tfprune.shrink(units)
diff = float(np.abs(np.asarray(small.model(x[:32], training=False)) - np.asarray(units(x[:32], training=False))).max())
small.model.save(out + "/small.keras")
np.save(out + "/x.npy", x[:32]); np.save(out + "/y.npy", np.asarray(small.model(x[:32], training=False)))
try:
    tfprune.to_tflite(small.model)
    refused = ""
except ValueError as e:
    refused = str(e)
# A functional model with BatchNormalization and a residual Add, pruned, shrunk, saved and reloaded too.
L = keras.layers
inputs = keras.Input((28, 28))
h = L.Conv2D(8, 3, padding="same", activation="relu")(L.Reshape((28, 28, 1))(inputs))
h = L.BatchNormalization()(h)
h = L.Add()([h, L.Conv2D(8, 3, padding="same", activation="relu")(h)])
h = L.Dense(32, activation="relu")(L.GlobalAveragePooling2D()(L.MaxPooling2D(2)(h)))
residual = models.compile_model(keras.Model(inputs, L.Dense(10, activation="softmax")(h)))
residual.fit(x, y, epochs=1, batch_size=64, verbose=0)
pruned = tfprune.prune(tfprune.make_prunable(residual), 0.5, method="unit")
pruned.save(out + "/residual.keras")
reloaded = keras.models.load_model(out + "/residual.keras")
expected = np.asarray(pruned(x[:32], training=False))
residual_diffs = [float(np.abs(np.asarray(m(x[:32], training=False)) - expected).max())
                  for m in (tfprune.shrink(pruned).model, reloaded)]
print(json.dumps({"backend": keras.backend.backend(), "held": held, "shrink_diff": diff,
                  "sparsity": tfprune.overall_sparsity(tfprune.sparsity_report(model)), "refused": refused,
                  "residual_diffs": residual_diffs}))
"""

BACKENDS = ["jax"] + (["torch"] if importlib.util.find_spec("torch") else [])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_prune_fine_tune_shrink_save_on_another_backend_then_export_from_tensorflow(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", BACKEND_RUN, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend and result["held"] and result["shrink_diff"] <= ATOL
    assert max(result["residual_diffs"]) <= ATOL  # functional + BN + Add: shrunk and reloaded, same outputs
    assert result["sparsity"] == pytest.approx(0.75, abs=2e-3)
    assert "TFLite export needs the TensorFlow backend" in result["refused"]
    # The documented path: load the file in a TensorFlow-backend process (this one) and export it there.
    model = user_model.load_user_model(str(tmp_path / "small.keras"))
    x, expected = np.load(tmp_path / "x.npy"), np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(_predict(model, x), expected, atol=ATOL)
    interpreter, _ = tflite.load_interpreter(tflite.to_tflite(model), batch=len(x))
    np.testing.assert_allclose(tflite.predict_tflite(interpreter, x), expected, atol=ATOL)


# ---------------------------------------------------------------------------------------------- commands

@pytest.fixture(scope="module")
def keras3_file(fashion, tmp_path_factory):
    """A Keras 3 functional model file trained one epoch on 1,000 real Fashion-MNIST images; it outputs logits (no
    softmax: the form the Keras tutorials teach)."""
    (x, y), _ = fashion
    keras.utils.set_random_seed(0)
    model = models.compile_model(_functional(activation=None))
    model.fit(x[:1000], y[:1000], epochs=1, batch_size=100, verbose=0)
    path = str(tmp_path_factory.mktemp("k3") / "residual.keras")
    model.save(path)
    return path


@pytest.mark.slow
def test_sweep_runs_on_a_keras3_file(keras3_file, tmp_path, capsys):
    out = str(tmp_path / "out")
    run_smoke_sweep(out, f"--model_path={keras3_file}", "--sparsities=0,50", "--train_size=500",
                    "--export=float", "--export_eval_size=200")
    printed = capsys.readouterr().out
    assert f"{keras3_file}: a Keras 3" in printed and "(written by Keras 3." in printed
    assert "that outputs logits" in printed
    points = store.load_points([out])
    assert sorted(p.key for p in points) == ["unit-k0", "unit-k50", "weight-k0", "weight-k50"]
    assert all(p.keras.startswith("Keras 3.") for p in points)
    unit50 = next(p for p in points if p.key == "unit-k50")
    assert unit50.shrink.max_abs_diff <= 1e-4 and unit50.shrink.shrunk_params < unit50.shrink.dense_params
    card = json.load(open(os.path.join(out, "tflite", "unit-k0", "float", "model_card.json")))
    assert (card["outputs"], card["softmax_appended"]) == ("logits", False)  # exported as the model is
    k0 = next(p for p in points if p.key == "unit-k0")
    assert card["loss"] == pytest.approx(k0.test_loss, rel=0.25)  # a cross-entropy of logits, not of raw values
    assert "Keras: Weight pruning, Unit pruning on Keras 3." in open(os.path.join(out, "results.md")).read()


@pytest.mark.slow
def test_compare_runs_tfmot_on_a_twin_of_a_keras3_file(keras3_file, tmp_path, capsys):
    from tfprune.cli import compare  # pylint: disable=g-import-not-at-top
    from absl import flags  # pylint: disable=g-import-not-at-top
    from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
    require(FASHION_DIR)
    out = str(tmp_path / "out")
    with flagsaver.flagsaver():
        flags.FLAGS(compare.with_defaults(["compare", f"--model_path={keras3_file}", "--sparsities=50",
                                           "--finetune_epochs=1", "--train_size=400", "--verbose=0",
                                           f"--output_dir={out}"]))
        compare.main(["compare"])
    assert "TF-MOT runs on a tf_keras twin" in capsys.readouterr().out
    by_method = {p.method: p for p in store.load_points([out])}
    assert by_method["tfmot"].keras.endswith("(tf_keras twin)") and by_method["weight"].keras.startswith("Keras 3")
    for name, sparsity in by_method["weight"].layer_sparsity.items():  # the same schedule, the same count
        assert by_method["tfmot"].layer_sparsity[name] == pytest.approx(sparsity, abs=1e-3), name
    markdown = open(os.path.join(out, "compare.md")).read()
    assert "TF-MOT magnitude on tf_keras 2." in markdown and "## tfprune weight pruning vs TF-MOT" in markdown


def test_a_keras3_file_with_a_lambda_layer_is_refused_as_unsafe(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2)(L.Lambda(lambda t: t * 2, name="double")(inputs)))
    for name in ("lambda.keras", "lambda.h5"):
        path = str(tmp_path / name)
        model.save(path)
        with pytest.raises(user_model.UnsafeModelError, match="layer 'double' is a Lambda layer"):
            user_model.load_user_model(path)


def test_a_subclassed_keras3_model_gets_the_same_message_as_a_tf_keras_one():
    class Sub(keras.Model):  # pylint: disable=abstract-method
        def __init__(self):
            super().__init__(name="sub")
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    for check, hint in ((tfprune.make_prunable, r"make_prunable\(model, in_place=True\) adds the masks"),
                        (user_model.check_prunable, "rebuild it with the functional API")):
        with pytest.raises(ValueError, match=r"model 'sub' is a subclassed Model \(Sub\); tfprune .* only "
                                             r"Sequential and functional models: " + hint):
            check(Sub())


@pytest.mark.slow
def test_a_file_of_another_keras_version_is_one_line_exit_2(tmp_path, keras3_file):
    path = str(tmp_path / "future.keras")
    with zipfile.ZipFile(keras3_file) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "metadata.json":
                data = json.dumps(dict(json.loads(data), keras_version="4.0.0")).encode()
            dst.writestr(item, data)
    proc = subprocess.run([sys.executable, "-m", "tfprune.export_main", f"--model_path={path}"], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc.stderr)[-1].endswith(f"--model_path: {path}: written by Keras 4.0.0; tfprune reads files "
                                                 "of Keras 2 (tf_keras 2.x) and Keras 3")


def test_a_functional_model_with_an_unnamed_input_prunes_and_shrinks():
    # Keras 3's clone names a new input layer after its tensor ('keras_tensor_12'), not 'input_layer': weights are
    # matched by layer name, and input layers have none (found by the JAX run, which builds such a model).
    inputs = keras.Input((8,))
    hidden = L.Dense(8, activation="relu")(L.Dense(16, activation="relu")(inputs))
    model = keras.Model(inputs, L.Dense(3, activation="softmax")(hidden))
    x = np.random.default_rng(0).random((4, 8)).astype(np.float32)
    pruned = tfprune.prune(tfprune.make_prunable(model), 0.5, method="unit")
    np.testing.assert_allclose(_predict(tfprune.strip(pruned), x), _predict(pruned, x), atol=ATOL)
    small = tfprune.shrink(pruned)
    np.testing.assert_allclose(_predict(small.model, x), _predict(pruned, x), atol=ATOL)
    assert small.report.params_after == 8 * 8 + 8 + 8 * 4 + 4 + 4 * 3 + 3
