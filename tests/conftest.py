"""Shared fixtures: paths to the read-only datasets beside the checkout, small real-data slices; child processes."""

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import flags

import tfprune  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from tfprune import stacks
from tfprune.experiments.data import builtin as data_lib
from tfprune.experiments import models
from tfprune._env import keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
MNIST_DIR = os.path.join(SHARED_DATA, "mnist")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"

# TensorFlow's C++ runtime writes these before Python runs; TF_CPP_MIN_LOG_LEVEL cannot silence them.
NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWEF]\d{4} )")

# pytest-xdist's workers start with SIGINT ignored, and an ignored signal stays ignored in every process they spawn:
# the Ctrl-C tests' children would never see theirs. The workers (and so their children) get Python's default back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# absltest helpers (create_tempdir, flagsaver) read flags; under pytest nobody parses them, so accept defaults.
if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def error_lines(stderr):
    """The non-empty lines of a child's stderr, without TensorFlow's native log lines."""
    return [line for line in stderr.splitlines() if line.strip() and not NATIVE_LOG.match(line)]


def worker_env(**extra):
    """``os.environ`` for a child TensorFlow process: no inherited TF_CONFIG, no GPU, quiet C++ logs, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def free_ports(n):
    """``n`` loopback ports free right now (for a TF_CONFIG cluster on localhost)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cluster_envs(n, **extra):
    """One ``worker_env`` per worker of an ``n``-worker MultiWorkerMirrored cluster on free loopback ports."""
    hosts = [f"127.0.0.1:{p}" for p in free_ports(n)]
    return [worker_env(TF_CONFIG=json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}),
                       **extra) for i in range(n)]


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait(timeout=10)


def log_tails(log_paths, chars=1500):
    """The last ``chars`` characters of each log file, each under a ``--- path`` header."""
    texts = []
    for path in log_paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f"--- {path}\n{f.read()[-chars:]}")
    return "\n".join(texts)


def run_processes(commands, log_paths, envs, timeout, what):
    """Runs one process per command at once, waits up to ``timeout`` s for all; returns their exit codes.

    On timeout every process is killed and the test fails with the logs' last lines (``what`` names the run).
    Output goes to log files, not pipes: a full pipe would stall a process, and with it a whole cluster.
    """
    logs = [open(path, "w+", encoding="utf-8") for path in log_paths]  # pylint: disable=consider-using-with
    procs = [subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
             for cmd, env, log in zip(commands, envs, logs)]
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _stop(procs)
        pytest.fail(f"{what} did not finish within {timeout} s; last log lines:\n" + log_tails(log_paths))
    finally:
        _stop(procs)
        for log in logs:
            log.close()
    return [p.returncode for p in procs]


def run_smoke_sweep(output_dir, *extra):
    """``python -m tfprune.sweep --flagfile=flags/smoke.flags --output_dir=<output_dir> <extra>``, in-process."""
    from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
    from tfprune.cli import sweep  # pylint: disable=g-import-not-at-top
    require(FASHION_DIR)
    with flagsaver.flagsaver():
        flags.FLAGS(["sweep", f"--flagfile={os.path.join(REPO, 'flags', 'smoke.flags')}",
                     f"--output_dir={output_dir}", *extra])
        sweep.main(["sweep"])


@functools.lru_cache(maxsize=None)
def custom_dense(k, with_units):
    """A user's dense layer (one class per stack and flag): ``w`` (in, units) and ``b`` (units,), both prunable,
    and a scale that is not; units on axis -1 if declared."""

    class MyDense(tfprune.PrunableLayer, k.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units

        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(int(input_shape[-1]), self.units), initializer="glorot_uniform")
            self.b = self.add_weight(name="b", shape=(self.units,), initializer="zeros")
            self.scale = self.add_weight(name="scale", shape=(), initializer="ones")  # not prunable

        def call(self, x):
            return k.activations.relu((x @ self.w + self.b) * self.scale)

        def get_config(self):
            return {**super().get_config(), "units": self.units}

        def get_prunable_weights(self):
            return [self.w, self.b]

    if with_units:
        MyDense.get_unit_axis = lambda self: -1
    MyDense.__name__ = MyDense.__qualname__ = "MyUnitDense" if with_units else "MyDense"
    return MyDense


