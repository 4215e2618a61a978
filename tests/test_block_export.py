"""Block-pruned models in TFLite: the sparse block kernels run them in both LiteRT APIs, ragged tails, wrong files
refused, and a block sweep from the command line."""

import json
import os

import numpy as np
import pytest
from absl import app

from conftest import run_smoke_sweep
from tfprune import pruning
from tfprune import tflite as export
from tfprune.experiments import models
from tfprune.tflite import artifacts, compiled, convert, kernels


@pytest.fixture(scope="module")
def lenet(trained_lenet):
    """LeNet-300-100 trained on real Fashion-MNIST (conftest), 300 test images, labels and calibration images."""
    model, x_test, y_test, representative = trained_lenet
    return model, x_test[:300], y_test[:300], representative[:200]


def block_pruned(model, method, sparsity):
    prunable = pruning.make_prunable(model)
    pruning.prune(prunable, sparsity, method=method)
    return pruning.strip(prunable)


@pytest.mark.parametrize("method, sparsity, variant, kernel", [
    ("block_1x4", 0.9, "float+sparse", "builtin sparse (blocks 1x4)"),
    ("block_1x16", 0.9, "int8+sparse", "builtin sparse (blocks 1x16)"),
    ("block_1x16", 0.9, "dynamic+sparse", "builtin sparse (blocks 1x16)"),
])
def test_block_pruned_dense_layers_run_the_sparse_kernels_in_both_apis(lenet, tmp_path, method, sparsity, variant,
                                                                        kernel):
    model, x, y, representative = lenet
    pruned = block_pruned(model, method, sparsity)
    figures = export.export_variant(pruned, variant, x, y, representative, bench_runs=5, bench_warmup=1,
                                    out_dir=str(tmp_path))
    card = json.load(open(tmp_path / "model_card.json"))
    hidden = [o for o in card["operators"] if "logits" not in o["name"]]
    assert [o["kernel"] for o in hidden] == [kernel] * 2 and hidden[0]["weights"] == kernel[16:-1]
    assert figures["apis"] == "interpreter,compiled_model" and figures["compiled_latency_ms"] > 0
    plain = export.to_tflite(pruned, convert.parse_variant(variant)[0], False, representative)
    assert figures["size_bytes"] < len(plain) / 4  # the block format stores the kept blocks only
    keras_accuracy = float(np.mean(pruned.predict(x, verbose=0).argmax(1) == y))
    assert abs(figures["accuracy"] - keras_accuracy) <= (0.0 if variant == "float+sparse" else 0.02)
    assert abs(card["compiled_model"]["accuracy"] - figures["accuracy"]) <= 0.005


def test_ragged_tails_kept_at_low_sparsity_fall_back_to_a_correct_encoding(lenet):
    model, x, y, representative = lenet
    # fc2 reads 300 inputs: 18 whole 1x16 blocks and a 12-input tail per unit. At 2 % only 38 of fc2's 1,900 blocks
    # go (tails first), so most tails keep weights the block format cannot store.
    pruned = block_pruned(model, "block_1x16", 0.02)
    fc2 = pruned.get_layer("fc2").get_weights()[0]
    assert np.count_nonzero(fc2[288:]) > 0 and np.count_nonzero(fc2[:288]) == fc2[:288].size
    model_bytes = export.to_tflite(pruned, "int8", True, representative)
    by_name = {o["name"].split("/")[1]: o for o in kernels.model_kernels(model_bytes)}
    assert by_name["fc2"]["weights"] == "dense" and by_name["fc2"]["kernel"] == "xnnpack"
    interpreter = export.evaluate_tflite(model_bytes, x, y, return_probs=True)
    artifacts.check_outputs(interpreter["probs"], pruned.predict(x, verbose=0), "int8", "Interpreter")
    assert compiled.evaluate_compiled(model_bytes, x, y)["accuracy"] == pytest.approx(interpreter["accuracy"],
                                                                                      abs=0.005)


