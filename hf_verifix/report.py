"""A Markdown + PNG report of a correction: α curve, accuracy before/after, trusted set, spectra and wall time.

:func:`write_correction_report` writes ``report.md`` next to its figures (and ``correction_report.json``, the
corrector's JSON summary). The figures are drawn with matplotlib's Agg canvas directly (``Figure`` +
``FigureCanvasAgg``): it needs no display and leaves the caller's pyplot backend and state untouched. matplotlib
is imported only when a report is written (``pip install hf_verifix[report]``).

Example:
    >>> from hf_verifix.report import FIGURES
    >>> FIGURES["alpha_curve"]
    'alpha_curve.png'
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .data.images import Transform
from .data.source import as_source
from .errors import DataError
from .metrics import predictions_and_labels
from .projection.spectrum import importance_scaling

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .corrector import ProjectionCorrector

__all__ = ["FIGURES", "REPORT_FILE", "SUMMARY_FILE", "write_correction_report"]

REPORT_FILE = "report.md"
"""Name of the Markdown report written by :func:`write_correction_report`.

Example:
    >>> REPORT_FILE
    'report.md'
"""

SUMMARY_FILE = "correction_report.json"
"""Name of the JSON summary (``ProjectionCorrector.report``) written next to the Markdown report.

Example:
    >>> SUMMARY_FILE
    'correction_report.json'
"""

FIGURES: dict[str, str] = {
    "alpha_curve": "alpha_curve.png",
    "per_class_accuracy": "per_class_accuracy.png",
    "confusion_matrices": "confusion_matrices.png",
    "trusted_classes": "trusted_classes.png",
    "spectrum": "spectrum.png",
    "timings": "timings.png",
}
"""File name of each figure a report can hold (a figure is left out when its data is missing, see
:func:`write_correction_report`).

Example:
    >>> sorted(FIGURES)[:2]
    ['alpha_curve', 'confusion_matrices']
"""

_DPI = 100
_MAX_TABLE_CLASSES = 40
_PHASES = {
    "selection_s": "trusted-sample selection",
    "collection_s": "Gram collection",
    "decomposition_s": "decomposition",
    "update_s": "weight update (last apply)",
    "alpha_search_s": "α search",
}


# ---------------------------------------------------------------------------------------------------- matplotlib
def _require_matplotlib() -> None:
    """Raise an ImportError saying what to install when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "write_correction_report draws its figures with matplotlib, which is not installed; install it with "
            "`pip install hf_verifix[report]` (or `pip install matplotlib`)"
        ) from err


def _new_figure(width: float, height: float) -> Figure:
    """A Figure on an Agg canvas: headless, and independent of pyplot and of the caller's chosen backend."""
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, directory: Path, key: str) -> str:
    name = FIGURES[key]
    figure.savefig(directory / name, dpi=_DPI)
    return name


def _percent_axis(ax: Axes) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


# ---------------------------------------------------------------------------------------------------- evaluation
@dataclass
class _Evaluation:
    labels: torch.Tensor
    before: torch.Tensor
    after: torch.Tensor | None
    alpha: float | None


def _snapshot(corrector: ProjectionCorrector) -> dict[str, Any]:
    """Everything ``revert``/``apply`` may change: projected weights, buffers (BatchNorm), applied α, timings."""
    modules = dict(corrector.model.named_modules())
    return {
        "weights": {name: modules[name].weight.detach().clone() for name in corrector.projections},
        "buffers": {name: b.detach().clone() for name, b in corrector.model.named_buffers()},
        "applied_alpha": corrector.applied_alpha,
        "timings": dict(corrector.timings),
    }


