"""Checks the selectors share: the labels a per-class pick needs, and the logits and losses a model returns.

A private module: the selector modules import these from here, never from each other.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.source import Batch
from ..errors import DataError
from ..models.forward import logits_of, model_input_channels

__all__ = ["check_labels", "checked_logits", "non_finite_message"]


def check_labels(labels: torch.Tensor, per_class: bool, num_classes: int | None) -> None:
    """Per-class picks need labels in ``[0, num_classes)`` (``num_classes`` None: ``>= 0``); raise a DataError naming
    the bad ones. Without ``per_class`` any label is fine.

    Example:
        >>> check_labels(torch.tensor([0, 1, 1]), per_class=True, num_classes=2)
        >>> check_labels(torch.tensor([0, 2]), per_class=True, num_classes=2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        hf_verifix.errors.DataError: per_class selection needs labels that lie in [0, 2), got [2] (samples [1]); ...
    """
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


def non_finite_message(inputs: torch.Tensor, logits: torch.Tensor, indices: torch.Tensor, finite: torch.Tensor) -> str:
    """Explain why some samples' loss is not finite (``finite`` False): their inputs, the logits, or the loss itself.

    Example:
        >>> logits = torch.tensor([[0.0, 1.0], [float("nan"), 0.0]])
        >>> non_finite_message(torch.zeros(2, 3), logits, torch.tensor([4, 7]), torch.tensor([True, False]))[:50]
        "the model's logits are NaN/Inf for samples [7] alt"
    """
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
