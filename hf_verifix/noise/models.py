"""The four noise models: symmetric, class-pair, transition-matrix and hierarchical (within-superclass) flips.

Example:
    >>> pair_noise([0, 0, 1, 1], rate=0.5, seed=0).num_flipped
    2
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError, InputTypeError
from .labels import (
    LabelsLike,
    NoisyLabels,
    as_label_tensor,
    checked_rate,
    prepared,
    seeded_generator,
    unchanged,
)

__all__ = ["hierarchical_noise", "pair_noise", "symmetric_noise", "transition_noise"]

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
    rate, clean, k, generator = prepared(labels, rate, num_classes, seed)
    if generator is None:
        return unchanged(clean)
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
    rate, clean, k, generator = prepared(labels, rate, num_classes, seed)
    if generator is None:
        return unchanged(clean)
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
    clean = as_label_tensor(labels)
    k = t.shape[0]
    if clean.numel() == 0:
        return unchanged(clean)
    if int(clean.max()) >= k:
        raise DataError(
            f"labels must be < K={k} (the size of matrix), got a label {int(clean.max())}. "
            f"Use a ({int(clean.max()) + 1}, {int(clean.max()) + 1}) matrix or fix the labels."
        )
    generator = seeded_generator(seed)
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
    rate = checked_rate(rate)
    clean = as_label_tensor(labels)
    group_of = _check_superclasses(superclasses, clean)
    if clean.numel() == 0:
        return unchanged(clean)
    generator = seeded_generator(seed)
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
