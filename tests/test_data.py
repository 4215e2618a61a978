"""tfprune.data: real datasets, search order, and every error path of the loader."""

import gzip
import os
import re
import shutil
import struct

import numpy as np
import pytest

from conftest import FASHION_DIR, MNIST_DIR, require
from tfprune.experiments.data import builtin as data_lib
from tfprune.experiments.data import files as data_files
from tfprune.experiments.data.builtin import DatasetError


def _check_dataset(ds):
    (x_train, y_train), (x_test, y_test) = ds
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert 0.0 == x_train.min() and x_train.max() == 1.0
    assert set(np.unique(y_test)) == set(range(10))


def test_fashion_mnist_from_system_folder(fashion):
    _check_dataset(fashion)


def test_fashion_mnist_found_without_data_dir(fashion):
    # KERAS_HOME points to an empty folder (conftest), so this comes from /usr/share/datasets.
    _check_dataset(data_lib.load_dataset("fashion_mnist", download=False))


def test_mnist_npz_from_data_dir():
    ds = data_lib.load_dataset("mnist", require(os.path.join(MNIST_DIR, "mnist.npz")) and MNIST_DIR, download=False)
    _check_dataset(ds)


def test_mnist_real_idx_test_split_matches_npz():
    require(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"))
    images, labels = data_lib.load_idx_split(MNIST_DIR, "test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    (_, _), (x_test, y_test) = data_lib.read_npz(require(os.path.join(MNIST_DIR, "mnist.npz")))
    np.testing.assert_array_equal(images, x_test)
    np.testing.assert_array_equal(labels, y_test)


def test_mnist_missing_train_split_is_named(tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(require(os.path.join(MNIST_DIR, name)), tmp_path)
    with pytest.raises(DatasetError, match=r"train split incomplete, missing .*train-images-idx3-ubyte\.gz"):
        data_lib.load_dataset("mnist", str(tmp_path), download=False)


def test_keras_cache_layout_is_found(tmp_path, monkeypatch):
    cache = tmp_path / "kh" / "datasets" / "fashion-mnist"
    shutil.copytree(require(FASHION_DIR), cache)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setattr(data_lib, "DATASETS", {"fashion_mnist": data_lib._Spec("x.npz", "fashion-mnist", ())})
    _check_dataset(data_lib.load_dataset("fashion_mnist", download=False))


def test_not_found_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setattr(data_lib, "DATASETS", {"mnist": data_lib._Spec("mnist.npz", None, ("/nonexistent/sys",))})
    with pytest.raises(DatasetError) as e:
        data_lib.load_dataset("mnist", download=False)
    msg = str(e.value)
    for place in (data_lib.keras_cache_dir(), "/nonexistent/sys", "download not attempted"):
        assert place in msg


def test_a_data_dir_without_the_data_is_an_error_not_a_fall_back(tmp_path, fashion):
    # Fashion-MNIST is installed system-wide (the session fixture found it): a data_dir must still not fall back.
    with pytest.raises(DatasetError, match=r"data_dir .* holds no fashion_mnist files \(expected fashion_mnist\.npz "
                                           r"or IDX files such as train-images-idx3-ubyte\.gz\); the Keras cache"):
        data_lib.load_dataset("fashion_mnist", str(tmp_path), download=False)


def test_download_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(data_lib, "DATASETS", {"mnist": data_lib._Spec("mnist.npz", None, ())})

    def offline(name):
        raise OSError("no network")
    monkeypatch.setattr(data_lib, "_download", offline)
    with pytest.raises(DatasetError, match="download through Keras failed: OSError: no network"):
        data_lib.load_dataset("mnist", download=True)


def test_unknown_dataset_and_missing_data_dir():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'.*fashion_mnist, mnist"):
        data_lib.load_dataset("cifar")
    with pytest.raises(DatasetError, match="data_dir '/no/such/dir' does not exist"):
        data_lib.load_dataset("mnist", "/no/such/dir")


def _fashion_copy(tmp_path):
    folder = tmp_path / "fm"
    shutil.copytree(require(FASHION_DIR), folder)
    return folder


def test_truncated_gzip_names_file(tmp_path):
    folder = _fashion_copy(tmp_path)
    path = folder / "t10k-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz: cannot read .*truncated"):
        data_lib.load_dataset("fashion_mnist", str(folder), download=False)


def test_truncated_payload_names_file(tmp_path):
    folder = _fashion_copy(tmp_path)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(payload[:-10]))
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz: 9998 bytes, header \(10000,\) needs 10008"):
        data_lib.load_dataset("fashion_mnist", str(folder), download=False)


def test_wrong_magic_names_file(tmp_path):
    folder = _fashion_copy(tmp_path)
    path = folder / "train-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(path.read_bytes()))
    payload[:4] = struct.pack(">I", 2051)
    path.write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz: magic number 2051, expected 2049"):
        data_lib.load_dataset("fashion_mnist", str(folder), download=False)


def test_wrong_count_names_file(tmp_path):
    folder = _fashion_copy(tmp_path)
    for kind, magic, dims in (("images", 2051, (28, 28)), ("labels", 2049, ())):
        path = folder / f"t10k-{kind}-idx{3 if dims else 1}-ubyte.gz"
        payload = gzip.decompress(path.read_bytes())
        header = 4 + 4 * (1 + len(dims))
        item = int(np.prod(dims)) if dims else 1
        body = payload[header: header + 500 * item]
        path.write_bytes(gzip.compress(struct.pack(f">{2 + len(dims)}I", magic, 500, *dims) + body))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz: test split has 500 images .*expected 10000"):
        data_lib.load_dataset("fashion_mnist", str(folder), download=False)


def test_label_out_of_range_names_file(tmp_path):
    folder = _fashion_copy(tmp_path)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(path.read_bytes()))
    payload[8] = 12
    path.write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz: test labels range 0\.\.12"):
        data_lib.load_dataset("fashion_mnist", str(folder), download=False)


