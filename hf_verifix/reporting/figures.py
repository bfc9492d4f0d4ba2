"""The figures of a correction: α curve, per-class accuracy, confusion matrices, trusted classes, spectra, times.

Each function draws one PNG with matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``): no display
needed, and the caller's pyplot backend and state are left untouched. matplotlib is imported only when a figure is
drawn (``pip install hf_verifix[report]``). The report and the model card draw their α curve with the same function.

Example:
    >>> import tempfile
    >>> timings({"selection_s": 0.5, "collection_s": 1.5}, Path(tempfile.mkdtemp()) / "t.png").name
    't.png'
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..projection.spectrum import importance_scaling
from ..results import AlphaSearchResult, Evaluation, format_alpha
from ..utils.staging import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "PHASES",
    "alpha_curve",
    "class_accuracy",
    "confusion_matrices",
    "layer_label",
    "per_class_accuracy",
    "representative_layers",
    "require_matplotlib",
    "spectrum",
    "timings",
    "trusted_classes",
]

_DPI = 100
PHASES = {
    "selection_s": "trusted-sample selection",
    "collection_s": "Gram collection",
    "decomposition_s": "decomposition",
    "update_s": "weight update (last apply)",
    "alpha_search_s": "α search",
}
"""A readable name for each phase of ``CorrectionResult.timings``."""


def require_matplotlib() -> None:
    """Raise an ImportError saying what to install when matplotlib is missing.

    Example:
        >>> require_matplotlib()  # installed here: nothing to say
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "write_correction_report draws its figures with matplotlib, which is not installed; install it with "
            "`pip install hf_verifix[report]` (or `pip install matplotlib`)"
        ) from err


def _new_figure(width: float, height: float) -> Figure:
    """A Figure on an Agg canvas: headless, and independent of pyplot and of the caller's chosen backend."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return atomic_write(path, buffer.getvalue())


def _percent_axis(ax: Axes) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Accuracy on each of ``k`` classes (NaN for a class with no samples).

    Example:
        >>> class_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 3).tolist()
        [0.5, 1.0, nan]
    """
    correct = torch.bincount(labels[predictions == labels], minlength=k).double()
    total = torch.bincount(labels, minlength=k).double()
    return torch.where(total > 0, correct / total.clamp(min=1), torch.full_like(total, math.nan))


def _confusion(predictions: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)


def alpha_curve(result: AlphaSearchResult, applied: float | None, path: Path) -> Path:
    """Accuracy against α (log scale), the uncorrected accuracy as a dashed line, the chosen α marked.

    Example:
        >>> import tempfile
        >>> from hf_verifix.results import AlphaSearchResult
        >>> search = AlphaSearchResult(1e4, 0.9, 0.8, {1e3: 0.85, 1e4: 0.9})
        >>> alpha_curve(search, 1e4, Path(tempfile.mkdtemp()) / "a.png").read_bytes()[:4]
        b'\\x89PNG'
    """
    alphas = sorted(result.curve)
    fig = _new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    ax.plot(alphas, [result.curve[a] for a in alphas], "o-", color="C0", label="corrected with α")
    ax.axhline(result.baseline_accuracy, color="0.4", ls="--", label=f"uncorrected ({result.baseline_accuracy:.2%})")
    if result.best_alpha is not None:
        ax.plot(
            [result.best_alpha],
            [result.best_accuracy],
            marker="*",
            ms=16,
            color="C3",
            ls="none",
            label=f"chosen α = {format_alpha(result.best_alpha)} ({result.best_accuracy:.2%})",
        )
    else:
        ax.set_title("no α beat the uncorrected model: it was left untouched", fontsize=10)
    if applied is not None and applied != result.best_alpha:
        ax.axvline(applied, color="C2", ls=":", label=f"applied α = {format_alpha(applied)}")
    ax.set_xscale("log")
    ax.set_xlabel("α (scaling coefficient)")
    ax.set_ylabel("accuracy on the α-search data")
    _percent_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return _save(fig, path)


def _tick_labels(ax: Axes, names: Sequence[str], axis: str = "x", rotate: bool = True) -> None:
    k = len(names)
    if k > 30:  # too many to read: leave matplotlib's numeric ticks
        return
    positions = list(range(k))
    if axis == "x":
        ax.set_xticks(
            positions, list(names), rotation=45 if rotate and k > 6 else 0, ha="right" if k > 6 else "center"
        )
    else:
        ax.set_yticks(positions, list(names))


