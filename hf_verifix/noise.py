"""Reproducible label-noise injection for experiments and benchmarks.

Four standard noise models are provided, all driven by a seeded :class:`torch.Generator` so
that the same inputs and ``seed`` always give the same noisy labels:

* :func:`symmetric_noise` -- exactly ``round(rate * n)`` samples are flipped, each to a
  uniformly chosen *different* class.
* :func:`pair_noise` -- asymmetric class-pair flips: exactly ``round(rate * n_c)`` samples of
  every class ``c`` are flipped to ``mapping[c]`` (default ``(c + 1) % num_classes``).
* :func:`transition_noise` -- every label ``y`` is resampled from row ``y`` of a
  row-stochastic transition matrix.
* :func:`hierarchical_noise` -- exactly ``round(rate * n)`` samples are flipped, each to a
  uniformly chosen different class of its own superclass (e.g. CIFAR-100's 20 coarse groups).

:func:`add_label_noise` applies any of them to a Hugging Face :class:`datasets.Dataset`.

Example:
    >>> from hf_verifix.noise import symmetric_noise
    >>> noisy = symmetric_noise([0, 1, 2, 3] * 25, rate=0.2, seed=0)
    >>> int(noisy.flipped.sum()), noisy.rate
    (20, 0.2)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import ConfigError, DataError, InputTypeError

if TYPE_CHECKING:
    import datasets

__all__ = [
    "NOISE_KINDS",
    "LabelsLike",
    "NoisyLabels",
    "add_label_noise",
    "hierarchical_noise",
    "pair_noise",
    "symmetric_noise",
    "transition_noise",
]

LabelsLike = Sequence[int] | np.ndarray | torch.Tensor
"""Anything accepted as labels: a sequence of ints, a 1-D integer NumPy array or tensor.

Example:
    >>> labels: LabelsLike = [0, 2, 1]
"""

NOISE_KINDS: tuple[str, ...] = ("symmetric", "pair", "transition", "hierarchical")
"""Values accepted by the ``kind`` argument of :func:`add_label_noise`.

Example:
    >>> "pair" in NOISE_KINDS
    True
