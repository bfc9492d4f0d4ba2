"""Offline loading of the Fashion-MNIST dataset.

Fashion-MNIST (Xiao et al., 2017) is distributed as four gzip-compressed files in the
`IDX format <http://yann.lecun.com/exdb/mnist/>`_. On Debian/Ubuntu the
``dataset-fashion-mnist`` package installs them in :data:`DEFAULT_FASHION_MNIST_DIR`, so the
data can be used without network access. When the files cannot be found locally, the loaders
fall back to the Hugging Face Hub copy (``zalando-datasets/fashion_mnist``), which only works
online.

Example:
    >>> from hf_verifix.data.fashion_mnist import load_fashion_mnist
    >>> ds = load_fashion_mnist("test", limit=8)
    >>> ds.features["label"].names[:3]
    ['T-shirt/top', 'Trouser', 'Pullover']
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._validation import checked_limit
from ..errors import ConfigError, DataError
from .images import grayscale_image_dataset

if TYPE_CHECKING:
    import datasets

__all__ = [
    "DEFAULT_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV_VAR",
    "FASHION_MNIST_HUB_ID",
    "load_fashion_mnist",
    "load_fashion_mnist_arrays",
]

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""The 10 Fashion-MNIST class names, indexed by label id.

Example:
    >>> FASHION_MNIST_CLASSES[9]
    'Ankle boot'
"""

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Directory where the Debian package ``dataset-fashion-mnist`` installs the IDX files.

Example:
    >>> DEFAULT_FASHION_MNIST_DIR
    '/usr/share/datasets/fashion-mnist'
"""

FASHION_MNIST_ENV_VAR = "HF_VERIFIX_FASHION_MNIST_DIR"
"""Environment variable that overrides :data:`DEFAULT_FASHION_MNIST_DIR`.

Example:
    >>> import os
    >>> os.environ[FASHION_MNIST_ENV_VAR] = "/data/fashion-mnist"  # doctest: +SKIP
"""

FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
"""Hugging Face Hub dataset used as an online fallback when local files are missing.

Example:
    >>> FASHION_MNIST_HUB_ID
    'zalando-datasets/fashion_mnist'
