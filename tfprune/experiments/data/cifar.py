"""CIFAR-10 and CIFAR-100 from the files ``keras.datasets.cifar10/cifar100.load_data()`` leave in the Keras cache
(the python version of the dataset: pickled batches), read with a restricted unpickler that builds only NumPy
arrays, lists, dicts, strings and numbers, so a tampered file cannot run code.
"""

import io
import os
import pickle

import numpy as np

from tfprune.experiments.data.files import DatasetError, one_line, require_file


class _Unpickler(pickle.Unpickler):
    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("copy_reg", "_reconstructor"),
                ("copyreg", "_reconstructor"), ("__builtin__", "object"), ("builtins", "object")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to build {module}.{name}")
        return super().find_class(module, name)


def _load_batch(path, label_key):
    """(images uint8 (N, 32, 32, 3), labels int (N,)) of one pickled batch file."""
    require_file(path)
    try:
        with open(path, "rb") as f:
            batch = _Unpickler(io.BytesIO(f.read()), encoding="bytes").load()
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        data = np.asarray(batch["data"], np.uint8)
        labels = np.asarray(batch[label_key])
    except (pickle.UnpicklingError, EOFError, KeyError, AttributeError, ValueError, TypeError) as e:
        raise DatasetError(f"{path}: not a CIFAR batch ({type(e).__name__}: {one_line(e)})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DatasetError(f"{path}: data {data.shape} and {len(labels)} labels; expected (N, 3072) and N labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


SPECS = {  # name: (folder the archive extracts to, training batch files, test file, label key, meta file, names key)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels",
                "batches.meta", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels", "meta", "fine_label_names"),
}


def candidate_folders(name, cache_dir, data_dir=None):
    """Where the extracted batches may be: ``data_dir`` (itself or its ``cifar-10-batches-py``) when given, else
    the Keras cache in Keras 3's layout (``<dir>-target/<dir>``) and tf_keras' (``<dir>``)."""
    sub = SPECS[name][0]
    if data_dir:
        return [data_dir, os.path.join(data_dir, sub)]
    return [os.path.join(cache_dir, f"{sub}-target", sub), os.path.join(cache_dir, sub)]


def _class_names(folder, name):
    _, _, _, _, meta, key = SPECS[name]
    path = os.path.join(folder, meta)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            loaded = _Unpickler(io.BytesIO(f.read()), encoding="bytes").load()
        loaded = {k.decode() if isinstance(k, bytes) else k: v for k, v in loaded.items()}
        return [n.decode() if isinstance(n, bytes) else str(n) for n in loaded[key]]
    except (pickle.UnpicklingError, EOFError, KeyError, AttributeError, ValueError, TypeError) as e:
        raise DatasetError(f"{path}: not a CIFAR meta file ({type(e).__name__}: {one_line(e)})") from None


def load_folder(folder, name):
    """``(splits {train, test: (x uint8, y)}, class names or None)`` from ``folder``, or None without its files."""
    _, train_files, test_file, label_key, _, _ = SPECS[name]
    if not os.path.isfile(os.path.join(folder, test_file)):
        return None
    batches = [_load_batch(os.path.join(folder, f), label_key) for f in train_files]
    splits = {"train": (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])),
              "test": _load_batch(os.path.join(folder, test_file), label_key)}
    return splits, _class_names(folder, name)


__all__ = ["SPECS", "candidate_folders", "load_folder"]