"""


@dataclass(frozen=True)
class NoisyLabels:
    """Result of a noise-injection function.

    Attributes:
        labels: The noisy labels, an ``int64`` tensor of shape ``(n,)``.
        flipped: A ``bool`` tensor of shape ``(n,)``, ``True`` where the noisy label differs from
            the original one.

    Example:
        >>> noisy = symmetric_noise([0, 1, 0, 1], rate=0.5, seed=0)
        >>> noisy.labels.dtype, noisy.flipped.dtype, noisy.num_flipped
        (torch.int64, torch.bool, 2)
    """

    labels: torch.Tensor
    flipped: torch.Tensor

    def __post_init__(self) -> None:
        if self.labels.shape != self.flipped.shape:
            raise DataError(
                f"NoisyLabels.labels and NoisyLabels.flipped must have the same shape, got "
                f"{tuple(self.labels.shape)} and {tuple(self.flipped.shape)}."
            )

    @property
    def num_flipped(self) -> int:
        """Number of samples whose label was changed.

        Example:
            >>> symmetric_noise(list(range(10)), rate=0.3).num_flipped
            3
        """
        return int(self.flipped.sum().item())

    @property
    def rate(self) -> float:
        """Actual fraction of flipped samples (``0.0`` for empty labels).

        Example:
            >>> symmetric_noise([0, 1] * 50, rate=0.25).rate
            0.25
        """
        n = self.flipped.numel()
        return self.num_flipped / n if n else 0.0


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


def _as_label_tensor(labels: LabelsLike, name: str = "labels") -> torch.Tensor:
    """Converts labels to a fresh 1-D int64 CPU tensor, with clear errors."""
    if isinstance(labels, torch.Tensor):
        tensor = labels.detach().cpu()
    else:
        type_error = InputTypeError(
            f"{name} must be a list, NumPy array or torch tensor of integers, got {type(labels).__name__}. "
            f"Convert it, e.g. with `np.asarray({name}, dtype=np.int64)`."
        )
        if isinstance(labels, (str, bytes, Mapping, set, frozenset)):
            raise type_error
        try:
            array = np.asarray(labels)
        except (TypeError, ValueError) as err:  # e.g. ragged nested lists
            raise type_error from err
        if array.ndim == 0:
            raise type_error
        if array.dtype == object:
            raise InputTypeError(
                f"{name} must contain only integers, got values of mixed/object type. "
                f"Convert it with `np.asarray({name}, dtype=np.int64)`."
            )
        tensor = torch.from_numpy(np.array(array, copy=True)) if array.size else torch.zeros(0, dtype=torch.int64)
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise InputTypeError(
            f"{name} must have an integer dtype, got {tensor.dtype}. If the values are whole numbers, convert them "
            f"with `.long()` / `.astype(np.int64)`."
        )
    if tensor.ndim != 1:
        raise DataError(
            f"{name} must be 1-D (one class index per sample), got shape {tuple(tensor.shape)}. "
            f"If you have one-hot/probability targets, pass `{name}.argmax(-1)`."
        )
    tensor = tensor.to(torch.int64).clone()
    if tensor.numel() and int(tensor.min()) < 0:
        raise DataError(
            f"{name} must be >= 0, got minimum {int(tensor.min())}. Map your classes to 0..num_classes-1 first."
        )
    return tensor


def _check_num_classes(labels: torch.Tensor, num_classes: int | None) -> int:
    inferred = int(labels.max()) + 1 if labels.numel() else 0
    if num_classes is None:
        num_classes = inferred
        source = "inferred as max(labels) + 1"
        if num_classes < 2:
            raise ConfigError(
                f"num_classes must be >= 2 to flip labels, but it was {source} = {num_classes}. "
                f"Pass num_classes=... explicitly."
            )
        return num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise InputTypeError(
            f"num_classes must be an int or None, got {type(num_classes).__name__} ({num_classes!r})."
        )
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2 to flip labels, got {num_classes}.")
    if inferred > num_classes:
        raise DataError(
            f"labels must be < num_classes={num_classes}, got a label {inferred - 1}. "
            f"Pass num_classes >= {inferred} or fix the labels."
        )
    return num_classes


def _check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise InputTypeError(f"rate must be a float in [0, 1), got {type(rate).__name__} ({rate!r}).")
    rate = float(rate)
    if not (0.0 <= rate < 1.0) or math.isnan(rate):
        raise ConfigError(
            f"rate must be in [0, 1), got {rate}. It is the fraction of labels to flip, e.g. rate=0.25 for 25% "
            f"noise (not a percentage)."
        )
    return rate


def _make_generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InputTypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r}).")
    return torch.Generator(device="cpu").manual_seed(int(seed))


# ---------------------------------------------------------------------------------------------
# Noise models
# ---------------------------------------------------------------------------------------------


def symmetric_noise(
    labels: LabelsLike,
    rate: float,
    num_classes: int | None = None,
    seed: int = 0,
) -> NoisyLabels:
    """Flips exactly ``round(rate * n)`` labels, each to a uniformly chosen different class.

    The samples to flip are drawn uniformly without replacement; each selected label ``y`` is
    replaced by a class drawn uniformly from the ``num_classes - 1`` classes other than ``y``.

    Args:
        labels: 1-D integer class indices in ``[0, num_classes)`` (list, NumPy array or tensor).
        rate: Fraction of samples to flip, in ``[0, 1)``.
        num_classes: Number of classes (>= 2). Defaults to ``max(labels) + 1``.
        seed: Seed of the :class:`torch.Generator`; same inputs and seed give the same output.

    Returns:
        A :class:`NoisyLabels` with the noisy labels and the mask of flipped samples.

    Raises:
        InputTypeError: If an argument has the wrong type (e.g. float labels); a ``TypeError``.
        ConfigError, DataError: If ``rate`` is outside ``[0, 1)``, labels are not 1-D / out of range, or
            ``num_classes < 2``.

    Example:
        >>> noisy = symmetric_noise([0] * 10, rate=0.3, num_classes=3, seed=1)
        >>> noisy.num_flipped, bool((noisy.labels[noisy.flipped] != 0).all())
        (3, True)
    """
    rate = _check_rate(rate)
    clean = _as_label_tensor(labels)
    if clean.numel() == 0:
        return NoisyLabels(labels=clean, flipped=torch.zeros(0, dtype=torch.bool))
    k = _check_num_classes(clean, num_classes)
    generator = _make_generator(seed)
    n = clean.numel()
    n_flip = round(rate * n)
    index = torch.randperm(n, generator=generator)[:n_flip]
    offset = torch.randint(1, k, (n_flip,), generator=generator, dtype=torch.int64)
    noisy = clean.clone()
    noisy[index] = (clean[index] + offset) % k
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[index] = True
    return NoisyLabels(labels=noisy, flipped=flipped)


def pair_noise(
    labels: LabelsLike,
    rate: float,
    num_classes: int | None = None,
    seed: int = 0,
    mapping: Mapping[int, int] | None = None,
) -> NoisyLabels:
    """Asymmetric (class-pair) noise: flips exactly ``round(rate * n_c)`` samples of each class.

    For every source class ``c`` in ``mapping`` with ``n_c`` samples, ``round(rate * n_c)`` of them
    (drawn uniformly without replacement) get the label ``mapping[c]``. Classes absent from
    ``mapping`` are left untouched. Selection is done on the original labels, so no sample is
    flipped twice.

    Args:
        labels: 1-D integer class indices in ``[0, num_classes)`` (list, NumPy array or tensor).
        rate: Fraction of each source class to flip, in ``[0, 1)``.
        num_classes: Number of classes (>= 2). Defaults to ``max(labels) + 1``.
        seed: Seed of the :class:`torch.Generator`.
        mapping: Source class -> destination class. Defaults to ``c -> (c + 1) % num_classes`` for
            every class. Keys and values must be in ``[0, num_classes)`` and ``mapping[c] != c``.

    Returns:
        A :class:`NoisyLabels` with the noisy labels and the mask of flipped samples.

    Raises:
        InputTypeError: If an argument has the wrong type; a ``TypeError``.
        ConfigError, DataError: If ``rate``, ``labels``, ``num_classes`` or ``mapping`` is invalid.

    Example:
        >>> noisy = pair_noise([0] * 4 + [1] * 4, rate=0.5, mapping={0: 1})
        >>> noisy.labels.tolist().count(1), noisy.num_flipped
        (6, 2)
    """
    rate = _check_rate(rate)
    clean = _as_label_tensor(labels)
    if clean.numel() == 0:
        return NoisyLabels(labels=clean, flipped=torch.zeros(0, dtype=torch.bool))
    k = _check_num_classes(clean, num_classes)
    generator = _make_generator(seed)
    pairs = _check_mapping(mapping, k)
    noisy = clean.clone()
    flipped = torch.zeros(clean.numel(), dtype=torch.bool)
    for src in sorted(pairs):
        members = torch.nonzero(clean == src, as_tuple=False).flatten()
        n_flip = round(rate * members.numel())
        chosen = members[torch.randperm(members.numel(), generator=generator)[:n_flip]]
        noisy[chosen] = pairs[src]
        flipped[chosen] = True
    return NoisyLabels(labels=noisy, flipped=flipped)


def _check_mapping(mapping: Mapping[int, int] | None, num_classes: int) -> dict[int, int]:
    if mapping is None:
        return {c: (c + 1) % num_classes for c in range(num_classes)}
    if not isinstance(mapping, Mapping):
        raise InputTypeError(
            f"mapping must be a dict {{source_class: destination_class}} or None, got {type(mapping).__name__}."
        )
    pairs: dict[int, int] = {}
    for src, dst in mapping.items():
        for role, value in (("key", src), ("value", dst)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise InputTypeError(f"mapping {role}s must be ints, got {value!r} ({type(value).__name__}).")
            if not 0 <= int(value) < num_classes:
                raise ConfigError(
                    f"mapping {role} {value} is out of range: classes must be in [0, {num_classes}) "
                    f"(num_classes={num_classes}). Fix the mapping or pass a larger num_classes."
                )
        if int(src) == int(dst):
            raise ConfigError(
                f"mapping maps class {src} to itself, which is not a flip. Remove {src} from the mapping to leave "
                f"that class untouched."
            )
        pairs[int(src)] = int(dst)
    return pairs


def _as_transition_matrix(matrix: Any) -> torch.Tensor:
    if isinstance(matrix, torch.Tensor):
        t = matrix.detach().cpu()
    else:
        try:
            t = torch.as_tensor(np.asarray(matrix, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise InputTypeError(
                f"matrix must be a (K, K) array-like of floats (list of lists, NumPy array or tensor), got "
                f"{type(matrix).__name__}: {err}"
            ) from err
    if t.dtype == torch.bool or t.is_complex():
        raise InputTypeError(f"matrix must contain real numbers, got dtype {t.dtype}.")
    t = t.to(torch.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ConfigError(
            f"matrix must be square with shape (K, K), K = number of classes, got shape {tuple(t.shape)}."
        )
    if t.shape[0] < 2:
        raise ConfigError(f"matrix must describe at least 2 classes, got shape {tuple(t.shape)}.")
    if not torch.isfinite(t).all():
        raise ConfigError("matrix must contain only finite values, got NaN or inf.")
    if (t < 0).any():
        raise ConfigError(
            f"matrix must be non-negative (entries are probabilities), got minimum {float(t.min()):.6g}."
        )
    row_sums = t.sum(dim=1)
    bad = torch.nonzero((row_sums - 1.0).abs() > 1e-6, as_tuple=False).flatten()
    if bad.numel():
        row = int(bad[0])
        raise ConfigError(
            f"matrix must be row-stochastic (each row sums to 1 within 1e-6), but row {row} sums to "
            f"{float(row_sums[row]):.9g}. Normalise it, e.g. `matrix / matrix.sum(axis=1, keepdims=True)`."
        )
    return t


def transition_noise(
    labels: LabelsLike,
    matrix: Any,
    seed: int = 0,
) -> NoisyLabels:
    """Resamples each label ``y`` from row ``y`` of a row-stochastic transition matrix.

    ``matrix[i, j]`` is the probability that a sample of true class ``i`` gets the label ``j``.
    Unlike :func:`symmetric_noise` the number of flips is random; its expectation is
    ``sum_i n_i * (1 - matrix[i, i])``.

    Args:
        labels: 1-D integer class indices in ``[0, K)`` (list, NumPy array or tensor).
        matrix: ``(K, K)`` non-negative matrix whose rows sum to 1 (within ``1e-6``); a list of
            lists, NumPy array or tensor.
        seed: Seed of the :class:`torch.Generator`.

    Returns:
        A :class:`NoisyLabels`; ``flipped`` marks the samples whose label changed.

    Raises:
        InputTypeError: If an argument has the wrong type; a ``TypeError``.
        ConfigError, DataError: If ``matrix`` is not square, has negative entries or rows not summing to 1,
            or a label is ``>= K``.

    Example:
        >>> noisy = transition_noise([0, 1, 1, 0], [[0.0, 1.0], [1.0, 0.0]])
        >>> noisy.labels.tolist()
        [1, 0, 0, 1]
    """
    t = _as_transition_matrix(matrix)
    clean = _as_label_tensor(labels)
    k = t.shape[0]
    if clean.numel() == 0:
        return NoisyLabels(labels=clean, flipped=torch.zeros(0, dtype=torch.bool))
    if int(clean.max()) >= k:
        raise DataError(
            f"labels must be < K={k} (the size of matrix), got a label {int(clean.max())}. "
            f"Use a ({int(clean.max()) + 1}, {int(clean.max()) + 1}) matrix or fix the labels."
        )
    generator = _make_generator(seed)
    noisy = torch.multinomial(t[clean], num_samples=1, replacement=True, generator=generator).flatten()
    return NoisyLabels(labels=noisy, flipped=noisy != clean)


def _check_superclasses(superclasses: Sequence[Sequence[int]], clean: torch.Tensor) -> torch.Tensor:
    """Validate disjoint groups of >= 2 classes covering every label; return each class's group id (-1: none)."""
    if isinstance(superclasses, (str, bytes)) or not isinstance(superclasses, Sequence):
        raise InputTypeError(
            f"superclasses must be a sequence of class groups, e.g. [[0, 1], [2, 3, 4]], got "
            f"{type(superclasses).__name__}."
        )
    size = int(clean.max()) + 1 if clean.numel() else 0
    members: dict[int, int] = {}
    for group_id, group in enumerate(superclasses):
        if isinstance(group, (str, bytes)) or not isinstance(group, Sequence):
            raise InputTypeError(f"superclasses[{group_id}] must be a sequence of class ids, got {group!r}.")
        if len(group) < 2:
            raise ConfigError(
                f"superclasses[{group_id}] = {list(group)} has fewer than 2 classes, so its samples cannot flip "
                f"within it. Merge it into another group."
            )
        for c in group:
            if isinstance(c, bool) or not isinstance(c, numbers.Integral) or int(c) < 0:
                raise InputTypeError(f"class ids in superclasses must be ints >= 0, got {c!r} in group {group_id}.")
            if int(c) in members:
                raise ConfigError(
                    f"class {c} is in superclasses {members[int(c)]} and {group_id}; the groups must be disjoint."
                )
            members[int(c)] = group_id
    size = max([size, *(c + 1 for c in members)])
    group_of = torch.full((size,), -1, dtype=torch.long)
    for c, g in members.items():
        group_of[c] = g
    missing = sorted(set(torch.unique(clean).tolist()) - set(members))
    if missing:
        raise DataError(
            f"labels {missing[:10]} belong to no superclass; every class present must be in one group. "
            f"Add them to superclasses."
        )
    return group_of


