"""Label noise on a Hugging Face :class:`datasets.Dataset`: noisy labels, the clean ones kept, flips marked.

Example:
    >>> from hf_verifix.noise.dataset import add_label_noise
    >>> add_label_noise.__name__
    'add_label_noise'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, DataError, InputTypeError

if TYPE_CHECKING:
    import datasets
from .labels import NOISE_KINDS
from .models import hierarchical_noise, pair_noise, symmetric_noise, transition_noise

__all__ = ["add_label_noise"]

# ---------------------------------------------------------------------------------------------
# datasets integration
# ---------------------------------------------------------------------------------------------


def add_label_noise(
    dataset: datasets.Dataset,
    kind: str = "symmetric",
    rate: float = 0.25,
    label_column: str = "label",
    seed: int = 0,
    **kwargs: Any,
) -> datasets.Dataset:
    """Returns a copy of a :class:`datasets.Dataset` with noisy labels.

    The ``label_column`` is replaced by the noisy labels (keeping its feature type, e.g.
    :class:`datasets.ClassLabel`), the original labels are kept in a ``clean_label`` column and
    a bool ``is_noisy`` column marks the flipped rows.

    Args:
        dataset: The dataset to corrupt. It is not modified.
        kind: ``"symmetric"`` (:func:`symmetric_noise`), ``"pair"`` (:func:`pair_noise`),
            ``"transition"`` (:func:`transition_noise`, needs ``matrix=...``; ``rate`` is ignored) or
            ``"hierarchical"`` (:func:`hierarchical_noise`, needs ``superclasses=...``).
        rate: Fraction of labels to flip, in ``[0, 1)``.
        label_column: Name of the integer label column.
        seed: Seed for reproducibility.
        **kwargs: Extra arguments of the chosen noise function (``num_classes``, ``mapping``,
            ``matrix``, ``superclasses``). For a :class:`datasets.ClassLabel` column, ``num_classes`` defaults to
            its number of classes.

    Returns:
        A new dataset with the noisy ``label_column`` and the ``clean_label`` and ``is_noisy``
        columns.

    Raises:
        InputTypeError: If ``dataset`` is not a :class:`datasets.Dataset` or an argument has the wrong type.
        ConfigError, DataError: If ``kind`` is unknown, ``label_column`` is missing, the output columns already
            exist, or the noise arguments are invalid.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"label": [0, 1, 2, 3] * 5})
        >>> noisy = add_label_noise(ds, kind="symmetric", rate=0.4, seed=0)
        >>> sum(noisy["is_noisy"]), noisy.column_names
        (8, ['label', 'clean_label', 'is_noisy'])
    """
    import datasets as hf_datasets

    if not isinstance(dataset, hf_datasets.Dataset):
        hint = (
            " For a DatasetDict, apply it to each split, e.g. `add_label_noise(dsd['train'], ...)`."
            if isinstance(dataset, hf_datasets.DatasetDict)
            else ""
        )
        raise InputTypeError(f"dataset must be a datasets.Dataset, got {type(dataset).__name__}.{hint}")
    if kind not in NOISE_KINDS:
        raise ConfigError(f"kind must be one of {list(NOISE_KINDS)}, got {kind!r}.")
    if label_column not in dataset.column_names:
        raise DataError(
            f"label_column {label_column!r} is not a column of the dataset; available columns: "
            f"{dataset.column_names}. Pass label_column=... ."
        )
    for new in ("clean_label", "is_noisy"):
        if new in dataset.column_names:
            raise DataError(
                f"dataset already has a {new!r} column, so noise seems to have been added already. Start from the "
                f"clean dataset or drop it with `dataset.remove_columns({new!r})`."
            )

    feature = dataset.features[label_column]
    clean = np.asarray(dataset.with_format("numpy")[label_column])
    if clean.dtype == object or clean.ndim != 1:
        raise DataError(
            f"label_column {label_column!r} must hold one integer class index per row, got feature {feature}."
        )

    if kind == "transition":
        if "matrix" not in kwargs:
            raise ConfigError("kind='transition' needs a transition matrix: pass matrix=... (a (K, K) array).")
        noisy = transition_noise(clean, seed=seed, **kwargs)
    elif kind == "hierarchical":
        if "superclasses" not in kwargs:
            raise ConfigError(
                "kind='hierarchical' needs the class groups: pass superclasses=... (e.g. [[0, 1], [2, 3, 4]])."
            )
        noisy = hierarchical_noise(clean, rate=rate, seed=seed, **kwargs)
    else:
        if isinstance(feature, hf_datasets.ClassLabel) and kwargs.get("num_classes") is None:
            kwargs["num_classes"] = feature.num_classes
        fn = symmetric_noise if kind == "symmetric" else pair_noise
        noisy = fn(clean, rate=rate, seed=seed, **kwargs)

    result = dataset.rename_column(label_column, "clean_label")
    result = result.add_column(label_column, noisy.labels.numpy(), feature=feature)
    result = result.add_column("is_noisy", noisy.flipped.numpy(), feature=hf_datasets.Value("bool"))
    order = [c if c != "clean_label" else label_column for c in dataset.column_names]
    order += ["clean_label", "is_noisy"]
    return result.select_columns(order)
