"""What a correction produces: its typed results, and the name of every file a correction run writes.

:class:`CorrectionResult` is what :meth:`~hf_verifix.ProjectionCorrector.correct` returns and what the report, the
model card, the CLI and :class:`~hf_verifix.SAPCallback` read: they never re-run or change the correction.

Example:
    >>> import torch
    >>> before = Evaluation(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), alpha=None)
    >>> after = Evaluation(torch.tensor([0, 1, 0]), torch.tensor([0, 1, 0]), alpha=3e4)
    >>> result = CorrectionResult(alpha=3e4, before=before, after=after)
    >>> round(result.improvement, 4), format_alpha(result.alpha)
    (0.3333, '3e4')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "FIGURES",
    "PLOT_NAME",
    "PROCESSOR_NAME",
    "REPORT_FILE",
    "REPORT_NAME",
    "UNCORRECTED_DIR",
    "AlphaSearchResult",
    "CorrectionResult",
    "Evaluation",
    "format_alpha",
    "is_protected",
    "output_files",
]

CONFIG_NAME = "correction_config.json"
"""The correction's hyperparameters (:meth:`CorrectionConfig.save`)."""
REPORT_NAME = "correction_report.json"
"""The JSON summary of a correction (:meth:`ProjectionCorrector.report`: config, trusted set, layers, α search)."""
REPORT_FILE = "report.md"
"""The Markdown report (:func:`hf_verifix.reporting.write_correction_report`)."""
CARD_NAME = "README.md"
"""The model card."""
PLOT_NAME = "alpha_search.png"
"""The card's α-search plot when no report figures are embedded."""
PROCESSOR_NAME = "preprocessor_config.json"
"""An image processor saved next to the model."""
UNCORRECTED_DIR = "uncorrected_model"
"""Where :class:`~hf_verifix.SAPCallback` keeps the trained model when its correction fails."""
FIGURES: dict[str, str] = {
    "alpha_curve": "alpha_curve.png",
    "per_class_accuracy": "per_class_accuracy.png",
    "confusion_matrices": "confusion_matrices.png",
    "trusted_classes": "trusted_classes.png",
    "spectrum": "spectrum.png",
    "timings": "timings.png",
}
"""File name of each figure a report can hold (a figure is left out when its data is missing).

Example:
    >>> sorted(FIGURES)[:2]
    ['alpha_curve', 'confusion_matrices']
"""

# Card and model files a push or a save must never replace silently (locally or on the Hub).
_MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")


def output_files() -> tuple[str, ...]:
    """Every file name a correction run may write into its output folder (model, card, configs, report, figures).

    Example:
        >>> "README.md" in output_files() and "report.md" in output_files()
        True
    """
    names = [CARD_NAME, *_MODEL_FILES, CONFIG_NAME, REPORT_NAME, REPORT_FILE, *FIGURES.values(), PLOT_NAME]
    return tuple(dict.fromkeys([*names, PROCESSOR_NAME]))


def is_protected(name: str) -> bool:
    """Whether a push must not replace the repo file ``name`` without ``overwrite``: the card or model weights.

    Example:
        >>> [is_protected(n) for n in ("README.md", "model.safetensors", "alpha_search.png")]
        [True, True, False]
    """
    return name in (CARD_NAME, *_MODEL_FILES) or name.endswith(_WEIGHT_SUFFIXES)


def format_alpha(alpha: float | None) -> str:
    """α as people write it (``3e4``, ``2.5e4``, ``500``), always parsing back to the same float; None → ``none``.

    Example:
        >>> [format_alpha(a) for a in (3e4, 25000.0, 1e6, 500.0, 123456.7, None)]
        ['3e4', '2.5e4', '1e6', '500', '1.234567e5', 'none']
    """
    if alpha is None:
        return "none"
    value = float(alpha)
    if abs(value) >= 1e3:
        mantissa, exponent = f"{value:.6e}".split("e")
        text = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    else:
        text = f"{value:g}"
    return text if float(text) == value else repr(value)