def hierarchical_noise(
    labels: LabelsLike,
    rate: float,
    superclasses: Sequence[Sequence[int]],
    seed: int = 0,
) -> NoisyLabels:
    """Flips exactly ``round(rate * n)`` labels, each to another class of the same superclass.

    The samples to flip are drawn uniformly without replacement; a selected label ``y`` of the
    group ``G`` is replaced by a class drawn uniformly from ``G`` without ``y`` -- the
    "hierarchical" (within-superclass) noise of CIFAR-100-style benchmarks, where mistakes stay
    between look-alike classes.

    Args:
        labels: 1-D integer class indices (list, NumPy array or tensor).
        rate: Fraction of samples to flip, in ``[0, 1)``.
        superclasses: Disjoint groups of class ids, each of at least 2 classes, covering every
            class present in ``labels``, e.g. ``[[0, 1], [2, 3, 4]]``.
        seed: Seed of the :class:`torch.Generator`; same inputs and seed give the same output.

    Returns:
        A :class:`NoisyLabels` with the noisy labels and the mask of flipped samples.

    Raises:
        InputTypeError: If an argument has the wrong type; a ``TypeError``.
        ConfigError, DataError: If ``rate`` is outside ``[0, 1)``, a group has fewer than 2 classes, groups
            overlap, or a label is in no group.

    Example:
        >>> noisy = hierarchical_noise([0, 1, 2, 3, 4] * 4, rate=0.5, superclasses=[[0, 1], [2, 3, 4]], seed=0)
        >>> noisy.num_flipped
        10
        >>> groups = torch.tensor([0, 0, 1, 1, 1])
        >>> bool((groups[noisy.labels] == groups[torch.tensor([0, 1, 2, 3, 4] * 4)]).all())
        True
    """
    rate = _check_rate(rate)
    clean = _as_label_tensor(labels)
    group_of = _check_superclasses(superclasses, clean)
    if clean.numel() == 0:
        return NoisyLabels(labels=clean, flipped=torch.zeros(0, dtype=torch.bool))
    generator = _make_generator(seed)
    n = clean.numel()
    index = torch.randperm(n, generator=generator)[: round(rate * n)]
    noisy = clean.clone()
    for group_id, group in enumerate(superclasses):
        classes = torch.tensor([int(c) for c in group], dtype=torch.long)
        chosen = index[group_of[clean[index]] == group_id]
        if chosen.numel() == 0:
            continue
        position = (classes[None, :] == clean[chosen, None]).long().argmax(dim=1)  # where y sits in its group
        offset = torch.randint(1, len(classes), (chosen.numel(),), generator=generator, dtype=torch.int64)
        noisy[chosen] = classes[(position + offset) % len(classes)]
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[index] = True
    return NoisyLabels(labels=noisy, flipped=flipped)


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
