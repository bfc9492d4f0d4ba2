"""Trusted-sample selection: the result type, the lowest-score rule, and the registry of selectors by name."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ..data.source import SampleSource
from ..errors import ConfigError, DataError
from ..utils.distributed import sum_across_processes

__all__ = [
    "Selection",
    "TrustedSelector",
    "checked_n_trusted",
    "get_selector",
    "list_selectors",
    "lowest_scores",
    "register_selector",
    "selector_factory",
    "source_labels",
    "trusted_set_quality",
]


@dataclass
class Selection:
    """Trusted sample indices (sorted), plus the per-sample scores (lower = more trusted) and labels of all samples.

    Example:
        >>> s = Selection(torch.tensor([0, 2]), torch.tensor([0.1, 0.9, 0.2]), torch.tensor([1, 0, 1]))
        >>> s.class_counts(2).tolist()
        [0, 2]
    """

    indices: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    def class_counts(self, num_classes: int) -> torch.Tensor:
        """Return how many trusted samples carry each label.

        Example:
            >>> Selection(torch.tensor([1]), torch.zeros(2), torch.tensor([0, 1])).class_counts(3).tolist()
            [0, 1, 0]
        """
        return torch.bincount(self.labels[self.indices], minlength=num_classes)


@runtime_checkable
class TrustedSelector(Protocol):
    """What a selector does: score every sample of ``source`` with ``model`` and pick ``n_trusted`` of them.

    Example:
        >>> isinstance(get_selector("loss"), TrustedSelector)
        True
    """

    def select(
        self,
        model: nn.Module,
        source: SampleSource,
        n_trusted: int,
        per_class: bool = False,
        seed: int = 0,
        progress: bool = False,
    ) -> Selection:
        """Score every sample and return the ``n_trusted`` most trusted (``per_class``: as many of each label).

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(6, 2), torch.tensor([0, 1] * 3)))
            >>> get_selector("loss").select(nn.Linear(2, 2), source, 4, per_class=True).class_counts(2).tolist()
            [2, 2]
        """
        ...


_REGISTRY: dict[str, Callable[..., TrustedSelector]] = {}


def register_selector(name: str) -> Callable[[Callable[..., TrustedSelector]], Callable[..., TrustedSelector]]:
    """Register a selector factory (usually a class) under ``name`` so configs can say ``selector=name``.

    Example:
        >>> @register_selector("first")
        ... class FirstSelector:
        ...     def select(self, model, source, n_trusted, per_class=False, seed=0, progress=False):
        ...         labels = source.labels
        ...         return Selection(torch.arange(n_trusted), torch.zeros(len(labels)), labels)
        >>> "first" in list_selectors()
        True
    """

    def decorator(factory: Callable[..., TrustedSelector]) -> Callable[..., TrustedSelector]:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a selector name must be a non-empty string, got {name!r}")
        if name in _REGISTRY:
            raise ConfigError(f"a selector named {name!r} is already registered; choose another name")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_selectors() -> list[str]:
    """Return the names of the registered selectors, sorted.

    Example:
        >>> "loss" in list_selectors()
        True
    """
    return sorted(_REGISTRY)


def selector_factory(name: str) -> Callable[..., TrustedSelector]:
    """The factory (usually the class) registered under ``name``, e.g. to read its constructor's signature.

    Example:
        >>> selector_factory("loss").__name__
        'LossSelector'
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown selector {name!r}; registered selectors are {list_selectors()}")
    return _REGISTRY[name]


def get_selector(selector: str | TrustedSelector, **kwargs: Any) -> TrustedSelector:
    """Return a selector from its registered name (built with ``kwargs``) or the selector object itself.

    Example:
        >>> type(get_selector("loss")).__name__
        'LossSelector'
    """
    if isinstance(selector, str):
        return selector_factory(selector)(**kwargs)
    if not isinstance(selector, TrustedSelector):
        raise ConfigError(
            f"a selector must be a registered name or an object with a select(...) method, got "
            f"{type(selector).__name__}"
        )
    return selector


def as_int(value: object) -> int | None:
    """Return ``value`` as an int if it is an integer (Python or NumPy/torch scalar, not a bool), else None.

    Example:
        >>> as_int(torch.tensor(3)), as_int(2.0), as_int(True)
        (3, None, None)
    """
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return None
    try:
        return operator.index(value)
    except (TypeError, ValueError, RuntimeError):
        return None


def checked_n_trusted(n_trusted: object, size: int) -> int:
    """Return ``n_trusted`` as an int if it is an integer in ``[1, size]``, else raise a DataError (every selector).

    Raises:
        DataError: Not an integer (a bool or float too), below 1, or above the ``size`` samples of the data.

    Example:
        >>> checked_n_trusted(100, size=60_000)
        100
        >>> checked_n_trusted(0, size=10)
        Traceback (most recent call last):
        ...
        hf_verifix.errors.DataError: n_trusted must be an integer >= 1, got 0; the papers use 1000
    """
    value = as_int(n_trusted)
    if value is None or value < 1:
        raise DataError(f"n_trusted must be an integer >= 1, got {n_trusted!r}; the papers use 1000")
    if value > size:
        raise DataError(f"n_trusted={value} is larger than the data ({size} samples); lower n_trusted or add data")
    return value


