"""Reliability (issue 9): bad input is one clear error, interrupted work loses nothing, loading never runs code.

docs/RELIABILITY.md lists every failure mode with the test that proves it (some live in test_sweep/test_data).
"""

import csv
import errno
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from absl import app
from absl import flags
from absl.testing import flagsaver

from conftest import run_smoke_sweep, FASHION_DIR, REPO, error_lines, require
from tfprune.files import io_utils
from tfprune.select import masks
from tfprune.files import user_model
from tfprune.cli import sweep
from tfprune.experiments import baseline, models
from tfprune.experiments.results import store
from tfprune._env import keras, tf
from tfprune.files.user_model import ModelFileError, UnsafeModelError

FLAGS = flags.FLAGS
SMOKE = os.path.join(REPO, "flags", "smoke.flags")
SMOKE_KEYS = ["unit-k0", "unit-k50", "unit-k90", "weight-k0", "weight-k50", "weight-k90"]
TIMING_FIELDS = ("point_seconds", "finetune_seconds_per_epoch")
L = keras.layers


def _env(tmp):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_HOME=str(tmp / "keras_home"), PYTHONUNBUFFERED="1")


def _sweep_cmd(out, *extra):
    return [sys.executable, "-m", "tfprune.sweep", f"--flagfile={SMOKE}", f"--output_dir={out}", *extra]


# ---------------------------------------------------------------------------------------------------------------
# Flags: one line naming flag and value, exit status 2, nothing created (in-process cases: test_sweep.py).

# One single-flag and one cross-flag case as whole processes (exit status, the two lines, nothing created); every
# other flag case is checked in-process at parse time (S::test_flag_validation_fails_before_work and
# M::test_numeric_and_path_flags_are_validated_at_parse_time), which is the same validator and the same path.
FLAG_CASES = [
    ("k_100", ["--sparsities=100"], "--sparsities: 100 is outside [0, 100)"),
    ("shard", ["--num_shards=2", "--shard_index=2"], "--shard_index must be < --num_shards"),
]


@pytest.mark.slow
@pytest.mark.parametrize("extra, message", [c[1:] for c in FLAG_CASES], ids=[c[0] for c in FLAG_CASES])
def test_bad_flag_is_one_line_exit_2_before_work(tmp_path, extra, message):
    out = tmp_path / "out"
    start = time.perf_counter()
    proc = subprocess.run(_sweep_cmd(out, f"--cache_dir={tmp_path / 'cache'}", *extra), capture_output=True,
                          text=True, env=_env(tmp_path), timeout=120, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 2 and lines[1] == "Try --helpfull for the list of flags.", lines
    assert lines[0].startswith(os.path.join(REPO, "tfprune", "sweep.py") + ": error: ") and message in lines[0]
    assert not out.exists() and not (tmp_path / "cache").exists()  # nothing written, nothing trained
    assert proc.stdout == ""
    assert time.perf_counter() - start < 60


@pytest.mark.slow
def test_output_dir_under_a_file_is_a_flag_error(tmp_path):
    # Root may write anywhere, so a permission bit cannot make a folder unwritable in a test run as root; a path
    # whose parent is a file cannot be created by anyone. 
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "out"
    proc = subprocess.run(_sweep_cmd(out), capture_output=True, text=True, env=_env(tmp_path), timeout=120, cwd=REPO)
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert f"--output_dir {str(out)!r} cannot be created: {str(tmp_path / 'a_file')!r} is not a folder" in lines[0]
    assert len(lines) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root bypasses permission bits; see test_output_dir_under_a_file")
def test_read_only_output_dir_is_a_flag_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with flagsaver.flagsaver():
            with pytest.raises(flags.IllegalFlagValueError, match=r"--output_dir .* is not writable"):
                FLAGS(["sweep", f"--flagfile={SMOKE}", f"--output_dir={folder / 'out'}"])
    finally:
        folder.chmod(0o755)


# ---------------------------------------------------------------------------------------------------------------
# Models: safe loading of user files, corrupt files named, models tfprune cannot prune refused before work.

def _lenet(name="lenet", activation="softmax"):
    return keras.Sequential([L.Flatten(input_shape=(28, 28), name="flatten"),
                             L.Dense(32, activation="relu", name="fc1"),
                             L.Dense(10, activation=activation, name="logits")], name=name)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_load_user_model_round_trip(tmp_path, suffix):
    model = _lenet()
    path = str(tmp_path / ("m" + suffix))
    model.save(path)
    loaded = user_model.load_user_model(path)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert user_model.check_prunable(loaded).prunable == ("fc1", "logits")


def test_prunable_layers_load_too(tmp_path):
    from tfprune import pruning
    path = str(tmp_path / "p.keras")
    pruning.prune(pruning.make_prunable(_lenet()), 0.5).save(path)
    loaded = user_model.load_user_model(path)
    assert type(loaded.get_layer("fc1")).__name__ == "PrunableDense"
    assert float(loaded.get_layer("fc1").kernel_mask.mean()) == 0.5


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layer_refused_unless_allowed(tmp_path, suffix):
    model = keras.Sequential([L.Flatten(input_shape=(28, 28)), L.Lambda(lambda t: 2 * t, name="double"),
                              L.Dense(10, activation="softmax", name="logits")])
    path = str(tmp_path / ("lambda" + suffix))
    model.save(path)
    with pytest.raises(UnsafeModelError) as e:
        user_model.load_user_model(path)
    msg = str(e.value)
    assert msg.startswith(path + ": refused to load: layer 'double' is a Lambda layer with a Python `lambda`")
    assert "--allow_unsafe_deserialization" in msg
    loaded = user_model.load_user_model(path, allow_unsafe=True)  # the user vouches for the file
    x = np.ones((2, 28, 28), np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)


def _rewrite_config(src, dst, edit):
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w") as out:
        for name in archive.namelist():
            data = archive.read(name)
            if name == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config)
            out.writestr(name, data)


