"""A Markdown + PNG report of a correction, rendered from its :class:`~hf_verifix.results.CorrectionResult`.

:func:`write_correction_report` writes ``report.md`` next to its figures (:mod:`hf_verifix.reporting.figures`) and
``correction_report.json`` (the result's summary). It reads the result only: nothing is evaluated or changed.

Example:
    >>> from hf_verifix.results import FIGURES
    >>> FIGURES["alpha_curve"]
    'alpha_curve.png'
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from ..projection.spectrum import importance_scaling
from ..results import FIGURES, REPORT_FILE, REPORT_NAME, CorrectionResult, Evaluation, format_alpha
from ..utils.staging import atomic_write
from . import figures

__all__ = ["FIGURES", "REPORT_FILE", "SUMMARY_FILE", "write_correction_report"]

SUMMARY_FILE = REPORT_NAME
"""Name of the JSON summary written next to the Markdown report (the same file as ``REPORT_NAME``)."""

_MAX_TABLE_CLASSES = 40


def _class_names(class_names: Sequence[str] | None, k: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(k)]
    names = [str(n) for n in class_names]
    if len(names) < k:
        raise DataError(
            f"class_names holds {len(names)} names but the labels go up to class {k - 1}; pass one name per "
            "class, in class-id order"
        )
    return names[:k]


def _class_count(result: CorrectionResult) -> int:
    trusted = result.summary["trusted"]
    k = max(len(trusted["class_counts"]), len(trusted.get("clean_class_counts", [])), 1)
    for evaluation in (result.before, result.after):
        if evaluation is not None and evaluation.labels.numel():
            k = max(k, int(evaluation.labels.max()) + 1, int(evaluation.predictions.max()) + 1)
    return k


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, on one line."""
    return " ".join(str(value).replace("|", "\\|").split())


def _image(alt: str, path: Path) -> list[str]:
    return [f"![{alt}]({path.name})", ""]


def _pct(value: torch.Tensor | float) -> str:
    number = float(value)
    return "–" if math.isnan(number) else f"{number:.2%}"


def _spectrum_alpha(result: CorrectionResult) -> tuple[float, str]:
    if result.alpha is not None:
        return result.alpha, "applied"
    return float(result.summary["config"]["alpha"]), "config.alpha, not applied"


def _summary_section(result: CorrectionResult) -> list[str]:
    trusted, config = result.summary["trusted"], result.summary["config"]
    per_class = " (per class)" if config.get("per_class") else ""
    rows: list[list[Any]] = [
        ["applied α", format_alpha(result.alpha)],
        ["trusted samples", trusted["count"]],
        ["selector", f"`{trusted['selector']}`" + per_class],
    ]
    if "precision" in trusted:
        rows.append(["trusted-set precision (truly clean)", f"{trusted['precision']:.2%}"])
        rows.append(["trusted-set class coverage", f"{trusted['class_coverage']:.0%}"])
    if result.search is not None:
        search = result.search
        rows.append(
            [
                "α-search data: uncorrected → best",
                f"{search.baseline_accuracy:.2%} → {search.best_accuracy:.2%} (α = {format_alpha(search.best_alpha)})",
            ]
        )
    if result.before is not None:
        text = f"{result.before.accuracy:.2%}"
        if result.after is not None:
            change = result.after.accuracy - result.before.accuracy
            text += f" → {result.after.accuracy:.2%} (α = {format_alpha(result.after.alpha)}, {change:+.2%})"
        rows.append([f"evaluation data ({result.before.labels.numel()} samples): original → corrected", text])
    rows.append(["BatchNorm recalibration", "yes" if config.get("recalibrate_batchnorm") else "no"])
    rows.append(["wall time (recorded phases)", f"{sum(result.timings.values()):.3g} s"])
    layers, skipped = len(result.summary["layers"]), len(result.summary["skipped_layers"])
    intro = (
        f"`{result.model}` corrected by Scaled Activation Projection: {layers} layer(s) "
        f"projected, {skipped} skipped; trusted set of {trusted['count']} samples (selector "
        f"`{trusted['selector']}`{', per class' if per_class else ''}); applied α: {format_alpha(result.alpha)}."
    )
    return ["# SAP correction report", "", intro, "", "## Summary", "", *_table(["", ""], rows)]


