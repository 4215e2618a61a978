"""SimpleRNN, GRU and LSTM on both Keras stacks: exact counts over the unit kernel, masks held through fit (the
variables hold the zeros), save/load, strip, shrinking with outputs equal and the analytic parameter count, TFLite
export (unrolled, stateless, every quantization), and the JAX backend.

Real data: Fashion-MNIST row by row (each image as 28 steps of 28 features).
"""

import json
import os

import numpy as np
import pytest

from conftest import FASHION_DIR, require, reloaded_copies, run_on_jax, trained_case
from tfprune import make_prunable, prune, prune_count, shrink, stacks, strip, tflite
from tfprune.layers import recurrent
from tfprune.layers import registry
from tfprune._env import keras, keras3
from tfprune.callbacks import RankPruning
from tfprune.experiments import models

STACKS = {"tf_keras": keras, "keras3": keras3}
KINDS = tuple(recurrent.GATES)
UNITS = (12, 10)


def build(k, kind, units=UNITS):
    """Two recurrent layers (the first returns its sequence) and a softmax classifier, on 28 steps of 28 rows."""
    L, cls = k.layers, getattr(k.layers, kind)
    return k.Sequential([k.Input((28, 28)), cls(units[0], return_sequences=True, name="r1"),
                         cls(units[1], name="r2"), L.Dense(10, activation="softmax", name="logits")])


def params(kind, units, inputs=28, classes=10):
    """The analytic parameter count of ``build``'s model with ``units`` left (GRU: reset_after, two biases)."""
    gates = recurrent.GATES[kind]
    biases = 2 if kind == "GRU" else 1
    total, width = 0, inputs
    for u in units:
        total += gates * (width * u + u * u + biases * u)
        width = u
    return total + width * classes + classes


def raw_variables(layer):
    """The stored kernel and recurrent kernel of a prunable recurrent layer (not masked by any property)."""
    cell = layer.cell
    if hasattr(cell, "variable"):  # Keras 3
        return [keras3.ops.convert_to_numpy(cell.variable(n)) for n in ("kernel", "recurrent_kernel")]
    return [cell.kernel.numpy(), cell.recurrent_kernel.numpy()]


