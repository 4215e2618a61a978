"""Sparsity-preserving quantization-aware training (tfprune.quantization) and its int8 files, on real Fashion-MNIST.

tf_keras runs TF-MOT's prune-preserving QAT; Keras 3 tfprune's fake-quantized layers (``fake_quant``), checked
against NumPy's int8 grid. On both: the same zeros before QAT, after QAT and in the int8 TFLite file (decoded),
and the int8 file computes what the QAT model computes.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

import keras as keras3

from conftest import run_smoke_sweep
from tfprune import pruning
from tfprune import quantization
from tfprune import tflite
from tfprune._env import keras
from tfprune.experiments import models
from tfprune.experiments import qat_stage
from tfprune.quantization import fake_quant

STACKS = {"tf_keras": keras, "keras3": keras3}


def _mlp(k):
    k.utils.set_random_seed(0)
    x = k.Input((28, 28))
    h = k.layers.Flatten()(x)
    h = k.layers.Dense(64, activation="relu", name="fc1")(h)
    h = k.layers.Dense(32, activation="relu", name="fc2")(h)
    return k.Model(x, k.layers.Dense(10, activation="softmax", name="out")(h))


def _cnn(k):
    k.utils.set_random_seed(0)
    x = k.Input((28, 28, 1))
    h = k.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    h = k.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="dw")(h)
    h = k.layers.GlobalAveragePooling2D()(h)
    return k.Model(x, k.layers.Dense(10, activation="softmax", name="out")(h))


def _pruned(k, build, data, sparsity=0.8):
    """``build(k)`` trained one epoch on ``data``'s train images, then weight-pruned one-shot, stripped."""
    (x, y), _ = data
    model = models.compile_model(build(k))
    model.fit(x if build is _mlp else x[..., None], y, epochs=1, batch_size=64, verbose=0)
    prunable = pruning.make_prunable(model)
    pruning.prune(prunable, sparsity, "weight", layers=[l.name for l in model.layers if l.name in
                                                     ("fc1", "fc2", "conv", "dw")])
    return pruning.strip(prunable)


def _qat(model, data, epochs=1):
    (x, y), _ = data
    x = x if len(model.input_shape) == 3 else x[..., None]
    qat_model = quantization.quantize_aware(model)
    models.compile_model(qat_model, 1e-4, kind="probabilities")
    qat_model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=quantization.zero_keepers(qat_model))
    return qat_model


@pytest.mark.slow
@pytest.mark.parametrize("stack", list(STACKS))
@pytest.mark.parametrize("build", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_zeros_are_the_same_before_after_qat_and_in_the_int8_file(stack, build, small_fashion):
    k = STACKS[stack]
    model = _pruned(k, build, small_fashion)
    before = quantization.zero_masks(model)
    assert sum(m.sum() for m in before.values()) > 0.4 * sum(m.size for m in before.values())
    qat_model = _qat(model, small_fashion)
    expected = {"tf_keras": 3, "keras3": 3}[stack]
    assert len(quantization.quantized_layers(qat_model)) == expected
    inference = quantization.to_inference_model(qat_model)
    after = quantization.zero_masks(inference)
    assert after.keys() == before.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    (x_train, _), (x_test, y_test) = small_fashion
    shape = (-1,) + tuple(model.input_shape[1:])
    int8 = tflite.to_tflite(inference, "int8", representative_data=x_train[:200].reshape(shape))
    kept, extra = qat_stage.int8_zeros(int8, before)
    assert kept
    assert extra < 0.05 * sum((~m).sum() for m in before.values())  # rounding to 0 is rare, not the rule
    assert {w.dtype for w in tflite.nm_check.weight_kernels(int8)} == {"INT8"}
    keras_accuracy = qat_model.evaluate(x_test.reshape(shape), y_test, verbose=0)[1]
    litert = tflite.evaluate_tflite(int8, x_test.reshape(shape), y_test)
    assert abs(litert["accuracy"] - keras_accuracy) < 0.03, (litert["accuracy"], keras_accuracy)


def test_keras3_fake_quant_is_tflites_int8_grid():
    model = _mlp(keras3)
    model.build((None, 28, 28))
    kernel = np.asarray(model.get_layer("fc1").kernel)
    kernel[:, 3] = 0.0  # a dead unit: its range is empty, its weights stay 0
    kernel[::2, 5] = 0.0
    model.get_layer("fc1").kernel.assign(kernel)
    qat_model = quantization.quantize_aware(model)
    layer = qat_model.get_layer("fc1")
    assert isinstance(layer, fake_quant.QATDense)
    np.testing.assert_array_equal(np.asarray(layer.sparsity_mask), kernel != 0)
    scale = np.maximum(np.abs(kernel).max(axis=0), 1e-8) / 127.0  # per output channel, symmetric, 255 levels
    expected = np.round(kernel / scale) * scale
    np.testing.assert_allclose(np.asarray(layer.quantized_kernel()), expected, atol=1e-6)
    assert np.all(np.asarray(layer.quantized_kernel())[kernel == 0] == 0)
    # outputs: the first training batch sets the range, inference snaps to 256 levels of it
    x = np.random.default_rng(0).uniform(size=(8, 28, 28)).astype("float32")
    h = layer(keras3.ops.reshape(x, (8, -1)), training=True)
    low, high = float(layer.output_min), float(layer.output_max)
    assert low == 0.0 and high == pytest.approx(float(np.max(np.asarray(h))), rel=1e-2)
    levels = np.unique(np.round(np.asarray(layer(x.reshape(8, -1), training=False)) / ((high - low) / 255), 3))
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-2)


