"""SAP's trusted set: the samples with the lowest cross-entropy under the labels the user has."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.source import SampleSource
from ..errors import NumericalError
from ..models.forward import evaluation_mode, model_device
from ..utils.distributed import max_across_processes, sum_across_processes
from ._validation import checked_logits, non_finite_message
from .base import register_selector
from .selector import SampleScores, ScoringSelector

__all__ = ["LossSelector", "per_sample_losses"]


def per_sample_losses(
    model: nn.Module, source: SampleSource, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Return each sample's cross-entropy and label, and the model's class count, in eval mode without gradients.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(4, 3), torch.tensor([0, 1, 1, 0])))
        >>> losses, labels, k = per_sample_losses(nn.Linear(3, 2), source)
        >>> losses.shape, k
        (torch.Size([4]), 2)
    """
    device = model_device(model)
    # Zero-filled so that, with several processes, summing the shards' tensors gathers every sample exactly once.
    losses = torch.zeros(len(source), dtype=torch.float64)
    labels = torch.zeros(len(source), dtype=torch.long)
    num_classes = 0
    with evaluation_mode(model), torch.no_grad():
        for batch in source.batches(desc="scoring (loss)", progress=progress):
            logits = checked_logits(model, batch.inputs.to(device), batch)
            num_classes = logits.shape[-1]
            loss = F.cross_entropy(logits, batch.labels.to(logits.device), reduction="none")
            finite = torch.isfinite(loss).cpu()
            if not finite.all():
                raise NumericalError(non_finite_message(batch.inputs, logits.cpu(), batch.indices, finite))
            losses[batch.indices] = loss.double().cpu()
            labels[batch.indices] = batch.labels
    return sum_across_processes(losses), sum_across_processes(labels), max_across_processes(num_classes)


@register_selector("loss")
class LossSelector(ScoringSelector[SampleScores]):
    """Pick the samples with the lowest cross-entropy under their (possibly noisy) labels (SAP paper, sec. 3).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(10, 3), torch.randint(0, 2, (10,))))
        >>> LossSelector().select(nn.Linear(3, 2), source, n_trusted=4).indices.numel()
        4
    """

    def score(self, model: nn.Module, source: SampleSource, *, seed: int = 0, progress: bool = False) -> SampleScores:
        """Score every sample by its cross-entropy (see :func:`per_sample_losses`; ``seed`` is not used).

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(6, 3), torch.tensor([0, 1] * 3)))
            >>> scored = LossSelector().score(nn.Linear(3, 2), source)
            >>> bool((scored.scores > 0).all()), scored.num_classes
            (True, 2)
        """
        return SampleScores(*per_sample_losses(model, source, progress))
