"""One way to walk any supported training data in indexed batches: HF datasets, torch datasets, DataLoaders."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler, Subset, TensorDataset
from torch.utils.data._utils.collate import default_collate

from ..errors import DataError
from ..models.adapters import class_names
from ..models.forward import as_model_dtype, model_dtype, model_input_channels
from ..utils.distributed import shard
from ..utils.progress import progress_bar
from .images import Transform, default_image_transform, image_to_tensor

__all__ = ["IMAGE_COLUMNS", "LABEL_COLUMNS", "Batch", "SampleSource", "as_source", "column_name", "split_batch"]

IMAGE_COLUMNS = ("image", "img", "pixel_values", "images", "inputs", "input")
"""Column names tried, in order, for the inputs when none is given."""
LABEL_COLUMNS = ("label", "labels", "fine_label", "class", "target", "targets")
"""Column names tried, in order, for the labels when none is given."""


@dataclass
class Batch:
    """A batch of model inputs, integer labels and the samples' positions in the dataset.

    Example:
        >>> Batch(torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([4, 5])).indices.tolist()
        [4, 5]
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


def is_iterable_dataset(data: Any) -> bool:
    """Whether ``data`` is a stream: a torch ``IterableDataset`` or a 🤗 ``datasets.IterableDataset``.

    Example:
        >>> class Stream(IterableDataset):
        ...     def __iter__(self):
        ...         yield from range(3)
        >>> is_iterable_dataset(TensorDataset(torch.zeros(2))), is_iterable_dataset(Stream())
        (False, True)
    """
    return isinstance(data, IterableDataset) or (
        type(data).__module__.startswith("datasets.") and type(data).__name__ == "IterableDataset"
    )


def _is_class_id(value: Any) -> bool:
    """Whether ``value`` is an integer class id (Python, NumPy or torch integer; not a bool, float or None)."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        return False
    return isinstance(value, int) or hasattr(value, "__index__")


def _as_label_tensor(labels: Any) -> torch.Tensor:
    if isinstance(labels, torch.Tensor):
        tensor = labels
    else:
        values = list(labels) if not isinstance(labels, (int, float)) else [labels]
        position = next((i for i, v in enumerate(values) if not _is_class_id(v)), None)
        if position is not None and values[position] is None:
            missing = [i for i, v in enumerate(values) if v is None]
            raise DataError(
                f"{len(missing)} label(s) are missing (None), at samples {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}; every sample needs an integer class id: label those samples "
                "or drop them first, e.g. dataset = dataset.filter(lambda row: row['label'] is not None)"
            )
        if position is not None:
            bad = values[position]
            raise DataError(
                f"labels must be integer class ids, got {type(bad).__name__} {bad!r}; map class names to ids first "
                "(e.g. dataset.class_encode_column('label'))"
            )
        tensor = torch.as_tensor([int(v) for v in values])
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise DataError(f"labels must be integer class ids, got a {tensor.dtype} tensor; cast them with .long()")
    return tensor.reshape(-1).long()


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(inputs, labels)`` of a collated batch: a ``(x, y, ...)`` tuple or a dict with pixel_values/labels.

    Example:
        >>> x, y = split_batch({"pixel_values": torch.zeros(2, 3), "labels": torch.tensor([1, 0])})
        >>> y.tolist()
        [1, 0]
    """
    if isinstance(batch, dict):
        x = next((batch[k] for k in IMAGE_COLUMNS if k in batch), None)
        y = next((batch[k] for k in LABEL_COLUMNS if k in batch), None)
        if x is None or y is None:
            raise DataError(
                f"a dict batch needs an input key (one of {list(IMAGE_COLUMNS)}) and a label key "
                f"(one of {list(LABEL_COLUMNS)}), got keys {sorted(batch)}"
            )
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        x, y = batch[0], batch[1]
    else:
        raise DataError(
            f"each batch must be an (inputs, labels) pair or a dict with 'pixel_values' and 'labels', "
            f"got {type(batch).__name__}"
        )
    if not isinstance(x, torch.Tensor):
        raise DataError(f"inputs must be tensors, got {type(x).__name__}; add a transform that returns tensors")
    return x, _as_label_tensor(y)


