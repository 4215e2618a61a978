"""Shared fixtures: paths to the read-only datasets beside the checkout, small real-data slices."""

import os

import numpy as np
import pytest
from absl import flags

import tfprune  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from tfprune import data as data_lib
from tfprune import models
from tfprune._env import keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
MNIST_DIR = os.path.join(SHARED_DATA, "mnist")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"

# absltest helpers (create_tempdir, flagsaver) read flags; under pytest nobody parses them, so accept defaults.
if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def require(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} is absent on this machine")
    return path


@pytest.fixture(scope="session")
def fashion():
    """Full Fashion-MNIST from the system folder (skips when the Debian package is not installed)."""
    return data_lib.load_dataset("fashion_mnist", require(FASHION_DIR), download=False)


@pytest.fixture(scope="session")
def small_fashion(fashion):
    """2,000 training and 1,000 test images of real Fashion-MNIST, fixed subset."""
    (x_train, y_train), (x_test, y_test) = fashion
    return data_lib.take((x_train, y_train), 2000, 0), data_lib.take((x_test, y_test), 1000, 1)


@pytest.fixture(scope="module")
def trained_lenet(small_fashion):
    """(LeNet-300-100 trained 1 epoch on ``small_fashion``, its 1,000 test images, labels, 300 training images)."""
    (x_train, y_train), (x_test, y_test) = small_fashion
    keras.utils.set_random_seed(0)
    model = models.compile_model(models.build("lenet_300_100"))
    model.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    return model, x_test, y_test, x_train[:300]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Keeps tests away from the user's Keras cache and baseline cache."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("TFPRUNE_CACHE", str(tmp_path / "tfprune_cache"))
    np.random.seed(0)
