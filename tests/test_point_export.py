"""tfprune.point_export on a LeNet-300-100 trained one epoch on 2,000 real Fashion-MNIST images, and the sweep's
--export end to end on flags/smoke.flags."""

import csv
import json
import os

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from conftest import FASHION_DIR, REPO, require
from tfprune import pruning
from tfprune.shrinking import surgery
from tfprune.cli import sweep
from tfprune.experiments import point_export
from tfprune.experiments.data import builtin as data
from tfprune.experiments.results import records
from tfprune.experiments.results import store

FLAGS = flags.FLAGS
SMOKE = os.path.join(REPO, "flags", "smoke.flags")
LABELS = data.CLASS_NAMES["fashion_mnist"]
# LeNet-300-100 with fc1 and fc2 unit-pruned 50 % (the classifier keeps its 10): 784-150-50-10 with biases.
SHRUNK_PARAMS = 784 * 150 + 150 + 150 * 50 + 50 + 50 * 10 + 10
DENSE_PARAMS = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
SHRUNK_MACS, DENSE_MACS = 784 * 150 + 150 * 50 + 50 * 10, 784 * 300 + 300 * 100 + 100 * 10
FIGURES = ("size_bytes", "gzip_size_bytes", "accuracy", "loss", "latency_ms", "path")


def _pruned(model, method, fraction):
    return pruning.strip(pruning.prune(pruning.make_prunable(model), fraction, method))


def _exporter(lenet, out_dir, variants):
    _, x, y, representative = lenet
    return point_export.PointExporter(variants, x, y, representative, str(out_dir), labels=LABELS, bench_runs=20,
                                      bench_warmup=2)


def _columns(exported):
    """The exporter's ``(ShrinkFigures, [VariantFigures])`` as the flat columns of a results table."""
    shrink, exports = exported
    return records.flat_columns(shrink, exports)


@pytest.mark.slow
def test_unit_point_exports_unshrunk_and_shrunk_models(trained_lenet, tmp_path):
    model, x, y, _ = trained_lenet
    stripped = _pruned(model, "unit", 0.5)
    shrink, exports = _exporter(trained_lenet, tmp_path, ["float", "int8+sparse"])(stripped, "unit", 50.0)
    assert [(e.model, e.variant) for e in exports] == [("pruned", "float"), ("pruned", "int8+sparse"),
                                                        ("shrunk", "float"), ("shrunk", "int8+sparse")]
    columns = _columns((shrink, exports))
    assert (columns["dense_params"], columns["shrunk_params"]) == (DENSE_PARAMS, SHRUNK_PARAMS)
    assert (columns["dense_macs"], columns["shrunk_macs"]) == (DENSE_MACS, SHRUNK_MACS)
    assert columns["shrunk_kept_notes"] == 0
    assert 0 <= columns["shrunk_max_abs_diff"] <= point_export.SHRINK_TOLERANCE
    for prefix in ("tflite_float_", "tflite_int8_sparse_", "tflite_shrunk_float_", "tflite_shrunk_int8_sparse_"):
        for name in FIGURES:
            assert prefix + name in columns, prefix + name
    keras_accuracy = float(np.mean(stripped.predict(x, verbose=0).argmax(axis=1) == y))
    assert abs(columns["tflite_float_accuracy"] - keras_accuracy) <= 0.001 + 1e-9
    assert abs(columns["tflite_shrunk_float_accuracy"] - columns["tflite_float_accuracy"]) <= 0.001 + 1e-9
    assert abs(columns["tflite_shrunk_int8_sparse_accuracy"] - columns["tflite_int8_sparse_accuracy"]) <= 0.01
    # float32 weights: the shrunk file holds 125,810 of 266,610 parameters
    assert columns["tflite_shrunk_float_size_bytes"] < 0.5 * columns["tflite_float_size_bytes"]
    for folder, prefix in (("float", "tflite_float_"), ("int8+sparse", "tflite_int8_sparse_"),
                           ("float-shrunk", "tflite_shrunk_float_"),
                           ("int8+sparse-shrunk", "tflite_shrunk_int8_sparse_")):
        path = tmp_path / "unit-k50" / folder
        assert os.path.getsize(path / "model.tflite") == columns[prefix + "size_bytes"], folder
        assert (path / "labels.txt").read_text().splitlines() == LABELS
        card = json.loads((path / "model_card.json").read_text())
        assert card["accuracy"] == columns[prefix + "accuracy"] and card["variant"] == folder.split("-")[0]