def _restore(corrector: ProjectionCorrector, snapshot: dict[str, Any]) -> None:
    modules = dict(corrector.model.named_modules())
    buffers = dict(corrector.model.named_buffers())
    with torch.no_grad():
        for name, weight in snapshot["weights"].items():
            modules[name].weight.copy_(weight)
        for name, buffer in snapshot["buffers"].items():
            buffers[name].copy_(buffer)
    corrector.applied_alpha = snapshot["applied_alpha"]
    corrector._mark_written()  # the state restored is the one the corrector had left
    corrector.timings.clear()
    corrector.timings.update(snapshot["timings"])


def _evaluate(
    corrector: ProjectionCorrector, eval_data: Any, alpha: float | None, transform: Transform | None
) -> _Evaluation:
    """Predictions of the original model and of the model corrected with ``alpha``; the state found is restored."""
    cfg = corrector.config
    model = corrector.model
    source = as_source(eval_data, model, cfg.batch_size, cfg.image_column, cfg.label_column, transform)
    found = corrector.applied_alpha
    target = found if alpha is None else float(alpha)
    snapshot = _snapshot(corrector)
    after = None
    try:
        if found is not None and target == found:  # the model holds the corrected weights already
            after, _ = predictions_and_labels(model, source, cfg.progress, f"evaluating (α={target:g})")
        if found is not None:
            corrector.revert()
        before, labels = predictions_and_labels(model, source, cfg.progress, "evaluating (original)")
        if target is not None and after is None:
            corrector.apply(target)
            after, _ = predictions_and_labels(model, source, cfg.progress, f"evaluating (α={target:g})")
    finally:
        _restore(corrector, snapshot)
    return _Evaluation(labels, before, after, target)


def _per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    correct = torch.bincount(labels[predictions == labels], minlength=k).double()
    total = torch.bincount(labels, minlength=k).double()
    return torch.where(total > 0, correct / total.clamp(min=1), torch.full_like(total, math.nan))


def _confusion(predictions: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)


# ---------------------------------------------------------------------------------------------------- figures
def _alpha_curve_figure(corrector: ProjectionCorrector, directory: Path) -> str:
    result = corrector.search_result
    assert result is not None
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
            label=f"chosen α = {result.best_alpha:g} ({result.best_accuracy:.2%})",
        )
    else:
        ax.set_title("no α beat the uncorrected model: it was left untouched", fontsize=10)
    applied = corrector.applied_alpha
    if applied is not None and applied != result.best_alpha:
        ax.axvline(applied, color="C2", ls=":", label=f"applied α = {applied:g}")
    ax.set_xscale("log")
    ax.set_xlabel("α (scaling coefficient)")
    ax.set_ylabel("accuracy on the α-search data")
    _percent_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return _save(fig, directory, "alpha_curve")


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


def _per_class_figure(evaluation: _Evaluation, names: Sequence[str], directory: Path) -> str:
    k = len(names)
    before = _per_class_accuracy(evaluation.before, evaluation.labels, k)
    fig = _new_figure(min(max(6.0, 0.45 * k + 2), 16.0), 4.0)
    ax = fig.add_subplot()
    positions = torch.arange(k, dtype=torch.float64)
    if evaluation.after is None:
        ax.bar(positions.tolist(), before.tolist(), width=0.7, color="0.6", label="original")
    else:
        after = _per_class_accuracy(evaluation.after, evaluation.labels, k)
        ax.bar((positions - 0.2).tolist(), before.tolist(), width=0.4, color="0.6", label="original")
        ax.bar((positions + 0.2).tolist(), after.tolist(), width=0.4, color="C0", label=f"α = {evaluation.alpha:g}")
    ax.set_ylim(0, 1.2)
    ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("accuracy")
    ax.set_xlabel("class")
    _percent_axis(ax)
    _tick_labels(ax, names)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper center", ncol=2)
    ax.set_title("per-class accuracy on the evaluation data", fontsize=10)
    return _save(fig, directory, "per_class_accuracy")


