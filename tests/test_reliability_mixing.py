"""Reliability, round two (issue 13): results never mix silently, bad input is one line before any work, damaged
files are named or recovered, two runs never write one folder at once.

docs/RELIABILITY.md lists each case with its expected line and exit code. Most tests run in-process on
flags/smoke.flags (LeNet-300-100, 5,000 real Fashion-MNIST images, one epoch).
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from absl import app
from absl import flags
from absl.testing import flagsaver

from conftest import run_smoke_sweep, FASHION_DIR, REPO, error_lines, require
from tfprune.files import locks
from tfprune.cli import app as cli_app
from tfprune.cli import export as export_main
from tfprune.cli import sensitivity as sensitivity_main  # noqa: F401  (defines --max_drop, parsed below)
from tfprune.cli import sweep
from tfprune.experiments import baseline, models
from tfprune.experiments.results import store
from tfprune.experiments.data import builtin as data_lib
from tfprune.experiments.results.records import RecordError
from tfprune._env import keras

FLAGS = flags.FLAGS
SMOKE = os.path.join(REPO, "flags", "smoke.flags")
L = keras.layers
pytestmark = pytest.mark.slow


_run = run_smoke_sweep


def _json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def other_data(fashion, tmp_path_factory):
    """A folder holding Fashion-MNIST as ``fashion_mnist.npz`` with one test label changed: valid-looking data that
    is not the same data."""
    (x_train, y_train), (x_test, y_test) = fashion
    y_test = y_test.copy()
    y_test[0] = (y_test[0] + 1) % 10
    folder = tmp_path_factory.mktemp("other_data")
    to_uint8 = lambda x: np.round(x * 255).astype(np.uint8)  # noqa: E731  (load_dataset divides by 255)
    np.savez(folder / "fashion_mnist.npz", x_train=to_uint8(x_train), y_train=y_train.astype(np.uint8),
             x_test=to_uint8(x_test), y_test=y_test.astype(np.uint8))
    return str(folder)


# ---------------------------------------------------------------------------------------------- data identity

def test_the_data_digest_tells_the_two_folders_apart(fashion, other_data):
    other = data_lib.load_dataset("fashion_mnist", other_data, download=False)
    assert data_lib.data_digest(other) != data_lib.data_digest(fashion)
    np.testing.assert_array_equal(other[0][0], fashion[0][0])  # the images survived the round trip exactly


def test_a_cached_baseline_is_not_reused_for_other_data(small_fashion, tmp_path):
    (x_train, y_train), (x_test, y_test) = small_fashion
    changed = y_test.copy()
    changed[0] = (changed[0] + 1) % 10
    kwargs = dict(epochs=1, batch_size=128, cache_dir=str(tmp_path), verbose=0)
    first = baseline.train_baseline("lenet_300_100", "fashion_mnist", datasets=small_fashion, **kwargs)
    other = baseline.train_baseline("lenet_300_100", "fashion_mnist",
                                    datasets=((x_train, y_train), (x_test, changed)), **kwargs)
    again = baseline.train_baseline("lenet_300_100", "fashion_mnist", datasets=small_fashion, **kwargs)
    assert (first.from_cache, other.from_cache, again.from_cache) == (False, False, True)
    assert first.path != other.path and again.path == first.path


def test_resume_into_a_folder_made_from_other_data_is_refused_before_training(tmp_path, other_data):
    out, cache = str(tmp_path / "out"), str(tmp_path / "cache")
    _run(out, "--methods=weight", "--sparsities=0", f"--cache_dir={cache}")
    entries = sorted(os.listdir(os.path.join(cache, "baselines")))
    with pytest.raises(app.UsageError, match=r"the data: digest '[0-9a-f]{16}' there, '[0-9a-f]{16}' now"):
        _run(out, "--methods=weight", "--sparsities=0,50", f"--data_dir={other_data}", "--resume",
             f"--cache_dir={cache}")
    assert sorted(os.listdir(os.path.join(cache, "baselines"))) == entries  # refused before training anything
    assert sorted(os.listdir(os.path.join(out, "points"))) == ["weight-k0.json"]


def test_merge_refuses_points_made_from_other_data(tmp_path, other_data, capsys):
    a, b, merged = (str(tmp_path / n) for n in ("a", "b", "merged"))
    _run(a, "--methods=weight", "--sparsities=0")
    _run(b, "--methods=weight", "--sparsities=50", f"--data_dir={other_data}")
    with pytest.raises(app.UsageError, match=r"--merge: the folders hold points made from different data \("):
        _run(merged, f"--merge={a},{b}")
    assert not os.path.exists(os.path.join(merged, "points"))


# ---------------------------------------------------------------------------------------------- point identity

def test_close_sparsities_are_two_points_with_exact_names(tmp_path):
    out = str(tmp_path / "out")
    _run(out, "--methods=weight", "--sparsities=50,50.0000001")
    assert sorted(os.listdir(os.path.join(out, "points"))) == ["weight-k50.0000001.json", "weight-k50.json"]
    ks = [r.k for r in store.load_points([out])]
    assert ks == [50.0, 50.0000001]
    assert "| 50.0000001 |" in open(os.path.join(out, "results.md")).read()


def test_a_k_that_would_prune_every_weight_is_refused_before_training(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    with pytest.raises(app.UsageError, match=r"--sparsities: weight pruning at k = 99.99999 % would remove all "
                                             r"235,200 weights of layer 'fc1' .*use a k below 99.9998 %"):
        _run(str(out), "--sparsities=99.99999", f"--cache_dir={cache}")
    assert not out.exists() and not cache.exists()


# ---------------------------------------------------------------------------------------------- resume

def test_resume_validates_every_record_it_would_skip(tmp_path, capsys):
    out = str(tmp_path / "out")
    args = ("--methods=weight", "--sparsities=0,25,50,90")
    _run(out, *args)
    original = {r.key: r for r in store.load_points([out])}
    points = os.path.join(out, "points")
    with open(os.path.join(points, "weight-k0.json"), "w") as f:
        f.write("{}")  # empty
    with open(os.path.join(points, "weight-k25.json"), "w") as f:
        f.write('{"method": "weight", "k": 25')  # truncated
    shutil.copy(os.path.join(points, "weight-k50.json"), os.path.join(points, "weight-k90.json"))  # another point
    foreign = _json(os.path.join(points, "weight-k50.json"))
    foreign["config_digest"] = "0" * 16  # made with other settings or data
    with open(os.path.join(points, "weight-k50.json"), "w") as f:
        json.dump(foreign, f)
    capsys.readouterr()
    _run(out, *args, "--resume")
    printed = capsys.readouterr().out
    for key, problem in (("weight-k0", "field 'method' is missing"), ("weight-k25", "unreadable point record"),
                         ("weight-k90", "holds point weight-k50, not the weight-k90"),
                         ("weight-k50", "made with other settings or data")):
        assert f"{key}.json: " in printed and problem in printed, (key, printed)
    assert "4 of 4 points to run" in printed
    assert sorted(n for n in os.listdir(points) if n.endswith(".rejected")) == [
        f"weight-k{k}.json.rejected" for k in (0, 25, 50, 90)]  # kept aside, not lost
    redone = {r.key: r for r in store.load_points([out])}
    for key, record in original.items():
        assert redone[key].test_accuracy == record.test_accuracy and redone[key].config_digest == record.config_digest


def test_a_foreign_file_among_the_points_is_named_before_any_work(tmp_path):
    out = str(tmp_path / "out")
    _run(out, "--methods=weight", "--sparsities=0")
    with open(os.path.join(out, "points", "notes.json"), "w") as f:
        f.write('{"hello": 1}')
    with pytest.raises(RecordError, match=r"points/notes\.json: unknown field\(s\) hello"):
        _run(out, "--methods=weight", "--sparsities=0,50", "--resume")
    assert sorted(os.listdir(os.path.join(out, "points"))) == ["notes.json", "weight-k0.json"]  # nothing computed


def test_an_explicit_data_dir_without_the_data_is_one_line_exit_1(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "tfprune.sweep", f"--flagfile={SMOKE}",
                           f"--output_dir={tmp_path / 'out'}", f"--data_dir={tmp_path / 'empty'}"],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 1, proc.stderr
    (line,) = [l for l in error_lines(proc.stderr) if not l.startswith("I1")]
    assert line.endswith(f"data_dir {str(tmp_path / 'empty')!r} holds no fashion_mnist files (expected "
                         "fashion_mnist.npz or IDX files such as train-images-idx3-ubyte.gz); the Keras cache and "
                         "system folders are searched only when no data_dir is given")
    assert not (tmp_path / "out").exists()


def test_a_damaged_sweep_config_is_named(tmp_path):
    out = str(tmp_path / "out")
    _run(out, "--methods=weight", "--sparsities=0")
    with open(os.path.join(out, "sweep_config.json"), "w") as f:
        f.write("not json")
    with pytest.raises(RecordError, match=r"sweep_config\.json: unreadable \(JSONDecodeError"):
        _run(out, "--methods=weight", "--sparsities=0", "--resume")


def test_a_damaged_baseline_json_is_recovered(tmp_path):
    out = str(tmp_path / "out")
    _run(out, "--methods=weight", "--sparsities=0")
    with open(os.path.join(out, "baseline.json"), "w") as f:
        f.write("\x00garbage")
    _run(out, "--methods=weight", "--sparsities=0,50", "--resume")
    assert _json(os.path.join(out, "baseline.json"))["dataset"] == "fashion_mnist"  # rewritten


def test_a_damaged_cache_entry_is_trained_again(small_fashion, tmp_path):
    kwargs = dict(epochs=1, batch_size=128, cache_dir=str(tmp_path), verbose=0, datasets=small_fashion)
    first = baseline.train_baseline("lenet_300_100", "fashion_mnist", **kwargs)
    with open(first.path[:-len(".keras")] + ".json", "w") as f:
        f.write('{"test_accuracy": "NaN"')
    again = baseline.train_baseline("lenet_300_100", "fashion_mnist", **kwargs)
    assert not again.from_cache and again.test_accuracy == pytest.approx(first.test_accuracy, abs=1e-6)


def test_training_that_diverges_is_not_cached(small_fashion, tmp_path):
    with pytest.raises(baseline.TrainingDiverged, match=r"diverged .*not cached; try a lower --learning_rate"):
        baseline.train_baseline("lenet_300_100", "fashion_mnist", epochs=1, learning_rate=1e12,
                                cache_dir=str(tmp_path), verbose=0, datasets=small_fashion)
    assert not [n for n in os.listdir(tmp_path / "baselines") if not n.endswith(".lock")]


# ---------------------------------------------------------------------------------------------- bad input

PLAN_CASES = [
    ("list", "[0.5, 0.9]", "the plan is a JSON list; expected an object"),
    ("out_of_range", '{"fc1": 1.5}', "layer 'fc1''s sparsity 1.5 is outside [0, 1)"),
    ("not_a_number", '{"fc1": "ninety"}', "layer 'fc1' has 'ninety', not a number"),
    ("empty", "{}", "the plan names no layer"),
    ("unknown_layer", '{"fc9": 0.5}', "layer 'fc9' does not exist in model 'lenet_300_100'"),
    ("not_json", "fc1: 0.5", "cannot read plan (JSONDecodeError"),
    ("repeated_layer", '{"layer_sparsity": {"fc1": 0.9, "fc1": 0.1}}', "layer 'fc1' appears twice (fc1=0.9, fc1=0.1)"),
]


@pytest.mark.parametrize("text, message", [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES])
def test_a_bad_plan_file_is_one_error_naming_flag_and_file_before_work(tmp_path, text, message):
    plan = tmp_path / "plan.json"
    plan.write_text(text)
    out, cache = tmp_path / "out", tmp_path / "cache"
    with pytest.raises(app.UsageError) as e:
        _run(str(out), f"--layer_sparsity={plan}", f"--cache_dir={cache}")
    assert "--layer_sparsity" in str(e.value) and message in str(e.value), str(e.value)
    if "does not exist" not in message:
        assert str(plan) in str(e.value)
    assert not out.exists() and not cache.exists()


@pytest.mark.parametrize("extra, message", [
    (["--layers=fc9"], "--layers: layer 'fc9' does not exist in model 'lenet_300_100'; prunable layers: fc1"),
    (["--layers="], "--layers: no layer selected to prune"),
    (["--methods=unit", "--layer_sparsity=logits=50"], "--layer_sparsity: layer 'logits' is a model output"),
    (["--layer_sparsity=fc1"], "--layer_sparsity entry 'fc1' is not name=percent"),
    (["--layer_sparsity=fc1=100"], "--layer_sparsity fc1: 100 is outside [0, 100)"),
    (["--layer_sparsity=fc1=90,fc2=50,fc1=10"], "--layer_sparsity: layer 'fc1' appears twice (fc1=90, fc1=10)"),
])
def test_bad_layer_selections_are_refused_before_training(tmp_path, extra, message):
    out, cache = tmp_path / "out", tmp_path / "cache"
    with pytest.raises(app.UsageError, match=None) as e:
        _run(str(out), *extra, f"--cache_dir={cache}")
    assert message in str(e.value), str(e.value)
    assert not out.exists() and not cache.exists()


@pytest.mark.parametrize("flag, message", [
    ("--learning_rate=nan", "--learning_rate must be a finite number > 0"),
    ("--learning_rate=inf", "--learning_rate must be a finite number > 0"),
    ("--learning_rate=0", "--learning_rate must be a finite number > 0"),
    ("--end_fraction=nan", "--end_fraction must be a finite number"),
    ("--begin_fraction=0.8", "--begin_fraction must be <= --end_fraction"),
    ("--seed=-1", "-1 is not an integer in the range [0, 4294967295]"),
    ("--seed=4294967296", "is not an integer in the range"),
    ("--output_dir=", "--output_dir is empty"),
    ("--sparsities=nan", "--sparsities: nan is outside [0, 100)"),
    ("--max_drop=nan", "--max_drop must be a finite number"),
])
def test_numeric_and_path_flags_are_validated_at_parse_time(tmp_path, flag, message):
    with flagsaver.flagsaver():
        with pytest.raises(flags.Error) as e:
            FLAGS(["sweep", f"--flagfile={SMOKE}", f"--output_dir={tmp_path / 'out'}", "--end_fraction=0.7", flag])
        assert message in str(e.value), str(e.value)


def test_a_flagfile_that_is_not_text_is_one_line_exit_2(tmp_path, capsys):
    binary = tmp_path / "weights.flags"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SystemExit) as e:
        cli_app._parse_flags_or_exit(["sweep", f"--flagfile={binary}"])  # pylint: disable=protected-access
    assert e.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"sweep: error: --flagfile {binary}: not a text file of flags") and len(lines) == 2


@pytest.mark.parametrize("build, message", [
    (lambda: keras.Sequential([L.Flatten(input_shape=(28, 28)), L.Dense(5, activation="softmax")]),
     "has 5 outputs, but the dataset has 10 classes"),
    (lambda: keras.Sequential([L.Flatten(input_shape=(32, 32)), L.Dense(10, activation="softmax")]),
     "takes inputs of shape (None, 32, 32)"),
])
def test_export_refuses_a_model_that_does_not_fit_the_data_before_converting(tmp_path, build, message):
    path = str(tmp_path / "model.keras")
    build().save(path)
    out = tmp_path / "export"
    with flagsaver.flagsaver(model_path=path, data_dir=FASHION_DIR, export_dir=str(out), variants=["float"]):
        with pytest.raises(app.UsageError, match=None) as e:
            export_main.main(["export"])
    assert message in str(e.value) and path in str(e.value), str(e.value)
    assert not out.exists()


def test_export_refuses_an_unwritable_export_dir_before_converting(tmp_path, monkeypatch):
    path = str(tmp_path / "model.keras")
    models.compile_model(models.build("lenet_300_100")).save(path)
    (tmp_path / "a_file").write_text("x")
    converted = []
    monkeypatch.setattr(export_main.tflite, "export_variant", lambda *a, **k: converted.append(a))
    with flagsaver.flagsaver(model_path=path, data_dir=FASHION_DIR, export_dir=str(tmp_path / "a_file" / "out"),
                             variants=["float"]):
        with pytest.raises(app.UsageError, match=r"--export_dir .*a_file/out.*: cannot write there"):
            export_main.main(["export"])
    assert converted == []


def test_data_and_record_errors_end_as_one_line_exit_1(tmp_path):
    for error in ("DatasetError('/data/train-images-idx3-ubyte.gz: empty file (0 bytes)')",
                  "RecordError('/out/sweep_config.json: unreadable')"):
        child = ("from tfprune.cli import app as cli\nfrom tfprune.experiments.data.builtin import DatasetError\n"
                 "from tfprune.experiments.results.records import RecordError\n"
                 f"def main(argv):\n    raise {error}\ncli.run(main)\n")
        proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        assert proc.returncode == 1, proc.stderr
        assert error_lines(proc.stderr) == [f"-c: error: {error.split(chr(39))[1]}"]


# ---------------------------------------------------------------------------------------------- signals

# Being a tfprune command while TensorFlow is imported: SIGINT arrives the moment the import of tensorflow begins
# (an import hook sends it), so the test does not race the machine's speed.
STARTUP_INTERRUPT = """
import importlib.abc, os, signal, sys
sys.argv = ["-m"]
class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
import tfprune.sweep
print("not reached")
"""


def test_ctrl_c_while_a_command_starts_is_one_line_exit_130():
    proc = subprocess.run([sys.executable, "-c", STARTUP_INTERRUPT], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 130, proc.stderr
    assert error_lines(proc.stderr) == ["tfprune: interrupted while starting; nothing was done"]
    assert "not reached" not in proc.stdout


def test_sigterm_is_one_line_exit_143():
    child = ("import os, signal\nfrom tfprune.cli import app as cli\n"
             "def main(argv):\n    os.kill(os.getpid(), signal.SIGTERM)\n    while True:\n        pass\n"
             "cli.run(main)\n")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 143, proc.stderr
    assert error_lines(proc.stderr) == ["-c: terminated (SIGTERM); finished work is kept (a sweep continues with "
                                        "--resume)"]


# ---------------------------------------------------------------------------------------------- concurrency

HOLD_LOCK = """
import sys
from tfprune.files import locks
with locks.exclusive(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def _holder(path):
    """A child process holding the lock on ``path`` until it reads a line (or is killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_into_a_busy_folder_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = _holder(str(out / store.LOCK_FILE))
    try:
        with pytest.raises(app.UsageError, match=rf"--output_dir .* is in use by another tfprune run \(pid "
                                                 rf"{holder.pid} on .*\); wait for it to finish or use another"):
            _run(str(out), "--methods=weight", "--sparsities=0")
        assert not (out / "points").exists()
    finally:
        holder.kill()  # a lock held by a killed process is released by the kernel: never stale
        holder.wait()
    _run(str(out), "--methods=weight", "--sparsities=0")
    assert sorted(os.listdir(out / "points")) == ["weight-k0.json"]


def test_a_second_training_of_one_cache_entry_waits_for_the_first(small_fashion, tmp_path):
    (x_train, y_train), test = small_fashion
    digest = data_lib.data_digest(small_fashion)
    key = baseline.cache_key("lenet_300_100", "fashion_mnist", 1, 128, 1e-3, 0, None, digest)
    holder = _holder(str(tmp_path / "baselines" / f"{key}.lock"))
    waited = []

    def release(description):  # called once, when this process finds the entry locked
        waited.append(description)
        holder.stdin.write("done\n")
        holder.stdin.flush()

    try:
        result = baseline.train_baseline("lenet_300_100", "fashion_mnist", epochs=1, cache_dir=str(tmp_path),
                                         verbose=0, datasets=small_fashion, on_wait=release)
    finally:
        holder.wait(timeout=60)
    assert len(waited) == 1 and f"pid {holder.pid}" in waited[0]
    assert not result.from_cache and os.path.isfile(result.path)


def test_a_lock_is_exclusive_and_released_when_the_holder_dies(tmp_path):
    path = str(tmp_path / "x.lock")
    holder = _holder(path)
    with pytest.raises(locks.LockHeld) as e:
        with locks.exclusive(path):
            pass
    assert e.value.holder["pid"] == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with locks.exclusive(path):  # taken at once: the dead holder's lock is gone
        pass
