"""Round three's usage errors: a repeated list entry, a circular flagfile, each one line with exit 2 before any work
(TF_CONFIG's checks are in test_distribute.py; the sweep's list flags in test_sweep.py and
test_reliability_mixing.py)."""

import subprocess
import sys

import pytest

from conftest import error_lines, worker_env
from tfprune.cli import app as cli_app
from tfprune.experiments.budget import search as budget_lib
from tfprune.experiments import config as config_lib
from tfprune.experiments import sensitivity
from tfprune.experiments.config import ConfigError


@pytest.mark.parametrize("values, kwargs, message", [
    (["fc1", "fc2", "fc1"], {"noun": "layer"}, "--layers: layer 'fc1' appears twice"),
    (["50", "90", "50.0"], {"key": float}, "--layers: 50.0 appears twice (50, 50.0)"),
    (["a=1", "b=2", "a=3"], {"key": lambda v: v.split("=")[0], "noun": "layer"},
     "--layers: layer 'a' appears twice (a=1, a=3)"),
])
def test_check_unique_names_the_first_repeated_entry(values, kwargs, message):
    with pytest.raises(ConfigError) as e:
        config_lib.check_unique(values, "--layers", **kwargs)
    assert str(e.value) == message
    assert config_lib.check_unique(["fc1", "fc2"], "--layers") == ["fc1", "fc2"]


def test_every_list_check_refuses_a_repeat_by_name():
    cases = [
        (lambda: sensitivity.load_plan("fc1=90,fc1=10"), "--layer_sparsity: layer 'fc1' appears twice (fc1=90, fc1=10)"),
        (lambda: config_lib.check_methods(["unit", "weight", "unit"]), "--methods: method 'unit' appears twice"),
        (lambda: config_lib.check_variants(["int8", "int8"]), "--export: variant 'int8' appears twice"),
        (lambda: config_lib.check_percents(["0", "90", "90"], "--sparsities"), "--sparsities: 90 appears twice"),
        (lambda: budget_lib.check_families(["unit", "unit"]), "--families: family 'unit' appears twice"),
        (lambda: budget_lib.check_families(["unit", "blocks"]), "--families: unknown 'blocks'; give one or more of"),
        (lambda: config_lib.SweepConfig("out", methods=("weight",), layers=("fc1", "fc1")),
         "layers: layer 'fc1' appears twice"),
    ]
    for call, message in cases:
        with pytest.raises(ConfigError) as e:
            call()
        assert str(e.value).startswith(message), str(e.value)


def test_a_json_plan_with_a_repeated_layer_is_refused(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text('{"fc1": 0.5, "fc2": 0.9, "fc1": 0.1}')
    with pytest.raises(ConfigError, match=r"plan\.json'?: layer 'fc1' appears twice \(fc1=0\.5, fc1=0\.1\)"):
        sensitivity.load_plan(str(plan))


def test_circular_flagfiles_are_found_through_any_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "self.flags").write_text("# includes itself\n--methods=weight\n--flagfile=self.flags\n")
    (tmp_path / "a.flags").write_text("--flagfile=./sub/../b.flags\n")
    (tmp_path / "b.flags").write_text("--sparsities=0,50\n--flagfile=a.flags\n")
    (tmp_path / "ok.flags").write_text("--flagfile=b2.flags\n")
    (tmp_path / "b2.flags").write_text("--sparsities=0\n")
    (tmp_path / "sub").mkdir()
    assert cli_app.flagfile_cycle(["--flagfile=self.flags"]) == ["self.flags", "self.flags"]
    assert cli_app.flagfile_cycle(["--flagfile", "a.flags"]) == ["a.flags", "./sub/../b.flags", "a.flags"]
    assert cli_app.flagfile_cycle(["--flagfile=ok.flags", "--flagfile=ok.flags"]) is None  # twice, not nested
    assert cli_app.flagfile_cycle(["--flagfile=missing.flags"]) is None  # absl's own error names it


@pytest.mark.slow
def test_a_circular_flagfile_is_one_line_exit_2_before_work(tmp_path):
    flagfile = tmp_path / "self.flags"
    flagfile.write_text(f"--output_dir={tmp_path / 'out'}\n--flagfile={flagfile}\n")
    proc = subprocess.run([sys.executable, "-m", "tfprune.sweep", f"--flagfile={flagfile}"], capture_output=True,
                          text=True, env=worker_env(), timeout=120)
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert lines[0].endswith(f"error: --flagfile: {flagfile} -> {flagfile}: a flagfile includes itself"), lines
    assert len(lines) == 2 and not (tmp_path / "out").exists()
    assert "Hit circular flagfile" not in proc.stderr