def test_weight_point_is_not_shrunk(trained_lenet, tmp_path):
    columns = _columns(_exporter(trained_lenet, tmp_path, ["float"])(_pruned(trained_lenet[0], "weight", 0.5),
                                                                    "weight", 50.0))
    assert not [c for c in columns if "shrunk" in c or c.startswith("dense_")]
    assert columns["tflite_float_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert sorted(os.listdir(tmp_path / "weight-k50")) == ["float"]


def test_shrunk_model_that_computes_something_else_is_not_exported(trained_lenet, tmp_path, monkeypatch):
    real = surgery.shrink

    def broken(model):
        result = real(model)
        layer = result.model.get_layer("fc2")
        layer.kernel.assign(layer.kernel * 1.5)
        return result
    monkeypatch.setattr(surgery, "shrink", broken)
    with pytest.raises(RuntimeError, match=r"shrunk model's outputs differ .* not exporting"):
        _exporter(trained_lenet, tmp_path, ["float"])(_pruned(trained_lenet[0], "unit", 0.5), "unit", 50.0)
    assert not os.listdir(tmp_path)


def test_unknown_variant_is_refused_before_any_point(trained_lenet, tmp_path):
    with pytest.raises(ValueError, match="unknown TFLite variant 'int4'"):
        _exporter(trained_lenet, tmp_path, ["float", "int4"])
    with pytest.raises(ValueError, match="no TFLite variant"):
        _exporter(trained_lenet, tmp_path, [])


@pytest.mark.slow
def test_sweep_export_writes_columns_and_folders(tmp_path, capsys):
    require(FASHION_DIR)
    out = tmp_path / "out"
    with flagsaver.flagsaver():
        FLAGS(["sweep", f"--flagfile={SMOKE}", f"--output_dir={out}", "--sparsities=90",
               "--export=float,int8+sparse", "--export_eval_size=300"])
        sweep.main(["sweep"])
    printed = capsys.readouterr().out
    with open(out / "results.csv") as f:
        rows = {(r["method"], float(r["k"])): r for r in csv.DictReader(f)}
    assert sorted(rows) == [("unit", 90.0), ("weight", 90.0)]
    for row in rows.values():
        assert 0.0 < float(row["tflite_float_accuracy"]) <= 1.0
        # the same 300 images: int8 quantization costs at most ~1 point
        assert abs(float(row["tflite_int8_sparse_accuracy"]) - float(row["tflite_float_accuracy"])) <= 0.02
        assert int(row["tflite_int8_sparse_size_bytes"]) < int(row["tflite_float_size_bytes"])
    assert rows[("weight", 90.0)]["shrunk_params"] == ""
    unit90 = 784 * 30 + 30 + 30 * 10 + 10 + 10 * 10 + 10  # fc1 300 -> 30 units, fc2 100 -> 10
    assert int(rows[("unit", 90.0)]["shrunk_params"]) == unit90
    unit = rows[("unit", 90.0)]
    assert int(unit["tflite_shrunk_float_size_bytes"]) < 0.2 * int(unit["tflite_float_size_bytes"])
    assert abs(float(unit["tflite_shrunk_float_accuracy"]) - float(unit["tflite_float_accuracy"])) <= 0.001 + 1e-9
    for key, folders in (("weight-k90", ["float", "int8+sparse"]),
                         ("unit-k90", ["float", "float-shrunk", "int8+sparse", "int8+sparse-shrunk"])):
        assert sorted(os.listdir(out / "tflite" / key)) == folders
        for folder in folders:
            assert (out / "tflite" / key / folder / "labels.txt").read_text().splitlines() == LABELS
    markdown = (out / "results.md").read_text()
    assert "| TFLite shrunk float ms |" in markdown and "| shrunk params |" in markdown
    assert f"shrunk {DENSE_PARAMS:,} -> {unit90:,} params" in printed
    assert os.path.isfile(out / "tflite_size_vs_k.png")
