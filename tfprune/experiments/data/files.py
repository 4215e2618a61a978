"""Dataset files, read strictly: IDX (gzipped or raw) and Keras-layout ``.npz`` archives of MNIST-like data.

Every file is examined before it is opened and validated after: an empty, truncated or corrupt file, a symlink
loop, a dangling link, a directory or a FIFO where a file is expected, images that are not uint8 0..255, labels
that are not integers 0..9, wrong shapes or counts: each is a ``DatasetError`` naming the file, never a skip.
"""

import errno
import gzip
import os
import stat
import struct
import zipfile
import zlib

import numpy as np

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
SPLIT_SIZES = {"train": 60000, "test": 10000}
IDX_PREFIX = {"train": "train", "test": "t10k"}


class DatasetError(ValueError):
    """A dataset could not be found, or a file of it is corrupt. The message names the file or every place looked."""


def idx_paths(folder, split, kind):
    """Candidate file names of one IDX file (gzipped first, then raw, in both common spellings)."""
    stem = f"{IDX_PREFIX[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    return [os.path.join(folder, stem + ext) for ext in (".gz", "")] + [
        os.path.join(folder, stem.replace("-idx", ".idx") + ext) for ext in (".gz", "")
    ]


def one_line(e):
    """``str(e)`` on one line (some library messages span several; a DatasetError is one line)."""
    return " ".join(str(e).split())


