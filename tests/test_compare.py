"""tfprune.compare: a tiny end-to-end comparison with TF-MOT on real Fashion-MNIST images."""

import csv
import os

import pytest
from absl import flags
from absl.testing import flagsaver

from conftest import FASHION_DIR, require
from tfprune.cli import compare
from tfprune.experiments.results import store

FLAGS = flags.FLAGS
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    require(FASHION_DIR)
    out = str(tmp_path_factory.mktemp("compare"))
    with flagsaver.flagsaver():
        FLAGS(compare.with_defaults([
            "compare", "--model=lenet_300_100", "--train_epochs=1", "--train_size=600", "--sparsities=0,50,90",
            "--finetune_epochs=1", "--batch_size=64", "--verbose=0", f"--output_dir={out}",
            f"--cache_dir={tmp_path_factory.mktemp('cache')}"]))
        compare.main(["compare"])
    return out


def test_files_and_structure(comparison):
    for name in ("compare.csv", "compare.json", "compare.md", "compare_accuracy_vs_k.png", "baseline.json"):
        assert os.path.isfile(os.path.join(comparison, name)), name
    with open(os.path.join(comparison, "compare.csv")) as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["method"], float(r["k"])) for r in rows) == sorted(
        (m, k) for m in ("weight", "unit", "tfmot") for k in (0.0, 50.0, 90.0))
    for column in ("test_accuracy", "test_loss", "achieved_sparsity", "finetune_seconds_per_epoch",
                   "time_ratio_to_dense", "layer_sparsity.fc1"):
        assert all(r[column] != "" for r in rows), column
    assert "gzip_size_bytes" not in rows[0]  # measured only with --gzip_size
    markdown = open(os.path.join(comparison, "compare.md")).read()
    assert "| k % | Weight pruning accuracy % | Unit pruning accuracy % | TF-MOT magnitude accuracy % |" in markdown
    assert "## tfprune weight pruning vs TF-MOT" in markdown and "TF-MOT time / tfprune time" in markdown


def test_every_method_reached_its_target(comparison):
    for record in store.load_points([comparison]):
        target = record.target_sparsity
        if record.method == "unit":
            for name in ("fc1", "fc2"):
                units = {"fc1": 300, "fc2": 100}[name]
                assert units - record.units_kept[name] == int(target * units + 0.5)
            assert record.units_kept["logits"] == 10
        else:
            for name, sparsity in record.layer_sparsity.items():
                assert sparsity == pytest.approx(target, abs=1.5e-3), (record.method, name)


def test_tfmot_agrees_with_ours_at_the_same_step(comparison):
    by_key = {(r.method, r.k): r for r in store.load_points([comparison])}
    sizes = {"fc1": 784 * 300, "fc2": 300 * 100, "logits": 100 * 10}
    for k in (50.0, 90.0):
        ours, theirs = by_key[("weight", k)], by_key[("tfmot", k)]
        for name, n in sizes.items():
            assert abs(ours.layer_sparsity[name] - theirs.layer_sparsity[name]) * n <= 1.0 + 1e-6


def test_block_pruning_against_tfmot_block_size(tmp_path):
    require(FASHION_DIR)
    out = str(tmp_path / "blocks")
    with flagsaver.flagsaver():
        FLAGS(compare.with_defaults([
            "compare", "--model=lenet_300_100", "--train_epochs=1", "--train_size=600", "--sparsities=90",
            "--methods=block_1x4,tfmot_block_1x4", "--finetune_epochs=1", "--batch_size=64", "--verbose=0",
            f"--output_dir={out}", f"--cache_dir={tmp_path / 'cache'}"]))
        compare.main(["compare"])
    markdown = open(os.path.join(out, "compare.md")).read()
    assert "## tfprune 1x4 block pruning vs TF-MOT block_size (4, 1)" in markdown
    assert "## tfprune weight pruning vs TF-MOT" not in markdown
    by_key = {(r.method, r.k): r for r in store.load_points([out])}
    ours, theirs = by_key[("block_1x4", 90.0)], by_key[("tfmot_block_1x4", 90.0)]
    for name, blocks in {"fc1": 196 * 300, "fc2": 75 * 100, "logits": 25 * 10}.items():
        # Both prune 90 % of the 4-input blocks of each kernel (TF-MOT rounds its own way: within one block).
        assert ours.layer_sparsity[name] == pytest.approx(0.9, abs=0.5 / blocks)
        assert abs(ours.layer_sparsity[name] - theirs.layer_sparsity[name]) * blocks <= 1.0 + 1e-6, name
