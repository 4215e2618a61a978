"""The trained model a study starts from: a reference model trained once per recipe and cached on disk, or a
user's own model file, loaded safely and checked."""

import contextlib
import dataclasses
import json
import math
import os
import re
import tempfile
import time
import zipfile

from absl import logging

from tfprune import distribute
from tfprune.files import io_utils
from tfprune.files import locks
from tfprune import stacks
from tfprune.files import user_model
from tfprune.experiments.data import sources as data_sources
from tfprune.experiments.data import dataset as dataset_lib
from tfprune.experiments import models
from tfprune.experiments.results import records
from tfprune.experiments.config import ConfigError


@dataclasses.dataclass
class Baseline:
    """A trained model with its test figures. ``from_cache`` says whether it was loaded instead of trained."""
    model: object  # a compiled Keras model (tf_keras or Keras 3)
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
    stacks.seed_all(seed)


class TrainingDiverged(ConfigError):
    """Training ended with a non-finite loss (too high a learning rate?): nothing is cached."""


def cache_key(model_name, dataset, epochs, batch_size, learning_rate, seed, train_size=None, data_digest=None,
              keras="2"):
    """The cache entry's name: every setting of the recipe, written exactly, the digest of the data trained and
    evaluated on (so a baseline trained on other data under the same dataset name is never reused), and for Keras 3
    models the stack and backend (``-k3jax``)."""
    size = "" if train_size is None else f"-n{train_size}"
    dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("_")[-60:]  # npz:/a/b.npz -> npz_a_b.npz
    data = "" if data_digest is None else f"-d{data_digest}"
    stack = stacks.by_version(keras)
    built_with = "" if stack is stacks.TF_KERAS else f"-k3{stack.backend}"
    return (f"{dataset}-{model_name}-e{epochs}-b{batch_size}-lr{records.format_k(learning_rate)}-s{seed}{size}"
            f"{data}{built_with}")


def _load_cached(path, meta_path, key, stack):
    """The cached ``Baseline``, or None when absent or unreadable.

    Loaded outside any strategy scope: under MultiWorkerMirroredStrategy creating a variable is a collective (worker
    0 broadcasts its initial value), so a worker loading while another cannot would stall the cluster. Whoever
    trains or evaluates it copies it into their scope (``experiment.run_point``, ``dense_finetune``).
    """
    if not (os.path.isfile(path) and os.path.isfile(meta_path)):
        return None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        figures = [float(meta[k]) for k in ("test_accuracy", "test_loss", "train_seconds")]
        if not all(math.isfinite(v) for v in figures):
            raise ValueError(f"non-finite figures {figures}")
        model = stack.load_model(path)
        logging.info("baseline %s loaded from %s (test accuracy %.4f)", key, path, figures[0])
        return Baseline(model, *figures, path, True)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        # A damaged cache entry is only a lost result: retrain it (safe), and say so.
        logging.warning("baseline cache %s or %s unreadable (%s: %s); training again", path, meta_path,
                        type(e).__name__, e)
        return None