def _class_rows(before: Evaluation, after: Evaluation | None, names: list[str]) -> list[str]:
    k = len(names)
    original = figures.class_accuracy(before.predictions, before.labels, k)
    corrected = figures.class_accuracy(after.predictions, after.labels, k) if after is not None else None
    support = torch.bincount(before.labels, minlength=k)
    shown, lines = list(range(k)), []
    if k > _MAX_TABLE_CLASSES:  # keep the table readable: the classes that changed most (or do worst)
        key = (corrected - original).abs() if corrected is not None else 1 - original
        order = torch.argsort(torch.nan_to_num(key, nan=-1.0), descending=True, stable=True)
        shown = sorted(order[:_MAX_TABLE_CLASSES].tolist())
        lines = [
            f"The {_MAX_TABLE_CLASSES} classes (of {k}) whose accuracy "
            + ("changed most:" if corrected is not None else "is lowest:"),
            "",
        ]
    rows = [
        [names[c], int(support[c]), _pct(original[c]), *([_pct(corrected[c])] if corrected is not None else [])]
        for c in shown
    ]
    header = ["class", "samples", "original"] + ([f"α = {format_alpha(after.alpha)}"] if after is not None else [])
    return [*lines, *_table(header, rows)]


def _evaluation_section(result: CorrectionResult, names: list[str], directory: Path) -> list[str]:
    lines = ["## Accuracy on the evaluation data", ""]
    before, after = result.before, result.after
    if before is None:
        return [*lines, "No `eval_data` was given.", ""]
    if after is None:
        lines += ["No α is applied, so only the original model is evaluated.", ""]
    return [
        *lines,
        f"Scored against the labels `eval_data` carries ({before.labels.numel()} samples).",
        "",
        *_image(
            "per-class accuracy",
            figures.per_class_accuracy(before, after, names, directory / FIGURES["per_class_accuracy"]),
        ),
        *_image(
            "confusion matrices",
            figures.confusion_matrices(before, after, names, directory / FIGURES["confusion_matrices"]),
        ),
        *_class_rows(before, after, names),
    ]


def _search_section(result: CorrectionResult, directory: Path) -> list[str]:
    lines = ["## α search", ""]
    search = result.search
    if search is None:
        return [*lines, "`search_alpha` was not run.", ""]
    rows = [["uncorrected", f"{search.baseline_accuracy:.2%}", ""]] + [
        [format_alpha(a), f"{acc:.2%}", "chosen" if a == search.best_alpha else ""]
        for a, acc in sorted(search.curve.items())
    ]
    return [
        *lines,
        "Accuracy on the data given to `search_alpha` (labelled like the training data), for each α.",
        "",
        *_image("accuracy against α", figures.alpha_curve(search, result.alpha, directory / FIGURES["alpha_curve"])),
        *_table(["α", "accuracy", ""], rows),
    ]


def _spectra_section(result: CorrectionResult, count: int, directory: Path) -> list[str]:
    alpha, note = _spectrum_alpha(result)
    layers = list(result.spectra)
    shown = figures.representative_layers(layers, count)
    lines = ["## Spectra", ""]
    if shown:
        path = figures.spectrum(result.spectra, shown, alpha, note, directory / FIGURES["spectrum"])
        lines += _image("trusted activation spectra", path)
    rows = []
    for name in layers:
        lam = importance_scaling(result.spectra[name].double(), alpha)
        info = result.summary["layers"][name]
        rows.append(
            [
                f"`{figures.layer_label(name)}`",
                info["groups"],
                info["dim"],
                info["rows"],
                info["decomposition"],
                int((lam >= 0.5).sum()),
                f"{float(lam.mean()):.3f}",
            ]
        )
    header = ["layer", "groups", "dim", "rows", "decomposition", "directions with λ ≥ ½", "mean λ"]
    return [*lines, f"λ computed for α = {format_alpha(alpha)} ({note}).", "", *_table(header, rows)]


