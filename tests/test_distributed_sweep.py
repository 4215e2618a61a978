"""The sweep main under tf.distribute (issue 8), run as a user runs it: in child processes, on CPU only.

Splitting the CPU into logical devices and joining a cluster must happen before TensorFlow initializes, which this
process did, so every run is a fresh ``python -m tfprune.sweep``. Fine-tuning covers all 60,000 training images:
``--batch_size=1000`` keeps an epoch at 60 steps, and ``--schedule=constant`` makes every mask update hit the target
exactly (a polynomial ramp whose length is not a multiple of the update frequency stops just short of it).
"""

import json
import os
import re
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver

from conftest import FASHION_DIR, REPO, cluster_envs, error_lines, log_tails, require, run_processes, worker_env
from tfprune.select import masks
from tfprune.cli import sweep  # noqa: F401  (defines the flags parsed below)
from tfprune.experiments.results import store

FLAGS = flags.FLAGS
SMOKE = os.path.join(REPO, "flags", "smoke.flags")
COMMON = ["--methods=weight,unit", "--finetune_epochs=1", "--schedule=constant", "--train_size=2000",
          "--batch_size=1000", f"--data_dir={FASHION_DIR}"]
KERNELS = {"fc1": 784 * 300, "fc2": 300 * 100, "logits": 100 * 10}  # LeNet-300-100
UNITS = {"fc1": 300, "fc2": 100}  # unit pruning leaves the classifier whole
TIMEOUT = 240  # seconds per run; about 70 s (mirrored) and 60 s (two workers) on 2 busy cores

pytestmark = pytest.mark.slow


def _sweep(output_dir, cache_dir, *extra):
    return [sys.executable, "-m", "tfprune.sweep", f"--flagfile={SMOKE}", *COMMON, f"--cache_dir={cache_dir}",
            f"--output_dir={output_dir}", *extra]


def _run(commands, logs, envs, what):
    codes = run_processes(commands, logs, envs, TIMEOUT, what)
    assert codes == [0] * len(commands), f"{what} exited {codes}:\n" + log_tails(logs)
    return [open(log, encoding="utf-8").read() for log in logs]


def _check_points(output_dir, ks, strategy, replicas):
    """Every (method, k) point is there, ran on ``replicas`` replicas, hit its target exactly, and learned."""
    records = store.load_points([str(output_dir)])
    assert sorted((r.method, r.k) for r in records) == sorted((m, k) for m in ("weight", "unit") for k in ks)
    for r in records:
        assert (r.distribution_strategy, r.replicas) == (strategy, replicas)
        if r.method == "weight":  # round(k·n) weights of every kernel
            assert {name: round(r.layer_sparsity[name] * n) for name, n in KERNELS.items()} == {
                name: masks.prune_count(r.target_sparsity, n) for name, n in KERNELS.items()}
        else:  # round(k·units) units of every hidden layer
            assert r.units_kept == {**{name: n - masks.prune_count(r.target_sparsity, n)
                                          for name, n in UNITS.items()}, "logits": 10}
        if r.k == 0:
            assert r.test_accuracy > 0.5, r.test_accuracy
    with open(os.path.join(output_dir, "baseline.json"), encoding="utf-8") as f:
        info = json.load(f)
    assert (info["distribution_strategy"], info["replicas"]) == (strategy, replicas)
    return records


def _accuracies(log):
    return re.findall(r"^\[\d+/\d+\] +(\w+) k= *([\d.]+)%: accuracy +([\d.]+) %", log, re.M)


def test_sweep_under_mirrored_strategy_on_two_cpu_devices(tmp_path):
    require(FASHION_DIR)
    out = tmp_path / "out"
    command = _sweep(out, tmp_path / "cache", "--distribution_strategy=mirrored", "--cpu_devices=2",
                     "--sparsities=0,90")
    (log,) = _run([command], [tmp_path / "sweep.log"], [worker_env()], "mirrored sweep")
    assert "distribution: mirrored, 2 replicas in sync" in log
    assert len(_accuracies(log)) == 4
    _check_points(out, [0.0, 90.0], "mirrored", 2)


