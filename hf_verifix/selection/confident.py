"""Confident learning's trusted set: samples cleanlab does not flag as label issues, most self-confident first.

This selector needs the optional ``cleanlab`` package (``pip install hf_verifix[cleanlab]``); it is imported only
when a selection runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.source import SampleSource
from ..errors import ConfigError, DataError
from ..models.forward import evaluation_mode, model_device
from ..utils.distributed import sum_across_processes
from ._validation import checked_logits
from .base import register_selector, source_labels
from .selector import SampleScores, ScoringSelector

__all__ = ["ConfidentSelector", "confident_scores", "model_probabilities"]

_FILTERS = (
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
    "low_normalized_margin",
    "low_self_confidence",
)


def _find_label_issues() -> Any:
    """Return ``cleanlab.filter.find_label_issues``, or raise an ImportError saying how to install it."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError as err:
        raise ImportError(
            "the 'confident' selector needs cleanlab, which is not installed: pip install hf_verifix[cleanlab] "
            "(or pip install cleanlab), or use another selector ('loss', 'curvature', 'random', 'expert')"
        ) from err
    return find_label_issues


def _as_probabilities(pred_probs: Any) -> torch.Tensor:
    """Return ``pred_probs`` as a float64 ``(N, K)`` tensor after checking it holds probabilities."""
    try:
        probs = torch.as_tensor(np.asarray(pred_probs) if not isinstance(pred_probs, torch.Tensor) else pred_probs)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(
            f"pred_probs must be an (N, K) array of predicted probabilities, got {type(pred_probs).__name__} ({err})"
        ) from err
    if probs.dim() != 2 or probs.shape[1] < 2 or probs.shape[0] < 1:
        raise ConfigError(
            f"pred_probs must have shape (num_samples, num_classes) with at least 2 classes, got shape "
            f"{tuple(probs.shape)}"
        )
    if not (probs.is_floating_point() or probs.dtype in (torch.int32, torch.int64)):
        raise ConfigError(f"pred_probs must hold probabilities (floats), got a {probs.dtype} array")
    probs = probs.detach().cpu().double()
    if not torch.isfinite(probs).all():
        raise ConfigError("pred_probs contains NaN/Inf; pass finite out-of-sample probabilities")
    if (probs < 0).any() or (probs > 1).any():
        raise ConfigError(
            f"pred_probs must lie in [0, 1], got values from {float(probs.min()):.4g} to {float(probs.max()):.4g}; "
            "pass probabilities (e.g. logits.softmax(-1)), not logits"
        )
    sums = probs.sum(dim=1)
    worst = int(torch.argmax((sums - 1).abs()))
    if not math.isclose(float(sums[worst]), 1.0, abs_tol=1e-3):
        raise ConfigError(
            f"each row of pred_probs must sum to 1, but row {worst} sums to {float(sums[worst]):.6g}; pass "
            "normalised probabilities (e.g. logits.softmax(-1))"
        )
    return probs


def confident_scores(labels: torch.Tensor, pred_probs: torch.Tensor, issues: torch.Tensor) -> torch.Tensor:
    """Return trust scores (lower = more trusted): samples not flagged first, each group by self-confidence.

    A sample's self-confidence ``p`` is its predicted probability of its given label. Its score is ``-p`` when it is
    not flagged as a label issue (in ``[-1, 0]``) and ``2 - p`` when it is (in ``[1, 2]``), so every unflagged
    sample ranks before every flagged one.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], dtype=torch.float64)
        >>> confident_scores(torch.tensor([0, 0, 0]), probs, torch.tensor([False, False, True])).tolist()
        [-0.9, -0.6, 1.8]
    """
    p = pred_probs.double()[torch.arange(labels.numel()), labels.long()]
    return torch.where(issues.bool(), 2.0 - p, -p)