def _confusion_figure(evaluation: _Evaluation, names: Sequence[str], directory: Path) -> str:
    k = len(names)
    panels = [("original", evaluation.before)]
    if evaluation.after is not None:
        panels.append((f"corrected, α = {evaluation.alpha:g}", evaluation.after))
    side = min(max(3.2, 0.4 * k + 1.5), 9.0)
    fig = _new_figure(side * len(panels) + 0.8, side + 0.3)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, (title, predictions) in zip(axes, panels, strict=True):
        counts = _confusion(predictions, evaluation.labels, k)
        rates = counts.double() / counts.sum(dim=1, keepdim=True).clamp(min=1)
        image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    colour = "white" if rates[i, j] > 0.6 else "black"
                    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8, color=colour)
        _tick_labels(ax, names, "x")
        _tick_labels(ax, names, "y")
        accuracy = float((predictions == evaluation.labels).double().mean())
        ax.set_title(f"{title}\naccuracy {accuracy:.2%}", fontsize=10)
        ax.set_xlabel("predicted")
        ax.set_ylabel("label")
    assert image is not None
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="fraction of the label's samples")
    return _save(fig, directory, "confusion_matrices")


def _trusted_figure(summary: dict[str, Any], names: Sequence[str], directory: Path) -> str:
    trusted = summary["trusted"]
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
    return _save(fig, directory, "trusted_classes")


def _representative_layers(names: list[str], count: int) -> list[str]:
    """First, middle and last layers (``count`` evenly spaced ones, in model order)."""
    if count <= 0 or not names:
        return []
    if count == 1 or len(names) == 1:
        return [names[0]]
    picks = sorted({round(i * (len(names) - 1) / (count - 1)) for i in range(count)})
    return [names[i] for i in picks]


def _layer_label(name: str) -> str:
    """A layer's qualified name, or a placeholder for the model itself (a bare ``Linear``/``Conv2d``)."""
    return name or "(the model itself)"


def _mean_over_groups(normalized: torch.Tensor) -> torch.Tensor:
    """σ̃ sorted descending, averaged over the groups of a grouped convolution (one group: itself)."""
    return normalized.sort(dim=-1, descending=True).values.mean(dim=0)


def _spectrum_figure(
    corrector: ProjectionCorrector, layers: list[str], alpha: float, note: str, directory: Path
) -> str:
    fig = _new_figure(11.0, 4.0)
    left, right = fig.subplots(1, 2)
    for index, name in enumerate(layers):
        projection = corrector.projections[name]
        sigma = _mean_over_groups(projection.normalized.double().cpu())
        rank = torch.arange(1, sigma.numel() + 1)
        positive = sigma > 0
        groups = projection.normalized.shape[0]
        label = f"{_layer_label(name)} (d={sigma.numel()}{f', mean of {groups} groups' if groups > 1 else ''})"
        marker = "o" if sigma.numel() <= 16 else None  # a few points: show them
        left.plot(rank[positive].tolist(), sigma[positive].tolist(), color=f"C{index}", marker=marker, label=label)
        lam = importance_scaling(sigma, alpha)
        right.plot(rank.tolist(), lam.tolist(), color=f"C{index}", marker=marker, label=_layer_label(name))
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
    right.set_title(f"λ = ασ̃ / ((α−1)σ̃ + 1) for α = {alpha:g} ({note})", fontsize=10)
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="lower left")
    return _save(fig, directory, "spectrum")


def _timings_figure(timings: dict[str, float], directory: Path) -> str:
    labels = [_PHASES.get(key, key) for key in timings]
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
    return _save(fig, directory, "timings")