def test_a_tfmot_pruned_model_is_stripped_first(small_fashion):
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
    model = _mlp(keras)
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(
        0.5, 0))
    qat_model = quantization.quantize_aware(wrapped)
    assert all("PruneLowMagnitude" not in type(l).__name__ for l in qat_model.layers)
    assert len(quantization.quantized_layers(qat_model)) == 3


def test_errors_name_the_model_and_the_layer():
    class Net(keras3.Model):
        def call(self, x):
            return x
    with pytest.raises(ValueError, match="subclassed Model"):
        quantization.quantize_aware(Net())
    x = keras3.Input((1, 28, 28))
    channels_first = keras3.Model(x, keras3.layers.Conv2D(4, 3, data_format="channels_first", name="cf")(x))
    with pytest.raises(quantization.QATError, match=r"'cf' \(Conv2D\).*channels_first"):
        quantization.quantize_aware(channels_first)


@pytest.mark.slow
def test_a_tiny_sweep_with_qat_end_to_end(tmp_path):
    out = str(tmp_path / "out")
    run_smoke_sweep(out, "--methods=weight", "--sparsities=80", "--finetune_epochs=1", "--qat_epochs=1",
                    "--export=int8", "--export_eval_size=500", "--layers=fc1,fc2")
    for method in ("weight",):  # TF-MOT's points take the same stage (test_a_tfmot_pruned_model_is_stripped_first)
        record = json.load(open(os.path.join(out, "points", f"{method}-k80.json")))
        qat = record["qat"]
        assert qat["epochs"] == 1 and qat["model"] == "pruned" and qat["quantized_layers"] == 3
        assert qat["zeros_kept"] is True and qat["int8_zeros_kept"] is True
        assert qat["zeros"] == pytest.approx(0.8 * (784 * 300 + 300 * 100), abs=2)
        models_exported = {(e["model"], e["variant"]) for e in record["exports"]}
        assert models_exported == {("pruned", "int8"), ("qat", "int8")}
        assert os.path.exists(os.path.join(out, "tflite", f"{method}-k80", "int8-qat", "model.tflite"))
        assert qat["accuracy"] > 0.6
    results = open(os.path.join(out, "results.md")).read()
    assert "TFLite qat int8 accuracy %" in results and "QAT zeros kept (Keras, int8 file)" in results


def _qat_record():
    from tfprune.experiments.results.records import PointRecord, QATFigures, VariantFigures
    figures = dict(size_bytes=2048, gzip_size_bytes=1024, accuracy=0.9, loss=0.3, latency_ms=0.06,
                   latency_p90_ms=0.07, path="xnnpack", fallback_reason="", sparsity=0.9, convert_seconds=1.0)
    qat = QATFigures(model="pruned", epochs=2, learning_rate=1e-4, seconds_per_epoch=9.0, accuracy=0.9, loss=0.3,
                     quantized_layers=5, zeros=900, zeros_kept=True, int8_zeros_kept=True, int8_extra_zeros=41)
    return PointRecord(method="weight", k=90.0, target_sparsity=0.9, achieved_sparsity=0.9, layer_sparsity={},
                       units_kept={}, test_accuracy=0.9, test_loss=0.3, remaining_weights=100, total_weights=1000,
                       dense_size_bytes=None, gzip_size_bytes=None, finetune_epochs=2, schedule="polynomial",
                       distribution_strategy="off", replicas=1, finetune_seconds_per_epoch=6.0,
                       exports=(VariantFigures(variant="int8", **figures),
                                VariantFigures(variant="int8", model="qat", **dict(figures, accuracy=0.905))),
                       qat=qat)


