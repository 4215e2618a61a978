"""Where a study's data comes from, named by one string (the command line's ``--dataset``):

==============================================  ==================================================================
``mnist``, ``fashion_mnist``                    IDX or npz files: ``data_dir``, the Keras cache, Debian's
                                                ``/usr/share/datasets/...``, then a download (``data.load_dataset``)
``cifar10``, ``cifar100``                       the python batches in ``data_dir`` or the Keras cache (as
                                                ``keras.datasets.cifar10.load_data()`` leaves them), or a download
``npz:PATH``                                    a NumPy archive: ``x_train, y_train, x_test, y_test`` (any input
                                                shape, integer labels), optional ``x_val, y_val``, ``class_names``
``images:DIR``                                  ``DIR/train/<class>/*.png|jpg...``, ``DIR/test/<class>/...``,
                                                optional ``DIR/val/<class>/...`` (``data_images``)
``tfds:NAME``                                   a TensorFlow Datasets dataset prepared in ``data_dir`` (never
                                                downloaded; ``data_tfds``)
==============================================  ==================================================================

Options follow a ``?``, ``&``-separated: ``images:photos?size=96x96&color=rgb`` (size HxW and color
grayscale|rgb|rgba, default: the first training image's), ``tfds:NAME?size=HxW&image=KEY&label=KEY&train=SPLIT&
test=SPLIT&val=SPLIT`` (see ``data_tfds``), ``npz:x.npz?scale=none&range=-1,1`` (``scale``: ``auto``
= uint8 inputs divided by 255, others as stored; ``255``; ``none``; ``range``: the values every input must lie in).
"""

import dataclasses
import os

import numpy as np
from absl import logging

from tfprune.experiments.data import builtin as data_lib
from tfprune.experiments.data import cifar as data_cifar
from tfprune.experiments.data import checks as data_checks
from tfprune.experiments.data import files as data_files
from tfprune.experiments.data import images as data_images
from tfprune.experiments.data import tfds as data_tfds
from tfprune.experiments.data import dataset as dataset_lib
from tfprune.experiments.data.files import DatasetError

BUILTIN = ("cifar10", "cifar100", "fashion_mnist", "mnist")
KINDS = ("images", "npz", "tfds")
OPTIONS = {"images": ("size", "color"), "npz": ("scale", "range"),
           "tfds": ("size", "image", "label", "train", "test", "val")}
DEFAULT_MEMORY_BYTES = 4 << 30


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A parsed ``--dataset`` value: ``kind`` (``builtin``, ``npz``, ``images``), the name or path, options."""
    spec: str
    kind: str
    path: str
    options: tuple = ()

    def option(self, key, default=None):
        return dict(self.options).get(key, default)


def _size(text, spec):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise DatasetError(f"--dataset {spec!r}: size={text!r} is not HxW, e.g. 96x96") from None
    if h < 1 or w < 1:
        raise DatasetError(f"--dataset {spec!r}: size={text!r} must be positive")
    return h, w


def _range(text, spec):
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise DatasetError(f"--dataset {spec!r}: range={text!r} is not LO,HI, e.g. 0,1") from None
    if not lo < hi:
        raise DatasetError(f"--dataset {spec!r}: range={text!r} needs LO < HI")
    return lo, hi


def parse(spec):
    """Parses a dataset name (see the module docstring) into a ``DataSource``, checking kind and options.

    Raises:
      DatasetError: an unknown name or kind, an empty path, an unknown, malformed or repeated option (all named).
    """
    spec = str(spec or "").strip()
    if spec in BUILTIN:
        return DataSource(spec, "builtin", spec)
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS:
        hint = ""
        if spec.endswith(".npz"):
            hint = f"; for a NumPy archive write npz:{spec}"
        elif os.path.isdir(spec):
            hint = f"; for an image folder write images:{spec}"
        raise DatasetError(f"--dataset {spec!r} is not a known dataset ({', '.join(BUILTIN)}) nor "
                           f"npz:PATH / images:DIR / tfds:NAME{hint}")
    path, _, query = rest.partition("?")
    if not path:
        raise DatasetError(f"--dataset {spec!r}: no path after {kind}:")
    options = []
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or key not in OPTIONS[kind]:
            raise DatasetError(f"--dataset {spec!r}: unknown option {item!r}; {kind}: takes "
                               + ", ".join(f"{o}=..." for o in OPTIONS[kind]))
        if key in dict(options):
            raise DatasetError(f"--dataset {spec!r}: option {key!r} is given twice ({key}={dict(options)[key]} and "
                               f"{item}); give it once")
        options.append((key, value))
    source = DataSource(spec, kind, path, tuple(options))
    if source.option("size") is not None:
        _size(source.option("size"), spec)
    if source.option("range") is not None:
        _range(source.option("range"), spec)
    if source.option("color") not in (None, *data_images.COLOR_CHANNELS):
        raise DatasetError(f"--dataset {spec!r}: color={source.option('color')!r} is not one of "
                           f"{', '.join(data_images.COLOR_CHANNELS)}")
    if source.option("scale") not in (None, "auto", "255", "none"):
        raise DatasetError(f"--dataset {spec!r}: scale={source.option('scale')!r} is not auto, 255 or none")
    return source


def _scaled(splits, scale, source):
    """Inputs as the model sees them: ``auto``/``255`` divide uint8 (``255``: any integer) inputs by 255 into
    float32; ``none`` keeps the stored values (float64 narrowed to float32). Returns (splits, description)."""
    dtype = splits["train"][0].dtype  # every split's (data_checks.check_splits)
    divide = (scale == "255" and dtype.kind in "iu") or (scale == "auto" and dtype == np.uint8)
    if scale == "255" and dtype.kind not in "iu":
        raise DatasetError(f"{source}: scale=255 needs integer inputs; these are floats (use scale=none)")
    out = {}
    for split, (x, y) in splits.items():
        if divide:
            x = x.astype(np.float32) / np.float32(255.0)
        elif x.dtype == np.float64:
            x = x.astype(np.float32)
        out[split] = (x, y.astype(np.int32))
    return out, "x/255" if divide else "as stored"


def _arrays_dataset(name, splits, class_names, source, scale="auto", value_range=None, extra=None):
    """Checks raw ``splits`` {split: (x, y)}, scales them and builds the ``Dataset``."""
    splits = {s: (x, data_checks.labels_1d(source, s, y)) for s, (x, y) in splits.items()}
    names = data_checks.check_splits(source, splits, class_names, value_range)
    splits, how = _scaled(splits, scale, source)
    ds = {s: dataset_lib.ArraySplit(x, y) for s, (x, y) in splits.items()}
    return dataset_lib.Dataset(name, ds["train"], ds["test"], names, {"scale": how, **(extra or {})}, source,
                               ds.get("val"))


def load_npz(source):
    """A user's npz archive (``npz:PATH``) as a ``Dataset``."""
    path = source.path
    arrays = data_files.read_arrays(path, ("x_train", "y_train", "x_test", "y_test"),
                                    ("x_val", "y_val", "class_names"))
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DatasetError(f"{path}: has {'x_val' if 'x_val' in arrays else 'y_val'} without its partner; give "
                           "both x_val and y_val, or neither")
    splits = {s: (arrays[f"x_{s}"], arrays[f"y_{s}"]) for s in ("train", "val", "test") if f"x_{s}" in arrays}
    names = arrays.get("class_names")
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "US"):
        raise DatasetError(f"{path}: class_names is {names.dtype} {names.shape}; expected a 1-D array of strings")
    value_range = _range(source.option("range"), source.spec) if source.option("range") else None
    return _arrays_dataset(source.spec, splits, None if names is None else names.tolist(), path,
                           source.option("scale", "auto"), value_range)