def test_corrupt_npz_names_file(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetError, match=r"mnist\.npz: cannot read"):
        data_lib.load_dataset("mnist", str(tmp_path), download=False)


def test_npz_missing_array_names_file(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match=r"mnist\.npz: missing arrays \['x_test', 'y_test', 'y_train'\]"):
        data_lib.load_dataset("mnist", str(tmp_path), download=False)


def test_take_is_reproducible_subset():
    x = np.arange(100)
    a, _ = data_lib.take((x, x), 10, seed=3)
    b, _ = data_lib.take((x, x), 10, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(set(a)) == 10 and list(a) == sorted(a)


# --- Strict values, unreadable names, data identity. Synthetic splits of 6 + 4 images keep these fast; the
# loader's counts are patched to match (``small_sizes``), so every other check runs exactly as on real data.

def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


@pytest.fixture
def small_sizes(monkeypatch):
    monkeypatch.setattr(data_files, "SPLIT_SIZES", {"train": 6, "test": 4})


def _synthetic(seed=0):
    """((x_train, y_train), (x_test, y_test)) as stored on disk: 6 + 4 uint8 images spanning 0..255, uint8 labels."""
    rng = np.random.default_rng(seed)
    splits = []
    for n in (6, 4):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[0, 0, 0], x[0, 0, 1] = 0, 255
        splits.append((x, rng.integers(0, 10, size=n, dtype=np.uint8)))
    return tuple(splits)


def _write_idx(path, magic, array):
    raw = struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)


def _idx_folder(folder, ds, gz=True):
    """Writes ``ds`` as the four IDX files in ``folder`` (created); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for (x, y), prefix in zip(ds, ("train", "t10k")):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", 2051, x)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", 2049, y)
    return folder


def _npz_folder(folder, ds, **replace):
    """Writes ``ds`` as ``folder/mnist.npz``, with arrays named in ``replace`` swapped in; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = ds
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    arrays.update(replace)
    np.savez(folder / "mnist.npz", **arrays)
    return folder


