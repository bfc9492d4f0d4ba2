"""Trusted sets that need no scoring pass: a seeded random baseline and a subset verified by an expert."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..data.source import SampleSource
from ..errors import DataError
from .base import Selection, checked_n_trusted, lowest_scores, register_selector, source_labels

__all__ = ["ExpertSelector", "RandomSelector"]


def _check_labels(labels: torch.Tensor, per_class: bool, num_classes: int | None) -> None:
    """Per-class picks need labels in ``[0, num_classes)``; raise a DataError naming the bad ones."""
    if not per_class:
        return
    bad = labels < 0 if num_classes is None else (labels < 0) | (labels >= num_classes)
    if bad.any():
        where = torch.nonzero(bad).flatten()[:5].tolist()
        allowed = "be >= 0" if num_classes is None else f"lie in [0, {num_classes})"
        raise DataError(
            f"per_class selection needs labels that {allowed}, got {labels[bad][:5].tolist()} (samples {where}); "
            "remap the labels to class ids or use per_class=False"
        )


_RANDOM_SELECTOR_STREAM = 0x7275  # fixed salt: the same seed always gives the same set


def _own_stream(seed: int) -> int:
    """Derive this selector's generator seed from ``seed``, so it draws its own random stream.

    A plain ``manual_seed(seed)`` permutation would coincide with any other ``randperm(n)`` seeded alike: with
    ``symmetric_noise(labels, rate, seed=0)`` it picked exactly the flipped samples as the "random" trusted set.
    """
    return int(np.random.SeedSequence([seed, _RANDOM_SELECTOR_STREAM]).generate_state(1, dtype=np.uint64)[0])


@register_selector("random")
class RandomSelector:
    """Pick a uniformly random trusted set (the baseline): the same ``seed`` gives the same set.

    A sample's score is its rank in a random permutation of the data seeded by ``seed``, so the ``n_trusted`` lowest
    form a uniform random subset (``per_class``: a uniform random subset of each label). The model is not used.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(10, 3), torch.tensor([0, 1] * 5)))
        >>> first = RandomSelector().select(nn.Linear(3, 2), source, n_trusted=4, seed=1)
        >>> torch.equal(first.indices, RandomSelector().select(nn.Linear(3, 2), source, 4, seed=1).indices)
        True
    """

    def __repr__(self) -> str:
        return "RandomSelector()"

    def select(
        self,
        model: nn.Module,
        source: SampleSource,
        n_trusted: int,
        per_class: bool = False,
        seed: int = 0,
        progress: bool = False,
    ) -> Selection:
        """Keep ``n_trusted`` random samples (``per_class``: ``n_trusted // K`` random samples of each label).

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(6, 3), torch.tensor([0, 1] * 3)))
            >>> RandomSelector().select(nn.Linear(3, 2), source, 2, per_class=True).class_counts(2).tolist()
            [1, 1]
        """
        n_trusted = checked_n_trusted(n_trusted, len(source))
        labels = source_labels(source, progress)
        _check_labels(labels, per_class, source.num_classes)
        order = torch.randperm(len(source), generator=torch.Generator().manual_seed(_own_stream(seed)))
        scores = torch.empty(len(source), dtype=torch.float64)
        scores[order] = torch.arange(len(source), dtype=torch.float64)
        indices = lowest_scores(scores, labels, n_trusted, per_class, source.num_classes)
        return Selection(indices, scores, labels)


@register_selector("expert")
class ExpertSelector:
    """Use a subset of the training data whose labels a person has verified (the paper's "Expert" strategy).

    Verified samples score 0 and the others 1. ``n_trusted`` equal to the number verified keeps them all; a smaller
    ``n_trusted`` keeps the verified samples with the lowest indices (``per_class``: the lowest in each label). Only
    verified samples are ever picked: asking for more is a DataError. A verified set that is *not* part of the
    training data needs no selector: pass it to ``ProjectionCorrector.fit(data, trusted_indices=...)`` on that data.

    Args:
        indices: The verified samples: their indices in the dataset, or a boolean mask over it.

    Raises:
        DataError: Empty, negative, duplicate or non-integer indices; a mask that is not 1-D.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(6, 3), torch.tensor([0, 1] * 3)))
        >>> ExpertSelector(indices=[4, 1, 2]).select(nn.Linear(3, 2), source, n_trusted=3).indices.tolist()
        [1, 2, 4]
    """

    def __init__(self, indices: Sequence[int] | Sequence[bool] | torch.Tensor | np.ndarray) -> None:
        try:
            given = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
        except (TypeError, ValueError, RuntimeError) as err:
            raise DataError(
                f"indices must be a sequence of integer sample indices or a boolean mask, got "
                f"{type(indices).__name__} ({err})"
            ) from err
        if given.dim() != 1:
            raise DataError(
                f"indices must be 1-D (sample indices or a boolean mask over the dataset), got shape "
                f"{tuple(given.shape)}; flatten them"
            )
        self.mask: torch.Tensor | None = None
        if given.dtype == torch.bool:
            self.mask = given.clone()
            given = torch.nonzero(given).flatten()
        elif given.numel() == 0:
            given = given.long()
        elif given.is_floating_point() or given.is_complex():
            raise DataError(
                f"indices must be integer sample indices or a boolean mask, got a {given.dtype} tensor; pass "
                "integers (e.g. indices.long()) or booleans"
            )
        given = given.long()
        if given.numel() == 0:
            raise DataError("no verified sample was given (empty indices or an all-False mask); pass at least one")
        if (given < 0).any():
            raise DataError(
                f"indices must be >= 0 (positions in the dataset), got {given[given < 0][:5].tolist()}; "
                "negative indices are not supported"
            )
        unique = torch.unique(given)
        if unique.numel() != given.numel():
            raise DataError(f"indices hold {given.numel() - unique.numel()} duplicate(s); pass each sample once")
        self.indices = unique  # sorted

    def __repr__(self) -> str:
        return f"ExpertSelector(<{self.indices.numel()} verified samples>)"

    def select(
        self,
        model: nn.Module,
        source: SampleSource,
        n_trusted: int,
        per_class: bool = False,
        seed: int = 0,
        progress: bool = False,
    ) -> Selection:
        """Return the verified samples (the first ``n_trusted`` by index if fewer are asked for).

        ``model`` and ``seed`` are not used.

        Raises:
            DataError: An index beyond the data, a mask of another length, ``n_trusted`` above the number verified
                (or, with ``per_class``, a label with fewer verified samples than its quota).

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(6, 3), torch.tensor([0, 1] * 3)))
            >>> mask = torch.tensor([True, True, False, True, False, False])
            >>> ExpertSelector(mask).select(nn.Linear(3, 2), source, 2, per_class=True).indices.tolist()
            [0, 1]
        """
        size = len(source)
        if self.mask is not None and self.mask.numel() != size:
            raise DataError(
                f"the verified mask has {self.mask.numel()} entries but the data has {size} samples; pass a mask "
                "with one entry per sample (or the verified indices)"
            )
        if int(self.indices.max()) >= size:
            out = self.indices[self.indices >= size]
            raise DataError(
                f"verified indices must lie in [0, {size}) for data of {size} samples, got {out[:5].tolist()}"
                f"{' ...' if out.numel() > 5 else ''}; pass indices into this dataset"
            )
        n_trusted = checked_n_trusted(n_trusted, size)
        verified = self.indices.numel()
        if n_trusted > verified:
            raise DataError(
                f"n_trusted={n_trusted} but only {verified} samples are verified; the expert selector never picks "
                f"unverified samples: set n_trusted={verified} to use all of them, or verify more"
            )
        labels = source_labels(source, progress)
        _check_labels(labels, per_class, source.num_classes)
        scores = torch.ones(size, dtype=torch.float64)
        scores[self.indices] = 0.0
        indices = lowest_scores(scores, labels, n_trusted, per_class, source.num_classes)
        unverified = indices[scores[indices] > 0]
        if unverified.numel():
            k = source.num_classes if source.num_classes is not None else int(labels.max()) + 1
            counts = torch.bincount(labels[self.indices], minlength=k)[:k].tolist()
            short = sorted(set(labels[unverified].tolist()))
            raise DataError(
                f"per_class selection of n_trusted={n_trusted} over {k} classes needs about {n_trusted // k} verified "
                f"samples of each class, but class(es) {short} have fewer (verified per class: {counts}); lower "
                "n_trusted, verify more of those classes or use per_class=False"
            )
        return Selection(indices, scores, labels)
