"""SAP's trusted set: the samples with the lowest cross-entropy under the labels the user has."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.source import SampleSource
from ..errors import DataError, NumericalError
from ..models.forward import evaluation_mode, logits_of, model_device
from .base import Selection, lowest_scores, register_selector

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
    losses = torch.empty(len(source), dtype=torch.float64)
    labels = torch.empty(len(source), dtype=torch.long)
    num_classes = 0
    with evaluation_mode(model), torch.no_grad():
        for batch in source.batches(desc="scoring (loss)", progress=progress):
            logits = logits_of(model(batch.inputs.to(device))).float()
            num_classes = logits.shape[-1]
            bad = (batch.labels < 0) | (batch.labels >= num_classes)
            if bad.any():
                raise DataError(
                    f"labels must be in [0, {num_classes}) for a model with {num_classes} outputs, got "
                    f"{batch.labels[bad][:5].tolist()} (samples {batch.indices[bad][:5].tolist()})"
                )
            loss = F.cross_entropy(logits, batch.labels.to(logits.device), reduction="none")
            if not torch.isfinite(loss).all():
                raise NumericalError(
                    f"non-finite loss for samples {batch.indices[~torch.isfinite(loss.cpu())][:5].tolist()}; "
                    "check the inputs for NaN/Inf"
                )
            losses[batch.indices] = loss.double().cpu()
            labels[batch.indices] = batch.labels
    return losses, labels, num_classes


@register_selector("loss")
class LossSelector:
    """Pick the samples with the lowest cross-entropy under their (possibly noisy) labels (SAP paper, sec. 3).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(10, 3), torch.randint(0, 2, (10,))))
        >>> LossSelector().select(nn.Linear(3, 2), source, n_trusted=4).indices.numel()
        4
    """

    def select(
        self, model: nn.Module, source: SampleSource, n_trusted: int, per_class: bool = False, seed: int = 0,
        progress: bool = False,
    ) -> Selection:
        """Score every sample by its loss and keep the ``n_trusted`` lowest (``per_class``: per label).

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(6, 3), torch.tensor([0, 1] * 3)))
            >>> LossSelector().select(nn.Linear(3, 2), source, 2, per_class=True).class_counts(2).tolist()
            [1, 1]
        """
        if n_trusted > len(source):
            raise DataError(
                f"n_trusted={n_trusted} is larger than the data ({len(source)} samples); lower n_trusted or add data"
            )
        losses, labels, num_classes = per_sample_losses(model, source, progress)
        indices = lowest_scores(losses, labels, n_trusted, per_class, num_classes)
        return Selection(indices, losses, labels)