def _load_error(folder, name="mnist"):
    """The message of the DatasetError that loading ``folder`` raises; it must be one line."""
    with pytest.raises(DatasetError) as e:
        data_lib.load_dataset(name, str(folder), download=False)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_synthetic_folders_load(tmp_path, small_sizes):
    # The fixtures themselves are valid, so each failure below comes from the one thing a test breaks.
    for folder in (_idx_folder(tmp_path / "idx", _synthetic()), _npz_folder(tmp_path / "npz", _synthetic())):
        (x_train, y_train), _ = data_lib.load_dataset("mnist", str(folder), download=False)
        assert x_train.dtype == np.float32 and x_train.max() == 1.0 and y_train.dtype == np.int32


def test_npz_of_float_images_in_0_1_is_refused(tmp_path, small_sizes):
    # The silent failure this check exists for: an npz already scaled to [0, 1] would be divided by 255 again.
    ds = _synthetic()
    folder = _npz_folder(tmp_path, ds, x_train=ds[0][0].astype(np.float32) / 255)
    msg = _load_error(folder)
    assert msg == (f"{folder / 'mnist.npz'}: train images are float32 in [0, 1]; "
                   "expected uint8 0..255 (Keras' mnist.npz layout)")


@pytest.mark.parametrize("images, found", [
    (lambda x: x.astype(np.float64), r"float64 in \[0, 255\]"),
    (lambda x: x.astype(np.int64), r"int64 in 0\.\.255"),
    (lambda x: np.where(x == 255, np.nan, x / 255).astype(np.float32), r"float32 in \[0, 0\.99\d*\] with \d+ NaN"),
    (lambda x: np.where(x == 0, -np.inf, x).astype(np.float32), r"float32 in \[\d+, 255\] with \d+ inf"),
    (lambda x: np.full(x.shape, np.nan, np.float32), r"float32, every value NaN or inf \(4704 NaN\)"),
    (lambda x: x.astype(bool), r"bool"),
])
def test_npz_images_not_uint8_are_refused(tmp_path, small_sizes, images, found):
    ds = _synthetic()
    msg = _load_error(_npz_folder(tmp_path, ds, x_train=images(ds[0][0])))
    assert re.search(r"mnist\.npz: train images are " + found + r".*; expected uint8 0\.\.255", msg), msg


@pytest.mark.parametrize("dtype", [np.float32, np.float64, bool])
def test_npz_labels_not_integers_are_refused(tmp_path, small_sizes, dtype):
    ds = _synthetic()
    msg = _load_error(_npz_folder(tmp_path, ds, y_test=ds[1][1].astype(dtype)))
    assert re.search(r"mnist\.npz: test labels are (float\d+ in \[\d, \d\]|bool); expected integers 0\.\.9$", msg), msg


def test_npz_labels_of_any_integer_dtype_are_accepted(tmp_path, small_sizes):
    ds = _synthetic()
    folder = _npz_folder(tmp_path, ds, y_train=ds[0][1].astype(np.int64), y_test=ds[1][1].astype(np.int16))
    (_, y_train), (_, y_test) = data_lib.load_dataset("mnist", str(folder), download=False)
    assert y_train.dtype == y_test.dtype == np.int32


def test_npz_labels_of_wrong_rank_are_refused(tmp_path, small_sizes):
    ds = _synthetic()
    msg = _load_error(_npz_folder(tmp_path, ds, y_train=ds[0][1][:, None]))
    assert re.search(r"mnist\.npz: train labels have shape \(6, 1\), expected \(N,\)$", msg), msg


