"""tfprune.data: real datasets, search order, and every error path of the loader."""

import gzip
import os
import shutil
import struct

import numpy as np
import pytest

from conftest import FASHION_DIR, MNIST_DIR, require
from tfprune.experiments import data as data_lib
from tfprune.experiments.data import DatasetError


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
        data_lib.load_dataset("mnist", str(tmp_path), download=False)
    msg = str(e.value)
    for place in (str(tmp_path), data_lib.keras_cache_dir(), "/nonexistent/sys", "download not attempted"):
        assert place in msg


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
