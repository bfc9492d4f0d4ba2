"""Labels of a loaded split against a model, and the trusted-index file that ``select`` writes and ``correct`` reads.

:func:`align_labels` renumbers a dataset's ``ClassLabel`` column to a model's class names; :func:`check_labels`
refuses labels the model cannot predict; :func:`write_trusted` and :func:`read_trusted` write and read trusted row
indices (``.json`` with ``"indices"``, ``.csv`` with an ``index`` column, or one integer per line). Errors are
:class:`~hf_verifix.errors.DataError` and name the API arguments (``label_column=``, ``align_labels()``); the
``hf-verifix`` command line shows its flags instead.

Example:
    >>> import datasets
    >>> from hf_verifix.data.loading import LoadedData
    >>> data = LoadedData(datasets.Dataset.from_dict({"image": [0, 1], "label": [0, 2]}), "image", "label")
    >>> check_labels(data, num_classes=3)
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import DataError
from ..models.adapters import class_names
from ..utils.staging import atomic_write
from .loading import LoadedData

__all__ = ["TRUSTED_SUFFIXES", "align_labels", "check_labels", "read_trusted", "write_trusted"]

# The file kinds write_trusted writes (read_trusted also reads one integer per line from any other file).
TRUSTED_SUFFIXES = (".json", ".csv")


def _model_class_names(model: nn.Module) -> list[str]:
    """The model's class names, refusing a model without names or with one name for several classes."""
    names = class_names(model)
    if names is None:
        raise DataError(
            "align_labels() needs the model's class names (config.id2label, or timm's pretrained_cfg label_names), "
            "but the model has none; drop align_labels()"
        )
    lowered = [n.lower() for n in names]
    repeated = sorted({n for n in lowered if lowered.count(n) > 1})
    if repeated:
        raise DataError(
            f"align_labels() matches classes by name, but the model's names {repeated[:5]} are used by several "
            "classes; drop align_labels() and renumber the labels yourself"
        )
    return names


def align_labels(data: LoadedData, model: nn.Module) -> LoadedData:
    """Renumber ``data``'s own ``ClassLabel`` column to ``model``'s class numbering, matching names (in place).

    The column renumbered is ``data.reference_column`` when the training labels were given apart (``noisy_labels=``
    or ``noisy_label_column=`` of :func:`~hf_verifix.data.loading.load_data`: those are already in the model's
    numbering), else ``data.label_column``. Names match case-insensitively, as
    ``datasets.Dataset.align_labels_with_mapping`` does.

    Args:
        data: A loaded split (its ``dataset`` is replaced by the renumbered one).
        model: A classifier with class names: transformers' ``config.id2label`` or timm's
            ``pretrained_cfg["label_names"]``.

    Returns:
        ``data``, renumbered.

    Raises:
        DataError: The model has no class names or repeats one, the column is no ``ClassLabel``, or one of its
            classes is not among the model's.

    Example:
        >>> import datasets
        >>> from torch import nn
        >>> model = nn.Linear(2, 2)
        >>> model.pretrained_cfg = {"label_names": ["cat", "dog"]}
        >>> features = datasets.Features({"image": datasets.Value("int64"), "label": datasets.ClassLabel(
        ...     names=["dog", "cat"])})
        >>> table = datasets.Dataset.from_dict({"image": [0, 1], "label": [0, 1]}, features=features)
        >>> align_labels(LoadedData(table, "image", "label"), model).dataset["label"][:]  # dog, cat
        [1, 0]
    """
    names = _model_class_names(model)
    column = data.reference_column or data.label_column
    feature = data.dataset.features[column]
    if not hasattr(feature, "names"):
        raise DataError(
            f"align_labels() renumbers a ClassLabel column, but {column!r} is a {type(feature).__name__}; drop "
            "align_labels(), or cast the column to datasets.ClassLabel(names=...) first"
        )
    missing = sorted({n.lower() for n in feature.names} - {n.lower() for n in names})
    if missing:
        raise DataError(
            f"align_labels(): the dataset's classes {missing[:5]} are not among the model's {names[:10]}; the names "
            "must match (case-insensitive)"
        )
    data.dataset = data.dataset.align_labels_with_mapping({n: i for i, n in enumerate(names)}, column)
    return data


def check_labels(data: LoadedData, num_classes: int | None, split: str | None = None) -> None:
    """Refuse labels (of ``data.label_column``) that a model predicting ``num_classes`` classes cannot predict.

    Args:
        data: A loaded split.
        num_classes: The model's number of classes; None skips the check.
        split: The split's name for the message (default: ``data.split``).

    Raises:
        DataError: A label is ``num_classes`` or more: the column is probably not the one the model learned.

    Example:
        >>> import datasets
        >>> data = LoadedData(datasets.Dataset.from_dict({"image": [0], "label": [5]}), "image", "label", split="test")
        >>> check_labels(data, 3)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        DataError: split 'test' has labels up to 5 in column 'label', but the model predicts 3 classes; ...
    """
    labels = data.labels()
    if num_classes is not None and labels.numel() and int(labels.max()) >= num_classes:
        raise DataError(
            f"split {split or data.split!r} has labels up to {int(labels.max())} in column {data.label_column!r}, "
            f"but the model predicts {num_classes} classes; pass the label column the model was trained on "
            "(label_column=)"
        )


