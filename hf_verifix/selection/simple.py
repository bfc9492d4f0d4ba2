"""Trusted sets that need no scoring pass: a seeded random baseline and a subset verified by an expert."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..data.source import SampleSource
from ..errors import DataError
from .base import Selection, register_selector, source_labels
from .selector import SampleScores, ScoringSelector

__all__ = ["ExpertSelector", "RandomSelector"]


_RANDOM_SELECTOR_STREAM = 0x7275  # fixed salt: the same seed always gives the same set


def _own_stream(seed: int) -> int:
    """Derive this selector's generator seed from ``seed``, so it draws its own random stream.

    A plain ``manual_seed(seed)`` permutation would coincide with any other ``randperm(n)`` seeded alike: with
    ``symmetric_noise(labels, rate, seed=0)`` it picked exactly the flipped samples as the "random" trusted set.
    """
    return int(np.random.SeedSequence([seed, _RANDOM_SELECTOR_STREAM]).generate_state(1, dtype=np.uint64)[0])


@register_selector("random")
class RandomSelector(ScoringSelector[SampleScores]):
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

    def score(self, model: nn.Module, source: SampleSource, *, seed: int = 0, progress: bool = False) -> SampleScores:
        """Score each sample by its rank in a permutation seeded by ``seed`` (``model`` is not used).

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(4, 3), torch.tensor([0, 1] * 2)))
            >>> sorted(RandomSelector().score(nn.Linear(3, 2), source, seed=5).scores.tolist())
            [0.0, 1.0, 2.0, 3.0]
        """
        labels = source_labels(source, progress)
        order = torch.randperm(len(source), generator=torch.Generator().manual_seed(_own_stream(seed)))
        scores = torch.empty(len(source), dtype=torch.float64)
        scores[order] = torch.arange(len(source), dtype=torch.float64)
        return SampleScores(scores, labels, source.num_classes)


@register_selector("expert")
class ExpertSelector(ScoringSelector[SampleScores]):
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

    def check_n_trusted(self, n_trusted: object, source: SampleSource) -> int:
        """Check that the verified samples lie in ``source`` and that ``n_trusted`` is at most their number.

        Raises:
            DataError: An index beyond the data, a mask of another length, ``n_trusted`` not an integer in
                ``[1, len(source)]`` or above the number verified.

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(6, 3), torch.tensor([0, 1] * 3)))
            >>> ExpertSelector([0, 5]).check_n_trusted(2, source)
            2
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
        checked = super().check_n_trusted(n_trusted, source)
        verified = self.indices.numel()
        if checked > verified:
            raise DataError(
                f"n_trusted={checked} but only {verified} samples are verified; the expert selector never picks "
                f"unverified samples: set n_trusted={verified} to use all of them, or verify more"
            )
        return checked

    def score(self, model: nn.Module, source: SampleSource, *, seed: int = 0, progress: bool = False) -> SampleScores:
        """Score the verified samples 0 and the others 1 (``model`` and ``seed`` are not used).

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(4, 3), torch.tensor([0, 1] * 2)))
            >>> ExpertSelector([2]).score(nn.Linear(3, 2), source).scores.tolist()
            [1.0, 1.0, 0.0, 1.0]
        """
        scores = torch.ones(len(source), dtype=torch.float64)
        scores[self.indices] = 0.0
        return SampleScores(scores, source_labels(source, progress), source.num_classes)

    def pick(self, scored: SampleScores, n_trusted: int, per_class: bool) -> Selection:
        """Return the verified samples (the first ``n_trusted`` by index, per label with ``per_class``).

        Raises:
            DataError: With ``per_class``, a label with fewer verified samples than its quota.

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(6, 3), torch.tensor([0, 1] * 3)))
            >>> mask = torch.tensor([True, True, False, True, False, False])
            >>> ExpertSelector(mask).select(nn.Linear(3, 2), source, 2, per_class=True).indices.tolist()
            [0, 1]
        """
        selection = super().pick(scored, n_trusted, per_class)
        unverified = selection.indices[scored.scores[selection.indices] > 0]
        if unverified.numel():
            labels = scored.labels
            k = scored.num_classes if scored.num_classes is not None else int(labels.max()) + 1
            counts = torch.bincount(labels[self.indices], minlength=k)[:k].tolist()
            short = sorted(set(labels[unverified].tolist()))
            raise DataError(
                f"per_class selection of n_trusted={n_trusted} over {k} classes needs about {n_trusted // k} verified "
                f"samples of each class, but class(es) {short} have fewer (verified per class: {counts}); lower "
                "n_trusted, verify more of those classes or use per_class=False"
            )
        return selection