class _ShapeCheckedCollate:
    """A collate function whose samples of different shapes raise a DataError naming the shapes and the fix.

    A class, not a closure, so that DataLoader worker processes can pickle it.
    """

    def __init__(self, collate_fn: Callable[[list[Any]], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, samples: list[Any]) -> Any:
        try:
            return self.collate_fn(samples)
        except RuntimeError as err:
            if "equal size" not in str(err):
                raise
            shapes = [tuple(x.shape) for x in (_sample_input(sample) for sample in samples) if hasattr(x, "shape")]
            seen = list(dict.fromkeys(shapes))
            raise DataError(
                f"the inputs of one batch have {len(seen)} different shapes ({', '.join(map(str, seen[:4]))}), so "
                f"they cannot be stacked: {err}. The model takes one input size: pass transform= that resizes "
                "every image to it (e.g. torchvision.transforms.Compose([Resize((224, 224)), ToTensor()]), or the "
                "model's image processor), or resize the images in the dataset first"
            ) from err


def _sample_input(sample: Any) -> Any:
    """The input of one dataset sample: the first item of a pair, or the image entry of a dict."""
    if isinstance(sample, Mapping):
        return next((sample[k] for k in IMAGE_COLUMNS if k in sample), None)
    if isinstance(sample, (tuple, list)) and sample:
        return sample[0]
    return sample


class _HFImageDataset(Dataset):
    """A ``datasets.Dataset`` seen as a torch dataset of ``(image tensor, label)``."""

    def __init__(
        self, dataset: Any, image_column: str, label_column: str, transform: Transform | None, channels: int | None
    ) -> None:
        # Read the stored columns whatever format or transform the user set (with_format("torch") would turn the
        # images into tensors a PIL transform rejects): PIL images for an Image column; Arrow for array columns,
        # whose nested lists are flattened into NumPy arrays of the stored dtype (see __getitems__).
        self.is_image = _is_image_feature(dataset.features[image_column])
        self.dataset = dataset.select_columns(list(dict.fromkeys([image_column, label_column])))
        self.dataset = self.dataset.with_format(None if self.is_image else "arrow")
        self.image_column = image_column
        self.label_column = label_column
        self.transform = transform
        self.channels = channels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, Any]]:
        """The samples at ``indices``, read in one call (the DataLoader asks for a batch this way).

        An array column (``pixel_values`` from a ``map`` over an image processor) is read from Arrow: one buffer
        for a batch of equal-shaped rows, else one per row. ``datasets``' NumPy formatting would convert the nested
        lists one by one (about 1-3 ms a row); its meaning is kept: integers are widened to int64, so stored pixels
        0-255 reach the model (or the ``transform``) as 0-255, never rescaled.
        """
        rows = self._rows([int(index) for index in indices])
        if self.is_image:
            images, labels = rows[self.image_column], rows[self.label_column]
        else:
            images = [_widened(row) for row in _row_arrays(rows.column(self.image_column))]
            labels = rows.column(self.label_column).to_pylist()
        return [
            (image_to_tensor(image, self.transform, self.channels), label)
            for image, label in zip(images, labels, strict=True)
        ]

    def _rows(self, indices: list[int]) -> Any:
        """The stored rows at ``indices``; an image that cannot be decoded raises a DataError naming its sample."""
        try:
            return self.dataset[indices]
        except (OSError, SyntaxError, ValueError) as err:  # PIL: UnidentifiedImageError (an OSError), truncated
            if not self.is_image or isinstance(err, DataError):
                raise
            sample, error = indices[0], err
            for index in indices:  # find the first sample that fails on its own
                try:
                    self.dataset[index]
                except (OSError, SyntaxError, ValueError) as one:
                    sample, error = index, one
                    break
            raise DataError(
                f"cannot decode the image of sample {sample} in column {self.image_column!r}: "
                f"{type(error).__name__}: {error}; its stored bytes are not a readable image (corrupt or truncated "
                f"file). Replace it, or drop it first: dataset = dataset.select(i for i in range(len(dataset)) if "
                f"i != {sample})"
            ) from error