def test_config_naming_another_module_is_refused_before_import(tmp_path, monkeypatch):
    # tf_keras' safe_mode=True still imports whatever module a config names: this is the hole the check closes.
    marker = tmp_path / "imported"
    (tmp_path / "payload_mod.py").write_text(f"open({str(marker)!r}, 'w').write('module code ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _lenet().save(str(tmp_path / "ok.keras"))
    evil = str(tmp_path / "evil.keras")
    _rewrite_config(tmp_path / "ok.keras", evil, lambda c: c.update(module="payload_mod", class_name="Payload"))
    with pytest.raises(UnsafeModelError, match=r"'lenet' \(Payload\) names module 'payload_mod', which loading "
                                               r"would import"):
        user_model.load_user_model(evil)
    assert not marker.exists()
    with pytest.raises(ModelFileError, match="Could not locate class 'Payload'"):
        user_model.load_user_model(evil, allow_unsafe=True)
    assert marker.read_text() == "module code ran"  # what safe mode alone would have let through
    monkeypatch.delitem(sys.modules, "payload_mod", raising=False)


def test_unsafe_entries_of_configs():
    def layer(cls, name, **config):
        return {"class_name": cls, "module": "keras.layers", "config": {"name": name, **config}}
    config = {"class_name": "Functional", "module": "keras", "config": {"layers": [
        layer("TFOpLambda", "flat", function="reshape"), layer("TFOpLambda", "act", function="nn.relu"),
        layer("TFOpLambda", "io", function="io.write_file"),
        layer("Lambda", "named", function="my_fn", function_type="function"),
        layer("Dense", "d", kernel_initializer={"class_name": "X", "module": "os.path", "config": {}}),
        layer("Dense", "ok", kernel_initializer={"class_name": "GlorotUniform", "module": "keras.initializers"}),
        {"class_name": "tfprune>PrunableDense", "module": "tfprune.layers.dense", "config": {"name": "p"}},
    ]}, "compile_config": {"loss": {"module": "__main__", "class_name": "function", "config": "my_loss"}}}
    assert user_model.unsafe_entries(config) == [
        "layer 'io' calls TensorFlow function tf.io.write_file, not a math/nn/shape op",
        "layer 'named' is a Lambda layer (it calls Python code)",
        "'d' (X) names module 'os.path', which loading would import",
    ]


def test_savedmodel_folder_refused_unless_allowed(tmp_path):
    model = _lenet()
    folder = str(tmp_path / "saved")
    model.save(folder, save_format="tf")
    with pytest.raises(UnsafeModelError, match=r"saved: a SavedModel folder holds TensorFlow graphs .*re-save it "
                                               r"as \.keras"):
        user_model.load_user_model(folder)
    loaded = user_model.load_user_model(folder, allow_unsafe=True)
    x = np.ones((2, 28, 28), np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)


def _corrupt(tmp_path, kind):
    good_keras, good_h5 = str(tmp_path / "good.keras"), str(tmp_path / "good.h5")
    model = _lenet()
    model.save(good_keras)
    model.save(good_h5)
    path = str(tmp_path / {"weights_only": "w.h5", "unknown": "m.pt", "folder": "dir"}.get(kind, kind))
    if kind == "missing.keras":
        return path
    if kind == "truncated.keras" or kind == "truncated.h5":
        data = open(good_keras if kind.endswith("keras") else good_h5, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    elif kind == "empty.keras":
        open(path, "wb").close()
    elif kind == "weights_only":
        model.save_weights(path)
    elif kind == "unknown":
        open(path, "wb").write(b"\x80\x02")
    elif kind == "folder":
        os.mkdir(path)
    elif kind == "bad_weights.keras":  # valid config, weights of another model
        other = str(tmp_path / "other.keras")
        keras.Sequential([L.Flatten(input_shape=(28, 28)), L.Dense(7, name="fc1")]).save(other)
        with zipfile.ZipFile(good_keras) as a, zipfile.ZipFile(other) as b, zipfile.ZipFile(path, "w") as out:
            for name in a.namelist():
                out.writestr(name, b.read(name) if name == "model.weights.h5" else a.read(name))
    return path


@pytest.mark.parametrize("kind, pattern", [
    ("missing.keras", "no such model file"),
    ("truncated.keras", r"not a valid \.keras archive \(zip\); the file is truncated or corrupt"),
    ("empty.keras", r"not a valid \.keras archive"),
    ("truncated.h5", r"cannot read the model config \(OSError: .*truncated file.*truncated or corrupt"),
    ("weights_only", "an HDF5 file without a model config"),
    ("unknown", "unknown model format"),
    ("folder", "a folder without saved_model.pb"),
    ("bad_weights.keras", r"cannot load the model \(ValueError: .*(Shape mismatch|expected)"),
])
def test_corrupt_model_file_is_named(tmp_path, kind, pattern):
    path = _corrupt(tmp_path, kind)
    with pytest.raises(ModelFileError) as e:
        user_model.load_user_model(path)
    assert str(e.value).startswith(path + ": ")
    assert re.search(pattern, str(e.value)), str(e.value)


class _Sub(keras.Model):
    def __init__(self):
        super().__init__(name="sub")
        self.d = L.Dense(10)

    def call(self, x):
        return self.d(x)


class _MyDense(L.Dense):
    pass


class _ScaledDense(L.Dense):
    """A Dense subclass that makes a weight of its own: tfprune would not mask it, so the layer stays dense."""

    def build(self, input_shape):
        super().build(input_shape)
        self.scale = self.add_weight(name="scale", shape=(self.units,), initializer="ones")

    def call(self, x):
        return super().call(x) * self.scale


def _shared():
    inputs = keras.Input((28, 28))
    flat = L.Flatten()(inputs)
    block = L.Dense(784, activation="relu", name="block")
    out = L.Dense(10, activation="softmax", name="logits")(block(block(flat)))
    return keras.Model(inputs, out, name="shared_model")


def _nested():
    inputs = keras.Input((28, 28))
    inner = keras.Sequential([L.Dense(10, activation="softmax", name="d")], name="inner")
    return keras.Model(inputs, inner(L.Flatten()(inputs)), name="outer")


def _nan():
    model = _lenet()
    kernel = model.get_layer("fc1").kernel.numpy()
    kernel[3, :2] = [np.nan, np.inf]
    model.get_layer("fc1").kernel.assign(kernel)
    return model


def _tfmot_wrapped():
    import tensorflow_model_optimization as tfmot
    return tfmot.sparsity.keras.prune_low_magnitude(_lenet())


@pytest.mark.parametrize("build, pattern", [
    (lambda: keras.Sequential([L.Flatten(input_shape=(28, 28)), L.Softmax()], name="nothing"),
     r"model 'nothing' has no layer tfprune prunes \(Dense, Conv1D, Conv2D, Conv3D, DepthwiseConv2D, Embedding, "
     r"Conv1DTranspose, Conv2DTranspose, Conv3DTranspose, SeparableConv1D, SeparableConv2D, SimpleRNN, GRU, LSTM, "
     r"EinsumDense, MultiHeadAttention, Bidirectional; layers: "
     r"Flatten, Softmax\)"),
    (lambda: _Sub(), r"model 'sub' is a subclassed Model \(_Sub\).*functional API"),
    (_shared, r"layer 'block' is shared: model 'shared_model' calls it at 2 places"),
    (_nested, r"layer 'inner' of model 'outer' is a nested Model \(Sequential\)"),
    (_nan, r"layer 'fc1': weight 'fc1/kernel:0' holds 2 NaN/inf of 25088 values"),
    (_tfmot_wrapped, r"TF-MOT PruneLowMagnitude wrapper; strip it first"),
    (lambda: "not a model", r"expected a Keras Model \(tf_keras or Keras 3\), got str"),
])
def test_check_prunable_refuses(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        user_model.check_prunable(build())


def test_check_prunable_skips_layers_it_does_not_prune():
    inputs = keras.Input((28, 28))
    x = L.Reshape((28, 28, 1))(inputs)
    x = L.Conv2D(4, 3, name="conv")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.PReLU(name="prelu")(x)
    x = L.Flatten()(x)
    x = _MyDense(16, name="custom")(x)  # a subclass of a registered type is pruned as its parent
    x = _ScaledDense(16, name="scaled")(x)
    out = L.Dense(10, activation="softmax", name="logits")(x)
    check = user_model.check_prunable(keras.Model(inputs, out))
    assert check.prunable == ("conv", "custom", "logits")
    assert set(check.skipped) == {"bn", "prelu", "scaled"}
    assert check.skipped["scaled"] == ("_ScaledDense (a subclass of Dense) makes weights of its own (scale) that "
                                       "tfprune would not mask")
    assert check.skipped["prelu"] == "PReLU has no kernel tfprune prunes; its weights stay dense"


def test_check_compatible(small_fashion):
    x = small_fashion[1][0]
    assert user_model.check_compatible(_lenet(), x, 10) == "probabilities"
    colour = keras.Sequential([L.Flatten(input_shape=(32, 32, 3)), L.Dense(10, activation="softmax")], name="c")
    with pytest.raises(ValueError, match=r"model 'c' takes inputs of shape \(None, 32, 32, 3\), but the data's "
                                         r"inputs are \(28, 28\)"):
        user_model.check_compatible(colour, x, 10)
    five = keras.Sequential([L.Flatten(input_shape=(28, 28)), L.Dense(5, activation="softmax")], name="five")
    with pytest.raises(ValueError, match="model 'five' has 5 outputs, but the dataset has 10 classes"):
        user_model.check_compatible(five, x, 10)
    logits = keras.Sequential([L.Flatten(input_shape=(28, 28)), L.Dense(10, name="out")], name="logits")
    assert user_model.check_compatible(logits, x, 10) == "logits"  # accepted: the loss takes from_logits
    # A multi-label head was taken for logits, and Keras warned at every loss (adversarial pass, round three).
    for head in ([L.Dense(10, activation="sigmoid")], [L.Dense(10), L.Activation("sigmoid")]):
        scores = keras.Sequential([L.Flatten(input_shape=(28, 28))] + head, name="scores")
        with pytest.raises(ValueError, match=r"model 'scores' ends in a sigmoid over its 10 outputs: independent "
                                             r"per-class scores \(multi-label\).*end it in a softmax"):
            user_model.check_compatible(scores, x, 10)


@pytest.mark.slow
def test_file_baseline_evaluates_on_the_test_set(tmp_path, small_fashion):
    model = models.compile_model(_lenet())
    model.fit(*small_fashion[0], epochs=1, verbose=0)
    path = str(tmp_path / "trained.keras")
    model.save(path)
    base, check = baseline.file_baseline(path, small_fashion)
    expected = model.evaluate(*small_fashion[1], batch_size=1024, verbose=0)[1]
    assert base.test_accuracy == pytest.approx(expected, abs=1e-6) and base.test_accuracy > 0.5
    assert (base.path, base.train_seconds, check.prunable) == (path, 0.0, ("fc1", "logits"))
    nan_path = str(tmp_path / "nan.h5")
    _nan().save(nan_path)
    with pytest.raises(ValueError, match=re.escape(nan_path) + ": layer 'fc1': weight 'fc1/kernel:0' holds 2"):
        baseline.file_baseline(nan_path, small_fashion)


_run_in_process = run_smoke_sweep


@pytest.mark.slow
def test_sweep_prunes_a_user_model_file(tmp_path, fashion, capsys):
    # Outputs logits, trained with from_logits=True as the Keras tutorials teach: the sweep takes it as it is.
    model = _lenet("mine", activation=None)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(*fashion[0], epochs=1, verbose=0, batch_size=256)
    path = str(tmp_path / "mine.keras")
    model.save(path)
    out = str(tmp_path / "out")
    _run_in_process(out, f"--model_path={path}", "--methods=weight", "--sparsities=0,90",
                    f"--cache_dir={tmp_path / 'cache'}")
    assert not (tmp_path / "cache").exists()  # nothing trained
    info = json.load(open(os.path.join(out, "baseline.json")))
    assert info["model"] == path
    loss, accuracy = model.evaluate(*fashion[1], verbose=0)
    assert info["test_accuracy"] == pytest.approx(accuracy, abs=1e-6) and accuracy > 0.7
    assert info["test_loss"] == pytest.approx(loss, rel=1e-4)  # cross-entropy from logits, as the model was trained
    records = {r.k: r for r in store.load_points([out])}
    assert records[0.0].test_accuracy == pytest.approx(info["test_accuracy"], abs=1e-6)
    assert records[90.0].layer_sparsity["fc1"] == pytest.approx(0.9, abs=1e-3)
    printed = capsys.readouterr().out
    assert f"baseline {path} on fashion_mnist" in printed and "that outputs logits; its losses are" in printed
    model.get_layer("fc1").bias.assign(model.get_layer("fc1").bias + 1e-3)
    model.save(path)  # another model under the same name: resuming into ``out`` must refuse to mix them
    with pytest.raises(app.UsageError, match=r"--model_sha256: '[0-9a-f]{64}' there, '[0-9a-f]{64}' now"):
        _run_in_process(out, f"--model_path={path}", "--methods=weight", "--sparsities=0,90", "--resume")


@pytest.mark.slow
def test_sweep_refuses_an_unsafe_model_file_before_work(tmp_path):
    model = keras.Sequential([L.Flatten(input_shape=(28, 28)), L.Lambda(lambda t: t, name="code"),
                              L.Dense(10, activation="softmax", name="logits")])
    path = str(tmp_path / "lambda.h5")
    model.save(path)
    out = tmp_path / "out"
    with pytest.raises(app.UsageError, match=re.escape(f"--model_path: {path}: refused to load: layer 'code'")):
        _run_in_process(str(out), f"--model_path={path}")
    assert not (out / "points").exists()


# ---------------------------------------------------------------------------------------------------------------
# Interruption: SIGINT / SIGKILL at moments a pause hook fixes, then --resume; the result equals an uninterrupted run.

def _point_records(out):
    """{point key: record as JSON without its timing fields} of every point file (a half-written one fails here)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(out, "points", "*.json"))):
        record = store.read_point(path)
        found[record.key] = {k: v for k, v in record.to_json().items() if k not in TIMING_FIELDS}
    return found


def _csv_rows(out):
    with open(os.path.join(out, "results.csv")) as f:
        return list(csv.DictReader(f))


def _temp_files(out):
    return sorted(os.path.relpath(p, out) for p in glob.glob(os.path.join(out, "**", ".*.tmp"), recursive=True))


def _assert_same_results(out, reference):
    assert _point_records(out) == _point_records(reference)
    rows, ref_rows = _csv_rows(out), _csv_rows(reference)
    keys = [(r["method"], r["k"]) for r in rows]
    assert len(keys) == len(set(keys)) == 6, keys  # no duplicated or missing row
    drop = {"point_seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows] == \
        [{k: v for k, v in r.items() if k not in drop} for r in ref_rows]
    with open(os.path.join(out, "results.json")) as f:
        assert len(json.load(f)["points"]) == 6
    for png in ("accuracy_vs_k.png", "loss_vs_k.png", "size_vs_k.png", "weight_histograms.png"):
        with open(os.path.join(out, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", png


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted smoke sweep run as a subprocess (trains the shared cached baseline)."""
    require(FASHION_DIR)
    tmp = tmp_path_factory.mktemp("reference")
    out, cache = tmp / "out", tmp / "cache"
    proc = subprocess.run(_sweep_cmd(out, f"--cache_dir={cache}"), capture_output=True, text=True,
                          env=_env(tmp), timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(_point_records(out)) == SMOKE_KEYS and _temp_files(out) == []
    return {"out": str(out), "cache": str(cache)}


def _phase(stdout):
    if "baseline " not in stdout:
        return "baseline training" if "@@ training starts" in stdout else "start-up"
    done = len(re.findall(r"^\[\d/\d\] ", stdout, re.M))
    writing = re.findall(r"^@@ writing (.*)$", stdout, re.M)
    return f"{done} points finished, last write begun: {os.path.basename(writing[-1]) if writing else None}"


# The sweep's own main with observation hooks that print a line as training starts, at each atomic write (as it is
# asked for, and again once its temp file is open, before the first byte), each TFLite conversion and each point, so
# that a kill can be aimed at those moments; nothing else changes. With SWEEP_PAUSE set to one of those lines
# ("@@ converting", "@@ point 3", "@@ temp file open for /abs/out/weight_histograms.png"), the child stops there
# (sleeps, up to 120 s) after printing "<line> (paused)": a signal sent once that line is read lands at that moment
# whatever the machine's speed, so no test races it.
INSTRUMENTED_SWEEP = """
import contextlib, functools, itertools, os, time
from tfprune.files import io_utils
from tfprune.experiments import point
from tfprune.tflite import convert
from tfprune._env import keras
PAUSE = os.environ.get("SWEEP_PAUSE")
def say(text):
    print(text + (" (paused)" if text == PAUSE else ""), flush=True)
    if text == PAUSE:
        time.sleep(120)
def announce(owner, name, line):
    original = getattr(owner, name)
    @functools.wraps(original)
    def announced(*args, **kwargs):
        say(line(*args, **kwargs))
        return original(*args, **kwargs)
    setattr(owner, name, announced)
real_atomic_open = io_utils.atomic_open
@contextlib.contextmanager
def atomic_open(path, *args, **kwargs):
    with real_atomic_open(path, *args, **kwargs) as f:
        say(f"@@ temp file open for {path}")
        yield f
io_utils.atomic_open = atomic_open
points = itertools.count(1)
announce(keras.Model, "fit", lambda *args, **kwargs: "@@ training starts")
announce(io_utils, "atomic_open", lambda path, *args, **kwargs: f"@@ writing {path}")
announce(convert, "to_tflite", lambda *args, **kwargs: "@@ converting")
announce(point, "run_point", lambda *args, **kwargs: f"@@ point {next(points)}")
from tfprune.cli import sweep
sweep.run()
"""


def _kill_at(cmd, env, marker, delay, sig):
    """Starts ``cmd``; once a stdout line holds ``marker``, waits ``delay`` s and sends ``sig`` (unless it has
    finished). Returns (returncode, stdout, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            break
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, "".join(seen) + stdout, stderr


def _interrupt_and_resume(tmp, cache, kills, reference, pause):
    """For each (marker, delay, signal) of ``kills`` runs the sweep (resuming after the first) and kills it
    ``delay`` s after ``marker`` appears on stdout (``pause``: the hook line the killed runs stop at, see
    ``INSTRUMENTED_SWEEP``, or a list of them, one per kill, so every signal lands while the child waits there);
    then resumes to the end and compares with ``reference``. A run that ends before its signal fails the test:
    each kill is tested, never skipped."""
    out = tmp / "out"
    pauses = pause if isinstance(pause, list) else [pause] * len(kills)
    assert all(pauses), "every kill is aimed with the pause hook"
    phases = []
    for i, ((marker, delay, sig), stop) in enumerate(zip(kills, pauses, strict=True)):
        env = dict(_env(tmp), **({"SWEEP_PAUSE": stop} if stop else {}))
        cmd = [sys.executable, "-c", INSTRUMENTED_SWEEP] + _sweep_cmd(
            out, f"--cache_dir={cache}", *(["--resume"] if i else []))[3:]
        rc, stdout, stderr = _kill_at(cmd, env, marker, delay, sig)
        phases.append(f"{signal.Signals(sig).name} {delay:.2f} s after {marker!r}: {_phase(stdout)} (exit {rc})")
        assert rc == (130 if sig == signal.SIGINT else -sig), phases  # the signal landed, the run did not finish
        if sig == signal.SIGINT:
            assert "interrupted" in error_lines(stderr)[-1]
        _point_records(out)  # every point file that exists parses
        if sig == signal.SIGINT:  # KeyboardInterrupt runs atomic_open's cleanup: no temp file is left behind
            assert _temp_files(out) == [], phases
    proc = subprocess.run(_sweep_cmd(out, f"--cache_dir={cache}", "--resume"), capture_output=True, text=True,
                          env=_env(tmp), timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    print("\n".join(phases))
    _assert_same_results(str(out), reference["out"])
    return str(out), phases


@pytest.mark.slow
def test_sigint_then_resume_equals_uninterrupted_run(reference, tmp_path):
    # Ctrl-C while the third point runs: the child stops at the start of point 3 (the pause hook), so the signal
    # lands there on any machine, after two finished points.
    _, phases = _interrupt_and_resume(tmp_path, reference["cache"], [("@@ point 3 (paused)", 0.0, signal.SIGINT)],
                                      reference, pause="@@ point 3")
    # After a point the tables are written; the plots only once a method's curve is complete (3 points).
    assert phases[0].endswith("2 points finished, last write begun: results.md (exit 130)"), phases


@pytest.mark.slow
def test_sigkill_twice_then_resume_with_a_fresh_cache(reference, tmp_path):
    # A fresh cache: the first run is killed as its baseline training starts (holding the cache's lock), the second
    # (which trains the baseline again) with the first method's three points finished and the temp file of its
    # weight histograms open; the pause hook stops each child at that moment, so both kills land there on any machine. The finished
    # run, whose baseline was trained again in another process and cache, must still equal the reference.
    plot = os.path.join(str(tmp_path / "out"), "weight_histograms.png")
    kills = [("@@ training starts (paused)", 0.0, signal.SIGKILL),
             (f"@@ temp file open for {plot} (paused)", 0.0, signal.SIGKILL)]
    out, phases = _interrupt_and_resume(tmp_path, str(tmp_path / "cache"), kills, reference,
                                        pause=["@@ training starts", f"@@ temp file open for {plot}"])
    assert phases[0].endswith(": baseline training (exit -9)"), phases
    assert phases[1].endswith(": 3 points finished, last write begun: weight_histograms.png (exit -9)"), phases
    # SIGKILL leaves the temp file of the write in flight: never read as a result (load_points globs *.json).
    leftovers = _temp_files(out)
    assert len(leftovers) == 1 and re.fullmatch(r"\.weight_histograms\.png\..+\.tmp", leftovers[0]), leftovers
    assert sorted(r.key for r in store.load_points([out])) == SMOKE_KEYS
    leftovers = glob.glob(os.path.join(tmp_path, "cache", "baselines", "*"))
    # The entry, its metadata, and its lock file (a lock held by a killed process is released by the kernel).
    assert sorted(os.path.basename(p).rsplit(".", 1)[1] for p in leftovers if os.path.isfile(p)) == \
        ["json", "keras", "lock"]


@pytest.mark.slow
def test_sigkill_during_export_then_resume_completes_every_point(tmp_path):
    # Killed while the first point is being exported (converted, verified, timed, written): its record is written
    # only after its export, so --resume redoes that point, and every exported model on disk is whole and runs.
    from tfprune import tflite as export  # pylint: disable=g-import-not-at-top
    require(FASHION_DIR)
    out, env = tmp_path / "out", _env(tmp_path)
    args = [f"--cache_dir={tmp_path / 'cache'}", "--methods=weight", "--sparsities=0,90", "--export=float",
            "--export_eval_size=200"]
    cmd = [sys.executable, "-c", INSTRUMENTED_SWEEP] + _sweep_cmd(out, *args)[3:]
    # The child stops as the first conversion begins (the pause hook): the kill lands mid-export on any machine.
    rc, stdout, _ = _kill_at(cmd, dict(env, SWEEP_PAUSE="@@ converting"), "@@ converting (paused)", 0.0,
                             signal.SIGKILL)
    print(f"SIGKILL as the first TFLite conversion began: {_phase(stdout)} (exit {rc})")
    assert rc == -signal.SIGKILL and sorted(_point_records(out)) == []  # no point is recorded before its export
    proc = subprocess.run(_sweep_cmd(out, *args, "--resume"), capture_output=True, text=True, env=env, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = _point_records(out)
    assert sorted(records) == ["weight-k0", "weight-k90"] and len(_csv_rows(out)) == 2
    for key, record in records.items():
        folder = out / "tflite" / key / "float"
        model_bytes = (folder / "model.tflite").read_bytes()
        card = json.loads((folder / "model_card.json").read_text())
        (figures,) = [e for e in record["exports"] if (e["variant"], e["model"]) == ("float", "pruned")]
        assert card["size_bytes"] == len(model_bytes) == figures["size_bytes"]
        x, y = (np.zeros((4, 28, 28), np.float32), np.zeros(4, np.int64))
        assert export.evaluate_tflite(model_bytes, x, y)["images"] == 4  # the file on disk loads and runs


def test_keyboard_interrupt_mid_write_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "points" / "weight-k50.json")
    io_utils.write_json_atomic(path, {"old": True})
    with pytest.raises(KeyboardInterrupt):
        with io_utils.atomic_open(path) as f:
            f.write('{"new": ')
            raise KeyboardInterrupt
    assert json.load(open(path)) == {"old": True}
    assert _temp_files(str(tmp_path)) == []


def test_sigkill_mid_write_keeps_the_old_file(tmp_path):
    # io_utils imports nothing from tfprune: load it alone so the child starts in milliseconds, without TensorFlow.
    path = str(tmp_path / "points" / "weight-k50.json")
    io_utils.write_json_atomic(path, {"old": True})
    child = ("import importlib.util, os, signal, sys\n"
             f"spec = importlib.util.spec_from_file_location('io_utils', {io_utils.__file__!r})\n"
             "io_utils = importlib.util.module_from_spec(spec); spec.loader.exec_module(io_utils)\n"
             f"with io_utils.atomic_open({path!r}) as f:\n"
             "    f.write('{\"new\": ' * 1000); f.flush()\n"
             "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.load(open(path)) == {"old": True}
    leftovers = _temp_files(str(tmp_path))
    assert len(leftovers) == 1 and re.fullmatch(r"points/\.weight-k50\.json\..+\.tmp", leftovers[0])
    assert glob.glob(os.path.join(tmp_path, "points", "*.json")) == [path]  # what load_points reads


# ---------------------------------------------------------------------------------------------------------------
# Disk full mid-run: the error names the file and ENOSPC; finished points stay intact; --resume completes.

class _FullDisk:
    """Wraps a file so that write() fails like a full disk: OSError(ENOSPC) naming no file, as the kernel does."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)


@pytest.mark.slow
def test_disk_full_mid_run_names_the_file_and_keeps_finished_points(tmp_path, monkeypatch):
    out, cache = str(tmp_path / "out"), f"--cache_dir={tmp_path / 'cache'}"
    real_open = io_utils.atomic_open
    written = []

    def atomic_open(path, mode="w"):
        inner = real_open(path, mode)
        if os.path.basename(os.path.dirname(path)) == "points":
            written.append(path)
            if len(written) == 3:  # two points finished; the disk fills while the third is written
                class Failing:
                    def __enter__(self):
                        return _FullDisk(inner.__enter__())

                    def __exit__(self, *exc):
                        return inner.__exit__(*exc)
                return Failing()
        return inner
    monkeypatch.setattr(io_utils, "atomic_open", atomic_open)
    with pytest.raises(OSError) as e:
        _run_in_process(out, "--methods=weight", cache)
    assert e.value.errno == errno.ENOSPC and "No space left on device" in str(e.value)
    assert e.value.filename == written[2] and str(e.value).endswith(f": {written[2]!r}")
    finished = _point_records(out)
    assert sorted(finished) == ["weight-k0", "weight-k50"]
    assert _temp_files(out) == [] and len(_csv_rows(out)) == 2
    monkeypatch.setattr(io_utils, "atomic_open", real_open)
    _run_in_process(out, "--methods=weight", "--resume", cache)
    after = _point_records(out)
    assert sorted(after) == ["weight-k0", "weight-k50", "weight-k90"]
    assert {k: after[k] for k in finished} == finished and len(_csv_rows(out)) == 3


@pytest.mark.slow
def test_cli_prints_an_os_error_as_one_line_exit_1(tmp_path):
    target = str(tmp_path / "points" / "unit-k0.json")
    child = ("import errno, os, sys\n"
             "from tfprune.cli import app as cli\n"
             "def main(argv):\n"
             f"    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), {target!r})\n"
             "cli.run(main)\n")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=_env(tmp_path),
                          timeout=120)
    assert proc.returncode == 1
    assert error_lines(proc.stderr) == [f"-c: error: [Errno 28] No space left on device: {target!r}"]


# ---------------------------------------------------------------------------------------------------------------
# Determinism: the same flags and seed give the same baseline, masks and figures on CPU.

@pytest.mark.slow
def test_same_flags_and_seed_give_the_same_masks_and_records(reference, tmp_path):
    out = str(tmp_path / "out")
    _run_in_process(out, f"--cache_dir={tmp_path / 'cache'}")  # another process, another cache: trained again
    assert _point_records(out) == _point_records(reference["out"])
    paths = [glob.glob(os.path.join(c, "baselines", "*.keras"))[0] for c in (reference["cache"], tmp_path / "cache")]
    first, second = (keras.models.load_model(p, compile=False) for p in paths)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    for layer in ("fc1", "fc2"):
        kernel_a, kernel_b = first.get_layer(layer).kernel.numpy(), second.get_layer(layer).kernel.numpy()
        np.testing.assert_array_equal(masks.weight_mask(kernel_a, 0.9), masks.weight_mask(kernel_b, 0.9))
        np.testing.assert_array_equal(masks.unit_mask(kernel_a, 0.5), masks.unit_mask(kernel_b, 0.5))
    assert tf.config.list_physical_devices("GPU") == []  # the claim is for CPU runs


@pytest.mark.slow
def test_fine_tuned_points_do_not_depend_on_order_cache_or_resume(tmp_path):
    # Fine-tuning shuffles batches: without a seed per point, a point's figures depended on whether the baseline was
    # trained in this process or loaded from the cache, and on the points run before it (so --resume and shards
    # changed them). Run 1 trains the baseline and runs k=50 then k=90; run 2, a new process, loads it and runs k=90.
    common = [f"--cache_dir={tmp_path / 'cache'}", "--methods=weight", "--finetune_epochs=1"]
    for name, ks in (("a", "50,90"), ("b", "90")):
        proc = subprocess.run(_sweep_cmd(tmp_path / name, f"--sparsities={ks}", *common), capture_output=True,
                              text=True, env=_env(tmp_path), timeout=300, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert _point_records(str(tmp_path / "b"))["weight-k90"] == _point_records(str(tmp_path / "a"))["weight-k90"]
