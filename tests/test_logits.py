"""Models that output logits (``Dense(classes)`` trained with ``from_logits=True``) work everywhere.

The sweep (tf_keras: test_reliability's ``test_sweep_prunes_a_user_model_file``; Keras 3 and compare with TF-MOT on a
twin: test_keras3's ``keras3_file`` tests) runs on logits files through shared fixtures; this file holds the rules
(``tfprune.outputs``), the losses, the TFLite export with and without an appended softmax, and the sensitivity,
export and fit_budget commands on logits files of both stacks.
"""

import json
import os

import numpy as np
import pytest
import tf_keras
from absl import flags
from absl.testing import flagsaver

import keras as keras3
from conftest import FASHION_DIR, require
from tfprune import outputs
from tfprune import tflite
from tfprune.tflite import runtime
from tfprune.files import user_model
from tfprune.experiments import models
from tfprune.experiments.config import BaselineConfig, FineTune
from tfprune.experiments.budget import search as budget_lib
from tfprune.experiments.budget.fit import FitBudgetConfig, run_fit_budget

STACKS = {"tf_keras": tf_keras, "keras3": keras3}


def _mlp(k, activation=None, name="mlp"):
    return k.Sequential([k.Input((28, 28)), k.layers.Flatten(), k.layers.Dense(48, activation="relu", name="fc1"),
                         k.layers.Dense(10, activation=activation, name="out")], name=name)


def _tutorial_compile(model):
    k = STACKS["keras3"] if isinstance(model, keras3.Model) else tf_keras
    model.compile("adam", k.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


@pytest.fixture(scope="module", params=sorted(STACKS))
def logits_file(request, small_fashion, tmp_path_factory):
    """(stack name, path of a logits MLP trained 2 epochs on 2,000 real Fashion-MNIST images as the tutorials do)."""
    k = STACKS[request.param]
    (x, y), _ = small_fashion
    k.utils.set_random_seed(0)
    model = _tutorial_compile(_mlp(k))
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    path = str(tmp_path_factory.mktemp("logits") / f"{request.param}.keras")
    model.save(path)
    return request.param, path


# ------------------------------------------------------------------------------------------------------ rules

@pytest.mark.parametrize("stack", sorted(STACKS))
def test_the_output_kind_is_read_from_the_last_layer_or_from_one_run(stack):
    k = STACKS[stack]
    L = k.layers
    assert outputs.output_kind(_mlp(k)) == "logits"
    assert outputs.output_kind(_mlp(k, "softmax")) == "probabilities"
    assert outputs.output_kind(k.Sequential([k.Input((4,)), L.Dense(3), L.Softmax()])) == "probabilities"
    assert outputs.output_kind(k.Sequential([k.Input((4,)), L.Dense(3), L.Activation("softmax")])) == "probabilities"
    # Not readable from the layer (relu, sigmoid): decided by a run on a zero batch.
    assert outputs.output_kind(k.Sequential([k.Input((4,)), L.Dense(3, activation="sigmoid")])) == "logits"

    class SoftmaxInCode(k.Model):  # the softmax is applied by the model's own code, after its last layer
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(3)

        def call(self, x):
            return k.activations.softmax(self.dense(x))

    sub = SoftmaxInCode()
    sub(np.zeros((1, 4), "float32"))  # built by a call, as users build theirs
    assert outputs.output_kind(sub) == "probabilities"
    assert outputs.output_kind(sub, np.ones((2, 4), "float32")) == "probabilities"
    logits_model = _mlp(k)
    appended = outputs.with_softmax(logits_model)  # the same layers, a softmax after them
    assert outputs.output_kind(appended) == "probabilities" and appended.layers[-2] is logits_model.layers[-1]
    x = np.random.default_rng(0).random((5, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(appended.predict(x, verbose=0), outputs.softmax(logits_model.predict(x, verbose=0)),
                               atol=1e-6)


def test_a_tf_mot_wrapper_is_looked_through():
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
    for activation, kind in ((None, "logits"), ("softmax", "probabilities")):
        wrapped = tfmot.sparsity.keras.prune_low_magnitude(_mlp(tf_keras, activation))
        assert outputs.output_kind(wrapped) == kind


def test_softmax_and_log_softmax_match_keras_from_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 30, (64, 10)).astype(np.float32)  # large: a naive exp overflows
    y = rng.integers(0, 10, 64)
    p = outputs.softmax(logits)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.log(np.maximum(p, 1e-300)), outputs.log_softmax(logits), atol=1e-6)
    keras_loss = float(tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits))
    figures = runtime.classification_figures(logits, y, from_logits=True)
    assert figures["loss"] == pytest.approx(keras_loss, rel=1e-5)
    assert figures["accuracy"] == np.mean(logits.argmax(1) == y)
    with pytest.raises(ValueError, match="output kind 'scores' is not one of probabilities, logits"):
        outputs.as_probabilities(logits, "scores")


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_compile_model_takes_the_loss_from_logits(stack, small_fashion):
    k = STACKS[stack]
    (x, y), _ = small_fashion
    k.utils.set_random_seed(0)
    model = _mlp(k)
    loss, _ = models.compile_model(model).evaluate(x[:256], y[:256], verbose=0)
    expected = -outputs.log_softmax(model.predict(x[:256], verbose=0))[np.arange(256), y[:256]].mean()
    assert loss == pytest.approx(expected, rel=1e-4)
    assert user_model.check_compatible(model, x[:64], 10) == "logits"


