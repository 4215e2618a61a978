"""TF-MOT's sparsity_m_by_n beside tfprune's nm_<n>x<m> (tfmot_nm_2x4 in sweeps and compare), and the N:M pattern
checked in exported .tflite files (check_nm_tflite, the model card, the check_nm command line), on a LeNet-300-100
trained one epoch on 2,000 real Fashion-MNIST images."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import app
from absl import flags
from absl.testing import flagsaver

from conftest import REPO, run_smoke_sweep
from tfprune import pruning
from tfprune import tflite
from tfprune.cli import check_nm as check_nm_cli
from tfprune.experiments import compare
from tfprune.experiments import config as config_lib
from tfprune.experiments import models
from tfprune.experiments import preflight
from tfprune.experiments import tfmot_method
from tfprune.experiments.config import ConfigError
from tfprune.tflite import nm_check


def test_tfmot_nm_methods_are_tfmot_methods_with_the_zeros_counted():
    assert config_lib.is_tfmot("tfmot_nm_2x4") and config_lib.is_sweep_method("tfmot_nm_1x8")
    assert config_lib.tfmot_m_by_n("tfmot_nm_2x4") == (2, 4)
    assert config_lib.tfmot_m_by_n("tfmot_nm_1x4") == (3, 4)  # TF-MOT counts zeros: keep 1 of 4 = 3 zeros of 4
    assert config_lib.tfmot_nm_method("tfmot_nm_1x8") == "nm_1x8"
    assert not config_lib.is_tfmot("tfmot_nm_4x4") and config_lib.tfmot_m_by_n("tfmot") is None
    assert config_lib.tfmot_block_size("tfmot_nm_2x4") == (1, 1)
    with pytest.raises(ConfigError, match="tfmot_nm_4x4"):
        config_lib.check_methods(["tfmot_nm_4x4"])
    assert ("nm_2x4", "tfmot_nm_2x4") in [pair[:2] for pair in compare.PAIRS]
    assert [p[:2] for p in compare._nm_pairs({"tfmot_nm_1x4", "tfmot", "tfmot_nm_2x4"})] == [("nm_1x4", "tfmot_nm_1x4")]


def test_preflight_takes_k_0_and_50_only():
    model = models.build("lenet_300_100")
    ok = config_lib.SweepConfig("out", methods=("nm_2x4", "tfmot_nm_2x4"), sparsities=(0, 50),
                                finetune=config_lib.FineTune(epochs=1), layers=("fc1", "fc2"))
    preflight.check_sweep(ok, model)
    bad_k = config_lib.SweepConfig("out", methods=("tfmot_nm_2x4",), sparsities=(0, 60),
                                   finetune=config_lib.FineTune(epochs=1))
    with pytest.raises(ConfigError, match=r"--methods=tfmot_nm_2x4 .*not k = 60 %"):
        preflight.check_sweep(bad_k, model)
    with pytest.raises(ConfigError, match="tfmot_nm_2x4 needs --finetune_epochs >= 1"):
        config_lib.SweepConfig("out", methods=("tfmot_nm_2x4",), sparsities=(50,))
    cnn = models.build("small_cnn")
    assert {type(l).__name__ for l in tfmot_method.m_by_n_layers(cnn)} == {"Dense", "Conv2D"}


def test_tfmot_m_by_n_finetune_gives_exact_2_of_4_after_strip(trained_lenet, small_fashion):
    model = trained_lenet[0]
    (x_train, y_train), _ = small_fashion
    finetune = config_lib.FineTune(epochs=1, schedule="polynomial")
    schedule = finetune.tfmot_schedule(0.5, len(x_train))  # the object the tfmot method uses
    result = tfmot_method.prune_and_finetune(model, x_train, y_train, schedule, epochs=1, batch_size=128,
                                             sparsity_m_by_n=(2, 4), layers=["fc1", "fc2"])
    checks = pruning.check_nm(result.model, 2, 4)
    assert checks["fc1"].ok and checks["fc2"].ok and not checks["logits"].ok
    assert checks["fc1"].groups == 784 // 4 * 300
    sparsity = tfmot_method.achieved_sparsity(result.model)
    assert sparsity["fc1"] == pytest.approx(0.5) and sparsity["fc2"] == pytest.approx(0.5)
    assert sparsity["logits"] == 0.0
    whole = tfmot_method._layer_schedules(model, schedule, None, m_by_n=(2, 4))
    assert sorted(whole) == ["fc1", "fc2", "logits"]


@pytest.fixture(scope="module")
def nm_files(trained_lenet, tmp_path_factory):
    """A 2:4-pruned LeNet (nm_2x4, every Dense) as float, int8 and float+sparse .tflite bytes; the same model with
    one pruned weight of fc2 set to 1.0, as float and int8."""
    model, _, _, representative = trained_lenet
    prunable = pruning.make_prunable(model)
    pruning.prune(prunable, 0.5, "nm_2x4")
    good = pruning.strip(prunable)
    broken = pruning.strip(prunable)
    kernel, bias = broken.get_layer("fc2").get_weights()
    row, column = np.argwhere(kernel == 0)[0]
    kernel[row, column] = 1.0
    broken.get_layer("fc2").set_weights([kernel, bias])
    out = {"good": good,
           "float": tflite.to_tflite(good), "int8": tflite.to_tflite(good, "int8", False, representative),
           "float+sparse": tflite.to_tflite(good, "none", True),
           "broken_float": tflite.to_tflite(broken), "broken_int8": tflite.to_tflite(broken, "int8", False,
                                                                                     representative)}
    folder = tmp_path_factory.mktemp("nm_files")
    for name in ("float", "broken_float"):
        with open(folder / f"{name}.tflite", "wb") as f:
            f.write(out[name])
    out["folder"] = folder
    return out


@pytest.mark.parametrize("variant", ["float", "int8", "float+sparse"])
def test_a_2_of_4_model_keeps_its_pattern_in_the_tflite_file(nm_files, variant):
    checks = tflite.check_nm_tflite(nm_files[variant], 2, 4)
    assert [c.op for c in checks] == ["FULLY_CONNECTED"] * 3
    assert all(c.ok for c in checks), [(c.name, c.check) for c in checks]
    assert [nm_check.layer_of(c, ["fc1", "fc2", "logits"]) for c in checks] == ["fc1", "fc2", "logits"]
    assert checks[0].check.groups == 300 * 784 // 4
    assert checks[0].dtype == ("INT8" if variant == "int8" else "FLOAT32")
    assert not tflite.check_nm_tflite(nm_files[variant], 1, 4)[0].ok  # 2 of 4 is not 1 of 4


@pytest.mark.parametrize("variant", ["broken_float", "broken_int8"])
def test_one_weight_off_the_pattern_fails_and_names_its_tensor(nm_files, variant):
    checks = tflite.check_nm_tflite(nm_files[variant], 2, 4)
    bad = [c for c in checks if not c.ok]
    assert len(bad) == 1 and bad[0].check.violations == 1 and bad[0].check.max_nonzeros == 3
    assert nm_check.layer_of(bad[0], ["fc1", "fc2", "logits"]) == "fc2"
    card = nm_check.card_entry(checks, 2, 4, ["fc1", "fc2", "logits"])
    assert card["pattern"].startswith("2:4 kept") and not card["check_passed"]
    assert nm_check.card_entry(checks, 2, 4, ["fc1"])["check_passed"]


def _cli(**values):
    """The check's exit status in-process (as the main's tests do: flags set, main called); 2 for a usage error."""
    try:
        with flagsaver.flagsaver(**values):
            return check_nm_cli.main(["check_nm"])
    except (app.UsageError, flags.IllegalFlagValueError) as e:
        print(e, file=sys.stderr)
        return 2


def test_the_command_line_exits_0_1_and_2(nm_files, tmp_path, capsys):
    folder = nm_files["folder"]
    assert _cli(model_path=str(folder / "float.tflite"), n=2, m=4) == 0
    assert "all 3 tensors hold 2:4" in capsys.readouterr().out
    assert _cli(model_path=str(folder / "broken_float.tflite")) == 1
    lines = capsys.readouterr().out.splitlines()
    violating = [l for l in lines if l.startswith("VIOLATES")]
    assert len(violating) == 1 and "fc2" in violating[0] and ": 1 of 7500 groups" in violating[0]
    assert "1 of 3 tensors violate 2:4" in lines[-1]
    assert _cli(model_path=str(tmp_path / "missing.tflite")) == 2
    assert "missing.tflite" in capsys.readouterr().err
    assert _cli(model_path=str(folder / "float.tflite"), n=4, m=4) == 2
    keras_path = str(tmp_path / "good.keras")
    nm_files["good"].save(keras_path)
    assert _cli(model_path=keras_path) == 0


@pytest.mark.slow
def test_the_command_line_exit_status_from_a_shell(nm_files, tmp_path):
    def status(path):
        return subprocess.run([sys.executable, "-m", "tfprune.check_nm_main", f"--model_path={path}"], cwd=REPO,
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")).returncode

    assert status(nm_files["folder"] / "broken_float.tflite") == 1  # 0 and 2: in process, above


def test_an_exported_nm_variant_says_so_in_its_card(trained_lenet, nm_files, tmp_path):
    _, x_test, y_test, representative = trained_lenet
    tflite.export_variant(nm_files["good"], "int8", x_test[:200], y_test[:200], representative, bench_runs=3,
                          bench_warmup=1, out_dir=str(tmp_path / "int8"), nm=(2, 4))
    card = json.load(open(tmp_path / "int8" / "model_card.json"))
    assert card["nm"]["pattern"] == "2:4 kept (2 of every 4 consecutive inputs of each unit)"
    assert card["nm"]["check_passed"] and card["nm"]["layers"] == ["fc1", "fc2", "logits"]
    assert [t["ok"] for t in card["nm"]["tensors"]] == [True] * 3


@pytest.mark.slow
def test_tiny_sweep_runs_tfmot_nm_beside_nm(tmp_path):
    out = str(tmp_path / "out")
    run_smoke_sweep(out, "--methods=nm_2x4,tfmot_nm_2x4", "--sparsities=0,50", "--finetune_epochs=1",
                    "--layers=fc1,fc2")
    folder = os.path.join(out, "points")
    points = {name: json.load(open(os.path.join(folder, name))) for name in os.listdir(folder)}
    assert sorted(points) == ["nm_2x4-k0.json", "nm_2x4-k50.json", "tfmot_nm_2x4-k0.json", "tfmot_nm_2x4-k50.json"]
    for method in ("nm_2x4", "tfmot_nm_2x4"):
        record = points[f"{method}-k50.json"]
        assert record["layer_sparsity"]["fc1"] == pytest.approx(0.5)
        assert record["layer_sparsity"]["fc2"] == pytest.approx(0.5)
        assert record["layer_sparsity"]["logits"] == 0.0
        assert points[f"{method}-k0.json"]["achieved_sparsity"] == 0.0
    assert points["nm_2x4-k50.json"]["achieved_sparsity"] == pytest.approx(
        points["tfmot_nm_2x4-k50.json"]["achieved_sparsity"])
    results = open(os.path.join(out, "results.md")).read()
    assert "N:M 2:4" in results and "TF-MOT m_by_n 2:4" in results
