"""tfprune.sensitivity: per-layer scan, suggested plan, and the plan applied by the sweep."""

import json
import os

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from conftest import REPO
from tfprune import pruning
from tfprune.cli import sensitivity as sensitivity_main
from tfprune.cli import sweep
from tfprune.experiments import baseline, models, sensitivity
from tfprune.experiments.results import store

FLAGS = flags.FLAGS


@pytest.fixture(scope="module")
def trained(small_fashion, tmp_path_factory):
    return baseline.train_baseline("lenet_300_100", "fashion_mnist", epochs=1, datasets=small_fashion,
                                   verbose=0, cache_dir=str(tmp_path_factory.mktemp("cache"))).model


def test_scan_prunes_one_layer_at_a_time(trained, small_fashion):
    x, y = small_fashion[1]
    curves = sensitivity.scan(trained, x, y, [0, 60, 99], "weight")
    assert list(curves) == ["fc1", "fc2", "logits"]
    dense_acc = models.compile_model(trained).evaluate(x, y, verbose=0)[1]
    for points in curves.values():
        assert [p[0] for p in points] == [0, 60, 99]
        assert points[0][1] == pytest.approx(dense_acc, abs=1e-6)  # k=0 is the dense model
        assert points[2][1] < points[0][1]
    # the model handed in is untouched
    assert pruning.overall_sparsity(pruning.sparsity_report(trained)) < 0.01


def test_suggest_plan_picks_largest_k_within_drop():
    curves = {"a": [(0, 0.90, 0), (50, 0.895, 0), (90, 0.80, 0)], "b": [(0, 0.90, 0), (50, 0.70, 0)]}
    assert sensitivity.suggest_plan(curves, 0.90, max_drop=1.0) == {"a": 0.5, "b": 0.0}
    assert sensitivity.suggest_plan(curves, 0.90, max_drop=25.0) == {"a": 0.9, "b": 0.5}


def test_bad_layer_name(trained, small_fashion):
    with pytest.raises(ValueError, match="layer 'fc9' does not exist"):
        sensitivity.scan(trained, *small_fashion[1], [0, 50], layers=["fc9"])


@pytest.mark.slow
def test_main_writes_plan_that_the_sweep_applies(tmp_path, capsys):
    out, sweep_out = str(tmp_path / "sens"), str(tmp_path / "sweep")
    common = ["--model=lenet_300_100", "--train_epochs=1", "--train_size=5000", "--dataset=fashion_mnist"]
    with flagsaver.flagsaver():
        FLAGS(["sensitivity", *common, "--sparsities=0,50,90", "--max_drop=2", f"--output_dir={out}"])
        sensitivity_main.main(["sensitivity"])
    assert "suggested plan" in capsys.readouterr().out
    with open(os.path.join(out, "plan.json")) as f:
        plan = json.load(f)["layer_sparsity"]
    assert set(plan) == {"fc1", "fc2", "logits"} and all(v in (0.0, 0.5, 0.9) for v in plan.values())
    with open(os.path.join(out, "sensitivity.png"), "rb") as f:
        assert f.read(4) == b"\x89PNG"
    with flagsaver.flagsaver():
        FLAGS(["sweep", *common, "--methods=weight", f"--layer_sparsity={out}/plan.json", "--verbose=0",
               f"--output_dir={sweep_out}"])
        sweep.main(["sweep"])
    (record,) = store.load_points([sweep_out])
    for name, fraction in plan.items():
        assert record.layer_sparsity[name] == pytest.approx(fraction, abs=1e-3)


def test_an_nm_scan_tries_each_layer_with_its_pattern_and_plans_which_take_it(trained, small_fashion):
    from tfprune.experiments import config as config_lib  # pylint: disable=g-import-not-at-top
    assert config_lib.SensitivityConfig("out", method="nm_2x4").sparsities == (0.0, 50.0)
    assert config_lib.SensitivityConfig("out", method="nm_1x4", sparsities=(75,)).sparsities == (75.0,)
    with pytest.raises(config_lib.ConfigError, match="--sparsities: k = 60 %: .*nm_2x4"):
        config_lib.SensitivityConfig("out", method="nm_2x4", sparsities=(0, 60))
    x, y = small_fashion[1]
    curves = sensitivity.scan(trained, x, y, [0, 50], "nm_2x4", layers=["fc1", "fc2"])
    assert [k for k, _, _ in curves["fc1"]] == [0, 50]
    plan = sensitivity.suggest_plan(curves, curves["fc1"][0][1], max_drop=100.0)
    assert plan == {"fc1": 0.5, "fc2": 0.5}
    model = pruning.make_prunable(trained)
    pruning.prune(model, None, "nm_2x4", layers=plan)
    assert all(r.ok for name, r in pruning.check_nm(model).items() if name in plan)
