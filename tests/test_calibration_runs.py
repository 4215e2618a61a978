"""Calibration methods in schedules, sweep points and sweeps: the data they read is training data, never the test
split; statistics are taken again at every pruning step of a schedule; a one-shot sweep runs them end to end."""

import json
import os

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from tfprune import callbacks
from tfprune import pruning
from tfprune.calibration import statistics
from tfprune.experiments import config as config_lib
from tfprune.experiments import point
from tfprune.experiments import preflight
from tfprune.layers import registry
from tfprune.select import masks
from tfprune._env import keras
from tests.conftest import run_smoke_sweep


@pytest.fixture(scope="module")
def lenet_data(small_fashion):
    (x, y), (xt, yt) = small_fashion
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28))
    h = keras.layers.Dense(64, activation="relu", name="fc1")(keras.layers.Flatten(name="flat")(inp))
    h = keras.layers.Dense(32, activation="relu", name="fc2")(h)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="out")(h))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return model, (x, y), (xt, yt)


def _spy(monkeypatch):
    """Records the inputs every statistics pass reads."""
    seen = []
    original_input, original_grad = statistics.input_statistics, statistics.gradient_statistics

    def inputs(model, layers, names, calibration, progress=None):
        seen.append(np.asarray(calibration.x))
        return original_input(model, layers, names, calibration, progress)

    def grads(model, layers, names, calibration, progress=None):
        seen.append(np.asarray(calibration.x))
        return original_grad(model, layers, names, calibration, progress)
    monkeypatch.setattr(statistics, "input_statistics", inputs)
    monkeypatch.setattr(statistics, "gradient_statistics", grads)
    return seen


@pytest.mark.parametrize("method,epochs", [("sparsegpt", 0), ("wanda", 1), ("taylor", 0), ("unit_refit", 0)])
def test_a_point_calibrates_on_training_images_only(lenet_data, monkeypatch, method, epochs):
    model, (x, y), (xt, yt) = lenet_data
    poisoned = xt + 100.0  # test images no training image resembles: reading one is seen at once
    seen = _spy(monkeypatch)
    finetune = config_lib.FineTune(epochs=epochs, calibration_size=96, verbose=0, frequency=5)
    record = point.run_point(model, ((x, y), (poisoned, yt)), method, 50, layers=["fc1", "fc2"], finetune=finetune,
                             histograms=False)
    assert seen, "the method read no calibration data"
    train_rows = {row.tobytes() for row in x}
    for batch in seen:
        assert len(batch) == 96
        assert all(row.tobytes() in train_rows for row in batch)
        assert batch.max() <= x.max()
    assert record.achieved_sparsity > 0


def test_a_schedule_takes_the_statistics_again_at_every_pruning_step(lenet_data, monkeypatch):
    model, (x, y), _ = lenet_data
    prunable = pruning.make_prunable(model)
    prunable.compile("adam", "sparse_categorical_crossentropy")
    seen = _spy(monkeypatch)
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=20, frequency=5)
    pruner = callbacks.RankPruning("wanda", schedule, layers=["fc1", "fc2"], calibration=(x[:64], y[:64]))
    prunable.fit(x[:64 * 25], y[:64 * 25], batch_size=64, epochs=1, verbose=0, callbacks=[pruner], shuffle=False)
    updates = [s for s in pruner.history]
    assert [step for step, _ in updates] == [5, 10, 15, 20]
    assert len(seen) == 4  # one statistics pass per pruning step, on the current weights
    for name, size in (("fc1", 784 * 64), ("fc2", 64 * 32)):
        kernel_keep = registry.kernel_mask(prunable.get_layer(name))
        assert (~kernel_keep).sum() == prunable.get_layer(name).kernel.shape[-1] * masks.prune_count(
            0.8, size // prunable.get_layer(name).kernel.shape[-1])


def test_preflight_refuses_what_a_calibration_method_cannot_read(lenet_data):
    model = lenet_data[0]
    config = config_lib.SweepConfig("/tmp/unused", methods=("sparsegpt",), scope="global",
                                    finetune=config_lib.FineTune())
    with pytest.raises(config_lib.ConfigError, match="--methods=sparsegpt .*--scope=layer only"):
        preflight.check_sweep(config, model)
    x = keras.Input((4, 3))
    rnn = keras.Model(x, keras.layers.Dense(2, name="out")(keras.layers.LSTM(5, name="lstm")(x)))
    config = config_lib.SweepConfig("/tmp/unused", methods=("wanda",), finetune=config_lib.FineTune())
    with pytest.raises(config_lib.ConfigError, match="--methods=wanda: .*'lstm' is LSTM"):
        preflight.check_sweep(config, rnn)


@pytest.mark.slow
def test_a_one_shot_sweep_with_wanda_and_sparsegpt(tmp_path):
    out = str(tmp_path / "sweep")
    run_smoke_sweep(out, "--methods=wanda,sparsegpt", "--sparsities=90", "--calibration_size=128")
    with open(os.path.join(out, "results.json")) as f:
        points = {(p["method"], p["k"]): p for p in json.load(f)["points"]}
    for method in ("wanda", "sparsegpt"):
        assert abs(points[(method, 90.0)]["achieved_sparsity"] - 0.9) < 0.002
    assert points[("sparsegpt", 90.0)]["test_accuracy"] > points[("wanda", 90.0)]["test_accuracy"]
    with open(os.path.join(out, "sweep_config.json")) as f:
        assert json.load(f)["calibration_size"] == 128