# ----------------------------------------------------------------------------------------------------- export

@pytest.mark.slow
def test_a_logits_model_exports_as_it_is_or_with_a_softmax(logits_file, small_fashion, tmp_path):
    stack, path = logits_file
    model = user_model.load_user_model(path)
    model = tflite.plain_model(model)
    _, (x_test, y_test) = small_fashion
    x, y = x_test[:300], y_test[:300]
    keras_logits = np.asarray(model.predict(x, verbose=0))
    keras_loss = -outputs.log_softmax(keras_logits)[np.arange(len(y)), y].mean()
    for append in (False, True):
        out = str(tmp_path / f"softmax_{append}")
        figures = tflite.export_variant(model, "float", x, y, bench_runs=2, bench_warmup=1, out_dir=out,
                                        append_softmax=append)
        card = json.load(open(os.path.join(out, "model_card.json")))
        assert (card["outputs"], card["softmax_appended"]) == (("probabilities", True) if append else
                                                               ("logits", False)), stack
        assert figures["accuracy"] == pytest.approx(np.mean(keras_logits.argmax(1) == y), abs=1 / len(y))
        assert figures["loss"] == pytest.approx(keras_loss, rel=1e-3)  # the loss of the model's logits either way
        assert card["compiled_model"]["accuracy"] == pytest.approx(figures["accuracy"], abs=1e-9)
        rows = tflite.evaluate_tflite(open(os.path.join(out, "model.tflite"), "rb").read(), x, y,
                                      return_probs=True, from_logits=not append)["probs"]
        assert outputs.are_probabilities(rows) == append  # the file outputs what its card says
    int8 = tflite.export_variant(model, "int8", x, y, representative_data=small_fashion[0][0][:100], bench_runs=2,
                                 bench_warmup=1)
    assert int8["accuracy"] >= figures["accuracy"] - 0.03 and int8["loss"] < 2 * keras_loss


@pytest.mark.slow
def test_the_export_and_sensitivity_commands_take_a_logits_file(logits_file, tmp_path, capsys):
    from tfprune.cli import export as export_main  # pylint: disable=g-import-not-at-top
    from tfprune.cli import sensitivity as sensitivity_main  # pylint: disable=g-import-not-at-top
    stack, path = logits_file
    export_dir = str(tmp_path / "export")
    with flagsaver.flagsaver(model_path=path, variants=["float"], data_dir=require(FASHION_DIR), eval_images=300,
                             representative_size=50, bench_runs=3, export_dir=export_dir, export_softmax=True):
        export_main.main(["export"])
    printed = capsys.readouterr().out
    assert f"{path} outputs logits; its files end in an appended softmax (probabilities)" in printed, stack
    card = json.load(open(os.path.join(export_dir, "float", "model_card.json")))
    assert card["outputs"] == "probabilities" and card["softmax_appended"] and card["accuracy"] > 0.6
    out = str(tmp_path / "sens")
    with flagsaver.flagsaver():
        flags.FLAGS(["sensitivity", f"--model_path={path}", "--dataset=fashion_mnist", f"--data_dir={FASHION_DIR}",
                     "--method=weight", "--sparsities=0,50", "--eval_size=500", "--max_drop=1", f"--output_dir={out}"])
        sensitivity_main.main(["sensitivity"])
    scan = json.load(open(os.path.join(out, "plan.json")))
    assert set(scan["layer_sparsity"]) <= {"fc1", "out"}
    rows = open(os.path.join(out, "sensitivity.csv")).read().splitlines()
    at_zero = [r for r in rows[1:] if r.split(",")[1] in ("0", "0.0")]
    # Scored from the logits: accuracy and a cross-entropy from logits (that of raw logits would be ~16 or NaN).
    assert at_zero and all(float(r.split(",")[2]) > 0.6 and float(r.split(",")[3]) < 1.2 for r in at_zero), rows[:3]


@pytest.mark.slow
def test_a_budget_search_takes_a_logits_file(logits_file, tmp_path):
    stack, path = logits_file
    base = BaselineConfig(dataset="fashion_mnist", data_dir=require(FASHION_DIR), model_path=path, train_size=600,
                          verbose=0)
    config = FitBudgetConfig(str(tmp_path / "b"), budget_lib.Budget(max_size_kib=40), base, families=("unit",),
                             ladder=(50.0,), layers=("fc1",), finetune=FineTune(epochs=1, verbose=0),
                             shrunk_epochs=1, eval_size=200, export_softmax=True)
    result = run_fit_budget(config, report=lambda line: None)
    card = json.load(open(os.path.join(result.chosen_dir, "model_card.json")))
    assert (card["outputs"], card["softmax_appended"]) == ("probabilities", True), stack
    assert card["size_bytes"] <= 40 * 1024 and result.chosen.accuracy > 0.5
