"""Image folder datasets: ``<root>/train/<class>/*.png|jpg|...``, ``<root>/test/<class>/...`` and optionally
``<root>/val/<class>/...``, decoded as ``keras.utils.image_dataset_from_directory`` decodes them.

Classes are the training split's sub-folders, sorted (Keras' inferred ``class_names``); the test and validation
splits may hold fewer classes, never others. Each image is read, decoded to ``channels`` and resized bilinearly to
``size`` (Keras' per-image step, ``tf.io.decode_image(..., expand_animations=False)`` then ``tf.image.resize``),
then scaled by 1/255 to [0, 1]. By default ``size`` and ``channels`` are those of the first training image.

A dataset whose decoded images fit in ``memory_bytes`` is decoded once into arrays; a larger one streams from the
files in a ``tf.data`` pipeline (``dataset.StreamedSplit``), so its pixels never sit in memory whole.
"""

import os

import numpy as np

from tfprune.experiments.data import dataset as dataset_lib
from tfprune.experiments.data.files import DatasetError, one_line, stat_file

FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # keras.utils.image_dataset_from_directory's allow-list
COLOR_CHANNELS = {"grayscale": 1, "rgb": 3, "rgba": 4}
_MAGIC = (b"\x89PNG", b"\xff\xd8", b"GIF8", b"BM")


def _image_files(folder):
    """Sorted image files of one class folder (other files ignored, as Keras does), each checked to be a
    non-empty regular file starting like a PNG, JPEG, GIF or BMP."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(FORMATS))
    paths = [os.path.join(folder, n) for n in names]
    for path in paths:
        st = stat_file(path)  # raises for a dangling link, loop, directory or FIFO of an image's name
        with open(path, "rb") as f:
            head = f.read(8)
        if st.st_size == 0 or not head.startswith(_MAGIC):
            raise DatasetError(f"{path}: not an image ({st.st_size} bytes; expected PNG, JPEG, GIF or BMP data)")
    return paths


def index_split(root, split, class_names=None):
    """(paths, labels, class names) of one split folder; ``class_names`` (the training split's) fixes the labels.

    Raises:
      DatasetError: a missing split folder, no class folders, a class the training split lacks, an empty training
        class, a file that is not an image.
    """
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise DatasetError(f"{root}: no {split}/ folder (expected {split}/<class>/<image files>)")
    found = sorted(n for n in os.listdir(folder) if os.path.isdir(os.path.join(folder, n)))
    if not found:
        raise DatasetError(f"{folder}: no class folders (expected {split}/<class>/<image files>)")
    names = found if class_names is None else list(class_names)
    extra = sorted(set(found) - set(names))
    if extra:
        raise DatasetError(f"{folder}: class folders {extra} are not classes of the training split {names}")
    paths, labels = [], []
    for label, name in enumerate(names):
        files = _image_files(os.path.join(folder, name)) if name in found else []
        if not files and class_names is None:
            raise DatasetError(f"{os.path.join(folder, name)}: no image files ({', '.join(FORMATS)})")
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DatasetError(f"{folder}: no image files")
    return np.array(paths), np.array(labels, np.int32), tuple(names)


def _decoder(size, channels):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        image = tf.image.resize(image, size, method="bilinear")  # float32, as image_dataset_from_directory gives
        image.set_shape(tuple(size) + (channels,))
        return image / 255.0
    return decode


def first_image_geometry(path):
    """((height, width), channels) of one image file, decoded as it is stored."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except tf.errors.OpError as e:
        raise DatasetError(f"{path}: cannot decode ({one_line(e.message)})") from None
    h, w, c = image.shape
    return (int(h), int(w)), int(c)


def _decode_all(split):
    """The streamed split decoded into an ``ArraySplit``; a file that fails to decode is found and named."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
        x, y = split.take()
    except tf.errors.OpError:
        for path in split.paths:  # the error path only: find the file TensorFlow could not decode
            try:
                split.decode(tf.constant(path))
            except tf.errors.OpError as e:
                raise DatasetError(f"{path}: cannot decode ({one_line(e.message)})") from None
        raise
    return dataset_lib.ArraySplit(x.astype(np.float32), y)


def load_image_folder(root, size=None, color=None, memory_bytes=4 << 30, name=None):
    """Loads an image folder dataset (see the module docstring).

    Args:
      root: folder holding ``train/`` and ``test/`` (and optionally ``val/``).
      size: (height, width) every image is resized to; None: the first training image's size.
      color: ``grayscale``, ``rgb`` or ``rgba``; None: the first training image's channel count.
      memory_bytes: decoded float32 images up to this many bytes are held in memory; a larger dataset streams.
      name: the dataset's name in tables (default ``images:<root>``).

    Returns:
      a ``dataset.Dataset``: float32 inputs (H, W, C) in [0, 1], int32 labels, class names from the folders.

    Raises:
      DatasetError: a bad layout or file (named), an unknown ``color``, a non-positive ``size``.
    """
    if not os.path.isdir(root):
        raise DatasetError(f"image folder {root!r} does not exist or is not a folder")
    train = index_split(root, "train")
    classes = train[2]
    splits = {"train": train[:2], "test": index_split(root, "test", classes)[:2]}
    if os.path.isdir(os.path.join(root, "val")):
        splits["val"] = index_split(root, "val", classes)[:2]
    if size is None or color is None:
        first_size, first_channels = first_image_geometry(train[0][0])
        size = size or first_size
        color = color or {1: "grayscale", 3: "rgb", 4: "rgba"}.get(first_channels)
        if color is None:
            raise DatasetError(f"{train[0][0]}: {first_channels} channels; give color=grayscale|rgb|rgba")
    if color not in COLOR_CHANNELS:
        raise DatasetError(f"images:{root}: color {color!r} is not one of {', '.join(COLOR_CHANNELS)}")
    if len(size) != 2 or min(size) < 1:
        raise DatasetError(f"images:{root}: size {size} must be two positive numbers, HxW")
    channels = COLOR_CHANNELS[color]
    shape = (int(size[0]), int(size[1]), channels)
    describe = f"{shape[0]}x{shape[1]} bilinear, {color}, x/255"
    decode = _decoder(shape[:2], channels)
    streamed = {s: dataset_lib.StreamedSplit(p, y, decode, shape, describe) for s, (p, y) in splits.items()}
    decoded_bytes = sum(len(s) for s in streamed.values()) * int(np.prod(shape)) * 4
    if decoded_bytes <= memory_bytes:
        streamed = {s: _decode_all(split) for s, split in streamed.items()}
    preprocessing = {"resize": f"{shape[0]}x{shape[1]} bilinear", "color": color, "channels": channels,
                     "scale": "x/255", "decoded_bytes": decoded_bytes, "streamed": decoded_bytes > memory_bytes}
    return dataset_lib.Dataset(name or f"images:{root}", streamed["train"], streamed["test"], classes,
                               preprocessing, root, streamed.get("val"))


__all__ = ["COLOR_CHANNELS", "FORMATS", "index_split", "load_image_folder"]