def model_probabilities(
    model: nn.Module, source: SampleSource, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the model's softmax probabilities ``(N, K)`` and the labels of every sample, in eval mode.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(4, 3), torch.tensor([0, 1, 1, 0])))
        >>> probs, labels = model_probabilities(nn.Linear(3, 2), source)
        >>> probs.shape, torch.allclose(probs.sum(1), torch.ones(4, dtype=torch.float64))
        (torch.Size([4, 2]), True)
    """
    device = model_device(model)
    probs: torch.Tensor | None = None
    # Zero-filled so that, with several processes, summing the shards' tensors gathers every sample once.
    labels = torch.zeros(len(source), dtype=torch.long)
    with evaluation_mode(model), torch.no_grad():
        for batch in source.batches(desc="scoring (confident)", progress=progress):
            logits = checked_logits(model, batch.inputs.to(device), batch)
            if probs is None:
                probs = torch.zeros(len(source), logits.shape[-1], dtype=torch.float64)
            probs[batch.indices] = logits.double().softmax(dim=-1).cpu()
            labels[batch.indices] = batch.labels
    if probs is None:
        raise DataError("the data is empty; pass at least one labelled sample")
    probs, labels = sum_across_processes(probs), sum_across_processes(labels)
    if not torch.isfinite(probs).all():
        bad = torch.nonzero(~torch.isfinite(probs).all(dim=1)).flatten()[:5].tolist()
        raise DataError(
            f"the model's probabilities are NaN/Inf for samples {bad}; check the inputs and the model's numerics"
        )
    return probs, labels


@register_selector("confident")
class ConfidentSelector(ScoringSelector[SampleScores]):
    """Pick samples that confident learning (cleanlab's ``find_label_issues``) does not flag, most confident first.

    cleanlab flags likely label issues from out-of-sample predicted probabilities ``pred_probs`` (e.g. from
    cross-validation). Without them, the model's own softmax on the training data is used: an approximation, since
    in-sample probabilities are overconfident on samples the model has memorised, so fewer issues get flagged.
    Scores are :func:`confident_scores`. Needs ``pip install hf_verifix[cleanlab]``.

    Args:
        pred_probs: Optional ``(N, K)`` out-of-sample predicted probabilities, row ``i`` for dataset sample ``i``.
        filter_by: cleanlab's flagging rule: one of "prune_by_noise_rate" (default), "prune_by_class", "both",
            "confident_learning", "predicted_neq_given", "low_normalized_margin", "low_self_confidence".
        frac_noise: cleanlab's ``frac_noise`` (flag only this fraction of the estimated issues), in ``(0, 1]``.
        min_examples_per_class: cleanlab's ``min_examples_per_class`` (never flag below this many per class).
        n_jobs: cleanlab's worker processes (1: none; None: one per CPU).

    Attributes:
        issues: After :meth:`select` (or :meth:`score`), the boolean mask of the samples flagged as label issues
            (None before).

    Raises:
        ConfigError: ``pred_probs`` not an (N, K >= 2) array of probabilities with rows summing to 1, an unknown
            ``filter_by``, ``frac_noise`` outside ``(0, 1]``.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(8, 2), torch.tensor([0, 1] * 4)))
        >>> probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9]] * 2)
        >>> probs[4] = torch.tensor([0.05, 0.95])  # sample 4 is labelled 0 but looks like a 1
        >>> selector = ConfidentSelector(pred_probs=probs)
        >>> selector.select(nn.Linear(2, 2), source, n_trusted=3).indices.tolist()
        [0, 3, 7]
        >>> torch.nonzero(selector.issues).flatten().tolist()
        [4]
    """

    def __init__(
        self,
        pred_probs: torch.Tensor | np.ndarray | None = None,
        filter_by: str = "prune_by_noise_rate",
        frac_noise: float = 1.0,
        min_examples_per_class: int = 1,
        n_jobs: int | None = 1,
    ) -> None:
        if filter_by not in _FILTERS:
            raise ConfigError(f"filter_by must be one of {list(_FILTERS)}, got {filter_by!r}")
        if isinstance(frac_noise, bool) or not isinstance(frac_noise, (int, float)) or not 0 < frac_noise <= 1:
            raise ConfigError(f"frac_noise must be a number in (0, 1], got {frac_noise!r}; 1.0 flags every issue")
        if isinstance(min_examples_per_class, bool) or not isinstance(min_examples_per_class, int):
            raise ConfigError(f"min_examples_per_class must be an integer >= 0, got {min_examples_per_class!r}")
        if min_examples_per_class < 0:
            raise ConfigError(f"min_examples_per_class must be an integer >= 0, got {min_examples_per_class!r}")
        if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1):
            raise ConfigError(f"n_jobs must be an integer >= 1 or None (one per CPU), got {n_jobs!r}")
        self.pred_probs = None if pred_probs is None else _as_probabilities(pred_probs)
        self.filter_by = filter_by
        self.frac_noise = float(frac_noise)
        self.min_examples_per_class = min_examples_per_class
        self.n_jobs = n_jobs
        self.issues: torch.Tensor | None = None

    def __repr__(self) -> str:
        probs = "model softmax" if self.pred_probs is None else f"<{tuple(self.pred_probs.shape)} pred_probs>"
        return f"ConfidentSelector({probs}, filter_by={self.filter_by!r})"

    def check_n_trusted(self, n_trusted: object, source: SampleSource) -> int:
        """Check that cleanlab is installed, before anything is read, then ``n_trusted`` as every selector does.

        Raises:
            ImportError: cleanlab is not installed.
            DataError: ``n_trusted`` not an integer in ``[1, len(source)]``.

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> ConfidentSelector().check_n_trusted(2, SampleSource(TensorDataset(torch.zeros(3, 2), torch.zeros(3))))
            2
        """
        _find_label_issues()
        return super().check_n_trusted(n_trusted, source)

    def score(self, model: nn.Module, source: SampleSource, *, seed: int = 0, progress: bool = False) -> SampleScores:
        """Flag label issues with cleanlab and score every sample by :func:`confident_scores`; sets :attr:`issues`.

        ``model`` is used only without ``pred_probs``; ``seed`` is not used (cleanlab is deterministic).

        Raises:
            ImportError: cleanlab is not installed.
            DataError: ``pred_probs`` has another number of rows than the data, or a label is not a column of it.

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(6, 2), torch.tensor([0, 1] * 3)))
            >>> probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]] * 2)
            >>> ConfidentSelector(pred_probs=probs).score(nn.Linear(2, 2), source).scores.round(decimals=2).tolist()
            [-0.9, -0.7, -0.6, 1.9, 1.7, 1.6]
        """
        find_label_issues = _find_label_issues()
        probs, labels = self._probabilities(model, source, progress)
        flagged = find_label_issues(
            labels.numpy(),
            probs.numpy(),
            filter_by=self.filter_by,
            frac_noise=self.frac_noise,
            min_examples_per_class=self.min_examples_per_class,
            n_jobs=self.n_jobs,
        )
        self.issues = torch.as_tensor(np.asarray(flagged, dtype=bool))
        return SampleScores(confident_scores(labels, probs, self.issues), labels, probs.shape[1])

    def _probabilities(
        self, model: nn.Module, source: SampleSource, progress: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``pred_probs`` (or the model's softmax without them) and the labels, each label a column of them."""
        if self.pred_probs is None:
            probs, labels = model_probabilities(model, source, progress)
        else:
            probs = self.pred_probs
            if probs.shape[0] != len(source):
                raise DataError(
                    f"pred_probs has {probs.shape[0]} rows but the data has {len(source)} samples; pass one row of "
                    "predicted probabilities per sample, in dataset order"
                )
            labels = source_labels(source, progress)
        num_classes = probs.shape[1]
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            where = torch.nonzero(bad).flatten()[:5].tolist()
            raise DataError(
                f"labels must be in [0, {num_classes}) for pred_probs with {num_classes} columns, got "
                f"{labels[bad][:5].tolist()} (samples {where}); remap the labels or pass one column per class"
            )
        return probs, labels
