"""Tests for hf_verifix.data.fashion_mnist: the installed files, synthetic IDX files, errors and the Hub fallback."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import datasets
import numpy as np
import pytest

from hf_verifix.data import fashion_mnist as fm
from hf_verifix.data.fashion_mnist import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    load_fashion_mnist_arrays,
)

_HAVE_FASHION = (Path(DEFAULT_FASHION_MNIST_DIR) / "train-images-idx3-ubyte.gz").is_file()
needs_fashion = pytest.mark.skipif(
    not _HAVE_FASHION, reason=f"Fashion-MNIST not installed in {DEFAULT_FASHION_MNIST_DIR} (apt-get install ...)"
)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes the Hub fallback fail immediately, without network access."""

    def _fail(*args: object, **kwargs: object) -> None:
        raise ConnectionError("offline (test)")

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", _fail)
    monkeypatch.delenv(fm.FASHION_MNIST_ENV_VAR, raising=False)


def test_class_names() -> None:
    assert len(FASHION_MNIST_CLASSES) == 10
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert FASHION_MNIST_CLASSES[9] == "Ankle boot"


@needs_fashion
@pytest.mark.parametrize(("split", "n"), [("train", 60000), ("test", 10000)])
def test_real_arrays_shapes_and_balance(split: str, n: int, offline: None) -> None:
    images, labels = load_fashion_mnist_arrays(split)
    assert images.shape == (n, 28, 28)
    assert images.dtype == np.uint8
    assert labels.shape == (n,)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, n // 10))
    assert images.max() == 255
    assert images.min() == 0


@needs_fashion
def test_real_arrays_limit_is_a_prefix(offline: None) -> None:
    images, labels = load_fashion_mnist_arrays("test", limit=37)
    assert images.shape == (37, 28, 28)
    assert labels.shape == (37,)
    full_images, full_labels = load_fashion_mnist_arrays("test")
    np.testing.assert_array_equal(images, full_images[:37])
    np.testing.assert_array_equal(labels, full_labels[:37])
    zero_images, zero_labels = load_fashion_mnist_arrays("test", limit=0)
    assert zero_images.shape == (0, 28, 28)
    assert zero_labels.shape == (0,)


@needs_fashion
def test_env_var_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None) -> None:
    monkeypatch.setenv(fm.FASHION_MNIST_ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_fashion_mnist_arrays("test", limit=1)
    monkeypatch.setenv(fm.FASHION_MNIST_ENV_VAR, DEFAULT_FASHION_MNIST_DIR)
    assert load_fashion_mnist_arrays("test", limit=3)[0].shape == (3, 28, 28)


@needs_fashion
def test_dataset_features_and_images(offline: None) -> None:
    ds = load_fashion_mnist("test", limit=50)
    assert len(ds) == 50
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert ds.features["label"].names == list(FASHION_MNIST_CLASSES)
    assert isinstance(ds.features["image"], datasets.Image)
    images, labels = load_fashion_mnist_arrays("test", limit=50)
    for i in (0, 17, 49):
        row = ds[i]
        assert row["image"].mode == "L"
        assert row["image"].size == (28, 28)
        np.testing.assert_array_equal(np.asarray(row["image"]), images[i])
        assert row["label"] == labels[i]
    # test split starts with an ankle boot
    assert ds.features["label"].int2str(ds[0]["label"]) == "Ankle boot"


def _write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes, compress: bool = True) -> None:
    raw = struct.pack(f">I{len(dims)}I", magic, *dims) + payload
    path.write_bytes(gzip.compress(raw) if compress else raw)


def _write_fake_split(root: Path, n: int = 5, prefix: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", 0x803, (n, 28, 28), images.tobytes())
    _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", 0x801, (n,), labels.tobytes())
    return images, labels


def test_synthetic_files_roundtrip(tmp_path: Path, offline: None) -> None:
    images, labels = _write_fake_split(tmp_path, n=6)
    got_images, got_labels = load_fashion_mnist_arrays("test", root=tmp_path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels.astype(np.int64))
    ds = load_fashion_mnist("test", root=str(tmp_path), limit=4)
    assert len(ds) == 4
    np.testing.assert_array_equal(np.asarray(ds[3]["image"]), images[3])


def test_corrupt_gzip_raises_clear_error(tmp_path: Path, offline: None) -> None:
    _write_fake_split(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz.*corrupt.*dataset-fashion-mnist"):
        load_fashion_mnist_arrays("test", root=tmp_path)


def test_bad_magic_raises_clear_error(tmp_path: Path, offline: None) -> None:
    _write_fake_split(tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x803, (5,), bytes(5))
    with pytest.raises(ValueError, match=r"bad IDX magic number 0x00000803, expected 0x00000801"):
        load_fashion_mnist_arrays("test", root=tmp_path)


def test_truncated_file_raises_clear_error(tmp_path: Path, offline: None) -> None:
    _write_fake_split(tmp_path)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, (5, 28, 28), bytes(28 * 28 * 3))
    with pytest.raises(ValueError, match=r"expected 3920 bytes.*found 2352.*corrupt"):
        load_fashion_mnist_arrays("test", root=tmp_path)
    # a file truncated in the middle of the gzip stream
    good = gzip.compress(struct.pack(">IIII", 0x803, 5, 28, 28) + bytes(5 * 28 * 28))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_fashion_mnist_arrays("test", root=tmp_path)


def test_missing_dir_raises_file_not_found(tmp_path: Path, offline: None) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"dataset-fashion-mnist") as info:
        load_fashion_mnist_arrays("train", root=missing)
    message = str(info.value)
    assert str(missing) in message
    assert "HF_VERIFIX_FASHION_MNIST_DIR" in message
    assert "train-images-idx3-ubyte.gz" in message
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=missing)


def test_hub_fallback_is_used_when_files_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    fake_images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    fake = datasets.Dataset.from_dict(
        {"image": list(fake_images), "label": [1, 2, 3]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )

    def _fake_load(path: str, split: str) -> datasets.Dataset:
        calls.append((path, split))
        return fake

    monkeypatch.setattr(datasets, "load_dataset", _fake_load)
    images, labels = load_fashion_mnist_arrays("train", root=tmp_path, limit=3)
    assert calls == [("zalando-datasets/fashion_mnist", "train[:3]")]
    np.testing.assert_array_equal(images, fake_images)
    np.testing.assert_array_equal(labels, [1, 2, 3])


@pytest.mark.parametrize("split", ["validation", "TRAIN", ""])
def test_bad_split(split: str) -> None:
    with pytest.raises(ValueError, match=rf"split must be one of \['train', 'test'\], got '{split}'"):
        load_fashion_mnist_arrays(split)


def test_bad_limit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="limit must be a non-negative int"):
        load_fashion_mnist_arrays("test", root=tmp_path, limit=-1)
