"""tfprune.pruning: make_prunable, prune (layer/global, weight/unit), strip, reports, and every bad input."""

import numpy as np
from absl.testing import parameterized

from tfprune import pruning
from tfprune import PrunableDense
from tfprune.layers import registry
from tfprune.experiments import models
from tfprune._env import keras

X = np.random.default_rng(0).random((16, 28, 28), dtype=np.float32)


def _functional():
    inputs = keras.Input((28, 28))
    flat = keras.layers.Flatten()(inputs)
    a = keras.layers.Dense(32, activation="relu", name="a")(flat)
    b = keras.layers.Dense(32, activation="relu", name="b")(flat)
    merged = keras.layers.Concatenate()([a, b])
    out = keras.layers.Dense(10, activation="softmax", name="out")(merged)
    return keras.Model(inputs, out, name="functional")


def _masks(model):
    return {l.name: l.kernel_mask.copy() for l in model.layers if registry.is_prunable(l)}


class MakePrunableTest(parameterized.TestCase):

    @parameterized.parameters("fc_1000", "lenet_300_100", "small_cnn")
    def test_identical_outputs_and_types(self, name):
        model = models.build(name)
        prunable = pruning.make_prunable(model)
        np.testing.assert_array_equal(model.predict(X, verbose=0), prunable.predict(X, verbose=0))
        kinds = {type(l).__name__ for l in prunable.layers}
        self.assertNotIn("Dense", kinds)
        self.assertNotIn("Conv2D", kinds)

    def test_functional_model(self):
        model = _functional()
        prunable = pruning.make_prunable(model)
        np.testing.assert_array_equal(model.predict(X, verbose=0), prunable.predict(X, verbose=0))
        self.assertIsInstance(prunable.get_layer("b"), PrunableDense)
        pruning.prune(prunable, 0.5, "unit")
        self.assertEqual(pruning.default_layers(prunable, "unit"), ["a", "b"])
        self.assertEqual({r.name: r.units_kept for r in pruning.sparsity_report(prunable)},
                         {"a": 16, "b": 16, "out": 10})

    def test_no_prunable_layer(self):
        model = keras.Sequential([keras.layers.Flatten(input_shape=(28, 28)), keras.layers.ReLU()], name="empty")
        with self.assertRaisesRegex(ValueError, "model 'empty' has no layer tfprune prunes \\(Dense, Conv1D, Conv2D, "
                                                "Conv3D, DepthwiseConv2D, Embedding, Conv1DTranspose, "
                                                "Conv2DTranspose, Conv3DTranspose, SeparableConv1D, "
                                                "SeparableConv2D, SimpleRNN, GRU, LSTM, EinsumDense, "
                                                "MultiHeadAttention, Bidirectional; "
                                                "layers: .*Flatten, ReLU"):
            pruning.make_prunable(model)

    def test_subclassed_model(self):
        class Sub(keras.Model):
            def __init__(self):
                super().__init__()
                self.d = keras.layers.Dense(3)

            def call(self, x):
                return self.d(x)
        with self.assertRaisesRegex(ValueError, "subclassed Model"):
            pruning.make_prunable(Sub())


