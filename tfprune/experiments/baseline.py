"""The trained model a study starts from: a reference model trained once per recipe and cached on disk, or a
user's own model file, loaded safely and checked."""

import dataclasses
import json
import os
import tempfile
import time

from absl import logging

from tfprune import distribute
from tfprune import io_utils
from tfprune import user_model
from tfprune._env import keras
from tfprune.experiments import data as data_lib
from tfprune.experiments import models


@dataclasses.dataclass
class Baseline:
    """A trained model with its test figures. ``from_cache`` says whether it was loaded instead of trained."""
    model: keras.Model
    test_accuracy: float
    test_loss: float
    train_seconds: float
    path: str
    from_cache: bool


def default_cache_dir():
    """``$TFPRUNE_CACHE`` or ``~/.cache/tfprune``; baselines go to its ``baselines/`` folder."""
    return os.environ.get("TFPRUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tfprune")


def set_seed(seed):
    """Seeds Python, NumPy and TensorFlow so that CPU runs repeat (same masks, same accuracy)."""
    keras.utils.set_random_seed(int(seed))


def cache_key(model_name, dataset, epochs, batch_size, learning_rate, seed, train_size=None):
    size = "" if train_size is None else f"-n{train_size}"
    return f"{dataset}-{model_name}-e{epochs}-b{batch_size}-lr{learning_rate:g}-s{seed}{size}"


def _load_cached(path, meta_path, key):
    """The cached ``Baseline``, or None when absent or unreadable.

    Loaded outside any strategy scope: under MultiWorkerMirroredStrategy creating a variable is a collective (worker
    0 broadcasts its initial value), so a worker loading while another cannot would stall the cluster. Whoever
    trains or evaluates it copies it into their scope (``experiment.run_point``, ``dense_finetune``).
    """
    if not (os.path.isfile(path) and os.path.isfile(meta_path)):
        return None
    try:
        model = keras.models.load_model(path)
        with open(meta_path) as f:
            meta = json.load(f)
        logging.info("baseline %s loaded from %s (test accuracy %.4f)", key, path, meta["test_accuracy"])
        return Baseline(model, meta["test_accuracy"], meta["test_loss"], meta["train_seconds"], path, True)
    except (OSError, ValueError, KeyError) as e:
        logging.warning("baseline cache %s unreadable (%s); training again", path, e)
        return None


def train_baseline(model_name, dataset, epochs=10, batch_size=128, learning_rate=1e-3, seed=0, data_dir=None,
                   cache_dir=None, train_size=None, datasets=None, verbose=1, download=True, strategy=None):
    """Returns a trained reference model, loading it when the same configuration was trained before.

    Args:
      model_name: a name of ``models.MODEL_NAMES``.
      dataset: ``mnist`` or ``fashion_mnist``.
      epochs, batch_size, learning_rate, seed: the training recipe (Adam, softmax cross-entropy).
      data_dir: passed to ``load_dataset``.
      cache_dir: where trained models are kept (default ``default_cache_dir()``).
      train_size: train on a reproducible subset of this many images (None: all); part of the cache key.
      datasets: already loaded ``((x_train, y_train), (x_test, y_test))`` to skip loading.
      verbose: Keras' progress output (0 silent, 1 progress bar, 2 one line per epoch).
      strategy: optional ``tf.distribute.Strategy``: the model is built, compiled, trained and evaluated in its
        scope; ``batch_size`` is the global batch. A cached model is loaded outside it (plain variables). The cache
        is shared across strategies (same recipe); its metadata records the strategy that trained it. In a
        multi-worker cluster the cached model is used only if every worker could load it, else all of them train
        (training steps are collectives); every worker writes its cache (atomically: a shared folder ends up with
        the same model).

    Returns:
      ``Baseline`` with the compiled model and its test accuracy (fraction 0..1) and loss.

    Raises:
      ValueError: unknown model/dataset, epochs < 1 or batch_size < 1.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs {epochs} and batch_size {batch_size} must be at least 1")
    if model_name not in models.BUILDERS:
        models.build(model_name)  # raises the error listing the known models
    (x_train, y_train), (x_test, y_test) = datasets or data_lib.load_dataset(dataset, data_dir, download=download)
    x_train, y_train = data_lib.take((x_train, y_train), train_size, seed)
    key = cache_key(model_name, dataset, epochs, batch_size, learning_rate, seed, train_size)
    folder = os.path.join(cache_dir or default_cache_dir(), "baselines")
    path = os.path.join(folder, key + ".keras")
    meta_path = os.path.join(folder, key + ".json")
    cached = _load_cached(path, meta_path, key)
    if distribute.all_workers(strategy, cached is not None):
        return cached
    set_seed(seed)
    logging.info("training baseline %s on %d images", key, len(x_train))
    with distribute.scope(strategy):
        model = models.compile_model(models.build(model_name, x_train.shape[1:]), learning_rate)
        start = time.perf_counter()
        model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=verbose, shuffle=True)
        seconds = time.perf_counter() - start
        loss, accuracy = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp_path = os.path.join(tmp, "model.keras")
        model.save(tmp_path)
        os.replace(tmp_path, path)
    io_utils.write_json_atomic(meta_path, {"test_accuracy": float(accuracy), "test_loss": float(loss),
                                           "train_seconds": seconds, "key": key, **distribute.describe(strategy)})
    logging.info("baseline %s: test accuracy %.4f, loss %.4f, %.1f s", key, accuracy, loss, seconds)
    return Baseline(model, float(accuracy), float(loss), seconds, path, False)


def file_baseline(path, datasets, allow_unsafe=False, num_classes=10):
    """The sweep's baseline from a user's trained model file, evaluated on the test set.

    Args:
      path: ``.keras``/``.h5`` file (or SavedModel folder with ``allow_unsafe``).
      datasets: ``((x_train, y_train), (x_test, y_test))`` as ``tfprune.load_dataset`` returns them.

    Returns:
      ``(Baseline, tfprune.user_model.PrunableCheck)``: the compiled model with its test accuracy (fraction) and loss
      (``train_seconds`` 0, ``from_cache`` True: nothing was trained), and what will be pruned.

    Raises:
      ModelFileError, UnsafeModelError, ValueError: see ``tfprune.user_model``'s ``load_user_model``,
      ``check_prunable``, ``check_compatible``; every message names the file.
    """
    model = user_model.load_user_model(path, allow_unsafe)
    (_, _), (x_test, y_test) = datasets
    try:
        check = user_model.check_prunable(model)
        user_model.check_compatible(model, x_test, num_classes)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    models.compile_model(model)
    loss, accuracy = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    return Baseline(model, float(accuracy), float(loss), 0.0, path, True), check