def test_download_is_validated_like_a_file(tmp_path, monkeypatch, small_sizes):
    monkeypatch.setattr(data_lib, "DATASETS", {"mnist": data_lib._Spec("mnist.npz", None, ())})
    (x_train, y_train), test = _synthetic()
    monkeypatch.setattr(data_lib, "_download", lambda name: ((x_train / 255, y_train), test))
    with pytest.raises(DatasetError, match=r"^mnist download: train images are float64 in \[0, 1\]; expected uint8"):
        data_lib.load_dataset("mnist", download=True)
    monkeypatch.setattr(data_lib, "_download", lambda name: ((x_train, y_train.astype(np.float32)), test))
    with pytest.raises(DatasetError, match=r"^mnist download: train labels are float32 in .*expected integers"):
        data_lib.load_dataset("mnist", download=True)


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "mnist.npz"])
def test_empty_file_names_it(tmp_path, small_sizes, name):
    folder = _idx_folder(tmp_path, _synthetic())
    (folder / name).write_bytes(b"")
    assert _load_error(folder) == f"{folder / name}: empty file (0 bytes); a copy or download did not finish"


def test_empty_raw_idx_names_it(tmp_path, small_sizes):
    folder = _idx_folder(tmp_path, _synthetic(), gz=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(b"")
    assert _load_error(folder).startswith(f"{folder / 'train-labels-idx1-ubyte'}: empty file (0 bytes)")


def test_truncated_files_name_them(tmp_path, small_sizes):
    raw = _idx_folder(tmp_path / "raw", _synthetic(), gz=False)
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    assert re.search(r"t10k-images-idx3-ubyte: 3052 bytes, header \(4, 28, 28\) needs 3152", _load_error(raw))
    gz = _idx_folder(tmp_path / "gz", _synthetic())
    path = gz / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5])  # inside the gzip header
    assert re.search(r"train-labels-idx1-ubyte\.gz: cannot read \(.*\); the file is truncated", _load_error(gz))
    npz = _npz_folder(tmp_path / "npz", _synthetic())
    path = npz / "mnist.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert re.search(r"mnist\.npz: cannot read \(.*\); the file is truncated or corrupt$", _load_error(npz))


def test_npy_under_npz_name_names_it(tmp_path):
    with open(tmp_path / "mnist.npz", "wb") as f:
        np.save(f, np.zeros((2, 28, 28), np.uint8))
    assert "mnist.npz: a single .npy array, not an npz archive" in _load_error(tmp_path)


def test_symlink_loop_is_an_error_not_absent(tmp_path):
    a, b = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
    os.symlink(a, b)
    os.symlink(b, a)
    assert _load_error(tmp_path) == f"{a}: symlink loop (too many levels of links); expected a dataset file"
    with pytest.raises(DatasetError, match="symlink loop"):
        data_lib.read_idx(str(b), data_files.LABEL_MAGIC)


def test_symlink_loop_behind_a_good_file_is_an_error(tmp_path, small_sizes):
    # The gzipped name is found first, but the raw name beside it is broken: the folder is damaged, say so.
    folder = _idx_folder(tmp_path / "fm", _synthetic())
    os.symlink(tmp_path / "x", tmp_path / "y")
    os.symlink(tmp_path / "y", tmp_path / "x")
    os.symlink(tmp_path / "x", folder / "t10k-images-idx3-ubyte")
    assert re.search(r"fm/t10k-images-idx3-ubyte: symlink loop", _load_error(folder))


def test_symlink_loop_named_like_npz_in_keras_cache(tmp_path, monkeypatch):
    # Not only in data_dir: a looping link in the Keras cache must not read as "mnist not found".
    cache = tmp_path / "kh" / "datasets"
    cache.mkdir(parents=True)
    os.symlink(cache / "mnist.npz", cache / "mnist.npz")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setattr(data_lib, "DATASETS", {"mnist": data_lib._Spec("mnist.npz", None, ())})
    with pytest.raises(DatasetError, match=r"^\S+/kh/datasets/mnist\.npz: symlink loop"):
        data_lib.load_dataset("mnist", download=False)