def per_class_accuracy(before: Evaluation, after: Evaluation | None, names: Sequence[str], path: Path) -> Path:
    """Per-class accuracy of the original model (and of the corrected one) as grouped bars.

    Example:
        >>> import tempfile, torch
        >>> from hf_verifix.results import Evaluation
        >>> e = Evaluation(torch.tensor([0, 1]), torch.tensor([0, 0]))
        >>> per_class_accuracy(e, None, ["a", "b"], Path(tempfile.mkdtemp()) / "p.png").suffix
        '.png'
    """
    k = len(names)
    original = class_accuracy(before.predictions, before.labels, k)
    fig = _new_figure(min(max(6.0, 0.45 * k + 2), 16.0), 4.0)
    ax = fig.add_subplot()
    positions = torch.arange(k, dtype=torch.float64)
    if after is None:
        ax.bar(positions.tolist(), original.tolist(), width=0.7, color="0.6", label="original")
    else:
        corrected = class_accuracy(after.predictions, after.labels, k)
        ax.bar((positions - 0.2).tolist(), original.tolist(), width=0.4, color="0.6", label="original")
        label = f"α = {format_alpha(after.alpha)}"
        ax.bar((positions + 0.2).tolist(), corrected.tolist(), width=0.4, color="C0", label=label)
    ax.set_ylim(0, 1.2)
    ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("accuracy")
    ax.set_xlabel("class")
    _percent_axis(ax)
    _tick_labels(ax, names)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper center", ncol=2)
    ax.set_title("per-class accuracy on the evaluation data", fontsize=10)
    return _save(fig, path)