def _timing_and_skipped_sections(result: CorrectionResult, directory: Path) -> list[str]:
    lines = ["## Wall time", ""]
    if result.timings:
        lines += _image("wall time per phase", figures.timings(dict(result.timings), directory / FIGURES["timings"]))
        rows = [[figures.PHASES.get(k, k), f"{v:.3g}"] for k, v in result.timings.items()]
        lines += _table(["phase", "seconds"], rows)
    skipped = result.summary["skipped_layers"]
    if skipped:
        lines += ["## Skipped layers", "", *_table(["layer", "reason"], [[f"`{n}`", r] for n, r in skipped.items()])]
    return lines


def write_correction_report(
    result: CorrectionResult,
    output_dir: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    *,
    spectrum_layers: int = 3,
) -> Path:
    """Write a Markdown report of a correction, with its figures, into ``output_dir``; return ``report.md``.

    The report holds (each figure only when its data exists):

    * ``alpha_curve.png``: accuracy against α on the α-search data (log scale), the uncorrected baseline as a dashed
      line and the chosen α marked (when ``result.search`` exists).
    * ``per_class_accuracy.png`` and ``confusion_matrices.png``: ``result.before`` against ``result.after``, scored
      against the labels the evaluation data carries (pass clean labels for a true test accuracy).
    * ``trusted_classes.png``: the trusted set's class histogram; with clean labels given to the correction, its
      true classes, precision and class coverage as well.
    * ``spectrum.png``: for ``spectrum_layers`` representative layers (first, middle, last), the sorted normalised
      eigenvalues σ̃ of the trusted activations and the importance λ they get for the applied α (``config.alpha``
      when none is applied), plus a table of every layer with how many directions keep λ ≥ ½.
    * ``timings.png``: the wall time of each phase.

    ``correction_report.json`` (``result.summary``) is written next to it. Existing report files are replaced.

    Args:
        result: What :meth:`ProjectionCorrector.correct` (or ``corrector.result(eval_data=...)``) returned.
        output_dir: Folder to write into (created if needed).
        class_names: One name per class id (default: the ids).
        spectrum_layers: How many layers the spectrum figure shows.

    Raises:
        ImportError: matplotlib is not installed (``pip install hf_verifix[report]``).
        DataError: Fewer ``class_names`` than classes.

    Example:
        >>> import tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> from hf_verifix import ProjectionCorrector
        >>> data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
        >>> corrector = ProjectionCorrector(torch.nn.Linear(4, 2), n_trusted=16, progress=False)
        >>> result = corrector.correct(data, data, alphas=[10.0, 1e4])
        >>> report = write_correction_report(result, tempfile.mkdtemp())
        >>> sorted(p.name for p in report.parent.iterdir())[:3]
        ['alpha_curve.png', 'confusion_matrices.png', 'correction_report.json']
    """
    names = _class_names(class_names, _class_count(result))
    figures.require_matplotlib()  # fail early, before any file is touched
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [REPORT_FILE, *FIGURES.values()]:
        (directory / stale).unlink(missing_ok=True)
    trusted = figures.trusted_classes(result.summary["trusted"], names, directory / FIGURES["trusted_classes"])
    lines = [
        *_summary_section(result),
        *_evaluation_section(result, names, directory),
        *_search_section(result, directory),
        "## Trusted set",
        "",
        *_image("trusted-set classes", trusted),
        *_spectra_section(result, spectrum_layers, directory),
        *_timing_and_skipped_sections(result, directory),
        f"The full summary is in [`{REPORT_NAME}`]({REPORT_NAME}).",
        "",
    ]
    atomic_write(directory / REPORT_NAME, json.dumps(result.summary, indent=2) + "\n")
    return atomic_write(directory / REPORT_FILE, "\n".join(lines))
