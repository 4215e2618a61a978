"""A loaded dataset: train/test (and optional validation) splits, class names, preprocessing, content digest.

Every study reads its data through a ``Dataset``, whatever the source (``data_sources.load``): so the class count,
input shape and dtype, class names (``labels.txt``), int8 calibration images, evaluation images, validation split
and content digest all follow the data, never a constant.

A split is either held in memory (``ArraySplit``: NumPy arrays, trained with Keras' own array input, as
``model.fit(x, y, shuffle=True)``) or streamed from files (``StreamedSplit``: decoded batch by batch in a
``tf.data`` pipeline: path shuffle, decode, batch, prefetch), for data larger than the memory budget. Both answer
the same questions: ``len(split)``, ``split.take(n, seed)`` (a reproducible subset as arrays),
``split.fit_inputs(batch_size, seed)`` / ``split.eval_inputs(batch_size)`` (keyword arguments for
``model.fit`` / ``model.evaluate``) and ``split.element`` (shape and dtype of one input).
"""

import dataclasses
import hashlib
from typing import Optional

import numpy as np

from tfprune.files import io_utils


def subset_indices(n_total, n, seed):
    """Sorted indices of a reproducible random subset of ``n`` of ``n_total`` examples (all when ``n`` is None or
    at least ``n_total``). The same rule as ``data.take``, so a subset is the same whichever form the split has."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    idx = np.random.default_rng(seed).choice(n_total, size=n, replace=False)
    idx.sort()
    return idx


class ArraySplit:
    """A split held in memory: inputs ``x`` (N, ...) and integer labels ``y`` (N,)."""

    streamed = False

    def __init__(self, x, y):
        if len(x) != len(y):
            raise ValueError(f"{len(x)} inputs but {len(y)} labels")
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    @property
    def element(self):
        """(shape of one input, its NumPy dtype)."""
        return tuple(self.x.shape[1:]), self.x.dtype

    def take(self, n=None, seed=0):
        """``(x, y)`` of a reproducible subset of ``n`` examples (all when None or too big)."""
        if n is None or n >= len(self):
            return self.x, self.y
        idx = subset_indices(len(self), n, seed)
        return self.x[idx], self.y[idx]

    def subset(self, n, seed=0):
        """The split restricted to ``take(n, seed)``."""
        return self if n is None or n >= len(self) else ArraySplit(*self.take(n, seed))

    def fit_inputs(self, batch_size, seed=0):
        """Keyword arguments of ``model.fit``: Keras shuffles the arrays each epoch (seeded by the global seed)."""
        del seed
        return {"x": self.x, "y": self.y, "batch_size": batch_size, "shuffle": True}

    def eval_inputs(self, batch_size=1024):
        return {"x": self.x, "y": self.y, "batch_size": batch_size}

    def update_digest(self, sha):
        hash_arrays(sha, (self.x, self.y))


def hash_arrays(sha, arrays):
    """Feeds each array's dtype, shape and bytes to ``sha`` (a hashlib object)."""
    for a in arrays:
        a = np.ascontiguousarray(a)  # hashlib reads the buffer, which must be C-contiguous
        # dtype.str carries byte order and size ("<f4"); the header frames each array, so bytes cannot shift
        # from one array to the next without changing the digest.
        sha.update(f"{a.dtype.str}:{','.join(map(str, a.shape))};".encode())
        sha.update(a)


def two_pairs(datasets):
    """``((x_train, y_train), (x_test, y_test))`` checked to be two pairs.

    Raises:
      ValueError: anything else (an ndarray where a pair is expected included: unpacking it would take its rows
        as the arrays).
    """
    def pair(p):
        return not isinstance(p, np.ndarray) and isinstance(p, (tuple, list)) and len(p) == 2
    if not (pair(datasets) and all(pair(split) for split in datasets)):
        raise ValueError("expected a Dataset or ((x_train, y_train), (x_test, y_test))")
    return datasets