def test_a_qat_record_round_trips_and_fills_its_columns_and_candidates(tmp_path):
    from tfprune.experiments.budget import fit, frontier
    from tfprune.experiments.results import records, tables
    record = _qat_record()
    assert records.PointRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    row = record.to_row()
    assert row["qat_zeros_kept"] is True and row["qat_int8_extra_zeros"] == 41
    assert row["tflite_qat_int8_accuracy"] == 0.905 and row["tflite_int8_accuracy"] == 0.9
    head, _, line = tables.details_table([record]).splitlines()
    assert "| QAT s/epoch | QAT / fine-tune epoch | QAT Keras accuracy % | QAT zeros kept (Keras, int8 file) |" in head
    assert "| 9.0 | 1.50x | 90.00 | yes, yes (+41 rounded to 0) |" in line and "TFLite qat int8 accuracy %" in head
    names = [c.name for c in frontier.candidates([record])]
    assert names == ["weight k=90 int8", "weight k=90 qat int8"]
    qat_candidate = frontier.candidates([record])[1]
    assert fit.candidate_dir(str(tmp_path), qat_candidate).endswith(os.path.join("weight-k90", "int8-qat"))
    bad = json.loads(json.dumps(record.to_json()))
    bad["qat"]["zeros_kept"] = 1
    with pytest.raises(records.RecordError, match="zeros_kept"):
        records.PointRecord.from_json(bad)


def test_qat_settings_are_checked_before_any_work():
    from tfprune.experiments import config as config_lib
    from tfprune.experiments import preflight
    with pytest.raises(config_lib.ConfigError, match="--qat_epochs=1 needs an int8 TFLite variant.*got float"):
        config_lib.SweepConfig("out", finetune=config_lib.FineTune(epochs=1, qat_epochs=1), export=("float",))
    with pytest.raises(config_lib.ConfigError, match="QAT epochs -1"):
        config_lib.FineTune(qat_epochs=-1)
    ok = config_lib.SweepConfig("out", finetune=config_lib.FineTune(epochs=1, qat_epochs=2), export=("int8+sparse",))
    assert ok.result_fields()["qat_epochs"] == 2 and "qat_epochs" not in config_lib.SweepConfig("out").result_fields()
    x = keras3.Input((1, 28, 28))
    channels_first = keras3.Model(x, keras3.layers.Conv2D(4, 3, data_format="channels_first", name="cf")(x))
    with pytest.raises(config_lib.ConfigError, match="--qat_epochs=2: layer 'cf'"):
        preflight.check_sweep(dataclasses.replace(ok, methods=("weight",)), channels_first)


def test_compare_sets_qat_beside_tfmots_pqat():
    from tfprune.experiments import compare
    ours = _qat_record()
    theirs = dataclasses.replace(ours, method="tfmot", exports=tuple(
        dataclasses.replace(e, accuracy=e.accuracy - 0.01) for e in ours.exports))
    text = compare.head_to_head([ours, theirs], {})
    assert "| k % | QAT variant | tfprune QAT accuracy % | TF-MOT PQAT accuracy % |" in text
    assert "| 90 | int8 | 90.50 | 89.50 | +1.00 | 90.00 | 89.00 |" in text


JAX_QAT = """
import json, sys
import numpy as np, keras
from tfprune import pruning, quantization
from tfprune.experiments import models
from tfprune.experiments.data import builtin as data
(x, y), _ = data.load_dataset("fashion_mnist", sys.argv[3], download=False)
x, y = x[:512, ..., None], y[:512]
keras.utils.set_random_seed(0)
i = keras.Input((28, 28, 1))
h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(i)
h = keras.layers.DepthwiseConv2D(3, activation="relu", name="dw")(h)
h = keras.layers.Dense(16, activation="relu", name="fc")(keras.layers.Flatten()(h))
model = keras.Model(i, keras.layers.Dense(10, activation="softmax", name="out")(h))
prunable = pruning.make_prunable(model)
pruning.prune(prunable, 0.8, "weight", layers=["conv", "dw", "fc"])
pruned = pruning.strip(prunable)
qat = quantization.quantize_aware(pruned)
models.compile_model(qat, 1e-3, kind="probabilities")
start = {l.name: np.asarray(l._kernel_weight()).copy() for l in qat.layers if quantization.fake_quant.is_qat(l)}
qat.fit(x, y, epochs=1, batch_size=64, verbose=0)
before, after = quantization.zero_masks(pruned), quantization.zero_masks(quantization.to_inference_model(qat))
raw = {l.name: np.asarray(l._kernel_weight()) for l in qat.layers if quantization.fake_quant.is_qat(l)}
print(json.dumps({"backend": keras.backend.backend(), "layers": sorted(raw),
                  "same": {n: bool((before[n] == after[n]).all()) for n in before},
                  "raw_zero": {n: bool((raw[n][before[n]] == 0).all()) for n in raw},
                  "trained": {n: bool(np.abs(raw[n] - start[n]).max() > 0) for n in raw}}))
"""


@pytest.mark.slow
def test_keras3_qat_keeps_the_zeros_on_the_jax_backend(tmp_path):
    from conftest import run_on_jax  # pylint: disable=g-import-not-at-top
    result = run_on_jax(JAX_QAT, tmp_path)
    assert result["backend"] == "jax" and result["layers"] == ["conv", "dw", "fc", "out"]
    assert all(result["same"].values()) and all(result["raw_zero"].values())  # the masked gradient, on JAX too
    assert all(result["trained"].values())
