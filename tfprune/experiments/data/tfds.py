"""TensorFlow Datasets prepared on this machine (``tfds:NAME``, with ``--data_dir`` as TFDS' data folder).

tfprune never downloads or prepares a TFDS dataset: one that is not prepared in the data folder is one line saying
how to prepare it. Inputs and labels are the dataset's ``supervised_keys`` (or ``image`` and ``label``; options
``?image=KEY&label=KEY``); splits ``train``, ``test`` and, when present, ``validation`` (options ``?train=``,
``?test=``, ``?val=`` name others, with TFDS' slicing syntax, e.g. ``train[:90%]``). Class names come from the
label's ``ClassLabel``. Images are resized (``?size=HxW``) and scaled like an image folder's when uint8.

A dataset whose decoded inputs fit in the memory budget is read once into arrays; a larger one streams: records
are shuffled still encoded (TFDS' file shuffle, then a buffer of up to 10,000 records), decoded in parallel,
batched and prefetched (``RecordSplit``).
"""

import os

import numpy as np

from tfprune.files import io_utils
from tfprune.experiments.data import dataset as dataset_lib
from tfprune.experiments.data.files import DatasetError, one_line

SHUFFLE_BUFFER = 10000


def _tfds():
    try:
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError:
        raise DatasetError("tfds: datasets need the tensorflow-datasets package (pip install "
                           "'tensorflow-datasets==4.9.10')") from None
    return tfds


class RecordSplit(dataset_lib.Streamed):
    """A TFDS split streamed from its record files (the interface of ``dataset.ArraySplit``).

    ``labels``: the labels of the examples kept; ``index``: their positions in the split (a ``train_size``
    subset), or None for all.
    """

    def __init__(self, builder, split, keys, preprocess, shape, describe, labels, index=None):
        self.builder, self.split, self.keys, self.preprocess = builder, split, keys, preprocess
        self.shape, self.describe, self.y, self.index = tuple(shape), describe, labels, index

    def _positions(self, keep):
        """Positions in the split of the examples ``keep`` (indices into this split), or None for all."""
        if keep is None:
            return self.index
        return keep if self.index is None else self.index[keep]

    def _examples(self, keep=None, shuffle_seed=None):
        """(input, label) pairs, decoded; shuffled (encoded records in a buffer) when ``shuffle_seed`` is given."""
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        tfds = _tfds()
        image_key, label_key = self.keys
        positions = self._positions(keep)
        # A subset is a set of positions, so its files are read in order; the record buffer shuffles it.
        shuffle_files = shuffle_seed is not None and positions is None
        ds = self.builder.as_dataset(split=self.split, shuffle_files=shuffle_files,
                                     read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False),
                                     decoders={image_key: tfds.decode.SkipDecoding()})
        if positions is not None:
            table = tf.constant(np.isin(np.arange(int(np.max(positions)) + 1), positions))
            last = tf.size(table, tf.int64) - 1
            ds = ds.enumerate().filter(lambda i, e: tf.logical_and(i <= last, tf.gather(table, tf.minimum(i, last))))
            ds = ds.map(lambda i, e: e)
        if shuffle_seed is not None:  # encoded records in the buffer: bytes, not decoded pixels
            ds = ds.shuffle(min(SHUFFLE_BUFFER, len(self)), seed=shuffle_seed, reshuffle_each_iteration=True)
        feature = self.builder.info.features[image_key]
        return ds.map(lambda e: (self.preprocess(feature.decode_example(e[image_key])),
                                 tf.cast(e[label_key], tf.int32)), num_parallel_calls=tf.data.AUTOTUNE)

    def subset(self, n, seed=0):
        if n is None or n >= len(self):
            return self
        keep = dataset_lib.subset_indices(len(self), n, seed)
        return RecordSplit(self.builder, self.split, self.keys, self.preprocess, self.shape, self.describe,
                           self.y[keep], self._positions(keep))

    def update_digest(self, sha):
        """Hashes the split's name, decoding and subset, then the bytes of the dataset's record files."""
        sha.update(f"tfds:{self.split}:{self.describe}:{','.join(map(str, self.shape))};".encode())
        if self.index is not None:
            sha.update(np.ascontiguousarray(self.index, np.int64))
        folder = self.builder.data_dir
        for name in sorted(os.listdir(folder)):
            if ".tfrecord" in name or ".array_record" in name:
                sha.update(name.encode())
                io_utils.hash_file(sha, os.path.join(folder, name))


