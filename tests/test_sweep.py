"""tfprune.sweep end to end on flags/smoke.flags (real Fashion-MNIST): files, columns, plots, resume, shards."""

import csv
import json
import os
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver

from conftest import run_smoke_sweep, FASHION_DIR, REPO, require
from tfprune.cli import sweep
from tfprune.experiments import point as experiment
from tfprune.experiments.results import records
from tfprune.experiments.results import store

FLAGS = flags.FLAGS
SMOKE = os.path.join(REPO, "flags", "smoke.flags")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


_run = run_smoke_sweep


def _keys(output_dir):
    return sorted(records.point_key(r.method, r.k) for r in store.load_points([output_dir]))


def test_smoke_sweep_writes_tables_and_plots(tmp_path, capsys):
    out = str(tmp_path / "out")
    _run(out, "--gzip_size")
    printed = capsys.readouterr().out
    assert ", gzip " in next(line for line in printed.splitlines() if line.startswith("[6/6]")) and "| k % | Weight pruning accuracy % | Unit pruning accuracy % |" in printed
    assert _keys(out) == ["unit-k0", "unit-k50", "unit-k90", "weight-k0", "weight-k50", "weight-k90"]
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    for column in ("method", "k", "achieved_sparsity", "test_accuracy", "test_loss", "remaining_weights",
                   "dense_size_bytes", "gzip_size_bytes", "layer_sparsity.fc1", "units_kept.fc1"):
        assert column in rows[0], column
    by_key = {(r["method"], float(r["k"])): r for r in rows}
    assert abs(float(by_key[("weight", 90.0)]["achieved_sparsity"]) - 0.9) < 1e-9
    assert int(by_key[("unit", 50.0)]["units_kept.fc1"]) == 150
    assert int(by_key[("unit", 50.0)]["units_kept.logits"]) == 10
    # pruning hurts: accuracy at k=0 equals the baseline and is above k=90
    base = json.load(open(os.path.join(out, "baseline.json")))
    assert float(by_key[("weight", 0.0)]["test_accuracy"]) == pytest.approx(base["test_accuracy"], abs=1e-6)
    assert float(by_key[("weight", 90.0)]["test_accuracy"]) < float(by_key[("weight", 0.0)]["test_accuracy"])
    assert int(by_key[("weight", 90.0)]["gzip_size_bytes"]) < int(by_key[("weight", 0.0)]["gzip_size_bytes"])
    with open(os.path.join(out, "results.json")) as f:
        assert len(json.load(f)["points"]) == 6
    markdown = open(os.path.join(out, "results.md")).read()
    assert "| 90 |" in markdown and "python -m tfprune.sweep" in markdown
    for name in ("accuracy_vs_k.png", "loss_vs_k.png", "size_vs_k.png", "weight_histograms.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == PNG_MAGIC, name
        assert os.path.getsize(os.path.join(out, name)) > 5000


def test_resume_after_interruption(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    real = experiment.run_point
    calls = []

    def dies_on_third(*args, **kwargs):
        calls.append(args[2:4])
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)
    monkeypatch.setattr(experiment, "run_point", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        _run(out)
    assert _keys(out) == ["weight-k0", "weight-k50"]
    first = {k: os.path.getmtime(os.path.join(out, "points", k + ".json")) for k in _keys(out)}
    from absl import app
    with pytest.raises(app.UsageError, match="already holds 2 of these points.*pass --resume"):
        _run(out)
    monkeypatch.setattr(experiment, "run_point", real)
    _run(out, "--resume")
    assert _keys(out) == ["unit-k0", "unit-k50", "unit-k90", "weight-k0", "weight-k50", "weight-k90"]
    for key, mtime in first.items():  # finished points were not redone
        assert os.path.getmtime(os.path.join(out, "points", key + ".json")) == mtime
    with open(os.path.join(out, "results.csv")) as f:
        assert len(list(csv.DictReader(f))) == 6


def test_resume_refuses_other_flags(tmp_path):
    out = str(tmp_path / "out")
    _run(out, "--sparsities=0")
    from absl import app
    with pytest.raises(app.UsageError, match=r"--scope: 'layer' there, 'global' now"):
        _run(out, "--sparsities=0,50", "--scope=global", "--resume")


def test_shards_merge_to_the_unsharded_points(tmp_path, capsys):
    full, s0, s1, merged = (str(tmp_path / n) for n in ("full", "s0", "s1", "merged"))
    _run(full, "--sparsities=0,90")
    _run(s0, "--sparsities=0,90", "--num_shards=2", "--shard_index=0")
    _run(s1, "--sparsities=0,90", "--num_shards=2", "--shard_index=1")
    assert set(_keys(s0)).isdisjoint(_keys(s1))
    _run(merged, f"--merge={s0},{s1}")
    assert _keys(merged) == _keys(full) == ["unit-k0", "unit-k90", "weight-k0", "weight-k90"]
    for a, b in zip(store.load_points([merged]), store.load_points([full])):
        assert a.test_accuracy == pytest.approx(b.test_accuracy, abs=1e-6)
    assert os.path.isfile(os.path.join(merged, "accuracy_vs_k.png"))
    assert "merged 4 points from 2 dirs" in capsys.readouterr().out


@pytest.mark.parametrize("flag, message", [
    ("--sparsities=0,100", "100 is outside [0, 100)"),
    ("--sparsities=-5", "-5 is outside [0, 100)"),
    ("--sparsities=10,10", "10 appears twice"),
    ("--sparsities=", "--sparsities is empty"),
    ("--train_epochs=-1", "flag --train_epochs=-1"),
    ("--sparsities=ten", "'ten' is not a number"),
    ("--methods=weight,channel", "--methods: unknown method 'channel'; known: weight, unit"),
    ("--methods=weight,unit,weight", "--methods: method 'weight' appears twice"),
    ("--layers=fc1,fc2,fc1", "--layers: layer 'fc1' appears twice"),
    ("--export=float,int8,float", "--export: variant 'float' appears twice"),
    ("--merge=a,b,a", "--merge: folder 'a' appears twice"),
    ("--sparsities=50,50.0", "--sparsities: 50.0 appears twice (50, 50.0)"),
    ("--dataset=cifar11", "is not a known dataset (cifar10, cifar100, fashion_mnist, mnist)"),
    ("--model=resnet", "value should be one of"),
    ("--finetune_epochs=-1", "finetune_epochs"),
    ("--shard_index=3", "--shard_index must be < --num_shards"),
    ("--methods=tfmot", "--methods=tfmot needs --finetune_epochs >= 1"),
    ("--export=float,int4", "unknown variant(s) ['int4']"),
])
def test_flag_validation_fails_before_work(tmp_path, flag, message):
    with flagsaver.flagsaver():
        with pytest.raises(flags.Error) as e:
            FLAGS(["sweep", f"--flagfile={SMOKE}", f"--output_dir={tmp_path}", flag])
        assert message in str(e.value)


def test_cli_usage_error_is_one_line_exit_2(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out_file = tmp_path / "a_file"
    out_file.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "tfprune.sweep", f"--flagfile={SMOKE}",
                           f"--output_dir={out_file}"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert f"--output_dir {str(out_file)!r} exists and is not a folder" in proc.stderr
    assert not os.path.exists(tmp_path / "points")


# The README's "from Python" example: a sweep with no absl flag defined or parsed (the comparison's library entry,
# run_compare, is the same function in COMPARE mode; tests/test_keras3.py runs it through its main).
LIBRARY_RUN = """
from absl import flags
from tfprune.experiments import BaselineConfig, SweepConfig, run_sweep
base = BaselineConfig(dataset="fashion_mnist", data_dir={data_dir!r}, model="lenet_300_100", train_epochs=1,
                      train_size=5000, verbose=0)
sweep = run_sweep(SweepConfig({out!r}, base, sparsities=(0, 90)), report=print)
print("points", len(sweep.points))
print("flags", flags.FLAGS.is_parsed(), sorted(m for m in flags.FLAGS.flags_by_module_dict() if "tfprune" in m))
"""


def test_a_sweep_runs_from_python_without_flags_and_matches_the_command_line(tmp_path):
    require(FASHION_DIR)
    lib_out, cli_out = str(tmp_path / "lib"), str(tmp_path / "cli")
    child = LIBRARY_RUN.format(data_dir=FASHION_DIR, out=lib_out)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "points 4" in lines and "flags False []" in lines, lines[-5:]
    assert any(line.startswith("| 90 |") for line in lines)  # the tables were reported
    _run(cli_out, "--sparsities=0,90")  # flags/smoke.flags: the same settings from the command line (2 k's each)
    drop = ("point_seconds",)
    strip = lambda r: {k: v for k, v in r.to_json().items() if k not in drop}  # noqa: E731
    assert [strip(r) for r in store.load_points([lib_out])] == [strip(r) for r in store.load_points([cli_out])]
