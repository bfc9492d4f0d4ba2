"""A model's argmax predictions over every sample of a data source, gathered exactly across processes.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> source = SampleSource(TensorDataset(torch.randn(3, 2), torch.tensor([0, 1, 1])))
    >>> predictions_and_labels(torch.nn.Linear(2, 2), source)[1].tolist()
    [0, 1, 1]
"""

from __future__ import annotations

import torch
from torch import nn

from .data.source import SampleSource
from .errors import DataError
from .models.forward import evaluation_mode, logits_of, model_device
from .utils.distributed import max_across_processes, sum_across_processes

__all__ = ["predictions_and_labels"]


def predictions_and_labels(
    model: nn.Module, source: SampleSource, progress: bool = False, desc: str = "evaluating"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the model's argmax predictions and the labels over every sample of ``source`` (eval mode).

    Raises:
        DataError: A label outside ``[0, num_classes)`` of the model's logits (negative ones included): every
            such sample would count as wrong whatever the model predicts. Checked after the pass, on every
            process alike, so several processes raise together.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(3, 2), torch.tensor([0, 1, 1])))
        >>> predictions_and_labels(nn.Linear(2, 2), source)[1].tolist()
        [0, 1, 1]
    """
    device = model_device(model)
    # Each process predicts its shard into zero tensors; one sum gathers every sample exactly once.
    predictions = torch.zeros(len(source), dtype=torch.long)
    labels = torch.zeros(len(source), dtype=torch.long)
    num_classes = 0
    with evaluation_mode(model), torch.no_grad():
        for batch in source.batches(desc=desc, progress=progress):
            logits = logits_of(model(batch.inputs.to(device)))
            num_classes = int(logits.shape[-1])
            predictions[batch.indices] = logits.argmax(dim=-1).cpu()
            labels[batch.indices] = batch.labels
    labels = sum_across_processes(labels)
    _check_label_range(labels, max_across_processes(num_classes), model)
    return sum_across_processes(predictions), labels


def _check_label_range(labels: torch.Tensor, num_classes: int, model: nn.Module) -> None:
    """Refuse evaluation labels the model cannot predict: each would score 0 whatever α does."""
    bad = (labels < 0) | (labels >= num_classes)
    if not bool(bad.any()):
        return
    samples = bad.nonzero().flatten()
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    align = (
        "dataset.align_labels_with_mapping(model.config.label2id, 'label')"
        if id2label
        else "the class ids the model was trained with"
    )
    raise DataError(
        f"evaluation labels must be in [0, {num_classes}) for a model with {num_classes} outputs, got "
        f"{sorted(set(labels[samples].tolist()))[:5]} in {samples.numel()} of {labels.numel()} samples (samples "
        f"{samples[:5].tolist()}), which no prediction can match; remap the labels to 0..{num_classes - 1} (align "
        f"them with the model's id2label: {align}) or evaluate a model with one output per class"
    )