def test_a_file_that_computes_something_else_is_never_written(lenet, tmp_path, monkeypatch):
    model, x, y, _ = lenet
    other = models.build("lenet_300_100")  # same architecture, other weights
    wrong = convert.to_tflite(other)
    monkeypatch.setattr(convert, "to_tflite", lambda *a, **k: wrong)
    with pytest.raises(RuntimeError, match="Interpreter outputs differ from the Keras model's"):
        export.export_variant(model, "float", x, y, out_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_block_sweep_with_export_and_a_bad_block(tmp_path):
    out = str(tmp_path / "sweep")
    run_smoke_sweep(out, "--methods=block_1x16", "--sparsities=90", "--export=int8+sparse",
                    "--export_eval_size=200")
    record = json.load(open(os.path.join(out, "points", "block_1x16-k90.json")))
    (figures,) = record["exports"]
    assert figures["apis"] == "interpreter,compiled_model" and figures["kernels"] == "builtin sparse (blocks 1x16) x3"
    assert "LiteRT APIs" in open(os.path.join(out, "results.md")).read()
    assert open(os.path.join(out, "frontier.png"), "rb").read(4) == b"\x89PNG"
    assert "| block_1x16 k=90 int8+sparse |" in open(os.path.join(out, "frontier.md")).read()
    # A usage error (absl exits 2 with it), before any training.
    with pytest.raises(app.UsageError, match=r"^--methods=block_1x400: block 1x400 .* layer 'fc2' kernel of shape "
                       r"\(300, 100\)"):
        run_smoke_sweep(str(tmp_path / "bad"), "--methods=block_1x400", "--sparsities=50")
    assert not os.path.exists(tmp_path / "bad" / "sweep_config.json")


def test_frontier_table_and_plot_agree(tmp_path):
    from tfprune.experiments.budget import frontier  # pylint: disable=g-import-not-at-top
    from tfprune.experiments.results import plots
    items = [frontier.Candidate("weight k=0 float", "weight", 0.0, "float", "pruned", 0.89, 9_000_000, 0.30),
             frontier.Candidate("weight k=0 int8", "weight", 0.0, "int8", "pruned", 0.888, 2_300_000, 0.07),
             frontier.Candidate("block_1x4 k=90 float+sparse", "block_1x4", 90.0, "float+sparse", "pruned", 0.885,
                                1_000_000, 0.05),
             frontier.Candidate("weight k=90 float+sparse", "weight", 90.0, "float+sparse", "pruned", 0.884,
                                1_400_000, 0.28),  # dominated in both
             frontier.Candidate("unit k=90 shrunk int8", "unit", 90.0, "int8", "shrunk", 0.86, 60_000, 0.01)]
    assert frontier.pareto(items, frontier.size) == {"weight k=0 float", "weight k=0 int8",
                                                     "block_1x4 k=90 float+sparse", "unit k=90 shrunk int8"}
    assert frontier.pareto(items, frontier.latency) == {"weight k=0 float", "weight k=0 int8",
                                                        "block_1x4 k=90 float+sparse", "unit k=90 shrunk int8"}
    slower = items + [frontier.Candidate("block_1x4 k=80 float+sparse", "block_1x4", 80.0, "float+sparse", "pruned",
                                         0.885, 1_900_000, 0.11)]  # as accurate as k=90 but larger and slower
    assert "block_1x4 k=80 float+sparse" not in frontier.pareto(slower, frontier.latency) | frontier.pareto(
        slower, frontier.size)
    assert set(frontier.references(items)) == {"dense float", "dense int8"}
    path, plotted = plots.frontier(items, str(tmp_path / "frontier.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    rows = [line.split(" | ") for line in frontier.table(items).splitlines()[2:]]
    table = {r[0].lstrip("| "): (float(r[1]), float(r[2].replace(",", "")), float(r[3])) for r in rows}
    for name, kib, accuracy in plotted["size"]:
        assert table[name][0] == pytest.approx(accuracy, abs=0.005) and table[name][1] == pytest.approx(kib, abs=0.05)
    for name, ms, _ in plotted["latency"]:
        assert table[name][2] == pytest.approx(ms, abs=5e-5)
    assert [r[4] for r in rows].count("yes") == 4 and rows[-1][0].lstrip("| ") == "unit k=90 shrunk int8"