"""

_SPLITS = ("train", "test")
_FILE_PREFIX = {"train": "train", "test": "t10k"}
_IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
_INSTALL_HINT = (
    f"install the Debian/Ubuntu package with `apt-get install dataset-fashion-mnist` (files go to "
    f"{DEFAULT_FASHION_MNIST_DIR}), or set the environment variable {FASHION_MNIST_ENV_VAR} "
    f"(or pass root=...) to a directory containing train-images-idx3-ubyte.gz, "
    f"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"
)


def _check_split(split: str) -> str:
    if not isinstance(split, str) or split not in _SPLITS:
        raise ConfigError(f"split must be one of {list(_SPLITS)}, got {split!r}.")
    return split


def _resolve_root(root: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """Returns the directory to read from and a human-readable description of why."""
    if root is not None:
        return Path(root).expanduser(), "the `root` argument"
    env = os.environ.get(FASHION_MNIST_ENV_VAR)
    if env:
        return Path(env).expanduser(), f"${FASHION_MNIST_ENV_VAR}"
    return Path(DEFAULT_FASHION_MNIST_DIR), "the default location"


def _find_file(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        candidate = root / name
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, expected_magic: int, limit: int | None) -> np.ndarray:
    """Parses an (optionally gzip-compressed) IDX file of unsigned bytes."""
    kind = "image" if expected_magic == _IMAGE_MAGIC else "label"
    ndim = expected_magic & 0xFF
    corrupt_hint = "The file is corrupt or truncated; delete it and reinstall it (" + _INSTALL_HINT + ")."
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            header = fh.read(4 + 4 * ndim)
            if len(header) < 4:
                raise DataError(f"Cannot parse Fashion-MNIST {kind} file {path}: it has no IDX header. {corrupt_hint}")
            (magic,) = struct.unpack(">I", header[:4])
            if magic != expected_magic:
                raise DataError(
                    f"Cannot parse Fashion-MNIST {kind} file {path}: bad IDX magic number 0x{magic:08x}, expected "
                    f"0x{expected_magic:08x}. {corrupt_hint}"
                )
            if len(header) < 4 + 4 * ndim:
                raise DataError(f"Cannot parse Fashion-MNIST {kind} file {path}: truncated IDX header. {corrupt_hint}")
            shape = struct.unpack(f">{ndim}I", header[4:])
            count = shape[0] if limit is None else min(shape[0], limit)
            item_size = int(np.prod(shape[1:], dtype=np.int64)) if ndim > 1 else 1
            payload = fh.read(count * item_size)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"Cannot read Fashion-MNIST {kind} file {path}: {err}. {corrupt_hint}") from err
    if len(payload) != count * item_size:
        raise DataError(
            f"Cannot parse Fashion-MNIST {kind} file {path}: expected {count * item_size} bytes of data for "
            f"{count} items of shape {tuple(shape[1:])}, found {len(payload)}. {corrupt_hint}"
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape((count, *shape[1:])).copy()


def _load_from_hub(split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    import datasets

    hub_split = split if limit is None else f"{split}[:{limit}]"
    ds = datasets.load_dataset(FASHION_MNIST_HUB_ID, split=hub_split)
    images = np.zeros((len(ds), 28, 28), dtype=np.uint8)
    for i, img in enumerate(ds["image"]):
        images[i] = np.asarray(img.convert("L"), dtype=np.uint8)
    labels = np.asarray(list(ds["label"]), dtype=np.int64)
    return images, labels


def load_fashion_mnist_arrays(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads a Fashion-MNIST split as NumPy arrays, offline when possible.

    The directory is ``root`` if given, else ``$HF_VERIFIX_FASHION_MNIST_DIR`` if set, else
    :data:`DEFAULT_FASHION_MNIST_DIR`. Both ``.gz`` and uncompressed IDX files are accepted. If
    the files are missing there, the Hugging Face Hub copy ``zalando-datasets/fashion_mnist`` is
    tried (this needs network access).

    Args:
        split: ``"train"`` (60,000 samples) or ``"test"`` (10,000 samples).
        root: Directory containing the IDX files. Defaults to the env var / Debian location.
        limit: If given, only the first ``limit`` samples are read.

    Returns:
        A pair ``(images, labels)``: ``uint8`` images of shape ``(N, 28, 28)`` and ``int64`` labels
        of shape ``(N,)`` with values in ``0..9`` (see :data:`FASHION_MNIST_CLASSES`).

    Raises:
        ConfigError, DataError: If ``split`` or ``limit`` is invalid (a ``ConfigError``), or a file is corrupt
            (a ``DataError``); both are ValueErrors. ``InputTypeError`` (a ``TypeError``) if ``limit`` is
            not an int.
        FileNotFoundError: If the files are missing locally and the Hub fallback fails.

    Example:
        >>> images, labels = load_fashion_mnist_arrays("test", limit=100)
        >>> images.shape, images.dtype, labels.shape
        ((100, 28, 28), dtype('uint8'), (100,))
    """
    split = _check_split(split)
    limit = checked_limit(limit)
    directory, source = _resolve_root(root)
    prefix = _FILE_PREFIX[split]
    image_stem = f"{prefix}-images-idx3-ubyte"
    label_stem = f"{prefix}-labels-idx1-ubyte"
    image_path = _find_file(directory, image_stem)
    label_path = _find_file(directory, label_stem)

    if image_path is None or label_path is None:
        missing = [stem + ".gz" for stem, p in ((image_stem, image_path), (label_stem, label_path)) if p is None]
        try:
            return _load_from_hub(split, limit)
        except Exception as err:  # any failure of the online fallback is reported together with the fix
            raise FileNotFoundError(
                f"Fashion-MNIST {split!r} split not found: looked for {', '.join(missing)} in {directory} "
                f"(from {source}), then tried the Hugging Face Hub dataset {FASHION_MNIST_HUB_ID!r}, which failed "
                f"({type(err).__name__}: {err}). To fix, {_INSTALL_HINT}."
            ) from err

    images = _read_idx(image_path, _IMAGE_MAGIC, limit)
    labels = _read_idx(label_path, _LABEL_MAGIC, limit).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"Fashion-MNIST files disagree: {image_path} has {images.shape[0]} images but {label_path} has "
            f"{labels.shape[0]} labels. The files are corrupt or mismatched; reinstall them ({_INSTALL_HINT})."
        )
    if images.shape[1:] != (28, 28):
        raise DataError(
            f"Fashion-MNIST images in {image_path} have shape {images.shape[1:]}, expected (28, 28). "
            f"The file is not Fashion-MNIST; {_INSTALL_HINT}."
        )
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DataError(
            f"Fashion-MNIST labels in {label_path} must be in 0..{len(FASHION_MNIST_CLASSES) - 1}, found "
            f"{int(labels.max())}. The file is corrupt; {_INSTALL_HINT}."
        )
    return images, labels


def load_fashion_mnist(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> datasets.Dataset:
    """Loads a Fashion-MNIST split as a Hugging Face :class:`datasets.Dataset`.

    The dataset has the same schema as the Hub's ``zalando-datasets/fashion_mnist``: an
    ``image`` column (:class:`datasets.Image`, decoded to 28x28 grayscale ``PIL.Image``) and a
    ``label`` column (:class:`datasets.ClassLabel` named by :data:`FASHION_MNIST_CLASSES`).
    Images are stored losslessly as uncompressed binary PGM, which is much faster to build than
    PNG. See :func:`load_fashion_mnist_arrays` for where the files are looked for.

    Args:
        split: ``"train"`` or ``"test"``.
        root: Directory containing the IDX files. Defaults to the env var / Debian location.
        limit: If given, only the first ``limit`` samples are loaded.

    Returns:
        A :class:`datasets.Dataset` with columns ``image`` and ``label``.

    Raises:
        ConfigError, DataError: If ``split`` or ``limit`` is invalid (a ``ConfigError``), or a file is corrupt
            (a ``DataError``); both are ValueErrors. ``InputTypeError`` (a ``TypeError``) if ``limit`` is
            not an int.
        FileNotFoundError: If the files are missing locally and the Hub fallback fails.

    Example:
        >>> ds = load_fashion_mnist("train", limit=4)
        >>> ds[0]["image"].size, ds[0]["image"].mode
        ((28, 28), 'L')
        >>> ds.features["label"].int2str(ds[0]["label"])
        'Ankle boot'
    """
    images, labels = load_fashion_mnist_arrays(split, root=root, limit=limit)
    return grayscale_image_dataset(images, labels, FASHION_MNIST_CLASSES, split)
