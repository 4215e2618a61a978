"""Checks a user's dataset arrays before any work: consistent shapes across splits, integer labels in range, no
NaN/inf, values in the declared range, usable class names. Each failure is one ``DatasetError`` naming the source
and what is wrong; nothing is skipped or repaired silently.
"""

import numpy as np

from tfprune.experiments.data.files import DatasetError, describe_values

SPLITS = ("train", "val", "test")


def labels_1d(source, split, y):
    """``y`` as a 1-D integer array; (N, 1) columns (CIFAR's layout) are accepted and flattened.

    Raises:
      DatasetError: labels that are not integers (floats, bools, one-hot rows) or of another shape.
    """
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(f"{source}: {split} labels have shape {y.shape}; expected (N,) integer class indices "
                           "(one-hot rows? store np.argmax(y, axis=1))")
    if y.dtype.kind not in "iu":
        raise DatasetError(f"{source}: {split} labels are {describe_values(y)}; expected integer class indices")
    return y


def check_inputs(source, split, x, value_range=None):
    """Checks one split's inputs: numeric, at least 1 example, finite, inside ``value_range`` (lo, hi) if given.

    Raises:
      DatasetError: naming ``source``, the split and the problem (dtype, NaN/inf count, values found).
    """
    if x.dtype.kind not in "iuf":
        raise DatasetError(f"{source}: {split} inputs are {x.dtype}; expected numbers (uint8 images, floats, "
                           "integer token ids)")
    if x.ndim < 2 or len(x) == 0:
        raise DatasetError(f"{source}: {split} inputs have shape {x.shape}; expected (N, ...) with N >= 1")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DatasetError(f"{source}: {split} inputs are {describe_values(x)}; every value must be finite")
    if value_range is not None:
        lo, hi = value_range
        if float(x.min()) < lo or float(x.max()) > hi:
            raise DatasetError(f"{source}: {split} inputs are {describe_values(x)}, outside the declared range "
                               f"[{lo:g}, {hi:g}]")


def check_splits(source, splits, class_names=None, value_range=None):
    """Checks ``splits`` {split: (x, y)} together and returns the class names.

    Every split must have as many labels as inputs, the same input shape and dtype as the training split, labels
    in 0..C-1. C is ``len(class_names)`` when given (names must be distinct and non-empty), else the largest label
    + 1 (then every class 0..C-1 must occur in the training split, so a missing class is not mistaken for fewer
    classes).

    Returns:
      the class names, a tuple of C strings ("0".."C-1" when none were given).

    Raises:
      DatasetError: naming ``source`` and the first problem found.
    """
    x_train = splits["train"][0]
    for split in SPLITS:
        if split not in splits:
            continue
        x, y = splits[split]
        check_inputs(source, split, x, value_range)
        if len(x) != len(y):
            raise DatasetError(f"{source}: {split} split has {len(x)} inputs and {len(y)} labels")
        if x.shape[1:] != x_train.shape[1:] or x.dtype != x_train.dtype:
            raise DatasetError(f"{source}: {split} inputs are {x.dtype} {x.shape[1:]} per example, but training "
                               f"inputs are {x_train.dtype} {x_train.shape[1:]}")
        if y.min() < 0:
            raise DatasetError(f"{source}: {split} labels include {int(y.min())}; class indices start at 0")
    top = max(int(y.max()) for _, y in splits.values())
    if class_names is not None:
        names = [str(n) for n in class_names]
        if len(set(names)) != len(names) or not all(n.strip() for n in names):
            raise DatasetError(f"{source}: class_names {names} must be distinct and non-empty")
        if top >= len(names):
            raise DatasetError(f"{source}: labels go up to {top}, but class_names has {len(names)} names")
    else:
        names = [str(c) for c in range(top + 1)]
        absent = sorted(set(range(top + 1)) - set(np.unique(splits["train"][1]).tolist()))
        if absent:
            raise DatasetError(f"{source}: classes {absent} never occur in the training labels (0..{top}); give "
                               "class_names to declare the classes")
    if len(names) < 2:
        raise DatasetError(f"{source}: only {len(names)} class; a classifier needs at least 2")
    return tuple(names)


__all__ = ["check_inputs", "check_splits", "labels_1d"]
