"""Trusted samples by a beta mixture over the losses: the highest posterior of the clean component (Arazo et al.)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..algorithms.mixture import BetaMixture
from ..data.source import SampleSource
from .base import register_selector
from .loss import per_sample_losses
from .selector import SampleScores, ScoringSelector

__all__ = ["BMMSelector"]

_MIN_CLASS_FIT = 10  # with fit_per_class, a class with fewer samples is scored by the global mixture


@register_selector("bmm")
class BMMSelector(ScoringSelector[SampleScores]):
    """Fit a two-component :class:`~hf_verifix.algorithms.mixture.BetaMixture` to the per-sample losses; trust the
    likely clean.

    Each sample's score is -p(clean | loss), the clean component being the one with the smaller mean and the
    posterior made monotone in the loss (:meth:`~hf_verifix.algorithms.mixture.BetaMixture.clean_posterior`); the
    ``n_trusted`` lowest scores are kept (``per_class``: ``n_trusted // K`` per label), ties of the posterior (it
    saturates at 1 for the smallest losses) going to the lower loss. With one mixture for all samples
    (``fit_per_class=False``, default) the ranking is therefore the loss selector's (up to rounding); the mixture adds
    a probability of being clean (``Selection.scores``, :attr:`mixture`). With ``fit_per_class=True`` each
    (noisy) label gets its own mixture, so the ranking adapts to each class's loss scale (a class with fewer than
    10 samples uses the global mixture).

    Args:
        max_iters: EM iterations at most (the paper: 10).
        percentiles: Loss percentiles mapped to 0 and 1 before fitting.
        tails: ``"drop"`` fits only the losses between the percentiles (reference code), ``"clip"`` all, clipped.
        fit_per_class: Fit one mixture per (noisy) label instead of one for all samples.

    Attributes:
        mixture: The global mixture fitted by the last :meth:`select` (None before).
        class_mixtures: With ``fit_per_class``, the mixture of each label that had its own.

    Raises:
        ConfigError: An invalid mixture option (from :class:`~hf_verifix.algorithms.mixture.BetaMixture`).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(40, 3), torch.randint(0, 2, (40,))))
        >>> BMMSelector().select(nn.Linear(3, 2), source, n_trusted=8).indices.numel()
        8
    """

    def __init__(
        self,
        max_iters: int = 10,
        percentiles: tuple[float, float] = (5.0, 95.0),
        tails: Literal["drop", "clip"] = "drop",
        fit_per_class: bool = False,
    ) -> None:
        BetaMixture(max_iters=max_iters, percentiles=percentiles, tails=tails)  # validates the options
        self.max_iters = max_iters
        self.percentiles = percentiles
        self.tails = tails
        self.fit_per_class = bool(fit_per_class)
        self.mixture: BetaMixture | None = None
        self.class_mixtures: dict[int, BetaMixture] = {}

    def _new_mixture(self) -> BetaMixture:
        return BetaMixture(max_iters=self.max_iters, percentiles=self.percentiles, tails=self.tails)

    def clean_probabilities(self, losses: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Fit the mixture(s) to ``losses`` and return each sample's p(clean | loss) (float64).

        Example:
            >>> g = torch.Generator().manual_seed(0)
            >>> losses = torch.cat([torch.rand(90, generator=g) * 0.2, 2 + torch.rand(10, generator=g)])
            >>> p = BMMSelector().clean_probabilities(losses, torch.zeros(100, dtype=torch.long))
            >>> bool(p[:90].min() > 0.5 > p[90:].max())
            True
        """
        self.mixture = self._new_mixture().fit(losses)
        self.class_mixtures = {}
        clean = self.mixture.clean_posterior(losses)
        if self.fit_per_class:
            for c in torch.unique(labels).tolist():
                members = torch.nonzero(labels == c).flatten()
                if members.numel() < _MIN_CLASS_FIT:
                    continue
                mixture = self._new_mixture().fit(losses[members])
                self.class_mixtures[int(c)] = mixture
                clean[members] = mixture.clean_posterior(losses[members])
        return clean

    def score(self, model: nn.Module, source: SampleSource, *, seed: int = 0, progress: bool = False) -> SampleScores:
        """Score every sample by -p(clean | loss), ranked with ties going to the lower loss (deterministic: ``seed``
        is not used).

        The scores are -p(clean | loss) (they become ``Selection.scores``); ``ranking`` orders the samples by that
        score, then by the loss, then by index, so the posterior's ties (it saturates at 1) go to the lower loss.

        Raises:
            DataError: Bad labels or logits (see :func:`~hf_verifix.selection.per_sample_losses`).

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(30, 3), torch.tensor([0, 1, 2] * 10)))
            >>> scored = BMMSelector().score(nn.Linear(3, 3), source)
            >>> bool((scored.scores <= 0).all()), sorted(scored.ranking.tolist()) == list(range(30))
            (True, True)
        """
        losses, labels, num_classes = per_sample_losses(model, source, progress)
        scores = -self.clean_probabilities(losses, labels)
        # Rank by the score, ties by the loss (then by index): stable sorts, the secondary key first.
        by_loss = torch.argsort(losses, stable=True)
        order = by_loss[torch.argsort(scores[by_loss], stable=True)]
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel())
        return SampleScores(scores, labels, num_classes, ranking=rank.double())