class Streamed:
    """What every streamed split shares: labels ``y`` held in memory (N,), float32 inputs of shape ``shape``
    decoded on demand by ``_examples(keep, shuffle_seed)``, the subclass's ``tf.data`` pipeline of decoded
    ``(input, label)`` pairs: of the examples ``keep`` (indices into the split, None: all), reshuffled every epoch
    when ``shuffle_seed`` is given."""

    streamed = True
    y = None
    shape = ()

    def __len__(self):
        return len(self.y)

    @property
    def element(self):
        """(shape of one input, its NumPy dtype)."""
        return self.shape, np.dtype(np.float32)

    def _examples(self, keep=None, shuffle_seed=None):
        raise NotImplementedError

    def take(self, n=None, seed=0):
        """``(x, y)`` arrays of a reproducible subset of ``n`` examples, decoding only those."""
        keep = None if n is None or n >= len(self) else subset_indices(len(self), n, seed)
        xs = [x for x, _ in self._examples(keep).batch(256).as_numpy_iterator()]
        x = np.concatenate(xs) if xs else np.zeros((0,) + self.shape, np.float32)
        return x, self.y if keep is None else self.y[keep]

    def fit_inputs(self, batch_size, seed=0):
        """A ``tf.data`` pipeline reshuffled every epoch (seeded), decoded in parallel, batched, prefetched."""
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        return {"x": self._examples(shuffle_seed=seed).batch(batch_size).prefetch(tf.data.AUTOTUNE)}

    def eval_inputs(self, batch_size=1024):
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        return {"x": self._examples().batch(batch_size).prefetch(tf.data.AUTOTUNE)}


