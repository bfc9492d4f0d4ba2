"""Loading a labelled dataset split by Hub ID or local path, with training labels from another column or a file.

:func:`load_data` reads a Hub dataset, a ``save_to_disk`` folder, an image folder (``load_dataset("imagefolder",
data_dir=...)``) or a data file, with a split (slices such as ``train[:80%]``), columns and a seeded sample limit.

Example:
    >>> from hf_verifix.data.loading import LoadedData
    >>> LoadedData.__name__
    'LoadedData'
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, LoadError
from ..utils.hub import is_repo_id
from .source import IMAGE_COLUMNS, LABEL_COLUMNS, column_name

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_DATA_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}


# ---------------------------------------------------------------------------------------------------------- data
@dataclass
class LoadedData:
    """A dataset split ready for :class:`~hf_verifix.ProjectionCorrector`, with where it came from.

    Attributes:
        dataset: The ``datasets.Dataset`` (limited, with the training labels in ``label_column``).
        image_column: Its image column.
        label_column: The labels to use (the noisy training labels when they were given separately).
        reference_column: The dataset's own labels when ``label_column`` was replaced, else None.
        rows: For each row, its position in the full split (differs from ``range(n)`` after a limit).
        source: What was asked for (a Hub ID or a path).
        split: The split (spec) that was loaded.
        is_hub: Whether ``source`` was loaded from the Hub.

    Example:
        >>> import datasets
        >>> ds = datasets.Dataset.from_dict({"image": [[0.0]], "label": [0]})
        >>> LoadedData(ds, "image", "label").num_rows
        1
    """

    dataset: Any
    image_column: str
    label_column: str
    reference_column: str | None = None
    rows: list[int] = field(default_factory=list)
    source: str = ""
    split: str | None = None
    is_hub: bool = False

    @property
    def num_rows(self) -> int:
        """Number of rows.

        Example:
            >>> import datasets
            >>> LoadedData(datasets.Dataset.from_dict({"x": [1, 2]}), "x", "x").num_rows
            2
        """
        return len(self.dataset)

    def labels(self, column: str | None = None) -> torch.Tensor:
        """The integer labels of ``column`` (default: ``label_column``) as a tensor.

        Example:
            >>> import datasets
            >>> LoadedData(datasets.Dataset.from_dict({"x": [0], "y": [2]}), "x", "y").labels().tolist()
            [2]
        """
        values = self.dataset.with_format(None)[column or self.label_column]
        return torch.as_tensor(list(values), dtype=torch.long)


def read_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Read integer labels from a file: one per line (``.txt``/``.csv``/other), ``.npy``, or ``.json``.

    A JSON file holds a list of integers or an object with a ``"labels"`` (or ``"noisy_labels"``) list.

    Raises:
        DataError: The file is missing, empty, or holds something other than non-negative integers.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "labels.txt"
        >>> _ = path.write_text("0\\n2\\n1\\n")
        >>> read_labels(path).tolist()
        [0, 2, 1]
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(f"no label file at {str(source)!r}; pass a .txt (one integer per line), .npy or .json file")
    try:
        if source.suffix == ".npy":
            values: Any = np.load(source, allow_pickle=False)
        elif source.suffix == ".json":
            values = json.loads(source.read_text(encoding="utf-8"))
            if isinstance(values, dict):
                key = next((k for k in ("labels", "noisy_labels") if k in values), None)
                if key is None:
                    raise DataError(
                        f"{str(source)!r} holds a JSON object without a 'labels' list (keys: {sorted(values)[:8]})"
                    )
                values = values[key]
        else:
            lines = [line.split(",")[0].strip() for line in source.read_text(encoding="utf-8").splitlines()]
            values = [int(line) for line in lines if line]
    except (ValueError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(
            f"cannot read integer labels from {str(source)!r} ({err}); write one integer class id per line, or a "
            ".npy / .json array"
        ) from err
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise DataError(f"{str(source)!r} must hold a flat, non-empty list of labels, got shape {array.shape}")
    if array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu" or int(array.min()) < 0:
        raise DataError(f"{str(source)!r} must hold non-negative integer class ids, got {array.dtype} values")
    return array.astype(np.int64)


_SPLIT_NAME = re.compile(r"^\s*([\w.-]+)")


def _pick_split(data: Any, split: str | None, source: str) -> Any:
    """A split of a DatasetDict, or of a Dataset saved on its own, read with ``datasets.ReadInstruction``: a name,
    sliced with integers or percentages (``train[:80%]``, ``train[10:50]``), or several joined with ``+``
    (``train[:10%]+test[:10%]``), exactly as ``load_dataset(..., split=...)`` reads them.

    A ``Dataset`` saved on its own is a single split: its name is not checked, only its slices are applied.
    """
    import datasets

    if split is None:
        if isinstance(data, datasets.DatasetDict):
            raise DataError(f"{source!r} has splits {sorted(data)}; pass split= one of them (e.g. 'train[:80%]')")
        return data
    try:
        instruction = datasets.ReadInstruction.from_spec(split)
        if isinstance(data, datasets.DatasetDict):
            parts = {name: data[name] for name in data}
        else:
            parts = {m[1]: data for part in split.split("+") if (m := _SPLIT_NAME.match(part))}
        absolute = instruction.to_absolute({name: len(part) for name, part in parts.items()})
    except ValueError as err:
        known = f"its splits are {sorted(data)}" if isinstance(data, datasets.DatasetDict) else "it is one split"
        raise DataError(
            f"{source!r} cannot be read as split {split!r} ({err}); {known}. Pass a split name, optionally sliced "
            "or joined as in datasets: 'train[:80%]', 'train[10:50]', 'train[:10%]+test[:10%]'"
        ) from err
    chosen = [
        parts[a.splitname]
        if (a.from_, a.to) == (0, len(parts[a.splitname]))
        else parts[a.splitname].select(range(a.from_, a.to))
        for a in absolute
    ]
    return chosen[0] if len(chosen) == 1 else datasets.concatenate_datasets(chosen)


def _looks_like_image_folder(folder: Path) -> bool:
    for count, item in enumerate(folder.rglob("*")):
        if item.suffix.lower() in _IMAGE_SUFFIXES:
            return True
        if count > 2000:
            break
    return False


def _load_raw(
    dataset: Any,
    split: str | None,
    cache_dir: str | os.PathLike[str] | None,
    token: str | bool | None,
    revision: str | None,
) -> tuple[Any, bool]:
    import datasets

    if isinstance(dataset, (datasets.Dataset, datasets.DatasetDict)):
        return _pick_split(dataset, split, "the dataset"), False
    text = os.fspath(dataset)
    path = Path(text).expanduser()
    cache = os.fspath(cache_dir) if cache_dir is not None else None
    if path.suffix == ".py" or (path.is_dir() and (path / f"{path.name}.py").is_file()):
        raise _script_refused(text)
    try:
        if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
            return _pick_split(datasets.load_from_disk(str(path)), split, text), False
        if path.is_dir() and _looks_like_image_folder(path):
            return datasets.load_dataset("imagefolder", data_dir=str(path), split=split, cache_dir=cache), False
        if path.is_file() and path.suffix in _DATA_FILE_BUILDERS:
            builder = _DATA_FILE_BUILDERS[path.suffix]
            return datasets.load_dataset(builder, data_files={"train": str(path)}, split=split, cache_dir=cache), False
        if path.exists():
            return datasets.load_dataset(str(path), split=split, cache_dir=cache), False
        if not is_repo_id(text):
            raise LoadError(f"{text!r} is neither an existing local path nor a valid Hub dataset ID (org/name)")
        return datasets.load_dataset(text, split=split, cache_dir=cache, token=token, revision=revision), True
    except DataError:
        raise
    except ValueError as err:
        if "split" in str(err).lower():
            raise DataError(f"{text!r}: {str(err).rstrip('.')}. Pass split= an existing split") from err
        raise LoadError(f"cannot load the dataset {text!r}: {err}") from err
    except (FileNotFoundError, ConnectionError) as err:
        raise LoadError(
            f"cannot load the dataset {text!r}: {err}. With no network, pass a local folder (save_to_disk output or "
            "an image folder), or a dataset already in the datasets cache"
        ) from err
    except RuntimeError as err:
        if "script" in str(err).lower():  # datasets >= 4 refuses loading scripts; it never runs them
            raise _script_refused(text) from err
        raise LoadError(f"cannot load the dataset {text!r}: {type(err).__name__}: {err}") from err


def _script_refused(source: str) -> LoadError:
    return LoadError(
        f"the dataset {source!r} would be loaded by a Python script (a dataset script); hf_verifix never runs "
        "dataset scripts, and datasets >= 4 cannot. Pass the data itself: a folder written by Dataset.save_to_disk, "
        "an image folder (class_name/image.png), a .parquet/.csv/.json file, or a Hub dataset converted to data files "
        "(the Hub's 'refs/convert/parquet' revision)"
    )


def load_data(
    dataset: Any,
    split: str | None = "train",
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    noisy_labels: str | os.PathLike[str] | Sequence[int] | np.ndarray | None = None,
    noisy_label_column: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
) -> LoadedData:
    """Load one split of a dataset by Hub ID, from a local folder or file, or from a ``datasets`` object.

    Args:
        dataset: A Hub dataset ID, a ``save_to_disk`` folder, an image folder (``class_name/image.png`` files, read
            with ``load_dataset("imagefolder", data_dir=...)``), a ``.parquet``/``.csv``/``.json``/``.arrow`` file,
            or a ``datasets.Dataset`` / ``DatasetDict``.
        split: Split name, optionally sliced as in ``datasets`` (``"train[:80%]"``, ``"test[100:200]"``).
        image_column: Image column (detected from its ``Image`` feature or a common name when None).
        label_column: Label column (detected from its ``ClassLabel`` feature or a common name when None).
        noisy_labels: The labels the model was trained with, one per row of the split: a file for
            :func:`read_labels` or a sequence. They become the ``noisy_label`` column used for correction; the
            dataset's own labels stay as ``reference_column``.
        noisy_label_column: Like ``noisy_labels``, but an existing column.
        limit: Keep at most this many rows: a seeded random subset, in split order (same rows for the same seed).
        seed: Seed of the subset.
        cache_dir: ``datasets`` cache folder.
        token: Hub token for a private dataset.
        revision: Branch, tag or commit of a Hub dataset.

    Raises:
        DataError: Unknown split or column, labels of the wrong length or type, a bad limit.
        LoadError: The dataset cannot be found or read.

    Example:
        >>> import datasets
        >>> ds = datasets.Dataset.from_dict({"image": [[[0.0]]] * 4, "label": [0, 1, 0, 1]})
        >>> data = load_data(ds, noisy_labels=[1, 1, 0, 0], limit=3)
        >>> data.label_column, data.reference_column, data.num_rows
        ('noisy_label', 'label', 3)
    """
    import datasets

    if noisy_labels is not None and noisy_label_column is not None:
        raise DataError("pass noisy labels either as a file/sequence (noisy_labels) or as a column, not both")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive integer number of rows, got {limit!r}")
    data, is_hub = _load_raw(dataset, split, cache_dir, token, revision)
    if isinstance(data, datasets.DatasetDict):  # load_dataset with split=None
        raise DataError(f"pick one split of {sorted(data)} with split=")
    if len(data) == 0:
        raise DataError(f"split {split!r} of {dataset!r} is empty; pass a split with labelled images")
    image = column_name(data, image_column, "image", IMAGE_COLUMNS, "Image")
    reference: str | None = None
    if noisy_labels is not None or noisy_label_column is not None:
        reference = label_column if label_column is not None else _maybe_column(data, LABEL_COLUMNS, "ClassLabel")
        if reference is not None and reference not in data.column_names:
            raise DataError(f"label column {reference!r} is not in the dataset; its columns are {data.column_names}")
    if noisy_label_column is not None:
        if noisy_label_column not in data.column_names:
            raise DataError(
                f"noisy label column {noisy_label_column!r} is not in the dataset; its columns are {data.column_names}"
            )
        label = noisy_label_column
    elif noisy_labels is not None:
        values = (
            read_labels(noisy_labels) if isinstance(noisy_labels, (str, os.PathLike)) else np.asarray(noisy_labels)
        )
        if values.ndim != 1 or len(values) != len(data):
            where = f"{str(noisy_labels)!r}" if isinstance(noisy_labels, (str, os.PathLike)) else "noisy_labels"
            raise DataError(
                f"{where} holds {len(values)} labels but split {split!r} has {len(data)} rows; give one label per "
                "row of the split, in order (before any limit)"
            )
        label = "noisy_label"
        if label in data.column_names:
            data = data.remove_columns(label)
        feature = data.features.get(reference) if reference else None
        data = data.add_column(label, [int(v) for v in values])
        if feature is not None and type(feature).__name__ == "ClassLabel":
            if int(values.max()) >= feature.num_classes:
                top = int(values.max())
                raise DataError(f"the noisy labels go up to {top} but {reference!r} has {feature.num_classes} classes")
            data = data.cast_column(label, feature)
    else:
        label = column_name(data, label_column, "label", LABEL_COLUMNS, "ClassLabel")
    rows = list(range(len(data)))
    if limit is not None and limit < len(data):
        rows = sorted(int(i) for i in np.random.default_rng(seed).choice(len(data), size=limit, replace=False))
        data = data.select(rows)
    return LoadedData(
        data,
        image,
        label,
        reference,
        rows,
        os.fspath(dataset) if isinstance(dataset, (str, os.PathLike)) else type(dataset).__name__,
        split,
        is_hub,
    )


def _maybe_column(data: Any, candidates: Sequence[str], feature: str) -> str | None:
    try:
        return column_name(data, None, "label", candidates, feature)
    except DataError:
        return None
