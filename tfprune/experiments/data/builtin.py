"""Real datasets (MNIST, Fashion-MNIST) from local files, validated, with a download as the last resort.

Search order for ``load_dataset(name, data_dir)``:

1. ``data_dir`` (IDX files, gzipped or not, or Keras' ``mnist.npz``);
2. the Keras cache, ``$KERAS_HOME/datasets`` or ``~/.keras/datasets`` (the layout ``keras.datasets.*.load_data()``
   leaves: ``mnist.npz``; ``fashion-mnist/*.gz``);
3. system dataset folders (Debian's ``dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist``);
4. a download through Keras.

A file that is found but is corrupt (empty, truncated, wrong magic number, wrong count, images not uint8, labels
not integers in 0..9) is an error naming the file, and so is a name that looks like a dataset file but is not one
that can be read (a symlink loop, a dangling link, a directory, a FIFO). It is never skipped, so a damaged copy can
never silently turn into a partial dataset, or into images scaled twice.

``data_digest`` names the loaded data by its content, for run records.
"""

import dataclasses
import hashlib
import os

import numpy as np
from absl import logging

from tfprune.experiments.data import files as data_files
from tfprune.experiments.data import dataset as dataset_lib
from tfprune.experiments.data.files import (IMAGE_SHAPE, NUM_CLASSES, SPLIT_SIZES, DatasetError,  # noqa: F401
                                            load_idx_split, read_idx, read_npz)


@dataclasses.dataclass(frozen=True)
class _Spec:
    npz_name: str  # Keras-layout archive (the Keras cache holds MNIST in this form)
    keras_subdir: str | None  # folder of IDX files in the Keras cache (None: the cache folder itself)
    system_dirs: tuple


DATASETS = {
    "mnist": _Spec("mnist.npz", None, ("/usr/share/datasets/mnist",)),
    "fashion_mnist": _Spec("fashion_mnist.npz", "fashion-mnist", ("/usr/share/datasets/fashion-mnist",)),
}

# Class names by label index, as written to an exported model's labels.txt.
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}


def keras_cache_dir():
    """The folder where ``keras.datasets.*.load_data()`` keeps its files."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets")


def _load_folder(folder, npz_name):
    """Loads both splits from ``folder`` or returns None when it holds no file of the dataset."""
    npz = os.path.join(folder, npz_name)
    if data_files.stat_file(npz) is not None:  # raises for a loop, dangling link or directory of that name
        return read_npz(npz), npz
    if data_files.has_any_idx(folder):
        return (load_idx_split(folder, "train"), load_idx_split(folder, "test")), folder
    return None


def _candidate_folders(name, data_dir):
    """The folders searched, in order: ``data_dir`` alone when given, else the Keras cache and system folders."""
    if data_dir:
        return [data_dir]
    spec = DATASETS[name]
    folders = []
    cache = keras_cache_dir()
    folders.append(os.path.join(cache, spec.keras_subdir) if spec.keras_subdir else cache)
    folders.extend(spec.system_dirs)
    return folders


def _download(name):
    """Raw splits from ``keras.datasets.*.load_data()``; the caller validates them like a local file."""
    from tfprune._env import keras  # pylint: disable=g-import-not-at-top
    loader = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist}[name]
    return loader.load_data()


def _scale(split):
    """uint8 images (validated) to float32 in [0, 1]; labels to int32."""
    x, y = split
    return x.astype(np.float32) / np.float32(255.0), y.astype(np.int32)


def load_dataset(name, data_dir=None, download=True):
    """Loads MNIST or Fashion-MNIST from the first place that has it.

    Args:
      name: ``"mnist"`` or ``"fashion_mnist"``.
      data_dir: optional folder holding the dataset (IDX files or ``mnist.npz``). When given, the data must be
        there: a folder without it is an error, never a silent fall-back to another copy.
      download: try a download through Keras when no local copy exists (``False`` in tests and offline).

    Returns:
      ``((x_train, y_train), (x_test, y_test))``: images float32 (N, 28, 28) in [0, 1], labels int32 in 0..9;
      60,000 training and 10,000 test images.

    Raises:
      DatasetError (a ValueError): unknown name, missing ``data_dir``, a corrupt or unreadable file (named; also a
      downloaded copy of the wrong dtype or shape), or no copy found (the message lists every place looked).
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    if data_dir and not os.path.isdir(data_dir):
        raise DatasetError(f"data_dir {data_dir!r} does not exist or is not a folder")
    looked = []
    for folder in _candidate_folders(name, data_dir):
        found = _load_folder(folder, DATASETS[name].npz_name)
        looked.append(folder)
        if found is not None:
            (train, test), source = found
            logging.info("%s: loaded from %s", name, source)
            return _scale(train), _scale(test)
    if data_dir:
        example = os.path.basename(data_files.idx_paths(data_dir, "train", "images")[0])
        raise DatasetError(f"data_dir {data_dir!r} holds no {name} files (expected {DATASETS[name].npz_name} or "
                           f"IDX files such as {example}); the Keras cache and system folders are searched only "
                           "when no data_dir is given")
    if download:
        try:
            train, test = _download(name)
        except Exception as e:  # pylint: disable=broad-except
            looked.append(f"download through Keras failed: {type(e).__name__}: {e}")
        else:
            data_files.validate_split(f"{name} download", "train", *train)
            data_files.validate_split(f"{name} download", "test", *test)
            return _scale(train), _scale(test)
    else:
        looked.append("download not attempted (download=False)")
    raise DatasetError(f"{name} not found; looked in: " + "; ".join(looked))


def take(split, n, seed=0):
    """Returns a reproducible random subset of ``n`` examples of ``(x, y)`` (all when ``n`` is None or too big)."""
    return dataset_lib.ArraySplit(*split).take(n, seed)


def data_digest(datasets):
    """A short name for the data by content: the first 16 hex digits of a SHA-256 of the arrays.

    Hashes the dtype, shape and bytes of ``x_train, y_train, x_test, y_test``, in that order, as ``load_dataset``
    returns them (after scaling: float32 images, int32 labels); ``Dataset.digest`` gives the same value for the same
    arrays. Two copies of the same data in different folders, or in different layouts (IDX or npz), give the same
    digest; any changed pixel or label, a different subset (``take``) or another order changes it. Raw uint8
    arrays give a different digest than their scaled form.

    Cheap enough to compute once per run (a fraction of ``load_dataset``'s own time: docs/DESIGN_NOTES.md).

    Args:
      datasets: a ``Dataset``, or ``((x_train, y_train), (x_test, y_test))`` NumPy arrays.

    Returns:
      16 lowercase hex characters, e.g. ``"3f9c0a1b2d4e5f60"``.

    Raises:
      ValueError: ``datasets`` is neither.
    """
    if isinstance(datasets, dataset_lib.Dataset):
        return datasets.digest()
    try:
        pairs = dataset_lib.two_pairs(datasets)
    except ValueError:
        raise ValueError("data_digest expects ((x_train, y_train), (x_test, y_test))") from None
    sha = hashlib.sha256()
    dataset_lib.hash_arrays(sha, [a for split in pairs for a in split])
    return sha.hexdigest()[:16]