class StreamedSplit(Streamed):
    """A split read from files batch by batch: ``paths`` (N,) with integer ``labels`` (N,), decoded by ``decode``
    (a TensorFlow function: path string tensor -> float32 input tensor of shape ``shape``).

    ``describe`` names the decoding (size, channels, scaling): it enters the digest, since the same files decoded
    otherwise are other data.
    """

    def __init__(self, paths, labels, decode, shape, describe):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} files but {len(labels)} labels")
        self.paths, self.y = np.asarray(paths), np.asarray(labels, np.int32)
        self.decode, self.shape, self.describe = decode, tuple(shape), describe

    def _examples(self, keep=None, shuffle_seed=None):
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        idx = np.arange(len(self)) if keep is None else keep
        ds = tf.data.Dataset.from_tensor_slices((self.paths[idx], self.y[idx]))
        if shuffle_seed is not None:  # paths are shuffled, not images: the buffer holds every name, no pixels
            ds = ds.shuffle(len(idx), seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds.map(lambda p, y: (self.decode(p), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def subset(self, n, seed=0):
        if n is None or n >= len(self):
            return self
        idx = subset_indices(len(self), n, seed)
        return StreamedSplit(self.paths[idx], self.y[idx], self.decode, self.shape, self.describe)

    def update_digest(self, sha):
        """Hashes the decoding, then each file's position, label and bytes (files are read, not decoded)."""
        sha.update(f"streamed:{self.describe}:{','.join(map(str, self.shape))};".encode())
        for path, label in zip(self.paths, self.y):
            sha.update(f"{int(label)}:".encode())
            io_utils.hash_file(sha, path)
            sha.update(b";")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """What a study trains, fine-tunes, calibrates, chooses and evaluates on.

    Attributes:
      name: the dataset as the user named it (``fashion_mnist``, ``npz:data/faces.npz``...): tables show it.
      train, test: splits (``ArraySplit`` or ``StreamedSplit``); val: the validation split, or None. Sensitivity
        (choosing a plan) uses ``val``, never ``test``; see ``choice_split``.
      class_names: one name per class, index = label (``labels.txt`` of an export).
      preprocessing: how stored values became model inputs, e.g. ``{"scale": "x/255", "resize": "32x32 bilinear",
        "channels": 3}``: the same for training, evaluation, int8 calibration, and written into the model card.
      source: where it was read from (a file or folder, or a download).
    """
    name: str
    train: object
    test: object
    class_names: tuple
    preprocessing: dict = dataclasses.field(default_factory=dict)
    source: str = ""
    val: Optional[object] = None

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def input_shape(self):
        """Shape of one model input, without the batch axis, e.g. (28, 28) or (32, 32, 3)."""
        return self.train.element[0]

    @property
    def input_dtype(self):
        return self.train.element[1]

    @property
    def streamed(self):
        return any(s is not None and s.streamed for s in (self.train, self.test, self.val))

    def subset_train(self, n, seed=0):
        """The dataset with its training split reduced to a reproducible subset of ``n`` examples (``train_size``)."""
        return dataclasses.replace(self, train=self.train.subset(n, seed))

    def digest(self):
        """A short name for the data by content: the first 16 hex digits of a SHA-256.

        In-memory splits hash dtype, shape and bytes of ``x_train, y_train, x_test, y_test`` (then ``x_val, y_val``
        when there is a validation split), as the model sees them (after scaling); streamed splits hash their
        decoding and every file's bytes and label. So two copies of the same data in different folders or formats
        give the same digest, and any changed pixel, label, subset, order or preprocessing changes it.
        """
        cached = self.__dict__.get("_digest")  # computed once: a streamed split reads every file for it
        if cached is None:
            sha = hashlib.sha256()
            for split in (self.train, self.test) + ((self.val,) if self.val is not None else ()):
                split.update_digest(sha)
            cached = sha.hexdigest()[:16]
            object.__setattr__(self, "_digest", cached)
        return cached

    def describe(self):
        """One line for logs: name, sizes, input shape, classes, and whether it streams."""
        val = f", {len(self.val):,} validation" if self.val is not None else ""
        how = "streamed from files" if self.streamed else "in memory"
        return (f"{self.name}: {len(self.train):,} training{val} and {len(self.test):,} test examples of shape "
                f"{self.input_shape} ({self.input_dtype}), {self.num_classes} classes, {how}")

    def card(self):
        """The dataset's entry in a model card / record: name, digest, shape, classes, preprocessing."""
        return {"dataset": self.name, "data_digest": self.digest(), "input_shape": list(self.input_shape),
                "input_dtype": str(self.input_dtype), "num_classes": self.num_classes,
                "preprocessing": dict(self.preprocessing)}


def choice_split(dataset, n=None, seed=0):
    """(x, y, what) for choosing (sensitivity plans, budgets): the validation split when there is one, else a
    subset of the training split; never the test split, whose figures must stay unbiased. ``what`` names it."""
    if dataset.val is not None:
        x, y = dataset.val.take(n, seed)
        return x, y, "validation"
    x, y = dataset.train.take(n if n is not None else 10000, seed)
    return x, y, "training (the data has no validation split)"


def as_dataset(datasets, name="arrays", class_names=None):
    """``datasets`` as a ``Dataset``: a ``Dataset`` is returned as is; ``((x_train, y_train), (x_test, y_test))``
    NumPy arrays are wrapped (class names "0".."C-1" unless given, C = largest label + 1).

    Raises:
      ValueError: ``datasets`` is neither (see ``two_pairs``).
    """
    if isinstance(datasets, Dataset):
        return datasets
    (x_train, y_train), (x_test, y_test) = two_pairs(datasets)
    if class_names is None:
        top = max(int(np.max(y)) if len(y) else 0 for y in (y_train, y_test))
        class_names = [str(c) for c in range(max(top + 1, 2))]
    return Dataset(name, ArraySplit(x_train, y_train), ArraySplit(x_test, y_test), tuple(class_names))


__all__ = ["ArraySplit", "Dataset", "Streamed", "StreamedSplit", "as_dataset", "choice_split", "hash_arrays",
           "subset_indices", "two_pairs"]
