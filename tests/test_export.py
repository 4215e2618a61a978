"""tfprune.export and tfprune.export_main on a LeNet-300-100 trained one epoch on 2,000 real Fashion-MNIST images."""

import json
import os

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from conftest import FASHION_DIR
from tfprune import pruning
from tfprune.layers import registry
from tfprune import tflite as export
from tfprune.experiments.data import builtin as data_lib_for_labels
from tfprune.tflite import compiled
from tfprune.cli import export as export_main
from tfprune._env import keras, tf

FLAGS = flags.FLAGS
TOLERANCE = {"float": 0.001, "float16": 0.001, "dynamic": 0.01, "int8": 0.01}  # 0.1 / 1 accuracy point


@pytest.fixture(scope="module")
def pruned(trained_lenet):
    """A plain copy of the trained model with the smallest 90 % of each kernel zeroed directly in numpy."""
    model = keras.models.clone_model(trained_lenet[0])
    model.set_weights(trained_lenet[0].get_weights())
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel = layer.kernel.numpy()
            order = np.argsort(np.abs(kernel), axis=None)
            kernel.flat[order[:int(0.9 * kernel.size)]] = 0.0
            layer.kernel.assign(kernel)
    return model


def keras_accuracy(model, x, y):
    return float(np.mean(model.predict(x, batch_size=1000, verbose=0).argmax(axis=1) == y))


@pytest.mark.parametrize("variant", ["float", "float16", "dynamic", "int8"])
def test_variant_runs_in_litert_and_matches_keras(trained_lenet, variant):
    model, x, y, representative = trained_lenet
    quantization, _ = export.parse_variant(variant)
    model_bytes = export.to_tflite(model, quantization, representative_data=representative)
    result = export.evaluate_tflite(model_bytes, x, y, batch_size=300)  # 1000 images: last batch padded
    assert result["path"] == "xnnpack" and result["fallback_reason"] == "" and result["images"] == 1000
    assert abs(result["accuracy"] - keras_accuracy(model, x, y)) <= TOLERANCE[variant] + 1e-9
    keras_loss = export.cross_entropy(model.predict(x, verbose=0), y)
    assert result["loss"] == pytest.approx(keras_loss, abs=1e-4 if variant in ("float", "float16") else 0.05)
    details = Interpreter(model_content=model_bytes).get_input_details()[0]
    assert details["dtype"] == (np.int8 if variant == "int8" else np.float32)


@pytest.mark.parametrize("quantization", export.QUANTIZATIONS)
def test_sparse_encoding_is_smaller_and_predicts_the_same(pruned, trained_lenet, quantization):
    _, x, y, representative = trained_lenet
    dense = export.to_tflite(pruned, quantization, False, representative)
    sparse = export.to_tflite(pruned, quantization, True, representative)
    if quantization in ("dynamic", "int8"):  # unstructured int8 weights stay dense: CompiledModel cannot DENSIFY them
        assert len(sparse) < 1.05 * len(dense), (len(sparse), len(dense))
    else:
        assert len(sparse) < 0.5 * len(dense), (len(sparse), len(dense))
    dense_result = export.evaluate_tflite(dense, x, y)
    sparse_result = export.evaluate_tflite(sparse, x, y)
    assert abs(sparse_result["accuracy"] - dense_result["accuracy"]) <= 0.002
    assert abs(dense_result["accuracy"] - keras_accuracy(pruned, x, y)) <= TOLERANCE[
        "float" if quantization == "none" else quantization] + 1e-9


@pytest.mark.slow
def test_xnnpack_failure_falls_back_to_builtin_kernels(pruned, trained_lenet):
    _, x, y, _ = trained_lenet
    converter = tf.lite.TFLiteConverter.from_keras_model(pruned)  # the converter's own CSR + DENSIFY int8 file
    converter.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    model_bytes = converter.convert()
    # The trigger is real: the default (XNNPACK) interpreter cannot prepare this model on ai-edge-litert 2.3.0.
    interpreter = Interpreter(model_content=model_bytes, experimental_op_resolver_type=OpResolverType.AUTO)
    with pytest.raises(RuntimeError, match="XNNPack"):
        interpreter.allocate_tensors()
    result = export.evaluate_tflite(model_bytes, x, y)
    assert result["path"] == "builtin" and "XNNPack" in result["fallback_reason"]
    assert abs(result["accuracy"] - keras_accuracy(pruned, x, y)) <= 0.01
    latency = export.benchmark_tflite(model_bytes, runs=5, warmup=1)
    assert latency["path"] == "builtin" and latency["median_ms"] > 0
    # ... and CompiledModel does not load it at all; to_tflite's file (int8 weights dense) runs in both APIs.
    with pytest.raises(RuntimeError, match="CompiledModel"):
        compiled.Compiled(model_bytes)
    ours = export.to_tflite(pruned, "dynamic", sparse_encoding=True)
    assert export.evaluate_tflite(ours, x, y)["path"] == "xnnpack"
    assert compiled.evaluate_compiled(ours, x[:100], y[:100])["accuracy"] == pytest.approx(
        export.evaluate_tflite(ours, x[:100], y[:100])["accuracy"])