def plain_layer(layers, name):
    """(A maker of a small plain layer of registered kind ``name`` from ``layers``, tf_keras' or Keras 3's, inputs
    for it (batch of 2)): every kind, for the tests that run over all of them on both stacks."""
    rng = np.random.default_rng(0)
    image, volume, seq = rng.random((2, 8, 8, 3), "float32"), rng.random((2, 4, 4, 4, 2), "float32"), rng.random(
        (2, 6, 3), "float32")
    return {
        "Dense": (lambda: layers.Dense(5), (rng.random((2, 4), "float32"),)),
        "Conv1D": (lambda: layers.Conv1D(4, 3), (seq,)),
        "Conv2D": (lambda: layers.Conv2D(4, 3), (image,)),
        "Conv3D": (lambda: layers.Conv3D(4, 2), (volume,)),
        "DepthwiseConv2D": (lambda: layers.DepthwiseConv2D(3, depth_multiplier=2), (image,)),
        "Embedding": (lambda: layers.Embedding(10, 4), (rng.integers(0, 10, (2, 5)),)),
        "Conv1DTranspose": (lambda: layers.Conv1DTranspose(4, 3), (seq,)),
        "Conv2DTranspose": (lambda: layers.Conv2DTranspose(4, 3), (image,)),
        "Conv3DTranspose": (lambda: layers.Conv3DTranspose(4, 2), (volume,)),
        "SeparableConv1D": (lambda: layers.SeparableConv1D(4, 3), (seq,)),
        "SeparableConv2D": (lambda: layers.SeparableConv2D(4, 3), (image,)),
        "SimpleRNN": (lambda: layers.SimpleRNN(4), (seq,)),
        "GRU": (lambda: layers.GRU(4), (seq,)),
        "LSTM": (lambda: layers.LSTM(4), (seq,)),
        "EinsumDense": (lambda: layers.EinsumDense("ab,bc->ac", output_shape=5, bias_axes="c"),
                        (rng.random((2, 4), "float32"),)),
        "MultiHeadAttention": (lambda: layers.MultiHeadAttention(2, 3), (seq, seq)),
        "Bidirectional": (lambda: layers.Bidirectional(layers.LSTM(4)), (seq,)),
    }[name]


def squeeze_and_excite(k, target, head, squeeze=None):
    """x (6, 6, 2) -> conv (8 filters, relu) -> scale (Multiply): conv times excite (Dense 8, sigmoid) of its pooled
    channels (gap; through a ``squeeze`` Dense of that many units, relu, when given), reshaped to ``target`` (shape)
    -> ``head(layers, scaled)`` -> out (Dense 3)."""
    L = k.layers
    x = k.Input((6, 6, 2))
    conv = L.Conv2D(8, 3, activation="relu", name="conv")(x)
    pooled = L.GlobalAveragePooling2D(name="gap")(conv)
    if squeeze:
        pooled = L.Dense(squeeze, activation="relu", name="squeeze")(pooled)
    excite = L.Reshape(target, name="shape")(L.Dense(8, activation="sigmoid", name="excite")(pooled))
    scaled = L.Multiply(name="scale")([conv, excite])
    return k.Model(x, L.Dense(3, name="out")(head(L, scaled)))


def require(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} is absent on this machine")
    return path

def trained_case(request, small_fashion, stacks_by_name, build):
    """For a ``(kind, stack name)`` fixture param: (kind, ``build(keras module, kind)`` compiled and trained one epoch
    on ``small_fashion`` with seed 0, (x, y), the first 300 test images)."""
    kind, stack = request.param
    (x, y), (xt, _) = small_fashion
    k = stacks_by_name[stack]
    k.utils.set_random_seed(0)
    model = models.compile_model(build(k, kind))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return kind, model, (x, y), xt[:300]


def reloaded_copies(model, tmp_path):
    """``model`` saved in every format its stack writes (``.keras``; ``.h5`` too for tf_keras) and loaded back."""
    stack = stacks.of(model)
    out = []
    for suffix in (".keras", ".h5") if stack.version == "2" else (".keras",):
        path = str(tmp_path / f"reloaded{suffix}")
        model.save(path)
        out.append(stack.load_model(path))
    return out


def run_on_jax(script, tmp_path):
    """Runs ``script`` (Python source) in a child process on Keras 3's JAX backend with argv ``[tmp_path, tests
    folder, Fashion-MNIST folder]``; returns the JSON its last output line holds (skips without JAX or the data)."""
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path), os.path.dirname(__file__),
                           require(FASHION_DIR)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])



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


sys.path.insert(0, os.path.join(REPO, "scripts"))
import own_data  # noqa: E402  pylint: disable=wrong-import-position

OWN_CLASSES = [0, 1, 7, 8, 9]  # T-shirt/top, Trouser, Sneaker, Bag, Ankle boot


@pytest.fixture(scope="session")
def own_splits():
    """"Your own data": 5 real Fashion-MNIST classes padded to 32x32x3, 1,500 training, 300 validation, 500 test."""
    require(FASHION_DIR)
    return own_data.make_splits(OWN_CLASSES, train=1500, val=300, test=500, data_dir=FASHION_DIR)


@pytest.fixture(scope="session")
def own_npz(own_splits, tmp_path_factory):
    """``own_splits`` as an npz archive (x_/y_ train, val, test; class_names)."""
    path = str(tmp_path_factory.mktemp("own") / "fm5.npz")
    own_data.write_npz(path, *own_splits)
    return path


@pytest.fixture(scope="session")
def own_images(own_splits, tmp_path_factory):
    """``own_splits`` as an image folder (train/, val/, test/ with a folder of PNGs per class)."""
    root = str(tmp_path_factory.mktemp("own") / "fm5")
    own_data.write_image_folder(root, *own_splits)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Keeps tests away from the user's Keras cache and baseline cache."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("TFPRUNE_CACHE", str(tmp_path / "tfprune_cache"))
    np.random.seed(0)