class PruneTest(parameterized.TestCase):

    @parameterized.product(method=["weight", "unit"], scope=["layer", "global"], sparsity=[0.25, 0.6, 0.9])
    def test_exact_counts(self, method, scope, sparsity):
        model = pruning.make_prunable(models.build("lenet_300_100"))
        pruning.prune(model, sparsity, method, scope)
        report = {r.name: r for r in pruning.sparsity_report(model)}
        names = ["fc1", "fc2", "logits"] if method == "weight" else ["fc1", "fc2"]
        counts = ([report[n].weights for n in names] if method == "weight" else [report[n].units for n in names])
        pruned = ([report[n].zeros for n in names] if method == "weight"
                  else [report[n].units - report[n].units_kept for n in names])
        if scope == "layer":
            self.assertEqual(pruned, [int(np.floor(sparsity * c + 0.5)) for c in counts])
        else:
            self.assertEqual(sum(pruned), int(np.floor(sparsity * sum(counts) + 0.5)))
        if method == "unit":
            self.assertEqual(report["logits"].units_kept, 10)
            fc1 = model.get_layer("fc1")
            dead = fc1.kernel_mask.sum(0) == 0
            self.assertTrue(np.all(fc1.masked_weights()[1][dead] == 0))

    def test_per_layer_plan(self):
        model = pruning.make_prunable(models.build("fc_1000"))
        pruning.prune(model, layers={"fc2": 0.9, "fc3": 0.5})
        pruned = {name: float((mask == 0).mean()) for name, mask in _masks(model).items()}
        self.assertEqual(pruned, {"fc1": 0.0, "fc2": 0.9, "fc3": 0.5, "fc4": 0.0, "logits": 0.0})

    def test_masks_only_shrink(self):
        model = pruning.make_prunable(models.build("lenet_300_100"))
        pruning.prune(model, 0.8)
        first = _masks(model)
        pruning.prune(model, 0.5)  # lower target: masks stay as they are
        for name, mask in _masks(model).items():
            np.testing.assert_array_equal(mask, first[name])

    @parameterized.parameters("weight", "unit")
    def test_strip_equals_prunable(self, method):
        model = pruning.make_prunable(models.build("small_cnn"))
        pruning.prune(model, 0.7, method)
        stripped = pruning.strip(model)
        self.assertEqual({type(l).__name__ for l in stripped.layers} & {"PrunableDense", "PrunableConv2D"}, set())
        np.testing.assert_allclose(model.predict(X, verbose=0), stripped.predict(X, verbose=0), atol=1e-6)
        self.assertEqual(pruning.sparsity_report(stripped), pruning.sparsity_report(model))

    def test_global_per_layer_values_rejected(self):
        model = pruning.make_prunable(models.build("lenet_300_100"))
        with self.assertRaisesRegex(ValueError, "global scope ranks all layers against one sparsity"):
            pruning.prune(model, scope="global", layers={"fc1": 0.5, "fc2": 0.9})


class BadInputTest(parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.model = pruning.make_prunable(models.build("lenet_300_100"))
        pruning.prune(self.model, 0.3)
        self.before = _masks(self.model)

    def tearDown(self):
        for name, mask in _masks(self.model).items():  # nothing was modified by the failed call
            np.testing.assert_array_equal(mask, self.before[name])
        super().tearDown()

    @parameterized.named_parameters(
        ("sparsity_one", dict(sparsity=1.0), r"sparsity of layer 'fc1' 1.0 is outside \[0, 1\)"),
        ("sparsity_negative", dict(sparsity=-0.2), r"-0.2 is outside"),
        ("sparsity_nan", dict(sparsity=float("nan")), r"nan is outside"),
        ("unknown_layer", dict(sparsity=0.5, layers=["fc9"]), r"layer 'fc9' does not exist.*fc1, fc2, logits"),
        ("not_prunable", dict(sparsity=0.5, layers=["flatten"]), r"layer 'flatten' \(Flatten\) cannot be pruned"),
        ("unit_output", dict(sparsity=0.5, method="unit", layers=["logits"]), r"'logits' is a model output"),
        ("bad_method", dict(sparsity=0.5, method="channel"), r"method 'channel' is not one of"),
        ("bad_scope", dict(sparsity=0.5, scope="net"), r"scope 'net' is not one of"),
        ("bad_plan_value", dict(layers={"fc1": 0.5, "fc2": 2.0}), r"sparsity of layer 'fc2' 2.0"),
        ("bad_layers_type", dict(sparsity=0.5, layers="fc1"), r"layers 'fc1' must be None"),
    )
    def test_error(self, kwargs, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            pruning.prune(self.model, **kwargs)

    def test_nan_kernel(self):
        fc2 = self.model.get_layer("fc2")
        kernel = fc2.kernel.numpy()
        kernel[0, 0] = np.nan
        fc2.kernel.assign(kernel)
        with self.assertRaisesRegex(ValueError, r"cannot prune model 'lenet_300_100': .*NaN/inf"):
            pruning.prune(self.model, 0.9)

    def test_plain_model_hint(self):
        with self.assertRaisesRegex(ValueError, r"no prunable layer \(call tfprune.make_prunable"):
            pruning.prune(models.build("fc_1000"), 0.5)