def _labels(builder, split, keys):
    """Every label of ``split``, read without decoding the inputs."""
    tfds = _tfds()
    ds = builder.as_dataset(split=split, decoders={keys[0]: tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(try_autocache=False))
    return np.fromiter((int(e[keys[1]]) for e in ds.as_numpy_iterator()), np.int32)


def _builder(name, data_dir):
    tfds = _tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # pylint: disable=broad-except  (DatasetNotFoundError lists hundreds of names)
        raise DatasetError(f"tfds:{name}: {one_line(e).split(' Available datasets')[0]}") from None
    if not builder.is_prepared():
        where = data_dir or "TFDS' default folder (~/tensorflow_datasets)"
        raise DatasetError(f"tfds:{name} is not prepared in {where}; tfprune never downloads TFDS data: prepare it "
                           f"where there is internet (tfds build {name} --data_dir=DIR) and pass --data_dir=DIR")
    return builder


def load_tfds(source, data_dir, memory_bytes, arrays_dataset, size=None):
    """``tfds:NAME`` as a ``Dataset`` (see the module docstring); ``arrays_dataset`` builds one from checked
    arrays (``data_sources._arrays_dataset``)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    name = source.path
    builder = _builder(name, data_dir)
    info = builder.info
    keys = tuple(info.supervised_keys or ()) or ("image", "label")
    keys = (source.option("image", keys[0]), source.option("label", keys[1]))
    for key in keys:
        if key not in info.features:
            raise DatasetError(f"tfds:{name} has no feature {key!r} (features: {', '.join(sorted(info.features))}); "
                               "name them with ?image=KEY&label=KEY")
    label_feature = info.features[keys[1]]
    if not hasattr(label_feature, "names"):
        raise DatasetError(f"tfds:{name}: feature {keys[1]!r} is not a ClassLabel; tfprune trains classifiers")
    splits = {"train": source.option("train", "train"), "test": source.option("test", "test")}
    val = source.option("val", "validation" if "validation" in info.splits else None)
    if val:
        splits["val"] = val
    feature = info.features[keys[0]]
    shape = tuple(size) + (feature.shape[-1],) if size else tuple(feature.shape)
    if any(d is None for d in shape):
        raise DatasetError(f"tfds:{name}: inputs have shape {feature.shape}; give ?size=HxW to resize them")
    uint8 = feature.np_dtype == np.uint8

    def preprocess(x):
        x = tf.cast(x, tf.float32)
        if size:
            x = tf.image.resize(x, size, method="bilinear")
        return x / 255.0 if uint8 else x
    describe = (f"resize {size[0]}x{size[1]} bilinear, " if size else "") + ("x/255" if uint8 else "as stored")
    try:
        labels = {s: _labels(builder, split, keys) for s, split in splits.items()}
    except (ValueError, tf.errors.OpError) as e:
        raise DatasetError(f"tfds:{name}: cannot read splits {splits} ({one_line(e)})") from None
    streamed = {s: RecordSplit(builder, split, keys, preprocess, shape, describe, labels[s])
                for s, split in splits.items()}
    decoded_bytes = sum(len(y) for y in labels.values()) * int(np.prod(shape)) * 4
    extra = {"tfds": f"{name} {info.version}", "decoded_bytes": decoded_bytes, "streamed": decoded_bytes > memory_bytes}
    if decoded_bytes <= memory_bytes:  # read once, checked like any arrays
        arrays = {s: split.take() for s, split in streamed.items()}
        data = arrays_dataset(source.spec, arrays, list(label_feature.names), builder.data_dir, scale="none")
        return dataset_lib.Dataset(data.name, data.train, data.test, data.class_names, {"scale": describe, **extra},
                                   data.source, data.val)
    return dataset_lib.Dataset(source.spec, streamed["train"], streamed["test"], tuple(label_feature.names),
                               {"scale": describe, **extra}, builder.data_dir, streamed.get("val"))


__all__ = ["RecordSplit", "load_tfds"]
