"""A sweep, a comparison, a sensitivity scan and an export on your own data: 5 classes of 32×32×3 images (real
Fashion-MNIST, conftest's ``own_npz`` / ``own_images``), through the command-line mains, in process."""

import json
import os

import numpy as np
import pytest
from absl import app, flags
from absl.testing import flagsaver

from tfprune.cli import compare as compare_main
from tfprune.cli import export as export_main
from tfprune.cli import sensitivity as sensitivity_main
from tfprune.cli import sweep as sweep_main
from tfprune.experiments import BaselineConfig, SweepConfig, models, run_sweep
from tfprune.experiments.data import sources as data_sources
from tfprune.experiments.results import store
from tfprune.experiments.config import ConfigError

pytestmark = pytest.mark.slow

NAMES = ["T-shirt/top", "Trouser", "Sneaker", "Bag", "Ankle boot"]


def _main(main, *argv):
    with flagsaver.flagsaver():
        flags.FLAGS(compare_main.with_defaults(["main", *argv]) if main is compare_main else ["main", *argv])
        main.main(["main"])


# The TFLite-size plot has one value at every k (weight pruning leaves a float file's size as it is): it must still
# draw, without matplotlib's singular-bounding-box RuntimeWarning.
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_sweep_with_export_follows_the_data(own_npz, tmp_path, capsys):
    out = str(tmp_path / "sweep")
    _main(sweep_main, f"--dataset=npz:{own_npz}", "--model=small_cnn", "--train_epochs=2", "--methods=weight,unit",
          "--sparsities=0,80", "--finetune_epochs=0", "--export=float,int8", "--export_eval_size=200", "--verbose=0",
          f"--output_dir={out}")
    printed = capsys.readouterr().out
    assert f"npz:{own_npz}: 1,500 training, 300 validation and 500 test examples of shape (32, 32, 3)" in printed
    info = json.load(open(os.path.join(out, "baseline.json")))
    digest = data_sources.load(f"npz:{own_npz}").digest()
    assert info["input_shape"] == [32, 32, 3] and info["class_names"] == NAMES and info["data_digest"] == digest
    assert info["split_sizes"] == {"train": 1500, "val": 300, "test": 500} and info["test_accuracy"] > 0.6
    points = {p.key: p for p in store.load_points([out])}
    assert sorted(points) == ["unit-k0", "unit-k80", "weight-k0", "weight-k80"]
    assert all(p.data_digest == digest for p in points.values())
    assert points["unit-k80"].units_kept["logits"] == 5 and points["unit-k80"].shrink.max_abs_diff <= 1e-4
    for key in ("weight-k0", "unit-k80"):
        for variant in ("float", "int8", "float-shrunk") if key.startswith("unit") else ("float", "int8"):
            folder = os.path.join(out, "tflite", key, variant)
            assert open(os.path.join(folder, "labels.txt")).read().splitlines() == NAMES
            card = json.load(open(os.path.join(folder, "model_card.json")))
            assert card["data"] == {"dataset": f"npz:{own_npz}", "data_digest": digest, "input_shape": [32, 32, 3],
                                    "input_dtype": "float32", "num_classes": 5, "preprocessing": {"scale": "x/255"}}
            assert card["eval_images"] == 200
    dense = points["weight-k0"]
    assert abs(dense.export("float").accuracy - dense.export("int8").accuracy) < 0.05  # int8 calibrated on the data


def test_compare_streams_an_image_folder_and_runs_tfmot(own_images, tmp_path, capsys):
    out = str(tmp_path / "cmp")
    _main(compare_main, f"--dataset=images:{own_images}?size=32x32", "--data_memory_mib=1", "--model=lenet_300_100",
          "--train_epochs=1", "--sparsities=50", "--finetune_epochs=1", "--verbose=0", f"--output_dir={out}")
    printed = capsys.readouterr().out
    assert "5 classes, streamed from files" in printed and "## tfprune weight pruning vs TF-MOT" in printed
    points = {p.key: p for p in store.load_points([out])}
    assert sorted(points) == ["tfmot-k50", "unit-k50", "weight-k50"]
    assert points["weight-k50"].test_accuracy > 0.5 and points["tfmot-k50"].test_accuracy > 0.5
    assert abs(points["weight-k50"].layer_sparsity["fc1"] - points["tfmot-k50"].layer_sparsity["fc1"]) < 1e-3
    info = json.load(open(os.path.join(out, "baseline.json")))
    assert info["preprocessing"]["streamed"] is True and info["class_names"][0] == "Ankle boot"


