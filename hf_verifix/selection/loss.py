"""SAP's trusted set: the samples with the lowest cross-entropy under the labels the user has."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.source import Batch, SampleSource
from ..distributed import max_across_processes, sum_across_processes
from ..errors import DataError, NumericalError
from ..models.forward import evaluation_mode, logits_of, model_device, model_input_channels
from .base import Selection, checked_n_trusted, lowest_scores, register_selector

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
                raise NumericalError(_non_finite_message(batch.inputs, logits.cpu(), batch.indices, finite))
            losses[batch.indices] = loss.double().cpu()
            labels[batch.indices] = batch.labels
    return sum_across_processes(losses), sum_across_processes(labels), max_across_processes(num_classes)


def checked_logits(model: nn.Module, inputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Run ``model`` on ``inputs`` and return float logits, checking their shape and the batch's label range.

    Example:
        >>> batch = Batch(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 1]))
        >>> checked_logits(nn.Linear(3, 2), batch.inputs, batch).shape
        torch.Size([2, 2])
    """
    logits = logits_of(_forward(model, inputs, batch.indices))
    # Half-precision logits are widened for the loss; float64 ones keep their precision (curvature needs it).
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if logits.dim() != 2 or logits.shape[0] != batch.labels.shape[0]:
        raise DataError(
            f"the model returned logits of shape {tuple(logits.shape)} for a batch of {batch.labels.shape[0]} "
            f"samples with inputs of shape {tuple(batch.inputs.shape)}; expected ({batch.labels.shape[0]}, "
            "num_classes). Pass batched inputs the model accepts and a classifier that returns one row of logits "
            "per sample"
        )
    num_classes = logits.shape[-1]
    bad = (batch.labels < 0) | (batch.labels >= num_classes)
    if bad.any():
        raise DataError(
            f"labels must be in [0, {num_classes}) for a model with {num_classes} outputs, got "
            f"{batch.labels[bad][:5].tolist()} (samples {batch.indices[bad][:5].tolist()}); remap the labels to "
            f"0..{num_classes - 1} or use a model with one output per class"
        )
    return logits


def _forward(model: nn.Module, inputs: torch.Tensor, indices: torch.Tensor) -> object:
    """Run ``model``; an unbatched image batch (not 4-D) reaching a Conv2d becomes a DataError with the shape."""
    try:
        return model(inputs)
    except RuntimeError as err:
        if isinstance(err, torch.cuda.OutOfMemoryError) or inputs.dim() == 4 or model_input_channels(model) is None:
            raise
        raise DataError(
            f"the model failed on a batch of inputs of shape {tuple(inputs.shape)} (first samples "
            f"{indices[:5].tolist()}): {err}. "
            "A model with Conv2d layers expects batched images of shape (batch, channels, height, width); add the "
            "missing dimension (e.g. x.unsqueeze(1) for single-channel images) or fix the transform"
        ) from err


def _non_finite_message(
    inputs: torch.Tensor, logits: torch.Tensor, indices: torch.Tensor, finite: torch.Tensor
) -> str:
    bad = ~finite
    samples = indices[bad][:5].tolist()
    if inputs.is_floating_point() or inputs.is_complex():
        bad_inputs = ~torch.isfinite(inputs.reshape(inputs.shape[0], -1)).all(dim=1).cpu()
        if bad_inputs.any():
            kinds = [k for k, f in (("NaN", torch.isnan), ("Inf", torch.isinf)) if bool(f(inputs).any())]
            return (
                f"the inputs of samples {indices[bad_inputs][:5].tolist()} contain {'/'.join(kinds)}, so their loss "
                "is not finite; clean or drop those samples (or fix the transform) before correcting"
            )
    if not torch.isfinite(logits).all():
        return (
            f"the model's logits are NaN/Inf for samples {samples} although their inputs are finite; check the "
            "model's weights and numerics (e.g. float16 overflow) before correcting"
        )
    return (
        f"the cross-entropy is not finite for samples {samples} although inputs and logits are finite (logits too "
        "extreme); run the model in float32 or check its outputs before correcting"
    )


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
        self,
        model: nn.Module,
        source: SampleSource,
        n_trusted: int,
        per_class: bool = False,
        seed: int = 0,
        progress: bool = False,
    ) -> Selection:
        """Score every sample by its loss and keep the ``n_trusted`` lowest (``per_class``: per label).

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(6, 3), torch.tensor([0, 1] * 3)))
            >>> LossSelector().select(nn.Linear(3, 2), source, 2, per_class=True).class_counts(2).tolist()
            [1, 1]
        """
        n_trusted = checked_n_trusted(n_trusted, len(source))
        losses, labels, num_classes = per_sample_losses(model, source, progress)
        indices = lowest_scores(losses, labels, n_trusted, per_class, num_classes)
        return Selection(indices, losses, labels)