def stat_file(path):
    """``os.stat(path)`` when ``path`` is a regular file (links followed); None when nothing has that name.

    ``os.path.isfile`` answers False for a symlink loop or a dangling link, which would make a damaged dataset
    folder look like a folder without the dataset, and the search would quietly move on to another copy.

    Raises:
      DatasetError: naming ``path`` when something has that name but cannot be read as a file: a symlink loop, a
        dangling symlink, a directory, a device or FIFO (a read could block forever), or a name that cannot be
        examined (permissions).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise DatasetError(f"{path}: dangling symlink (its target does not exist); expected a dataset file") \
                from None
        return None
    except NotADirectoryError:
        return None  # a parent is a file, not a folder: nothing can have this name
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DatasetError(f"{path}: symlink loop (too many levels of links); expected a dataset file") from e
        raise DatasetError(f"{path}: cannot examine ({one_line(e)})") from e
    if stat.S_ISDIR(st.st_mode):
        raise DatasetError(f"{path}: is a directory; expected a dataset file")
    if not stat.S_ISREG(st.st_mode):
        raise DatasetError(f"{path}: not a regular file (device, FIFO or socket); expected a dataset file")
    return st


def require_file(path):
    """Checks that ``path`` is a non-empty regular file before it is opened.

    Raises:
      DatasetError: naming ``path`` when it does not exist, is empty (0 bytes) or is no regular file.
    """
    st = stat_file(path)
    if st is None:
        raise DatasetError(f"{path}: no such file")
    if st.st_size == 0:
        raise DatasetError(f"{path}: empty file (0 bytes); a copy or download did not finish")


def _first_existing(paths):
    """The first of ``paths`` that is a regular file, or None.

    Every candidate is examined, so a broken name (a symlink loop, say) is never hidden behind a good one.

    Raises:
      DatasetError: naming the path when one of ``paths`` exists but is not a readable file (see ``stat_file``).
    """
    found = [p for p in paths if stat_file(p) is not None]
    return found[0] if found else None


def read_idx(path, expected_magic):
    """Reads one IDX file (``.gz`` or raw) into a uint8 array, validating magic number, dimensions and length.

    Raises:
      DatasetError: naming ``path`` when the file is missing, empty, no regular file, truncated, not gzip, has the
        wrong magic or the wrong length.
    """
    require_file(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{path}: cannot read ({one_line(e)}); the file is truncated or corrupt") from e
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


def describe_values(a):
    """The dtype of array ``a`` and, when numeric, the range of its values, e.g. ``float32 in [0, 1]``.

    Non-finite values are counted, not folded into the range (``float32 in [0, 1] with 3 NaN``).
    """
    kind = a.dtype.kind
    if kind not in "iuf" or a.size == 0:
        return str(a.dtype) + (" (empty)" if a.size == 0 else "")
    if kind in "iu":
        return f"{a.dtype} in {int(a.min())}..{int(a.max())}"
    finite = np.isfinite(a)
    counts = [(int(np.isnan(a).sum()), "NaN"), (int(np.isinf(a).sum()), "inf")]
    bad = " and ".join(f"{n} {what}" for n, what in counts if n)
    if not finite.any():
        return f"{a.dtype}, every value NaN or inf ({bad})"
    values = a[finite] if bad else a
    text = f"{a.dtype} in [{float(values.min()):g}, {float(values.max()):g}]"
    return text + (f" with {bad}" if bad else "")


def _validate_dtypes(source, split, images, labels):
    """Images must be uint8 0..255 and labels integers.

    Float images are the dangerous case: an archive already scaled to [0, 1] would be divided by 255 again by
    ``_scale`` and train to chance-level accuracy without any error.
    """
    if images.dtype != np.uint8:
        raise DatasetError(f"{source}: {split} images are {describe_values(images)}; "
                           f"expected uint8 0..255 (Keras' mnist.npz layout)")
    if labels.dtype.kind not in "iu":  # bool is kind "b": not a class index
        raise DatasetError(f"{source}: {split} labels are {describe_values(labels)}; expected integers 0..9")


def validate_split(source, split, images, labels):
    """Checks one split's shapes, counts, dtypes and label range; ``source`` names the file(s) in the error."""
    want = SPLIT_SIZES[split]
    if images.shape[1:] != IMAGE_SHAPE:
        raise DatasetError(f"{source}: {split} images have shape {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1:
        raise DatasetError(f"{source}: {split} labels have shape {labels.shape}, expected (N,)")
    if images.shape[0] != want or labels.shape != (want,):
        raise DatasetError(
            f"{source}: {split} split has {images.shape[0]} images and {labels.shape[0]} labels, "
            f"expected {want} of each")
    _validate_dtypes(source, split, images, labels)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetError(f"{source}: {split} labels range {labels.min()}..{labels.max()}, expected 0..9")


def load_idx_split(folder, split):
    """Reads one split (``train`` or ``test``) from IDX files in ``folder``; returns (images uint8, labels uint8).

    Raises:
      DatasetError: when a file is missing (naming every name looked for) or corrupt (naming the file).
    """
    images_path = _first_existing(idx_paths(folder, split, "images"))
    labels_path = _first_existing(idx_paths(folder, split, "labels"))
    missing = [idx_paths(folder, split, k)[0] for k, p in (("images", images_path), ("labels", labels_path))
               if p is None]
    if missing:
        raise DatasetError(f"{folder}: {split} split incomplete, missing {', '.join(missing)}")
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC)
    if images.ndim != 3:
        raise DatasetError(f"{images_path}: {images.ndim}-D images, expected 3-D (N, 28, 28)")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{images_path}: {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    validate_split(images_path, split, images, labels)
    return images, labels


def read_npz(path):
    """Reads a Keras-layout ``mnist.npz`` (x_train, y_train, x_test, y_test), validated.

    Returns:
      ``((x_train, y_train), (x_test, y_test))`` as stored: images uint8 (N, 28, 28), labels integers in 0..9.

    Raises:
      DatasetError: naming ``path`` when it is missing, empty, no regular file, not an npz archive (truncated,
        corrupt, a single .npy array), lacks one of the four arrays, or holds arrays of the wrong shape, count or
        dtype (float images already scaled to [0, 1] included) or labels out of range.
    """
    arrays = read_arrays(path, ("x_train", "y_train", "x_test", "y_test"))
    for split in ("train", "test"):
        validate_split(path, split, arrays[f"x_{split}"], arrays[f"y_{split}"])
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def read_arrays(path, required, optional=()):
    """The ``required`` arrays of the npz archive ``path`` and those of ``optional`` it holds, as a dict.

    Raises:
      DatasetError: naming ``path`` when it is missing, empty, no regular file, not an npz archive (truncated,
        corrupt, a single .npy array, object arrays that would need pickle) or lacks a required array.
    """
    require_file(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # an .npy file loads as one bare array
            raise DatasetError(f"{path}: a single .npy array, not an npz archive of {', '.join(required)}")
        with loaded as f:
            missing = set(required) - set(f.files)
            if missing:
                raise DatasetError(f"{path}: missing arrays {sorted(missing)}")
            return {k: f[k] for k in tuple(required) + tuple(optional) if k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot read ({one_line(e)}); the file is truncated or corrupt") from e


def has_any_idx(folder):
    return any(_first_existing(idx_paths(folder, s, k)) for s in SPLIT_SIZES for k in ("images", "labels"))