# ---------------------------------------------------------------------------------------------------- markdown
def _class_names(
    class_names: Sequence[str] | None, eval_data: Any, corrector: ProjectionCorrector, k: int
) -> list[str]:
    if class_names is not None:
        names = [str(n) for n in class_names]
        if len(names) < k:
            raise DataError(
                f"class_names holds {len(names)} names but the labels go up to class {k - 1}; pass one name per "
                "class, in class-id order"
            )
        return names
    dataset = getattr(eval_data, "dataset", eval_data)  # a DataLoader's dataset
    features = getattr(dataset, "features", None)
    if isinstance(features, dict):
        column = corrector.config.label_column
        candidates = [features[column]] if column in features else list(features.values())
        found = [f.names for f in candidates if isinstance(getattr(f, "names", None), list)]
        if len(found) == 1 and len(found[0]) >= k:
            return [str(n) for n in found[0]]
    return [str(i) for i in range(k)]


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, on one line."""
    return " ".join(str(value).replace("|", "\\|").split())


def _image(alt: str, name: str) -> str:
    return f"![{alt}]({name})"


def _fmt_alpha(alpha: float | None) -> str:
    return "none" if alpha is None else f"{alpha:g}"


def write_correction_report(
    corrector: ProjectionCorrector,
    output_dir: str | os.PathLike[str],
    eval_data: Any = None,
    clean_labels: Sequence[int] | torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    *,
    alpha: float | None = None,
    transform: Transform | None = None,
    spectrum_layers: int = 3,
) -> Path:
    """Write a Markdown report of a fitted correction, with its figures, into ``output_dir``; return ``report.md``.

    The report holds (each figure only when its data exists):

    * ``alpha_curve.png``: accuracy against α on the data given to ``search_alpha`` (log scale), the uncorrected
      baseline as a dashed line and the chosen α marked (needs ``corrector.search_result``).
    * ``per_class_accuracy.png`` and ``confusion_matrices.png``: the original model against the model corrected
      with ``alpha`` (default: the applied α) on ``eval_data``, scored against the labels ``eval_data`` carries
      (pass clean labels for a true test accuracy). When no α is applied or given, only the original model is
      shown. The original weights are obtained with ``corrector.revert()``; afterwards the weights, buffers,
      ``applied_alpha`` and ``timings`` are restored exactly as found, even on an error.
    * ``trusted_classes.png``: the trusted set's class histogram; with ``clean_labels`` (the true labels of the
      data given to ``fit``), its true classes, precision and class coverage as well (``corrector.report``).
    * ``spectrum.png``: for ``spectrum_layers`` representative layers (first, middle, last), the sorted normalised
      eigenvalues σ̃ of the trusted activations and the importance λ they get for the applied α (``config.alpha``
      when none is applied), plus a table of every layer with how many directions keep λ ≥ ½.
    * ``timings.png``: the wall time of each phase (``corrector.timings``).

    ``correction_report.json`` (``corrector.report(clean_labels)``) is written next to it.

    Args:
        corrector: A fitted :class:`~hf_verifix.ProjectionCorrector`.
        output_dir: Folder to write into (created if needed; existing report files are replaced).
        eval_data: Labelled evaluation data, in any form ``fit`` accepts (e.g. a clean test set).
        clean_labels: True labels of the data given to ``fit``, when known (noise injected for an experiment).
        class_names: One name per class id (default: a ``datasets.ClassLabel``'s names, else the ids).
        alpha: α of the corrected model compared with the original on ``eval_data`` (default: the applied α).
        transform: Preprocessing of a ``datasets.Dataset``'s images (default: the model's own).
        spectrum_layers: How many layers the spectrum figure shows.

    Returns:
        The path of ``report.md``.

    Raises:
        ImportError: matplotlib is not installed (``pip install hf_verifix[report]``).
        VerifixError: The corrector was not fitted.
        DataError: Bad ``eval_data``, ``clean_labels`` or ``class_names``.

    Example:
        >>> import tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> from hf_verifix import ProjectionCorrector
        >>> data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
        >>> corrector = ProjectionCorrector(torch.nn.Linear(4, 2), n_trusted=16, progress=False).fit(data)
        >>> _ = corrector.search_alpha(data, alphas=[10.0, 1e4])
        >>> report = write_correction_report(corrector, tempfile.mkdtemp(), eval_data=data)
        >>> sorted(p.name for p in report.parent.iterdir())[:3]
        ['alpha_curve.png', 'confusion_matrices.png', 'correction_report.json']
    """
    summary = corrector.report(clean_labels=clean_labels)  # raises if not fitted; validates clean_labels
    _require_matplotlib()  # fail early, before any pass over data
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [REPORT_FILE, *FIGURES.values()]:
        (directory / stale).unlink(missing_ok=True)

    evaluation = _evaluate(corrector, eval_data, alpha, transform) if eval_data is not None else None
    trusted = summary["trusted"]
    k = max(len(trusted["class_counts"]), len(trusted.get("clean_class_counts", [])), 1)
    if evaluation is not None:
        k = max(k, int(evaluation.labels.max()) + 1, int(evaluation.before.max()) + 1)
        if evaluation.after is not None:
            k = max(k, int(evaluation.after.max()) + 1)
    names = _class_names(class_names, eval_data, corrector, k)[:k]

    cfg = corrector.config
    applied = corrector.applied_alpha
    if applied is not None:
        spectrum_alpha, spectrum_note = applied, "applied"
    elif alpha is not None:
        spectrum_alpha, spectrum_note = float(alpha), "the α evaluated, not applied"
    else:
        spectrum_alpha, spectrum_note = cfg.alpha, "config.alpha, not applied"
    layers = list(corrector.projections)
    lines = [
        "# SAP correction report",
        "",
        f"`{type(corrector.model).__name__}` corrected by Scaled Activation Projection: {len(layers)} layer(s) "
        f"projected, {len(corrector.skipped)} skipped; trusted set of {trusted['count']} samples (selector "
        f"`{trusted['selector']}`{', per class' if cfg.per_class else ''}); applied α: {_fmt_alpha(applied)}.",
        "",
    ]
    summary_rows: list[list[Any]] = [
        ["applied α", _fmt_alpha(applied)],
        ["trusted samples", trusted["count"]],
        ["selector", f"`{trusted['selector']}`" + (" (per class)" if cfg.per_class else "")],
    ]
    if "precision" in trusted:
        summary_rows.append(["trusted-set precision (truly clean)", f"{trusted['precision']:.2%}"])
        summary_rows.append(["trusted-set class coverage", f"{trusted['class_coverage']:.0%}"])
    if corrector.search_result is not None:
        result = corrector.search_result
        summary_rows.append(
            [
                "α-search data: uncorrected → best",
                f"{result.baseline_accuracy:.2%} → {result.best_accuracy:.2%} (α = {_fmt_alpha(result.best_alpha)})",
            ]
        )
    if evaluation is not None:
        before = float((evaluation.before == evaluation.labels).double().mean())
        text = f"{before:.2%}"
        if evaluation.after is not None:
            after = float((evaluation.after == evaluation.labels).double().mean())
            text += f" → {after:.2%} (α = {evaluation.alpha:g}, {after - before:+.2%})"
        summary_rows.append([f"evaluation data ({evaluation.labels.numel()} samples): original → corrected", text])
    summary_rows.append(["BatchNorm recalibration", "yes" if cfg.recalibrate_batchnorm else "no"])
    summary_rows.append(["wall time (recorded phases)", f"{sum(corrector.timings.values()):.3g} s"])
    lines += ["## Summary", "", *_table(["", ""], summary_rows), ""]

    lines += ["## Accuracy on the evaluation data", ""]
    if evaluation is None:
        lines += ["No `eval_data` was given.", ""]
    else:
        if evaluation.after is None:
            lines += ["No α is applied (and none was given), so only the original model is evaluated.", ""]
        lines += [
            f"Scored against the labels `eval_data` carries ({evaluation.labels.numel()} samples).",
            "",
            _image("per-class accuracy", _per_class_figure(evaluation, names, directory)),
            "",
            _image("confusion matrices", _confusion_figure(evaluation, names, directory)),
            "",
        ]
        before_pc = _per_class_accuracy(evaluation.before, evaluation.labels, k)
        after_pc = (
            _per_class_accuracy(evaluation.after, evaluation.labels, k) if evaluation.after is not None else None
        )
        support = torch.bincount(evaluation.labels, minlength=k)
        shown_classes = list(range(k))
        if k > _MAX_TABLE_CLASSES:  # keep the table readable: the classes that changed most (or do worst)
            key = (after_pc - before_pc).abs() if after_pc is not None else 1 - before_pc
            order = torch.argsort(torch.nan_to_num(key, nan=-1.0), descending=True, stable=True)
            shown_classes = sorted(order[:_MAX_TABLE_CLASSES].tolist())
            lines += [
                f"The {_MAX_TABLE_CLASSES} classes (of {k}) whose accuracy "
                + ("changed most:" if after_pc is not None else "is lowest:"),
                "",
            ]
        rows = []
        for c in shown_classes:
            row: list[Any] = [names[c], int(support[c]), _pct(before_pc[c])]
            if after_pc is not None:
                row.append(_pct(after_pc[c]))
            rows.append(row)
        header = ["class", "samples", "original"] + ([f"α = {evaluation.alpha:g}"] if after_pc is not None else [])
        lines += [*_table(header, rows), ""]

    lines += ["## α search", ""]
    if corrector.search_result is None:
        lines += ["`search_alpha` was not run.", ""]
    else:
        result = corrector.search_result
        lines += [
            "Accuracy on the data given to `search_alpha` (labelled like the training data), for each α.",
            "",
            _image("accuracy against α", _alpha_curve_figure(corrector, directory)),
            "",
            *_table(
                ["α", "accuracy", ""],
                [["uncorrected", f"{result.baseline_accuracy:.2%}", ""]]
                + [
                    [f"{a:g}", f"{acc:.2%}", "chosen" if a == result.best_alpha else ""]
                    for a, acc in sorted(result.curve.items())
                ],
            ),
            "",
        ]

    lines += ["## Trusted set", "", _image("trusted-set classes", _trusted_figure(summary, names, directory)), ""]

    shown = _representative_layers(layers, spectrum_layers)
    lines += ["## Spectra", ""]
    if shown:
        lines += [
            _image(
                "trusted activation spectra",
                _spectrum_figure(corrector, shown, spectrum_alpha, spectrum_note, directory),
            ),
            "",
        ]
    rows = []
    for name in layers:
        projection = corrector.projections[name]
        lam = importance_scaling(projection.normalized.double(), spectrum_alpha)
        info = summary["layers"][name]
        rows.append(
            [
                f"`{_layer_label(name)}`",
                info["groups"],
                info["dim"],
                info["rows"],
                info["decomposition"],
                int((lam >= 0.5).sum()),
                f"{float(lam.mean()):.3f}",
            ]
        )
    lines += [
        f"λ computed for α = {spectrum_alpha:g} ({spectrum_note}).",
        "",
        *_table(["layer", "groups", "dim", "rows", "decomposition", "directions with λ ≥ ½", "mean λ"], rows),
        "",
    ]

    lines += ["## Wall time", ""]
    if corrector.timings:
        lines += [_image("wall time per phase", _timings_figure(dict(corrector.timings), directory)), ""]
        lines += [
            *_table(["phase", "seconds"], [[_PHASES.get(k_, k_), f"{v:.3g}"] for k_, v in corrector.timings.items()]),
            "",
        ]

    if corrector.skipped:
        lines += [
            "## Skipped layers",
            "",
            *_table(["layer", "reason"], [[f"`{n}`", r] for n, r in corrector.skipped.items()]),
            "",
        ]

    lines += [f"The full summary is in [`{SUMMARY_FILE}`]({SUMMARY_FILE}).", ""]
    (directory / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    path = directory / REPORT_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _pct(value: torch.Tensor) -> str:
    number = float(value)
    return "–" if math.isnan(number) else f"{number:.2%}"