def source_labels(source: SampleSource, progress: bool = False) -> torch.Tensor:
    """The label of every sample of ``source``: its known ``labels``, or read from the data (no model).

    Under several processes each one reads only its own shard and the shards are summed, so every process gets
    every label, exactly as one process reads them.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source_labels(SampleSource(TensorDataset(torch.zeros(3, 2), torch.tensor([2, 0, 1])))).tolist()
        [2, 0, 1]
    """
    if source.labels is not None and source.labels.numel() == len(source):
        return source.labels.reshape(-1).long().clone()
    shifted = torch.zeros(len(source), dtype=torch.long)  # label + 1 on this process's samples, 0 elsewhere
    for batch in source.batches(desc="reading labels", progress=progress):
        shifted[batch.indices] = batch.labels.reshape(-1).long() + 1
    return sum_across_processes(shifted) - 1


def lowest_scores(
    scores: torch.Tensor, labels: torch.Tensor, n: int, per_class: bool = False, num_classes: int | None = None
) -> torch.Tensor:
    """Return the sorted indices of the ``n`` lowest scores, globally or ``n // K`` per class (ties: lower index).

    With ``per_class``, the remainder ``n % K`` goes to the first classes, so exactly ``n`` are returned.

    Raises:
        DataError: Fewer than ``n`` samples, or a class with fewer samples than its quota.

    Example:
        >>> lowest_scores(torch.tensor([0.3, 0.1, 0.2, 0.0]), torch.tensor([0, 0, 1, 1]), 2, per_class=True).tolist()
        [1, 3]
    """
    total = scores.shape[0]
    if n > total:
        raise DataError(f"n_trusted={n} is larger than the data ({total} samples); lower n_trusted or add data")
    if not per_class:
        return torch.sort(torch.argsort(scores, stable=True)[:n]).values
    k = num_classes if num_classes is not None else int(labels.max()) + 1
    counts = torch.bincount(labels[(labels >= 0) & (labels < k)], minlength=k)
    quotas = torch.tensor([n // k + (1 if c < n % k else 0) for c in range(k)])
    short = torch.nonzero(counts < quotas).flatten()
    if short.numel():
        # The largest feasible n: every class gets its minimum count m, plus one for each leading class with more.
        m = int(counts.min())
        leading = int((counts > m).long().cumprod(0).sum())
        shown = ", ".join(f"class {c}: {int(counts[c])} < {int(quotas[c])}" for c in short[:5].tolist())
        more = f", ... ({short.numel() - 5} more)" if short.numel() > 5 else ""
        need = f"{n // k}" if n % k == 0 else f"{n // k} (the first {n % k} classes: {n // k + 1})"
        raise DataError(
            f"per_class selection of n_trusted={n} over {k} classes needs {need} samples of each class, but "
            f"{short.numel()} class(es) have fewer ({shown}{more}); with per_class=True, n_trusted can be at most "
            f"{k * m + leading} here: lower n_trusted or use per_class=False"
        )
    picked = []
    for c in range(k):
        members = torch.nonzero(labels == c).flatten()
        picked.append(members[torch.argsort(scores[members], stable=True)[: int(quotas[c])]])
    return torch.sort(torch.cat(picked)).values


def trusted_set_quality(
    given_labels: torch.Tensor, clean_labels: torch.Tensor, num_classes: int | None = None
) -> dict[str, Any]:
    """Return how clean a trusted set is, from its given (noisy) and true labels (known when noise was injected).

    ``precision`` is the fraction of trusted samples whose given label is the clean one; ``class_coverage`` the
    fraction of (clean) classes with at least one trusted sample.

    Example:
        >>> quality = trusted_set_quality(torch.tensor([0, 1]), torch.tensor([0, 0]), num_classes=2)
        >>> quality["precision"], quality["class_coverage"]
        (0.5, 0.5)
    """
    if given_labels.shape != clean_labels.shape:
        raise DataError(
            f"given and clean labels of the trusted set must have the same shape, got {tuple(given_labels.shape)} "
            f"and {tuple(clean_labels.shape)}"
        )
    k = num_classes if num_classes is not None else int(max(int(given_labels.max()), int(clean_labels.max()))) + 1
    counts = torch.bincount(clean_labels, minlength=k)
    return {
        "precision": float((given_labels == clean_labels).float().mean()),
        "class_coverage": float((counts > 0).float().mean()),
        "clean_class_counts": counts.tolist(),
    }