def test_forced_builtin_path_gives_the_same_predictions(trained_lenet):
    model, x, y, _ = trained_lenet
    model_bytes = export.to_tflite(model)
    xnnpack = export.evaluate_tflite(model_bytes, x, y)
    builtin = export.evaluate_tflite(model_bytes, x, y, prefer_xnnpack=False)
    assert (xnnpack["path"], builtin["path"]) == ("xnnpack", "builtin")
    assert builtin["accuracy"] == xnnpack["accuracy"]
    assert builtin["loss"] == pytest.approx(xnnpack["loss"], abs=1e-5)


@pytest.mark.slow
def test_prunable_and_tfmot_models_are_stripped_before_conversion(trained_lenet, pruned):
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
    model, x, y, _ = trained_lenet
    prunable = pruning.prune(pruning.make_prunable(model), 0.9)
    assert not any(registry.is_prunable(l) for l in export.plain_model(prunable).layers)
    prunable_bytes = export.to_tflite(prunable, sparse_encoding=True)
    assert len(prunable_bytes) < 0.5 * len(export.to_tflite(model, sparse_encoding=True))
    accuracy = export.evaluate_tflite(prunable_bytes, x, y)["accuracy"]
    assert abs(accuracy - keras_accuracy(prunable, x, y)) <= 0.001 + 1e-9
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(
        pruned, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
    assert [type(l).__name__ for l in export.plain_model(wrapped).layers] == ["Flatten", "Dense", "Dense", "Dense"]
    # Unstripped, the wrappers' mask and threshold tensors would make the file bigger.
    assert len(export.to_tflite(wrapped)) == len(export.to_tflite(tfmot.sparsity.keras.strip_pruning(wrapped)))


def test_bad_quantization_and_representative_data_are_value_errors(trained_lenet):
    model, _, _, representative = trained_lenet
    with pytest.raises(ValueError, match=r"'int4'.*none, dynamic, float16, int8"):
        export.to_tflite(model, "int4")
    with pytest.raises(ValueError, match="'int8'.*representative_data"):
        export.to_tflite(model, "int8")
    with pytest.raises(ValueError, match="representative_data is empty"):
        export.to_tflite(model, "int8", representative_data=np.zeros((0, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"shape \(784,\)"):
        export.to_tflite(model, "int8", representative_data=representative.reshape(-1, 784))
    with pytest.raises(ValueError, match=r"'int8\+dense'.*int8\+sparse"):
        export.parse_variant("int8+dense")
    assert export.parse_variant("float16+sparse") == ("float16", True)


def test_ops_without_tflite_builtin_are_named(small_fashion):
    layers = keras.layers
    model = keras.Sequential([
        layers.Flatten(input_shape=(28, 28)), layers.Dense(10),
        layers.Lambda(lambda t: tf.math.cumprod(t, axis=1)),  # a Flex (TF Select) op
        layers.Lambda(tf.math.erfinv),  # neither builtin nor Flex
        layers.Softmax()])
    with pytest.raises(ValueError, match=r"Cumprod, Erfinv; tfprune exports TFLite builtin ops only"):
        export.to_tflite(model)


def test_evaluate_and_benchmark_reject_bad_input(trained_lenet):
    model, x, y, _ = trained_lenet
    model_bytes = export.to_tflite(model)
    with pytest.raises(ValueError, match="1000 images and y 999 labels"):
        export.evaluate_tflite(model_bytes, x, y[:-1])
    with pytest.raises(ValueError, match=r"shape \(784,\)"):
        export.evaluate_tflite(model_bytes, x.reshape(-1, 784), y)
    with pytest.raises(ValueError, match="labels span"):
        export.evaluate_tflite(model_bytes, x[:5], np.array([0, 1, 2, 3, 10]))
    with pytest.raises(ValueError, match="runs 0"):
        export.benchmark_tflite(model_bytes, runs=0)
    latency = export.benchmark_tflite(model_bytes, runs=30, warmup=3)
    assert 0 < latency["min_ms"] <= latency["median_ms"] <= latency["p90_ms"]
    assert (latency["runs"], latency["num_threads"], latency["path"]) == (30, 1, "xnnpack")


def test_write_exported_model_writes_card_labels_and_model(trained_lenet, tmp_path):
    model, _, _, representative = trained_lenet
    model_bytes = export.to_tflite(model, "int8", representative_data=representative)
    labels = data_lib_for_labels.CLASS_NAMES["fashion_mnist"]
    card = export.write_exported_model(str(tmp_path), model_bytes, {"accuracy": 0.75, "quantization": "int8"}, labels)
    assert sorted(os.listdir(tmp_path)) == ["labels.txt", "model.tflite", "model_card.json"]  # no temp files left
    assert open(tmp_path / "model.tflite", "rb").read() == model_bytes
    assert open(tmp_path / "labels.txt").read().splitlines() == labels
    written = json.load(open(tmp_path / "model_card.json"))
    assert written == json.loads(json.dumps(card))
    assert written["size_bytes"] == len(model_bytes) and 0 < written["gzip_size_bytes"] < len(model_bytes)
    assert written["input_shape"] == [28, 28] and written["num_classes"] == 10 and written["accuracy"] == 0.75
    assert written["input_normalization"].startswith("float32 in [0,1], 28x28; fed as int8")
    assert written["tfprune_version"]
    with pytest.raises(ValueError, match="9 labels given, the model has 10 classes"):
        export.write_exported_model(str(tmp_path / "bad"), model_bytes, {}, labels[:9])
    assert not (tmp_path / "bad").exists()


def test_export_variant_figures_columns_and_files(pruned, trained_lenet, tmp_path):
    _, x, y, representative = trained_lenet
    figures = export.export_variant(pruned, "int8+sparse", x[:200], y[:200], representative, bench_runs=5,
                                    out_dir=str(tmp_path / "int8+sparse"))
    assert figures["variant"] == "int8+sparse" and figures["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert figures["path"] == "xnnpack" and figures["apis"] == "interpreter,compiled_model"
    assert figures["kernels"] == "xnnpack x3" and figures["compiled_latency_ms"] > 0
    assert 0 < figures["latency_ms"] <= figures["latency_p90_ms"] and 0 <= figures["accuracy"] <= 1
    card = json.load(open(tmp_path / "int8+sparse" / "model_card.json"))
    assert [o["kernel"] for o in card["operators"]] == ["xnnpack"] * 3 and "fc1" in card["operators"][0]["name"]
    assert card["compiled_model"]["accuracy"] == pytest.approx(figures["accuracy"], abs=0.01)
    assert card["keras_max_abs_diff"] == figures["keras_max_abs_diff"] < 0.5
    assert card["sparse_encoding"] and card["quantization"] == "int8" and card["size_bytes"] == figures["size_bytes"]
    assert open(tmp_path / "int8+sparse" / "labels.txt").read().split() == [str(i) for i in range(10)]
    columns = export.variant_columns(figures)
    assert columns["tflite_int8_sparse_accuracy"] == figures["accuracy"]
    assert "tflite_int8_sparse_size_bytes" in columns and "tflite_int8_sparse_variant" not in columns


@pytest.mark.slow
def test_export_main_prints_table_and_writes_variants(pruned, tmp_path, capsys):
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    out = str(tmp_path / "out")
    # Set, not parsed: other mains imported in the same test session add required flags to the shared FLAGS.
    with flagsaver.flagsaver(model_path=path, variants=["float", "dynamic+sparse"], data_dir=FASHION_DIR,
                             eval_images=300, representative_size=50, bench_runs=5, export_dir=out):
        export_main.main(["export"])
    printed = capsys.readouterr().out
    assert "variant" in printed and "dynamic+sparse" in printed and "xnnpack" in printed
    summary = json.load(open(os.path.join(out, "export.json")))
    assert [r["variant"] for r in summary["variants"]] == ["float", "dynamic+sparse"]
    assert summary["eval_images"] == 300
    card = json.load(open(os.path.join(out, "float", "model_card.json")))
    assert card["input_normalization"] == "float32 in [0,1], 28x28"
    assert open(os.path.join(out, "float", "labels.txt")).readline().strip() == "T-shirt/top"


def test_export_main_rejects_bad_variants_and_lambda_models(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"")
    with pytest.raises(flags.IllegalFlagValueError, match="int4"):
        with flagsaver.flagsaver():
            FLAGS(["export", f"--model_path={tmp_path / 'm.keras'}", "--variants=float,int4"])
    with pytest.raises(ValueError, match="--variants: variant 'int8' appears twice"):
        export_main.parse_variants(["int8", "int8"])
    lambda_model = keras.Sequential([keras.layers.Flatten(input_shape=(28, 28)),
                                     keras.layers.Lambda(lambda t: 2 * t), keras.layers.Dense(10)])
    for name in ("lambda.keras", "lambda.h5"):
        lambda_model.save(str(tmp_path / name))
        with pytest.raises(ValueError, match="Lambda layer with a Python `lambda`"):
            export_main.load_model(str(tmp_path / name))
