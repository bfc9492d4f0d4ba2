"""How :class:`~hf_verifix.SAPCallback` finds the data to read: the given datasets, the Trainer's, or its loaders'.

Example:
    >>> trainer_data("train", [1, 2], None, None)
    [1, 2]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader

from ..data.source import is_iterable_dataset
from ..errors import DataError

__all__ = ["has_custom_transform", "is_hf_dataset", "readable", "reject_unindexable", "trainer_data"]


def is_hf_dataset(data: Any) -> bool:
    """Whether ``data`` is a ``datasets.Dataset`` (checked without importing datasets).

    Example:
        >>> is_hf_dataset([1, 2])
        False
    """
    return type(data).__module__.startswith("datasets.") and hasattr(data, "column_names")


def has_custom_transform(data: Any) -> bool:
    """True for a ``datasets.Dataset`` with ``with_transform``/``set_transform``: its rows only exist transformed.

    Example:
        >>> has_custom_transform([1, 2])
        False
    """
    return is_hf_dataset(data) and (getattr(data, "format", None) or {}).get("type") == "custom"


def trainer_data(role: str, given: Any, trainer: Any, loader: Any) -> Any:
    """The ``role`` ("train" or "eval") data the callback reads: ``given``, else the bound Trainer's dataset, else
    the dataset of the loader the Trainer passed (never the shuffled loader itself); None when there is none.

    Example:
        >>> trainer_data("eval", None, None, None) is None
        True
    """
    if given is not None:
        return given
    if trainer is not None:
        bound = getattr(trainer, f"{role}_dataset", None)
        if isinstance(bound, dict):
            raise DataError(
                f"the Trainer's {role}_dataset is a dict of {len(bound)} datasets ({sorted(bound)}); pass the "
                f"one labelled like the training data as SAPCallback({role}_dataset=...)"
            )
        if bound is not None:
            return bound
    # The loader the Trainer trained with shuffles (and may be sharded): read its dataset in order instead.
    return getattr(loader, "dataset", None)


def readable(
    data: Any, collate_fn: Callable[[list[Any]], Any] | None, batch_size: int, role: str, transform: Any = None
) -> Any:
    """``data`` as the corrector reads it: a dataset with a transform goes through the Trainer's collator.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.zeros(2, 1), torch.zeros(2))
        >>> readable(data, None, 8, "training") is data
        True
    """
    reject_unindexable(data, f"the {role} data")
    if isinstance(data, DataLoader):
        return data
    if transform is not None:
        if not is_hf_dataset(data) or has_custom_transform(data):
            raise DataError(
                f"transform= preprocesses the raw image column of a datasets.Dataset, but the {role} data is a "
                f"{type(data).__name__}{' with its own transform' if is_hf_dataset(data) else ''}; drop "
                "SAPCallback(transform=...) and let the data yield pixel_values"
            )
        return data
    if is_hf_dataset(data) and not has_custom_transform(data):
        return data  # read column by column, whatever its format
    if collate_fn is None:
        if not is_hf_dataset(data):
            return data
        from transformers import default_data_collator

        collate_fn = default_data_collator
    return DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)


def reject_unindexable(data: Any, name: str) -> None:
    """Refuse an iterable (streaming) dataset: the trusted samples are revisited by index.

    Example:
        >>> reject_unindexable([1, 2], "train_dataset")  # indexable: nothing to say
    """
    if is_iterable_dataset(data):
        raise DataError(
            f"{name} is an iterable (streaming) dataset, which cannot revisit the trusted samples; pass a map-style "
            "dataset (datasets.Dataset, e.g. without streaming=True, or a torch Dataset with __getitem__)"
        )