def _widened(row: Any) -> Any:
    """An integer array as int64 (as ``datasets``' NumPy formatting gives it); anything else as it is."""
    return row.astype(np.int64) if isinstance(row, np.ndarray) and row.dtype.kind in "iu" else row


def _row_arrays(column: Any) -> list[Any]:
    """Each row of an Arrow column as a NumPy array (one buffer for equal shapes), or as Python values if not numbers.

    Example:
        >>> import pyarrow as pa
        >>> [a.shape for a in _row_arrays(pa.chunked_array([[[1, 2], [3]]]))]
        [(2,), (1,)]
    """
    stacked = _stacked_arrays(column)
    if stacked is not None:
        return list(stacked)
    rows = []
    for i in range(len(column)):
        row = column.slice(i, 1)
        one = _stacked_arrays(row)
        rows.append(one[0] if one is not None else row.to_pylist()[0])  # image_to_tensor names what it got
    return rows


def _stacked_arrays(column: Any) -> np.ndarray | None:
    """An Arrow column of equal-shaped nested lists of numbers as one ``(rows, *shape)`` array, else None.

    None (the caller formats the rows itself) for null entries, ragged rows, or values that are not numbers.

    Example:
        >>> import pyarrow as pa
        >>> _stacked_arrays(pa.chunked_array([[[[1, 2]], [[3, 4]]]])).shape
        (2, 1, 2)
        >>> _stacked_arrays(pa.chunked_array([[[1, 2], [3]]])) is None
        True
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(values.type, pa.ExtensionType):  # datasets' Array2D/3D/...: nested lists underneath
        values = values.storage
    nested = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    shape = [len(values)]
    while len(values) and any(is_kind(values.type) for is_kind in nested):
        if values.null_count:
            return None
        low, high = (int(v.as_py()) for v in pc.min_max(pc.list_value_length(values)).values())
        if low != high:
            return None
        shape.append(high)
        values = values.flatten()
    numbers = pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
    if len(shape) == 1 or values.null_count or not numbers:
        return None
    return values.to_numpy(zero_copy_only=False).reshape(shape).copy()  # writable, as a transform may need


def _check_class_order(model: nn.Module, dataset_names: Sequence[str] | None, column: str) -> None:
    """Refuse a dataset whose classes are the model's, by name, in another order (every label would be wrong)."""
    model_names = class_names(model)
    if not model_names or not dataset_names or len(model_names) != len(dataset_names):
        return
    ours, theirs = [n.lower() for n in model_names], [n.lower() for n in dataset_names]
    if ours == theirs or sorted(ours) != sorted(theirs):
        return  # the same order, or other names (nothing to compare)
    moved = [f"{i}: {dataset_names[i]!r} (model: {model_names[i]!r})" for i, n in enumerate(ours) if n != theirs[i]]
    raise DataError(
        f"the dataset's column {column!r} numbers the model's classes in another order: dataset class "
        f"{'; '.join(moved[:5])}{' ...' if len(moved) > 5 else ''}, so its labels would be read as other classes; "
        f"renumber them first: dataset = dataset.align_labels_with_mapping(model.config.label2id, {column!r}) (or, "
        "if the model was trained on the dataset's ids and its config.id2label is what is wrong, fix id2label)"
    )


def _is_image_feature(feature: Any) -> bool:
    return type(feature).__name__ == "Image"


def _is_hf_dataset(data: Any) -> bool:
    return type(data).__module__.startswith("datasets.") and hasattr(data, "column_names")