def test_sensitivity_chooses_on_the_validation_split(own_npz, tmp_path, capsys):
    out = str(tmp_path / "sens")
    _main(sensitivity_main, f"--dataset=npz:{own_npz}", "--model=lenet_300_100", "--train_epochs=1",
          "--sparsities=50,90", f"--output_dir={out}")
    printed = capsys.readouterr().out
    assert "on 300 validation examples (plans are chosen on these, never on the test split)" in printed
    plan = json.load(open(os.path.join(out, "plan.json")))
    assert plan["evaluated_on"] == "validation" and set(plan["layer_sparsity"]) == {"fc1", "fc2", "logits"}
    assert f"--dataset=npz:{own_npz} " in printed  # the "apply it" hint names the same data


@pytest.fixture(scope="module")
def five_class_model(own_npz, tmp_path_factory):
    """A user's 5-class 32x32x3 model file (LeNet trained one epoch on the npz)."""
    data = data_sources.load(f"npz:{own_npz}")
    model = models.compile_model(models.build("lenet_300_100", data.input_shape, data.num_classes))
    model.fit(data.train.x, data.train.y, epochs=1, verbose=0)
    path = str(tmp_path_factory.mktemp("user") / "five.keras")
    model.save(path)
    return path


def test_export_of_a_user_model_on_own_data(own_npz, five_class_model, tmp_path, capsys):
    out = str(tmp_path / "export")
    # Set, not parsed: other mains imported in the same test session add required flags to the shared FLAGS.
    with flagsaver.flagsaver(model_path=five_class_model, dataset=f"npz:{own_npz}", variants=["float", "int8"],
                             bench_runs=5, export_dir=out):
        export_main.main(["export"])
    assert f"on 500 npz:{own_npz} test examples" in capsys.readouterr().out
    summary = json.load(open(os.path.join(out, "export.json")))
    assert summary["data"]["num_classes"] == 5 and summary["eval_images"] == 500
    assert all(row["accuracy"] > 0.5 for row in summary["variants"])
    assert open(os.path.join(out, "int8", "labels.txt")).read().splitlines() == NAMES


def test_a_model_that_does_not_fit_the_data_is_refused_before_work(own_npz, five_class_model, tmp_path):
    with pytest.raises(app.UsageError, match=r"five\.keras: model '.*' takes inputs of shape \(None, 32, 32, 3\), "
                                             r"but the data's inputs are \(28, 28\)"):
        _main(sweep_main, f"--model_path={five_class_model}", "--dataset=fashion_mnist",
              f"--output_dir={tmp_path / 'x'}")
    assert not os.path.exists(tmp_path / "x")
    with pytest.raises(ConfigError, match=r"--model=small_cnn on npz:.*small_cnn takes images"):
        path = str(tmp_path / "vectors.npz")
        x = np.random.default_rng(0).normal(size=(30, 12)).astype(np.float32)
        np.savez(path, x_train=x, y_train=np.arange(30) % 3, x_test=x[:6], y_test=np.arange(6) % 3)
        run_sweep(SweepConfig(str(tmp_path / "y"), BaselineConfig(dataset=f"npz:{path}", model="small_cnn")))
    assert not os.path.exists(tmp_path / "y")


def test_keras3_sweep_on_own_data(own_npz, tmp_path):
    result = run_sweep(SweepConfig(str(tmp_path / "k3"), BaselineConfig(
        dataset=f"npz:{own_npz}", model="lenet_300_100", train_epochs=1, keras="3", verbose=0),
        methods=("weight", "unit"), sparsities=(0, 90)), report=lambda line: None)
    assert {p.key for p in result.points} == {"weight-k0", "weight-k90", "unit-k0", "unit-k90"}
    assert all(p.keras.startswith("Keras 3") for p in result.points)
    assert result.baseline_info["class_names"] == NAMES and result.baseline_info["input_shape"] == [32, 32, 3]
    unit = next(p for p in result.points if p.key == "unit-k90")
    assert unit.units_kept["logits"] == 5 and unit.units_kept["fc1"] == 30