@pytest.fixture(scope="module", params=[(kind, stack) for kind in KINDS for stack in STACKS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def case(request, small_fashion):
    return trained_case(request, small_fashion, STACKS, build)


def test_weight_and_unit_pruning_are_exact_over_every_gate(case):
    kind, model, _, _ = case
    gates = recurrent.GATES[kind]
    pruned = prune(make_prunable(model), 0.5, "weight")
    for name, (rows, units) in (("r1", (28 + 12, 12)), ("r2", (12 + 10, 10))):
        kernel = registry.effective_kernel(pruned.get_layer(name))
        assert kernel.shape == (rows, gates, units)  # kernel and recurrent kernel, by gate, units last
        assert int((kernel == 0).sum()) == prune_count(0.5, kernel.size), name
    units = prune(make_prunable(model), 0.5, "unit")
    for name, width in (("r1", 12), ("r2", 10)):
        layer = units.get_layer(name)
        weights = registry.masked_weights(layer)
        dead = ~registry.kernel_mask(layer).reshape(-1, width).any(axis=0)
        assert int(dead.sum()) == prune_count(0.5, width), name
        columns = recurrent.gate_columns(np.flatnonzero(dead), width, gates)
        for w in weights:  # a pruned unit loses its column in every gate of both kernels, and its biases
            assert not w[..., columns].any()
        assert weights[0][:, recurrent.gate_columns(np.flatnonzero(~dead), width, gates)].any(axis=0).all()
    assert not np.any(np.all(registry.effective_kernel(units.get_layer("logits")) == 0, axis=0))


@pytest.mark.slow
def test_masks_hold_through_fit_in_the_variables_and_strip_bakes_them_in(case):
    kind, model, (x, y), xt = case
    prunable = models.compile_model(make_prunable(model))
    prunable.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0, callbacks=[RankPruning("weight", 0.7)])
    for name in ("r1", "r2"):
        layer = prunable.get_layer(name)
        keep = registry.kernel_mask(layer)
        assert keep.mean() == pytest.approx(0.3, abs=0.01)
        # Constraints re-apply the masks after every update (tf_keras, Keras 3 on TensorFlow): stored zeros.
        stored = recurrent.unit_kernel(*raw_variables(layer), recurrent.GATES[kind])
        assert np.all(stored[~keep] == 0) and np.any(stored[keep] != 0)
    plain = strip(prunable)
    assert type(plain.get_layer("r1")) is type(model.get_layer("r1"))
    assert plain.count_params() == model.count_params()  # the masks are not parameters
    np.testing.assert_array_equal(registry.effective_kernel(plain.get_layer("r2"))[
        ~registry.kernel_mask(prunable.get_layer("r2"))], 0)
    stack = stacks.of(plain)
    np.testing.assert_allclose(stack.to_numpy(plain(xt[:64])), stack.to_numpy(prunable(xt[:64])), atol=1e-6)


def test_save_and_load_keep_the_masks(case, tmp_path):
    _, model, _, xt = case
    pruned = prune(make_prunable(model), 0.6, "unit")
    stack = stacks.of(pruned)
    for loaded in reloaded_copies(pruned, tmp_path):
        assert isinstance(loaded.get_layer("r1"), registry.PRUNABLE_CLASSES)
        np.testing.assert_array_equal(registry.kernel_mask(loaded.get_layer("r1")),
                                      registry.kernel_mask(pruned.get_layer("r1")))
        np.testing.assert_allclose(stack.to_numpy(loaded(xt[:64])), stack.to_numpy(pruned(xt[:64])), atol=1e-6)


def test_unit_pruned_model_shrinks_to_the_analytic_size(case):
    kind, model, _, xt = case
    plain = strip(prune(make_prunable(model), 0.5, "unit"))
    result = shrink(plain)
    assert [result.model.get_layer(n).units for n in ("r1", "r2")] == [6, 5]
    assert result.model.count_params() == params(kind, (6, 5)) == result.report.params_after
    assert result.report.params_before == params(kind, UNITS) and not result.report.kept
    assert result.report.macs_after < result.report.macs_before
    stack = stacks.of(plain)
    np.testing.assert_allclose(stack.to_numpy(result.model(xt)), stack.to_numpy(plain(xt)), atol=1e-5)


def test_dead_units_with_a_non_zero_candidate_bias_are_kept(small_fashion):
    """A unit whose weights are all zero but whose cell-candidate bias is not still outputs a value that changes
    over time: shrinking must keep it and say why."""
    (_, _), (xt, _) = small_fashion
    model = build(keras, "LSTM")
    model(xt[:2])
    prunable = make_prunable(model)
    layer = prunable.get_layer("r1")
    keep = np.ones(registry.kernel_shape(layer), bool)
    keep[..., :3] = False  # units 0-2 lose every weight, not their biases
    layer.set_masks(keep)
    bias = layer.cell.bias.numpy()
    bias[2 * 12:2 * 12 + 3] = 0.5  # the candidate (c) gate of units 0-2
    layer.cell.bias.assign(bias)
    plain = strip(prunable)
    result = shrink(plain)
    assert result.model.get_layer("r1").units == 12
    assert "r1: 3 dead unit(s) kept: their outputs are not 0 (biases left non-zero)" in result.report.kept
    np.testing.assert_allclose(result.model(xt[:50]).numpy(), plain(xt[:50]).numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.slow
def test_shrunk_models_export_to_tflite_unrolled_and_stateless(small_fashion, kind):
    (x, y), (xt, yt) = small_fashion
    keras.utils.set_random_seed(0)
    model = models.compile_model(build(keras, kind))
    model.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0)
    small = models.compile_model(shrink(strip(prune(make_prunable(model), 0.5, "unit"))).model)
    interpreter, _ = tflite.load_interpreter(tflite.to_tflite(small), batch=50)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}  # pylint: disable=protected-access
    assert not ops & {"UNIDIRECTIONAL_SEQUENCE_LSTM", "WHILE"}  # unrolled: no op that keeps state between invokes
    first = tflite.predict_tflite(interpreter, xt[:50])
    np.testing.assert_allclose(tflite.predict_tflite(interpreter, xt[:100]), small.predict(xt[:100], verbose=0),
                               atol=1e-5)
    np.testing.assert_array_equal(tflite.predict_tflite(interpreter, xt[:50]), first)  # the same input, same output
    if kind != "SimpleRNN":
        # The GRU's unrolled int8 export: test_sensitivity_and_export_commands_take_a_gru_model_file (the same
        # build, int8 calibrated and within 0.05 of float); the LSTM's is the same path (the sequences benchmark)
        return
    # int8 calibrates (a rolled SimpleRNN/GRU's WHILE loop crashed the converter) and keeps the accuracy.
    int8 = tflite.evaluate_tflite(tflite.to_tflite(small, "int8", representative_data=x[:100]), xt[:200], yt[:200])
    assert abs(int8["accuracy"] - small.evaluate(xt[:200], yt[:200], verbose=0)[1]) <= 0.05