def write_trusted(
    path: str | os.PathLike[str],
    indices: Sequence[int],
    scores: Sequence[float],
    labels: Sequence[int],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write trusted row indices with their scores (lower is more trusted) and labels, as JSON or CSV.

    A ``.json`` file holds ``metadata``'s keys, then ``"score"``, ``"indices"``, ``"scores"`` and ``"labels"``; a
    ``.csv`` file has the columns ``index,score,label``. The file is replaced in one step (never half written).

    Args:
        path: The file to write, ending in ``.json`` or ``.csv``.
        indices: Row indices of the full split (``LoadedData.rows`` of the chosen positions).
        scores: Each row's selector score.
        labels: Each row's label.
        metadata: What made the selection (model, dataset, selector ...), kept in a ``.json`` file only.

    Returns:
        The path written.

    Raises:
        DataError: ``path`` ends in something else, or the three sequences differ in length.

    Example:
        >>> import tempfile
        >>> path = write_trusted(Path(tempfile.mkdtemp()) / "trusted.csv", [4, 9], [0.1, 0.25], [1, 0])
        >>> print(path.read_text(), end="")
        index,score,label
        4,0.1,1
        9,0.25,0
    """
    target = Path(path)
    if target.suffix not in TRUSTED_SUFFIXES:
        raise DataError(f"path= must end in .json or .csv, got {str(target)!r}")
    if not len(indices) == len(scores) == len(labels):
        raise DataError(
            f"indices, scores and labels must have one entry per row, got {len(indices)}, {len(scores)} and "
            f"{len(labels)}"
        )
    rows, values, classes = [int(i) for i in indices], [float(s) for s in scores], [int(c) for c in labels]
    if target.suffix == ".json":
        payload = {**(metadata or {}), "score": "lower is more trusted", "indices": rows, "scores": values}
        payload["labels"] = classes
        return atomic_write(target, json.dumps(payload, indent=2) + "\n")
    lines = ["index,score,label", *(f"{r},{s!r},{c}" for r, s, c in zip(rows, values, classes, strict=True))]
    return atomic_write(target, "\n".join(lines) + "\n")


def _parse_trusted(source: Path, text: str) -> list[int]:
    """The integers of a trusted-index file's text, by its suffix."""
    if source.suffix == ".json":
        value = json.loads(text)
        rows = value["indices"] if isinstance(value, dict) else value
    elif source.suffix == ".csv":
        rows = [row["index"] for row in csv.DictReader(text.splitlines())]
    else:
        rows = [line.split(",")[0] for line in text.splitlines() if line.strip()]
    return [int(r) for r in rows]


def read_trusted(path: str | os.PathLike[str], rows: Sequence[int] | None = None) -> list[int]:
    """Read trusted row indices: ``.json`` (a list, or an object with ``"indices"``), ``.csv`` (an ``index``
    column) or one integer per line.

    Args:
        path: A file written by :func:`write_trusted` (``hf-verifix select``), or one integer per line.
        rows: The rows of the full split that the loaded data holds, in order (``LoadedData.rows``). When given,
            each index is translated to its position in the loaded data, ready for ``trusted_indices=``.

    Returns:
        The indices, or their positions among ``rows``.

    Raises:
        DataError: The file is missing or unreadable, or an index is not among ``rows``.

    Example:
        >>> import tempfile
        >>> path = write_trusted(Path(tempfile.mkdtemp()) / "trusted.json", [4, 9], [0.1, 0.2], [1, 0])
        >>> read_trusted(path), read_trusted(path, rows=[9, 7, 4])
        ([4, 9], [2, 0])
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(f"no trusted-index file at {str(path)!r}; write one with write_trusted()")
    try:
        indices = _parse_trusted(source, source.read_text(encoding="utf-8"))
    except (KeyError, TypeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise DataError(
            f"cannot read trusted row indices from {str(path)!r} ({type(err).__name__}: {err}); expected `select` "
            "output (.json with 'indices', .csv with an 'index' column) or one integer per line"
        ) from err
    if rows is None:
        return indices
    position = {row: i for i, row in enumerate(rows)}
    missing = [i for i in indices if i not in position]
    if missing:
        raise DataError(
            f"{len(missing)} trusted index(es) from {str(path)!r} (e.g. {missing[:5]}) are not among the rows used "
            "(check split= and limit=: indices refer to rows of the split)"
        )
    return [position[i] for i in indices]