def _load_cifar(name, data_dir, download):
    looked = []
    for folder in data_cifar.candidate_folders(name, data_lib.keras_cache_dir(), data_dir):
        looked.append(folder)
        found = data_cifar.load_folder(folder, name)
        if found is not None:
            splits, names = found
            logging.info("%s: loaded from %s", name, folder)
            return _arrays_dataset(name, splits, names, folder)
    if download and not data_dir:
        from tfprune._env import keras  # pylint: disable=g-import-not-at-top
        try:
            train, test = getattr(keras.datasets, name).load_data()
        except Exception as e:  # pylint: disable=broad-except
            looked.append(f"download through Keras failed: {type(e).__name__}: {e}")
        else:
            return _arrays_dataset(name, {"train": train, "test": test}, None, f"{name} download")
    raise DatasetError(f"{name} not found; looked in: " + "; ".join(looked))


def _load_builtin(name, data_dir, download):
    if name.startswith("cifar"):
        return _load_cifar(name, data_dir, download)
    train, test = data_lib.load_dataset(name, data_dir, download=download)
    return dataset_lib.Dataset(name, dataset_lib.ArraySplit(*train), dataset_lib.ArraySplit(*test),
                               tuple(data_lib.CLASS_NAMES[name]), {"scale": "x/255"}, data_dir or name)


def load(spec, data_dir=None, download=True, memory_bytes=DEFAULT_MEMORY_BYTES):
    """Loads the dataset a ``--dataset`` value names, validated (see the module docstring).

    Args:
      spec: ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``npz:PATH[?options]`` or
        ``images:DIR[?options]``.
      data_dir: the folder searched first for a built-in dataset (searched alone: when given, the data must be
        there); TFDS' data folder for ``tfds:``. Unused by ``npz:`` and ``images:``, whose path names the data.
      download: let a built-in dataset found nowhere be downloaded through Keras.
      memory_bytes: image folders and TFDS datasets whose decoded float32 inputs exceed this stream from their
        files.

    Returns:
      a ``dataset.Dataset``.

    Raises:
      DatasetError (a ValueError): a bad name or option, missing data (every place looked is listed), a corrupt
        file or inconsistent arrays (the file and the problem are named).
    """
    source = parse(spec)
    if source.kind == "builtin":
        return _load_builtin(source.path, data_dir, download)
    if source.kind == "npz":
        return load_npz(source)
    size = _size(source.option("size"), spec) if source.option("size") else None
    if source.kind == "tfds":
        return data_tfds.load_tfds(source, data_dir, memory_bytes, _arrays_dataset, size)
    return data_images.load_image_folder(source.path, size, source.option("color"), memory_bytes, name=spec)


__all__ = ["BUILTIN", "DataSource", "load", "load_npz", "parse"]