def confusion_matrices(before: Evaluation, after: Evaluation | None, names: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrices of the original model (and of the corrected one), side by side.

    Example:
        >>> import tempfile, torch
        >>> from hf_verifix.results import Evaluation
        >>> e = Evaluation(torch.tensor([0, 1]), torch.tensor([0, 0]))
        >>> confusion_matrices(e, e, ["a", "b"], Path(tempfile.mkdtemp()) / "c.png").suffix
        '.png'
    """
    k = len(names)
    panels = [("original", before)]
    if after is not None:
        panels.append((f"corrected, α = {format_alpha(after.alpha)}", after))
    side = min(max(3.2, 0.4 * k + 1.5), 9.0)
    fig = _new_figure(side * len(panels) + 0.8, side + 0.3)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, (title, evaluation) in zip(axes, panels, strict=True):
        counts = _confusion(evaluation.predictions, evaluation.labels, k)
        rates = counts.double() / counts.sum(dim=1, keepdim=True).clamp(min=1)
        image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    colour = "white" if rates[i, j] > 0.6 else "black"
                    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8, color=colour)
        _tick_labels(ax, names, "x")
        _tick_labels(ax, names, "y")
        ax.set_title(f"{title}\naccuracy {evaluation.accuracy:.2%}", fontsize=10)
        ax.set_xlabel("predicted")
        ax.set_ylabel("label")
    assert image is not None
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="fraction of the label's samples")
    return _save(fig, path)


def trusted_classes(trusted: dict[str, Any], names: Sequence[str], path: Path) -> Path:
    """The trusted set's class histogram (given labels; true ones too when the summary has them).

    Example:
        >>> import tempfile
        >>> trusted = {"count": 2, "selector": "loss", "class_counts": [1, 1]}
        >>> trusted_classes(trusted, ["a", "b"], Path(tempfile.mkdtemp()) / "t.png").suffix
        '.png'
    """
    k = len(names)
    given = list(trusted["class_counts"]) + [0] * (k - len(trusted["class_counts"]))
    fig = _new_figure(min(max(6.0, 0.45 * k + 2), 16.0), 3.8)
    ax = fig.add_subplot()
    positions = list(range(k))
    title = f"trusted set: {trusted['count']} samples, selector {trusted['selector']!r}"
    if "clean_class_counts" in trusted:
        true = list(trusted["clean_class_counts"]) + [0] * (k - len(trusted["clean_class_counts"]))
        ax.bar([p - 0.2 for p in positions], given, width=0.4, color="C1", label="given (noisy) label")
        ax.bar([p + 0.2 for p in positions], true, width=0.4, color="C2", label="true label")
        ax.legend(fontsize=9, loc="upper center", ncol=2)
        title += f"\nprecision {trusted['precision']:.1%}, class coverage {trusted['class_coverage']:.0%}"
    else:
        ax.bar(positions, given, width=0.7, color="C1")
    ax.set_ylim(0, max([*given, 1]) * 1.25)
    ax.set_ylabel("trusted samples")
    ax.set_xlabel("class")
    _tick_labels(ax, names)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def representative_layers(names: list[str], count: int) -> list[str]:
    """First, middle and last layers (``count`` evenly spaced ones, in model order).

    Example:
        >>> representative_layers(["a", "b", "c", "d", "e"], 3)
        ['a', 'c', 'e']
    """
    if count <= 0 or not names:
        return []
    if count == 1 or len(names) == 1:
        return [names[0]]
    picks = sorted({round(i * (len(names) - 1) / (count - 1)) for i in range(count)})
    return [names[i] for i in picks]


def layer_label(name: str) -> str:
    """A layer's qualified name, or a placeholder for the model itself (a bare ``Linear``/``Conv2d``).

    Example:
        >>> layer_label("")
        '(the model itself)'
    """
    return name or "(the model itself)"


def _mean_over_groups(normalized: torch.Tensor) -> torch.Tensor:
    """σ̃ sorted descending, averaged over the groups of a grouped convolution (one group: itself)."""
    return normalized.sort(dim=-1, descending=True).values.mean(dim=0)


def spectrum(spectra: Mapping[str, torch.Tensor], layers: list[str], alpha: float, note: str, path: Path) -> Path:
    """Sorted normalised eigenvalues σ̃ of ``layers`` (left) and the importance λ they get for ``alpha`` (right).

    Example:
        >>> import tempfile
        >>> spectra = {"fc": torch.tensor([[0.7, 0.3]], dtype=torch.float64)}
        >>> spectrum(spectra, ["fc"], 3e4, "applied", Path(tempfile.mkdtemp()) / "s.png").suffix
        '.png'
    """
    fig = _new_figure(11.0, 4.0)
    left, right = fig.subplots(1, 2)
    for index, name in enumerate(layers):
        normalized = spectra[name]
        sigma = _mean_over_groups(normalized.double().cpu())
        rank = torch.arange(1, sigma.numel() + 1)
        positive = sigma > 0
        groups = normalized.shape[0]
        label = f"{layer_label(name)} (d={sigma.numel()}{f', mean of {groups} groups' if groups > 1 else ''})"
        marker = "o" if sigma.numel() <= 16 else None  # a few points: show them
        left.plot(rank[positive].tolist(), sigma[positive].tolist(), color=f"C{index}", marker=marker, label=label)
        lam = importance_scaling(sigma, alpha)
        right.plot(rank.tolist(), lam.tolist(), color=f"C{index}", marker=marker, label=layer_label(name))
    left.axhline(1.0 / (alpha + 1.0), color="0.4", ls=":", label="λ = ½ at σ̃ = 1/(α+1)")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("direction (sorted)")
    left.set_ylabel("normalised eigenvalue σ̃")
    left.set_title("trusted activation spectrum", fontsize=10)
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.set_xscale("log")
    right.set_ylim(-0.03, 1.03)
    right.set_xlabel("direction (sorted)")
    right.set_ylabel("importance λ")
    right.set_title(f"λ = ασ̃ / ((α−1)σ̃ + 1) for α = {format_alpha(alpha)} ({note})", fontsize=10)
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def timings(timings: dict[str, float], path: Path) -> Path:
    """The wall time of each recorded phase as horizontal bars.

    Example:
        >>> import tempfile
        >>> timings({"selection_s": 1.0}, Path(tempfile.mkdtemp()) / "w.png").suffix
        '.png'
    """
    labels = [PHASES.get(key, key) for key in timings]
    values = list(timings.values())
    fig = _new_figure(6.4, 0.45 * len(values) + 1.4)
    ax = fig.add_subplot()
    positions = list(range(len(values)))
    ax.barh(positions, values, color=[f"C{i}" for i in positions])
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()
    for position, value in zip(positions, values, strict=True):
        ax.text(value, position, f" {value:.3g} s", va="center", fontsize=9)
    ax.set_xlim(0, max(values) * 1.25 if max(values) > 0 else 1)
    ax.set_xlabel("seconds")
    ax.set_title(f"wall time: {sum(values):.3g} s in all", fontsize=10)
    return _save(fig, path)