def test_export_of_sequences_without_a_fixed_length_is_refused():
    model = keras.Sequential([keras.Input((None, 28)), keras.layers.GRU(4, name="gru"), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match=r"layer 'gru' \(GRU\) reads sequences of no fixed length \(input shape "
                                         r"\(None, None, 28\)\); TFLite export unrolls recurrent layers"):
        tflite.to_tflite(model)


JAX_RUN = """
import json, sys
import numpy as np, keras, tfprune
from tfprune.experiments import models
from tfprune.experiments.data import builtin as data
sys.path.insert(0, sys.argv[2])
import test_recurrent as t
(x, y), _ = data.load_dataset("fashion_mnist", sys.argv[3], download=False)
x, y = x[:256], y[:256]
out = {}
# SimpleRNN's and LSTM's cells are masked by the same properties (an LSTM trained, reloaded, stripped and shrunk
# on JAX: tests/test_bidirectional.py::test_masks_hold_on_the_jax_backend); one model keeps the child's compiles few.
for kind in ("GRU",):
    keras.utils.set_random_seed(0)
    model = models.compile_model(tfprune.make_prunable(t.build(keras, kind)))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[tfprune.callbacks.RankPruning("unit", 0.5)])
    model.save(sys.argv[1] + f"/{kind}.keras")
    reloaded = keras.models.load_model(sys.argv[1] + f"/{kind}.keras")
    plain = tfprune.strip(model)
    small = tfprune.shrink(plain).model
    expected = np.asarray(model(x[:64], training=False))
    out[kind] = {"units": [small.get_layer(n).units for n in ("r1", "r2")],
                 "diffs": [float(np.abs(np.asarray(m(x[:64], training=False)) - expected).max())
                           for m in (reloaded, plain, small)]}
print(json.dumps({"backend": keras.backend.backend(), "kinds": out}))
"""


@pytest.mark.slow
def test_masks_hold_on_the_jax_backend(tmp_path):
    result = run_on_jax(JAX_RUN, tmp_path)
    assert result["backend"] == "jax" and set(result["kinds"]) == {"GRU"}
    for kind, figures in result["kinds"].items():
        # On JAX the cell's properties mask the forward pass: the stripped, reloaded and shrunk models compute
        # what the prunable one did through training.
        assert figures["units"] == [6, 5], kind
        assert max(figures["diffs"]) <= 1e-5, kind


def test_recurrent_layers_inside_other_wrappers_are_listed_with_the_reason():
    from tfprune.files import user_model
    for k in STACKS.values():
        L = k.layers
        model = k.Sequential([k.Input((28, 28)), L.Bidirectional(L.LSTM(8, return_sequences=True), name="bi"),
                              L.TimeDistributed(L.Dense(4), name="td"), L.GRU(6, name="gru"),
                              L.Dense(10, activation="softmax", name="logits")])
        check = user_model.check_prunable(model)
        assert check.prunable == ("bi", "gru", "logits")  # Bidirectional: tests/test_bidirectional.py
        assert check.skipped["td"] == ("TimeDistributed wraps a Dense: layers inside wrappers are not pruned yet; its "
                                       "weights stay dense")


@pytest.mark.slow
def test_sensitivity_and_export_commands_take_a_gru_model_file(small_fashion, tmp_path, capsys):
    from absl import flags
    from absl.testing import flagsaver
    from tfprune.cli import export as export_main
    from tfprune.cli import sensitivity as sensitivity_main
    (x, y), _ = small_fashion
    keras.utils.set_random_seed(0)
    model = models.compile_model(build(keras, "GRU"))
    model.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0)
    path, pruned_path = str(tmp_path / "gru.keras"), str(tmp_path / "pruned.keras")
    model.save(path)
    prune(make_prunable(model), 0.5, "unit").save(pruned_path)
    out = str(tmp_path / "sens")
    with flagsaver.flagsaver():
        flags.FLAGS(["sensitivity", f"--model_path={path}", "--dataset=fashion_mnist",
                     f"--data_dir={require(FASHION_DIR)}", "--method=unit", "--sparsities=0,50", "--eval_size=500",
                     "--max_drop=100", f"--output_dir={out}"])
        sensitivity_main.main(["sensitivity"])
    with open(os.path.join(out, "plan.json")) as f:
        assert json.load(f)["layer_sparsity"] == {"r1": 0.5, "r2": 0.5}  # unit pruning leaves the classifier alone
    export_dir = str(tmp_path / "export")
    with flagsaver.flagsaver(model_path=pruned_path, variants=["float", "int8"], data_dir=FASHION_DIR,
                             eval_images=300, representative_size=50, bench_runs=5, export_dir=export_dir):
        export_main.main(["export"])
    assert "int8" in capsys.readouterr().out
    summary = json.load(open(os.path.join(export_dir, "export.json")))
    accuracy = {r["variant"]: r["accuracy"] for r in summary["variants"]}
    assert set(accuracy) == {"float", "int8"} and abs(accuracy["float"] - accuracy["int8"]) <= 0.05