def test_dangling_symlink_names_it(tmp_path):
    os.symlink(tmp_path / "gone", tmp_path / "t10k-labels-idx1-ubyte")
    assert _load_error(tmp_path) == (f"{tmp_path / 't10k-labels-idx1-ubyte'}: dangling symlink (its target does "
                                     "not exist); expected a dataset file")


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte", "mnist.npz"])
def test_directory_instead_of_file_names_it(tmp_path, name):
    (tmp_path / name).mkdir()
    assert _load_error(tmp_path) == f"{tmp_path / name}: is a directory; expected a dataset file"


def test_directory_passed_to_readers_names_it(tmp_path):
    with pytest.raises(DatasetError, match=r"is a directory; expected a dataset file"):
        data_lib.read_idx(str(tmp_path), data_files.IMAGE_MAGIC)
    with pytest.raises(DatasetError, match=r"is a directory; expected a dataset file"):
        data_lib.read_npz(str(tmp_path))
    with pytest.raises(DatasetError, match=r"nope\.npz: no such file$"):
        data_lib.read_npz(str(tmp_path / "nope.npz"))


def test_fifo_named_like_a_file_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "train-images-idx3-ubyte.gz")
    assert _load_error(tmp_path).endswith("train-images-idx3-ubyte.gz: not a regular file (device, FIFO or socket); "
                                          "expected a dataset file")


def test_digest_is_by_content_across_folders_and_layouts(tmp_path, small_sizes):
    ds = _synthetic()
    digests = {data_lib.data_digest(data_lib.load_dataset("mnist", str(folder), download=False))
               for folder in (_idx_folder(tmp_path / "a", ds), _idx_folder(tmp_path / "b", ds, gz=False),
                              _npz_folder(tmp_path / "c", ds))}
    assert len(digests) == 1 and re.fullmatch(r"[0-9a-f]{16}", next(iter(digests)))
    ds[1][1][3] = (ds[1][1][3] + 1) % 10  # one test label
    changed = data_lib.load_dataset("mnist", str(_npz_folder(tmp_path / "d", ds)), download=False)
    assert data_lib.data_digest(changed) not in digests


@pytest.mark.slow
def test_digest_of_real_data_changes_with_one_label_or_pixel(fashion):
    (x_train, y_train), (x_test, y_test) = fashion
    digest = data_lib.data_digest(fashion)
    assert data_lib.data_digest(((x_train.copy(), y_train.copy()), (x_test, y_test))) == digest
    y = y_train.copy()
    y[12345] = (y[12345] + 1) % 10
    assert data_lib.data_digest(((x_train, y), (x_test, y_test))) != digest
    x = x_test.copy()
    x[0, 14, 14] += np.float32(1 / 255)
    assert data_lib.data_digest(((x_train, y_train), (x, y_test))) != digest


def test_digest_of_subset_differs_from_full_set(fashion, small_fashion):
    assert data_lib.data_digest(small_fashion) != data_lib.data_digest(fashion)
    (x_train, y_train), test = fashion
    assert data_lib.data_digest((data_lib.take((x_train, y_train), None), test)) == data_lib.data_digest(fashion)


def test_digest_frames_arrays_and_checks_its_argument():
    x, y = np.zeros((2, 28, 28), np.float32), np.arange(2, dtype=np.int32)
    # The same bytes split differently between arrays, or in another dtype, are different data.
    assert data_lib.data_digest(((x, y), (x, y))) != data_lib.data_digest(((x[:1], y), (x.reshape(4, 14, 28), y)))
    assert data_lib.data_digest(((x, y), (x, y))) != data_lib.data_digest(((x.view(np.int32), y), (x, y)))
    for wrong in ((x, y), ((x, y),), ((x, y), (x, y, y)), x):
        with pytest.raises(ValueError, match=r"expects \(\(x_train, y_train\), \(x_test, y_test\)\)"):
            data_lib.data_digest(wrong)
