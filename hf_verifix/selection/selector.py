"""The base of the built-in selectors: ``select`` validates once, ``score`` computes, ``pick`` chooses.

A selector only has to say how it scores the samples (:meth:`ScoringSelector.score`); checking ``n_trusted`` and the
labels, and keeping the lowest scores as a :class:`~hf_verifix.selection.Selection`, is done here for all of them.
Selectors with another picking rule (CRUST's medoids, an expert's verified samples) override
:meth:`ScoringSelector.pick`, and those with more to check up front :meth:`ScoringSelector.check_n_trusted`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from ..data.source import SampleSource, as_source
from ._validation import check_labels
from .base import Selection, checked_n_trusted, lowest_scores

__all__ = ["SampleScores", "ScoringSelector"]


@dataclass
class SampleScores:
    """What :meth:`ScoringSelector.score` returns: every sample's trust score and label, indexed like the dataset.

    Attributes:
        scores: float64 scores, lower = more trusted (they become ``Selection.scores``).
        labels: The (possibly noisy) label of every sample.
        num_classes: The classes a per-class pick splits ``n_trusted`` over (None: the largest label + 1).
        ranking: What the lowest-score pick sorts by, when not ``scores`` (e.g. ``scores`` with ties broken by a
            second key); None: ``scores``.

    Example:
        >>> scored = SampleScores(torch.tensor([0.5, 0.1, 0.3], dtype=torch.float64), torch.tensor([0, 1, 0]), 2)
        >>> scored.num_classes, scored.ranking is None
        (2, True)
    """

    scores: torch.Tensor
    labels: torch.Tensor
    num_classes: int | None
    ranking: torch.Tensor | None = None


ScoredT = TypeVar("ScoredT", bound=SampleScores)


class ScoringSelector(ABC, Generic[ScoredT]):
    """A :class:`~hf_verifix.selection.TrustedSelector` made of hooks: :meth:`select` calls them in order.

    :meth:`check_n_trusted` validates ``n_trusted``; :meth:`score` scores every sample (the one method a subclass
    must write); the labels are checked (a per-class pick needs class ids); :meth:`pick` keeps the ``n_trusted``
    lowest scores, globally or per class. The type parameter is what ``score`` returns (a :class:`SampleScores`).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from hf_verifix.selection import source_labels
        >>> class LastFirst(ScoringSelector[SampleScores]):
        ...     def score(self, model, source, *, seed=0, progress=False):
        ...         scores = -torch.arange(len(source), dtype=torch.float64)  # the last sample is the most trusted
        ...         return SampleScores(scores, source_labels(source, progress), source.num_classes)
        >>> source = SampleSource(TensorDataset(torch.randn(5, 2), torch.tensor([0, 1, 0, 1, 0])))
        >>> LastFirst().select(nn.Linear(2, 2), source, n_trusted=2).indices.tolist()
        [3, 4]
    """

    def select(
        self,
        model: nn.Module,
        source: SampleSource | Any,
        n_trusted: int,
        per_class: bool = False,
        seed: int = 0,
        progress: bool = False,
    ) -> Selection:
        """Score every sample and return the ``n_trusted`` most trusted (``per_class``: as many of each label).

        ``source`` is any data ``ProjectionCorrector.fit`` accepts (a ``datasets.Dataset``, a torch ``Dataset`` of
        ``(input, label)``, a ``DataLoader(shuffle=False)``) or a ``SampleSource``; like cleanlab's functions, a
        selector needs nothing else. ``seed`` and ``progress`` are passed to :meth:`score`.

        Raises:
            DataError: ``n_trusted`` not an integer in ``[1, len(source)]``, labels that are not class ids with
                ``per_class``, a class with fewer samples than its quota; what :meth:`score` raises.

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> from hf_verifix.selection import LossSelector
            >>> data = TensorDataset(torch.randn(6, 3), torch.tensor([0, 1] * 3))
            >>> LossSelector().select(nn.Linear(3, 2), data, 2, per_class=True).class_counts(2).tolist()
            [1, 1]
        """
        if not isinstance(source, SampleSource):
            source = as_source(source, model)
        n_trusted = self.check_n_trusted(n_trusted, source)
        scored = self.score(model, source, seed=seed, progress=progress)
        check_labels(scored.labels, per_class, scored.num_classes)
        return self.pick(scored, n_trusted, per_class)

    def check_n_trusted(self, n_trusted: object, source: SampleSource) -> int:
        """Return ``n_trusted`` as an int after checking it, before any scoring: an integer in ``[1, len(source)]``.

        Raises:
            DataError: Not an integer (a bool or float too), below 1, or above the size of ``source``.

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> from hf_verifix.selection import RandomSelector
            >>> RandomSelector().check_n_trusted(3, SampleSource(TensorDataset(torch.zeros(4, 1), torch.zeros(4))))
            3
        """
        return checked_n_trusted(n_trusted, len(source))

    @abstractmethod
    def score(self, model: nn.Module, source: SampleSource, *, seed: int = 0, progress: bool = False) -> ScoredT:
        """Return every sample's score (float64, lower = more trusted), its label and the class count.

        ``seed`` seeds any randomness (the same seed gives the same scores); ``progress`` shows a progress bar.

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> from hf_verifix.selection import LossSelector
            >>> source = SampleSource(TensorDataset(torch.randn(4, 3), torch.tensor([0, 1, 1, 0])))
            >>> LossSelector().score(nn.Linear(3, 2), source).scores.dtype
            torch.float64
        """

    def pick(self, scored: ScoredT, n_trusted: int, per_class: bool) -> Selection:
        """Keep the ``n_trusted`` lowest scores (of ``ranking`` when set), globally or ``n_trusted // K`` per class.

        Raises:
            DataError: With ``per_class``, a class with fewer samples than its quota.

        Example:
            >>> from hf_verifix.selection import RandomSelector
            >>> scores = torch.tensor([0.5, 0.1, 0.3, 0.2], dtype=torch.float64)
            >>> RandomSelector().pick(SampleScores(scores, torch.tensor([0, 0, 1, 1]), 2), 2, False).indices.tolist()
            [1, 3]
        """
        keys = scored.scores if scored.ranking is None else scored.ranking
        indices = lowest_scores(keys, scored.labels, n_trusted, per_class, scored.num_classes)
        return Selection(indices, scored.scores, scored.labels)
