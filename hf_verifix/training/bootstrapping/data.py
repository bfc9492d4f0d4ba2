"""The training data of :class:`~hf_verifix.training.bootstrapping.BootstrappingTrainer`: items that know their index.

Example:
    >>> IndexedDataset([(0.5, 1)])[0]
    {'pixel_values': 0.5, 'labels': 1, 'sample_index': 0}
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from ...errors import DataError
from .._common import as_row, is_map_style

__all__ = ["INDEX_KEY", "IndexedDataset"]

INDEX_KEY = "sample_index"
"""The key under which :class:`IndexedDataset` adds each item's position in the training set.

Example:
    >>> INDEX_KEY
    'sample_index'
"""


class IndexedDataset(Dataset):
    """A map-style dataset whose items are dicts carrying their own position under :data:`INDEX_KEY`.

    Dict items (a ``datasets.Dataset`` row, with or without ``with_transform``) keep their keys; ``(input, label,
    ...)`` tuples (a ``TensorDataset``) become ``{"pixel_values": input, "labels": label}``.

    Raises:
        DataError: An iterable dataset, an item that is neither a dict nor an ``(input, label)`` pair, or an item that
            already has a ``"sample_index"`` key.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> item = IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 1])))[2]
        >>> sorted(item), int(item["labels"]), item["sample_index"]
        (['labels', 'pixel_values', 'sample_index'], 1, 2)
    """

    def __init__(self, dataset: Any) -> None:
        if not is_map_style(dataset):
            raise DataError(
                f"the training data must be a map-style dataset (datasets.Dataset, or a torch Dataset with "
                f"__getitem__ and __len__) so each sample keeps its index across epochs, got {type(dataset).__name__}"
            )
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = as_row(self.dataset[index], index)
        if INDEX_KEY in row:
            raise DataError(
                f"the training items already have a {INDEX_KEY!r} key, which BootstrappingTrainer adds itself; "
                "rename that column"
            )
        row[INDEX_KEY] = int(index)
        return row