def test_sweep_on_two_workers_only_the_chief_writes(tmp_path):
    require(FASHION_DIR)
    outs = [tmp_path / f"out{i}" for i in range(2)]
    commands = [_sweep(out, tmp_path / f"cache{i}", "--distribution_strategy=multi_worker_mirrored",
                       "--sparsities=90") for i, out in enumerate(outs)]
    logs = _run(commands, [tmp_path / f"worker{i}.log" for i in range(2)], cluster_envs(2), "2-worker sweep")
    _check_points(outs[0], [90.0], "multi_worker_mirrored", 2)
    # Worker 1 ran every point in lockstep (same figures) but wrote only into a temp dir, removed at its exit.
    assert not outs[1].exists()
    throwaway = re.search(r"not the chief: results go to the throwaway (\S+)", logs[1]).group(1)
    assert not os.path.exists(throwaway)
    assert _accuracies(logs[1]) == _accuracies(logs[0]) and len(_accuracies(logs[0])) == 2


@pytest.mark.parametrize("extra, message", [
    (["--cpu_devices=2"], "--cpu_devices > 1 needs --distribution_strategy=mirrored and --num_gpus=0"),
    (["--distribution_strategy=multi_worker_mirrored", "--cpu_devices=2"], "--cpu_devices > 1 needs"),
    (["--distribution_strategy=mirrored", "--num_gpus=1", "--cpu_devices=2"], "--cpu_devices > 1 needs"),
    (["--distribution_strategy=one_device", "--num_gpus=2"], "--num_gpus > 1 needs --distribution_strategy=mirrored"),
    (["--distribution_strategy=multi_worker_mirrored", "--num_gpus=2"], "--num_gpus > 1 needs"),
    (["--cpu_devices=0"], "--cpu_devices=0"),
    (["--distribution_strategy=tpu"], "value should be one of"),
])
def test_bad_distribution_flags_fail_at_parsing(tmp_path, extra, message):
    with flagsaver.flagsaver():
        with pytest.raises(flags.Error) as e:
            FLAGS(["sweep", f"--flagfile={SMOKE}", f"--output_dir={tmp_path / 'out'}", *extra])
        assert message in str(e.value)


def test_bad_distribution_flags_are_one_line_exit_2_before_work(tmp_path):
    """sweep, compare and train_main reject a bad combination (or a GPU that is not there) before any work."""
    require(FASHION_DIR)
    runs = {
        "sweep_cpu_devices_off": (["tfprune.sweep", f"--flagfile={SMOKE}", "--cpu_devices=2"],
                                  "--cpu_devices > 1 needs --distribution_strategy=mirrored"),
        "compare_num_gpus": (["tfprune.compare", "--distribution_strategy=one_device", "--num_gpus=2"],
                             "--num_gpus > 1 needs --distribution_strategy=mirrored"),
        "sweep_missing_gpu": (["tfprune.sweep", f"--flagfile={SMOKE}", "--distribution_strategy=mirrored",
                               "--num_gpus=1"], "num_gpus 1 asks for more GPUs than the 0 visible here"),
        "train_cpu_devices_off": (["tfprune.train_main", "--model=lenet_300_100", "--cpu_devices=3"],
                                  "--cpu_devices > 1 needs"),
    }
    commands, logs = [], []
    for name, (args, _) in runs.items():
        out = tmp_path / name
        commands.append([sys.executable, "-m", *args, f"--data_dir={FASHION_DIR}", f"--cache_dir={out / 'cache'}"]
                        + ([f"--output_dir={out / 'out'}"] if args[0] != "tfprune.train_main" else []))
        logs.append(tmp_path / f"{name}.log")
    codes = run_processes(commands, logs, [worker_env()] * len(commands), 120, "flag checks")
    for (name, (_, message)), code, log in zip(runs.items(), codes, logs):
        lines = error_lines(open(log, encoding="utf-8").read())
        assert code == 2, (name, lines)
        assert ": error: " in lines[0] and message in lines[0], (name, lines)
        assert lines[1:] in ([], ["Try --helpfull for the list of flags."]), (name, lines)
        assert not (tmp_path / name).exists(), name  # nothing written, nothing trained