@dataclass(frozen=True)
class Evaluation:
    """A model's argmax predictions and the labels they are scored against, for one α (None: uncorrected).

    Example:
        >>> Evaluation(torch.tensor([1, 0]), torch.tensor([1, 1]), alpha=None).accuracy
        0.5
    """

    predictions: torch.Tensor
    labels: torch.Tensor
    alpha: float | None = None

    @property
    def accuracy(self) -> float:
        """The fraction of predictions equal to their labels (NaN for no samples).

        Example:
            >>> Evaluation(torch.tensor([2]), torch.tensor([2])).accuracy
            1.0
        """
        if self.labels.numel() == 0:
            return float("nan")
        return float((self.predictions == self.labels).double().mean())


@dataclass
class AlphaSearchResult:
    """The outcome of :meth:`ProjectionCorrector.search_alpha`.

    ``best_alpha`` is None when no α beat the uncorrected model (which is then left in place); ``curve`` maps each
    α to its accuracy on the evaluation data.

    Example:
        >>> result = AlphaSearchResult(best_alpha=3e4, best_accuracy=0.9, baseline_accuracy=0.8, curve={3e4: 0.9})
        >>> result.improvement
        0.09999999999999998
    """

    best_alpha: float | None
    best_accuracy: float
    baseline_accuracy: float
    curve: dict[float, float] = field(default_factory=dict)

    @property
    def improvement(self) -> float:
        """Accuracy gained over the uncorrected model on the evaluation data (0 when nothing won).

        Example:
            >>> AlphaSearchResult(None, 0.8, 0.8).improvement
            0.0
        """
        return self.best_accuracy - self.baseline_accuracy

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (the curve's α keys as strings).

        Example:
            >>> AlphaSearchResult(1e4, 0.9, 0.8, {1e4: 0.9}).to_dict()["curve"]
            {'10000.0': 0.9}
        """
        result = asdict(self)
        result["curve"] = {str(a): acc for a, acc in self.curve.items()}
        return result


@dataclass
class CorrectionResult:
    """One correction, end to end: the α applied, the evaluation before and after, the α search, and the summary.

    Attributes:
        alpha: The α the model holds now (None: left uncorrected, e.g. no α beat it in the search).
        before: The uncorrected model on the evaluation data (None without evaluation data).
        after: The model as corrected, on the same data (None without evaluation data).
        search: The α search, when α was chosen on the evaluation data.
        timings: Wall time of each phase, in seconds.
        summary: :meth:`ProjectionCorrector.report`: config, trusted set, layers corrected and skipped.
        spectra: Each corrected layer's normalised eigenvalues σ̃ (``groups × d``), for the report's figures.
        model: The corrected model's class name.

    Example:
        >>> CorrectionResult(alpha=None).accuracy_after is None
        True
    """

    alpha: float | None
    before: Evaluation | None = None
    after: Evaluation | None = None
    search: AlphaSearchResult | None = None
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    spectra: Mapping[str, torch.Tensor] = field(default_factory=dict)
    model: str = "the model"

    @property
    def accuracy_before(self) -> float | None:
        """Accuracy of the uncorrected model on the evaluation data (None without one).

        Example:
            >>> CorrectionResult(None).accuracy_before is None
            True
        """
        return None if self.before is None else self.before.accuracy

    @property
    def accuracy_after(self) -> float | None:
        """Accuracy of the model as corrected on the evaluation data (None without one).

        Example:
            >>> CorrectionResult(None).accuracy_after is None
            True
        """
        return None if self.after is None else self.after.accuracy

    @property
    def improvement(self) -> float | None:
        """``accuracy_after - accuracy_before`` (None without evaluation data).

        Example:
            >>> CorrectionResult(None).improvement is None
            True
        """
        before, after = self.accuracy_before, self.accuracy_after
        return None if before is None or after is None else after - before
