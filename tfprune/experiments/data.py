"""Real datasets (MNIST, Fashion-MNIST) from local files, validated, with a download as the last resort.

Search order for ``load_dataset(name, data_dir)``:

1. ``data_dir`` (IDX files, gzipped or not, or Keras' ``mnist.npz``);
2. the Keras cache, ``$KERAS_HOME/datasets`` or ``~/.keras/datasets`` (the layout ``keras.datasets.*.load_data()``
   leaves: ``mnist.npz``; ``fashion-mnist/*.gz``);
3. system dataset folders (Debian's ``dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist``);
4. a download through Keras.

A file that is found but is corrupt (truncated, wrong magic number, wrong count, labels out of range) is an error
naming the file: it is never skipped, so a damaged copy can never silently turn into a partial dataset.
"""

import dataclasses
import gzip
import os
import struct
import zipfile

import numpy as np
from absl import logging

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
SPLIT_SIZES = {"train": 60000, "test": 10000}
IDX_PREFIX = {"train": "train", "test": "t10k"}


class DatasetError(ValueError):
    """A dataset could not be found, or a file of it is corrupt. The message names the file or every place looked."""


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


def _idx_paths(folder, split, kind):
    """Candidate file names of one IDX file (gzipped first, then raw, in both common spellings)."""
    stem = f"{IDX_PREFIX[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    return [os.path.join(folder, stem + ext) for ext in (".gz", "")] + [
        os.path.join(folder, stem.replace("-idx", ".idx") + ext) for ext in (".gz", "")
    ]


def _first_existing(paths):
    return next((p for p in paths if os.path.isfile(p)), None)


def read_idx(path, expected_magic):
    """Reads one IDX file (``.gz`` or raw) into a uint8 array, validating magic number, dimensions and length.

    Raises:
      DatasetError: naming ``path`` when the file is truncated, not gzip, has the wrong magic or wrong length.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetError(f"{path}: cannot read ({e}); the file is truncated or corrupt") from e
    if len(data) < 8:
        raise DatasetError(f"{path}: only {len(data)} bytes; an IDX header needs at least 8")
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise DatasetError(f"{path}: magic number {magic}, expected {expected_magic}: not this IDX file type")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims)) + header
    if len(data) != expected:
        raise DatasetError(f"{path}: {len(data)} bytes, header {dims} needs {expected}: truncated or corrupt")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _validate(source, split, images, labels):
    """Checks one split's shapes, counts and label range; ``source`` names the file(s) in the error."""
    want = SPLIT_SIZES[split]
    if images.shape[1:] != IMAGE_SHAPE:
        raise DatasetError(f"{source}: {split} images have shape {images.shape}, expected (N, 28, 28)")
    if images.shape[0] != want or labels.shape != (want,):
        raise DatasetError(
            f"{source}: {split} split has {images.shape[0]} images and {labels.shape[0]} labels, "
            f"expected {want} of each")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetError(f"{source}: {split} labels range {labels.min()}..{labels.max()}, expected 0..9")


def load_idx_split(folder, split):
    """Reads one split (``train`` or ``test``) from IDX files in ``folder``; returns (images uint8, labels uint8).

    Raises:
      DatasetError: when a file is missing (naming every name looked for) or corrupt (naming the file).
    """
    images_path = _first_existing(_idx_paths(folder, split, "images"))
    labels_path = _first_existing(_idx_paths(folder, split, "labels"))
    missing = [_idx_paths(folder, split, k)[0] for k, p in (("images", images_path), ("labels", labels_path))
               if p is None]
    if missing:
        raise DatasetError(f"{folder}: {split} split incomplete, missing {', '.join(missing)}")
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC)
    if images.ndim != 3:
        raise DatasetError(f"{images_path}: {images.ndim}-D images, expected 3-D (N, 28, 28)")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{images_path}: {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    _validate(images_path, split, images, labels)
    return images, labels


def read_npz(path):
    """Reads a Keras-layout ``mnist.npz`` (x_train, y_train, x_test, y_test), validated; returns raw uint8 splits."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise DatasetError(f"{path}: missing arrays {sorted(missing)}")
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot read ({e}); the file is truncated or corrupt") from e
    for split in ("train", "test"):
        _validate(path, split, arrays[f"x_{split}"], arrays[f"y_{split}"])
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _has_any_idx(folder):
    return any(_first_existing(_idx_paths(folder, s, k)) for s in SPLIT_SIZES for k in ("images", "labels"))


def _load_folder(folder, npz_name):
    """Loads both splits from ``folder`` or returns None when it holds no file of the dataset."""
    npz = os.path.join(folder, npz_name)
    if os.path.isfile(npz):
        return read_npz(npz), npz
    if _has_any_idx(folder):
        return (load_idx_split(folder, "train"), load_idx_split(folder, "test")), folder
    return None


def _candidate_folders(name, data_dir):
    spec = DATASETS[name]
    folders = []
    if data_dir:
        folders.append(data_dir)
    cache = keras_cache_dir()
    folders.append(os.path.join(cache, spec.keras_subdir) if spec.keras_subdir else cache)
    folders.extend(spec.system_dirs)
    return folders


def _download(name):
    from tfprune._env import keras  # pylint: disable=g-import-not-at-top
    loader = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist}[name]
    return loader.load_data()


def _scale(split):
    x, y = split
    return x.astype(np.float32) / np.float32(255.0), y.astype(np.int32)


def load_dataset(name, data_dir=None, download=True):
    """Loads MNIST or Fashion-MNIST from the first place that has it.

    Args:
      name: ``"mnist"`` or ``"fashion_mnist"``.
      data_dir: optional folder searched first (IDX files or ``mnist.npz``). Must exist when given.
      download: try a download through Keras when no local copy exists (``False`` in tests and offline).

    Returns:
      ``((x_train, y_train), (x_test, y_test))``: images float32 (N, 28, 28) in [0, 1], labels int32 in 0..9;
      60,000 training and 10,000 test images.

    Raises:
      DatasetError (a ValueError): unknown name, missing ``data_dir``, a corrupt file (named), or no copy found
      (the message lists every place looked).
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
    if download:
        try:
            train, test = _download(name)
        except Exception as e:  # pylint: disable=broad-except
            looked.append(f"download through Keras failed: {type(e).__name__}: {e}")
        else:
            _validate(f"{name} download", "train", *train)
            _validate(f"{name} download", "test", *test)
            return _scale(train), _scale(test)
    else:
        looked.append("download not attempted (download=False)")
    raise DatasetError(f"{name} not found; looked in: " + "; ".join(looked))


def take(split, n, seed=0):
    """Returns a reproducible random subset of ``n`` examples of ``(x, y)`` (all when ``n`` is None or too big)."""
    x, y = split
    if n is None or n >= len(x):
        return x, y
    idx = np.random.default_rng(seed).choice(len(x), size=n, replace=False)
    idx.sort()
    return x[idx], y[idx]