def column_name(dataset: Any, requested: str | None, kind: str, candidates: Sequence[str], feature: str) -> str:
    """The ``kind`` ("image" or "label") column of ``dataset``: ``requested`` if given (it must exist), else the only
    column of the ``feature`` type (``"Image"`` / ``"ClassLabel"``), else the first of ``candidates`` present.

    Example:
        >>> import datasets
        >>> data = datasets.Dataset.from_dict({"x": [1], "target": [0]})
        >>> column_name(data, None, "label", LABEL_COLUMNS, "ClassLabel")
        'target'
    """
    columns = list(dataset.column_names)
    if requested is not None:
        if requested not in columns:
            raise DataError(
                f"{kind} column {requested!r} is not in the dataset; its columns are {columns}. "
                f"Pass {kind}_column= one of them"
            )
        return requested
    typed = [c for c in columns if type(dataset.features[c]).__name__ == feature]
    named = [c for c in candidates if c in columns]
    found = typed[:1] or named[:1]
    if not found:
        raise DataError(
            f"cannot find the {kind} column among {columns}: none has a datasets.{feature} feature or one of the "
            f"names {list(candidates)}. Pass {kind}_column='...' (CorrectionConfig or fit())"
        )
    return found[0]


class SampleSource:
    """Indexed batches of ``(inputs, labels, indices)`` over a map-style dataset, always in dataset order.

    Example:
        >>> source = SampleSource(TensorDataset(torch.randn(5, 2), torch.tensor([0, 1, 0, 1, 1])), batch_size=2)
        >>> [b.indices.tolist() for b in source.batches([4, 0, 2])]
        [[0, 2], [4]]
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 64,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        num_workers: int = 0,
        labels: torch.Tensor | None = None,
        num_classes: int | None = None,
        input_dtype: torch.dtype | None = None,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.collate_fn = collate_fn or default_collate
        self.num_workers = num_workers
        self.labels = labels
        self.num_classes = num_classes
        self.input_dtype = input_dtype

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def batches(
        self,
        indices: Sequence[int] | torch.Tensor | None = None,
        desc: str | None = None,
        progress: bool = False,
        sharded: bool = True,
    ) -> Iterator[Batch]:
        """Yield the batches of the samples at ``indices`` (all when None), in increasing index order.

        Under several processes each one gets its exact shard (``indices[rank::world_size]``: no sample twice,
        none padded in) unless ``sharded=False``; callers combine per-sample results with
        :func:`hf_verifix.utils.distributed.sum_across_processes`. Progress bars show on the main process only.
        Floating-point inputs come in ``input_dtype`` when it is set (:func:`as_source` sets the model's dtype, so
        a float32 dataset feeds a float16, bfloat16 or float64 model); inputs of different shapes in one batch
        raise a DataError naming them.

        Example:
            >>> source = SampleSource(TensorDataset(torch.arange(3.0)[:, None], torch.tensor([0, 1, 1])))
            >>> next(iter(source.batches())).labels.tolist()
            [0, 1, 1]
        """
        order = torch.arange(len(self)) if indices is None else torch.as_tensor(indices).long().sort().values
        if sharded:
            order = shard(order)
        subset = Subset(self.dataset, order.tolist())
        loader = DataLoader(
            subset,
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=_ShapeCheckedCollate(self.collate_fn),
            num_workers=self.num_workers,
        )
        start = 0
        for raw in progress_bar(loader, desc or "", progress, leave=False):
            inputs, labels = split_batch(raw)
            if inputs.shape[0] != labels.shape[0]:
                raise DataError(f"a batch has {inputs.shape[0]} inputs but {labels.shape[0]} labels")
            yield Batch(as_model_dtype(inputs, self.input_dtype), labels, order[start : start + labels.shape[0]])
            start += labels.shape[0]


def as_source(
    data: Any,
    model: nn.Module,
    batch_size: int = 64,
    image_column: str | None = None,
    label_column: str | None = None,
    transform: Transform | None = None,
) -> SampleSource:
    """Wrap ``data`` (a ``datasets.Dataset``, a map-style torch ``Dataset`` or a ``DataLoader``) as a SampleSource.

    A ``datasets.Dataset``'s image and label columns are detected (``Image``/``ClassLabel`` features, then common
    names) unless named, and read whatever format (``with_format("torch")``) or transform it carries; images of an
    ``Image`` column go through ``transform`` or the model's own preprocessing (:func:`default_image_transform`),
    an already preprocessed array column (``pixel_values``) only through an explicit ``transform``. A DataLoader
    over a ``datasets.Dataset`` with its own ``collate_fn`` is used as it is: its collate_fn gets the dataset's
    rows and must return ``(inputs, labels)`` or a dict with ``pixel_values`` and ``labels``. Floating-point
    inputs are fed in the model's own dtype (:func:`~hf_verifix.models.forward.model_dtype`).

    Raises:
        DataError: Empty data, missing columns, a shuffled, iterable or unbatched (``batch_size=None``)
            DataLoader, non-integer or missing (None) labels.

    Example:
        >>> model = nn.Linear(2, 2)
        >>> len(as_source(TensorDataset(torch.randn(7, 2), torch.zeros(7, dtype=torch.long)), model))
        7
    """
    collate_fn = None
    num_workers = 0
    labels = None
    num_classes = None
    stream = data.dataset if isinstance(data, DataLoader) else data
    if is_iterable_dataset(stream):
        raise DataError(
            f"got a stream ({type(stream).__name__}{' in a DataLoader' if stream is not data else ''}), but the "
            "trusted samples are revisited by index after every sample is scored; pass a map-style dataset: load "
            "without streaming=True, or take the rows to use first, e.g. "
            "datasets.Dataset.from_list(list(stream.take(50_000)), features=stream.features)"
        )
    if isinstance(data, DataLoader):
        if data.batch_sampler is None:
            raise DataError(
                "the DataLoader was built with batch_size=None, so it yields single samples instead of batches; "
                "build it with a batch_size (e.g. batch_size=64) or pass its dataset"
            )
        sampler = getattr(data.batch_sampler, "sampler", data.sampler)
        if not isinstance(sampler, SequentialSampler):
            raise DataError(
                f"the DataLoader uses a {type(sampler).__name__}, which visits samples in a different order "
                "each pass; build it with shuffle=False (or pass its dataset)"
            )
        collate_fn = data.collate_fn
        num_workers = data.num_workers
        batch_size = data.batch_size or batch_size
        data = data.dataset
    own_collate = collate_fn is not None and collate_fn is not default_collate
    if _is_hf_dataset(data) and own_collate:
        # The DataLoader's collate_fn was written for this dataset's rows (usually dicts of pixel_values/labels).
        if transform is not None:
            raise DataError(
                "transform= cannot be applied to a DataLoader that has its own collate_fn; preprocess in the "
                "collate_fn (or the dataset's with_transform), or pass the datasets.Dataset with transform="
            )
        if len(data) == 0:
            raise DataError("the dataset is empty; pass at least one labelled sample")
    elif _is_hf_dataset(data):
        if len(data) == 0:
            raise DataError("the dataset is empty; pass at least one labelled sample")
        image = column_name(data, image_column, "image", IMAGE_COLUMNS, "Image")
        label = column_name(data, label_column, "label", LABEL_COLUMNS, "ClassLabel")
        feature = data.features[label]
        num_classes = getattr(feature, "num_classes", None)
        _check_class_order(model, getattr(feature, "names", None), label)
        labels = _as_label_tensor(list(data.with_format(None)[label]))
        if transform is None and _is_image_feature(data.features[image]):
            transform = default_image_transform(model)
        data = _HFImageDataset(data, image, label, transform, model_input_channels(model))
        collate_fn = None
    elif isinstance(data, TensorDataset):
        if len(data.tensors) < 2:
            raise DataError(f"a TensorDataset must hold (inputs, labels), got {len(data.tensors)} tensor(s)")
        labels = _as_label_tensor(data.tensors[1])
    elif not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise DataError(
            f"unsupported data of type {type(data).__name__}; pass a datasets.Dataset, a map-style "
            "torch Dataset of (input, label) or a DataLoader built with shuffle=False"
        )
    if len(data) == 0:
        raise DataError("the dataset is empty; pass at least one labelled sample")
    return SampleSource(data, batch_size, collate_fn, num_workers, labels, num_classes, model_dtype(model))
