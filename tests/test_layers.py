"""tfprune's tf_keras Dense/Conv2D (tfprune.layers.dense, conv): masks survive training and saving; configs
round-trip."""

import os

import numpy as np
from absl.testing import parameterized

from tfprune import pruning
import tfprune as layers
from tfprune.layers import registry
from tfprune.experiments import models
from tfprune._env import keras


def _pruned_model(name, method="weight", sparsity=0.8):
    model = pruning.make_prunable(models.build(name))
    pruning.prune(model, sparsity, method)
    return models.compile_model(model)


class LayersTest(parameterized.TestCase):

    @parameterized.product(name=["lenet_300_100", "small_cnn"], method=["weight", "unit"])
    def test_pruned_weights_stay_zero_through_fit(self, name, method):
        model = _pruned_model(name, method)
        before = {r.name: r.zeros for r in pruning.sparsity_report(model)}
        rng = np.random.default_rng(0)
        x = rng.random((256, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, 256)
        model.fit(x, y, epochs=2, batch_size=32, verbose=0)
        for layer in model.layers:
            if registry.is_prunable(layer):
                mask = layer.kernel_mask
                self.assertTrue(np.all(layer.masked_kernel()[mask == 0] == 0))
                if method == "unit" and layer.use_bias:
                    dead = ~np.asarray(mask, bool).reshape(-1, mask.shape[-1]).any(0)
                    self.assertTrue(np.all(layer.masked_weights()[1][dead] == 0))
        after = {r.name: r.zeros for r in pruning.sparsity_report(model)}
        for key, zeros in before.items():
            self.assertGreaterEqual(after[key], zeros)

    @parameterized.parameters(".keras", ".h5")
    def test_save_and_load_keep_masks(self, ext):
        model = _pruned_model("small_cnn", "unit", 0.5)
        path = os.path.join(self.create_tempdir().full_path, "model" + ext)
        model.save(path)
        loaded = keras.models.load_model(path, custom_objects=registry.custom_objects())
        self.assertIsInstance(loaded.get_layer("conv2"), layers.PrunableConv2D)
        self.assertIsInstance(loaded.get_layer("fc1"), layers.PrunableDense)
        for a, b in zip(model.layers, loaded.layers):
            if registry.is_prunable(a):
                np.testing.assert_array_equal(a.kernel_mask, b.kernel_mask)
        x = np.random.default_rng(1).random((4, 28, 28), dtype=np.float32)
        np.testing.assert_allclose(model.predict(x, verbose=0), loaded.predict(x, verbose=0), atol=1e-6)

    def test_config_round_trip(self):
        layer = layers.PrunableDense(7, activation="relu", use_bias=False, name="d")
        clone = layers.PrunableDense.from_config(layer.get_config())
        self.assertEqual((clone.units, clone.use_bias, clone.name), (7, False, "d"))
        clone.build((None, 3))
        self.assertEqual(clone.kernel_mask.shape, (3, 7))
        self.assertIsNone(clone.bias_mask)
        self.assertEqual([m.trainable for m in clone.mask_variables()], [False])