def train_baseline(model_name, dataset, epochs=10, batch_size=128, learning_rate=1e-3, seed=0, data_dir=None,
                   cache_dir=None, train_size=None, datasets=None, verbose=1, download=True, strategy=None,
                   data_digest=None, on_wait=None, keras="2"):
    """Returns a trained reference model, loading it when the same configuration was trained before.

    Args:
      model_name: a name of ``models.MODEL_NAMES``.
      dataset: the dataset's name (``tfprune.load_data``): loaded when ``datasets`` is None, part of the cache key.
      epochs, batch_size, learning_rate, seed: the training recipe (Adam, softmax cross-entropy).
      data_dir: passed to ``load_data``.
      cache_dir: where trained models are kept (default ``default_cache_dir()``).
      train_size: train on a reproducible subset of this many images (None: all); part of the cache key.
      datasets: the already loaded data (a ``Dataset``, or ``((x_train, y_train), (x_test, y_test))`` arrays): the
        model is built for its input shape and class count.
      verbose: Keras' progress output (0 silent, 1 progress bar, 2 one line per epoch).
      strategy: optional ``tf.distribute.Strategy``: the model is built, compiled, trained and evaluated in its
        scope; ``batch_size`` is the global batch. A cached model is loaded outside it (plain variables). The cache
        is shared across strategies (same recipe); its metadata records the strategy that trained it. In a
        multi-worker cluster the cached model is used only if every worker could load it, else all of them train
        (training steps are collectives); every worker writes its cache (atomically: a shared folder ends up with
        the same model).
      keras: ``"2"`` (tf_keras) or ``"3"`` (Keras 3 on its configured backend): which stack builds the model.
      data_digest: ``data.data_digest`` of the (subset) data, when the caller has it (else computed here).
      on_wait: called with the holder's description when another process is training the same cache entry; this
        call then waits for it and loads its result (outside a multi-worker cluster).

    Returns:
      ``Baseline`` with the compiled model and its test accuracy (fraction 0..1) and loss.

    Raises:
      ValueError: unknown model/dataset, epochs < 1 or batch_size < 1.
      TrainingDiverged: the training loss or the test loss is not finite; nothing is cached.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs {epochs} and batch_size {batch_size} must be at least 1")
    if model_name not in models.BUILDERS:
        models.build(model_name)  # raises the error listing the known models
    data = dataset_lib.as_dataset(datasets) if datasets is not None else data_sources.load(dataset, data_dir,
                                                                                            download=download)
    data = data.subset_train(train_size, seed)
    if data_digest is None:
        data_digest = data.digest()
    key = cache_key(model_name, dataset, epochs, batch_size, learning_rate, seed, train_size, data_digest, keras)
    folder = os.path.join(cache_dir or default_cache_dir(), "baselines")
    path = os.path.join(folder, key + ".keras")
    meta_path = os.path.join(folder, key + ".json")
    if distribute.in_cluster(strategy):  # workers train together (collectives): a lock would deadlock them
        lock = contextlib.nullcontext()
    else:  # one process trains an entry at a time; a second one waits, then loads what the first wrote
        wait = (lambda holder: on_wait(locks.describe(holder))) if on_wait else None
        lock = locks.exclusive(os.path.join(folder, key + ".lock"), wait=True, on_wait=wait)
    with lock:
        return _load_or_train(model_name, data, epochs, batch_size, learning_rate, seed, verbose, strategy, key,
                              path, meta_path, stacks.by_version(keras))


def _load_or_train(model_name, data, epochs, batch_size, learning_rate, seed, verbose, strategy, key, path,
                   meta_path, stack):
    folder = os.path.dirname(path)
    cached = _load_cached(path, meta_path, key, stack)
    if distribute.all_workers(strategy, cached is not None):
        return cached
    set_seed(seed)
    logging.info("training baseline %s on %d examples", key, len(data.train))
    with distribute.scope(strategy):
        model = models.compile_model(models.build(model_name, data.input_shape, data.num_classes,
                                                  keras=stack.version), learning_rate)
        start = time.perf_counter()
        history = model.fit(epochs=epochs, verbose=verbose, **data.train.fit_inputs(batch_size, seed))
        seconds = time.perf_counter() - start
        loss, accuracy = model.evaluate(verbose=0, **data.test.eval_inputs())
    losses = [float(v) for v in history.history.get("loss", [])] + [float(loss)]
    if not all(math.isfinite(v) for v in losses):
        raise TrainingDiverged(f"training baseline {key} diverged (training losses {losses[:-1]}, test loss "
                               f"{losses[-1]}): not cached; try a lower --learning_rate than {learning_rate:g}")
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp_path = os.path.join(tmp, "model.keras")
        model.save(tmp_path)
        os.replace(tmp_path, path)
    io_utils.write_json_atomic(meta_path, {"test_accuracy": float(accuracy), "test_loss": float(loss),
                                           "train_seconds": seconds, "key": key, **distribute.describe(strategy)})
    logging.info("baseline %s: test accuracy %.4f, loss %.4f, %.1f s", key, accuracy, loss, seconds)
    return Baseline(model, float(accuracy), float(loss), seconds, path, False)


def file_baseline(path, datasets, allow_unsafe=False):
    """The sweep's baseline from a user's trained model file, evaluated on the test set.

    Args:
      path: ``.keras``/``.h5`` file (or SavedModel folder with ``allow_unsafe``).
      datasets: a ``Dataset`` (or ``((x_train, y_train), (x_test, y_test))`` arrays): the model must take its
        inputs and output one value per class: probabilities (it ends in a softmax) or logits.

    Returns:
      ``(Baseline, tfprune.files.user_model.PrunableCheck)``: the compiled model with its test accuracy (fraction) and
      loss (``train_seconds`` 0, ``from_cache`` True: nothing was trained), and what will be pruned.

    Raises:
      ModelFileError, UnsafeModelError, ValueError: see ``tfprune.files.user_model``'s ``load_user_model``,
      ``check_prunable``, ``check_compatible``; every message names the file.
    """
    model = user_model.load_user_model(path, allow_unsafe)
    data = dataset_lib.as_dataset(datasets)
    try:
        check = user_model.check_prunable(model)
        kind = user_model.check_compatible(model, data.test.take(64)[0], data.num_classes)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    models.compile_model(model, kind=kind)
    loss, accuracy = model.evaluate(verbose=0, **data.test.eval_inputs())
    return Baseline(model, float(accuracy), float(loss), 0.0, path, True), check
