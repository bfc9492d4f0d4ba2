"""Offline ``evaluate`` metrics shipped with the package, and model accuracy over any supported data."""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
import numpy as np
from torch import nn

from .data.source import SampleSource
from .predictions import predictions_and_labels

__all__ = ["Accuracy", "predictions_and_labels", "source_accuracy"]


class Accuracy(evaluate.Metric):
    """Top-1 accuracy as an ``evaluate.Metric`` that works offline (``evaluate.load("accuracy")`` needs the Hub).

    Example:
        >>> Accuracy().compute(predictions=[0, 1, 1], references=[0, 1, 0])
        {'accuracy': 0.6666666666666666}
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Fraction of predictions equal to the references.",
            citation="",
            inputs_description="predictions and references: integer class ids of equal length.",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions: Any, references: Any) -> dict[str, float]:
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        return {"accuracy": float((predictions == references).mean()) if references.size else float("nan")}


def source_accuracy(model: nn.Module, source: SampleSource, progress: bool = False) -> float:
    """Return the model's accuracy on ``source``, computed with the offline :class:`Accuracy` metric.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> model = torch.nn.Linear(2, 2)
        >>> x = torch.randn(8, 2)
        >>> source = SampleSource(TensorDataset(x, model(x).argmax(-1)))
        >>> source_accuracy(model, source)
        1.0
    """
    predictions, labels = predictions_and_labels(model, source, progress)
    metric = Accuracy()
    return float(metric.compute(predictions=predictions.tolist(), references=labels.tolist())["accuracy"])
