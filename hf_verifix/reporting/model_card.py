"""The model card of a corrected model: metadata (base model, datasets, before/after accuracy) and its text.

:func:`render_model_card` fills the Jinja template ``model_cards/verifix_model_card.md`` with
``huggingface_hub.ModelCard.from_template`` from a correction report (:meth:`ProjectionCorrector.report`) and a
:class:`CardInfo`; :func:`write_model_card` writes it as ``README.md`` next to the model, with the α-search curve
as ``alpha_search.png`` (drawn with matplotlib when it is installed).

Example:
    >>> from hf_verifix.reporting.model_card import PLOT_NAME
    >>> PLOT_NAME
    'alpha_search.png'
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from ..models.adapters import usage_code
from ..results import CARD_NAME, PLOT_NAME, AlphaSearchResult, CorrectionResult, format_alpha
from ..utils.staging import atomic_write
from .figures import alpha_curve

__all__ = [
    "CARD_NAME",
    "FIGURE_CAPTIONS",
    "MODEL_TAGS",
    "PLOT_NAME",
    "TEMPLATE_NAME",
    "CardInfo",
    "default_template",
    "plot_alpha_search",
    "render_model_card",
    "shareable_name",
    "write_model_card",
]

MODEL_TAGS = ["hf-verifix", "noisy-labels", "label-noise", "scaled-activation-projection"]
"""The Hub tags of a corrected model: the card's, and those ``SAPCallback`` adds with ``model.add_model_tags``."""

TEMPLATE_NAME = "verifix_model_card.md"

FIGURE_CAPTIONS: dict[str, str] = {
    "alpha_curve": "Accuracy against α on the held-out data",
    "per_class_accuracy": "Per-class accuracy before and after the correction",
    "confusion_matrices": "Confusion matrices before and after the correction",
    "trusted_classes": "Class histogram of the trusted set",
    "spectrum": "Normalised activation spectrum and importance λ of representative layers",
    "timings": "Wall time of each phase of the correction",
}
"""Caption of each correction-report figure (keys of :data:`hf_verifix.results.FIGURES`) when a card embeds it.

Example:
    >>> FIGURE_CAPTIONS["trusted_classes"]
    'Class histogram of the trusted set'
"""

_REPO_TEMPLATE = Path(__file__).resolve().parents[2] / "model_cards" / TEMPLATE_NAME


@dataclass
class CardInfo:
    """What the model card says beyond the correction report: where the model and data came from, the scores.

    Args:
        model_name: Name of the corrected model (the ``model-index`` name; usually the repo name).
        base_model: The uncorrected model: a Hub ID (goes into the card's ``base_model`` metadata) or a local path.
        base_model_is_hub: Whether ``base_model`` is a Hub ID.
        base_model_revision: The commit of the base model that was corrected.
        library_name: ``"transformers"`` or ``"timm"`` (the format the weights are saved in).
        dataset: The data the trusted set was chosen from: a Hub ID or a local path.
        dataset_is_hub: Whether ``dataset`` is a Hub ID (goes into the card's ``datasets`` metadata).
        train_split: Split the trusted set was chosen from.
        eval_split: Held-out split α was chosen on and the accuracies were measured on.
        label_column: Label column of the data.
        eval_labels: Where the held-out labels came from when not ``label_column`` (e.g. a file of noisy labels).
        noisy_labels: Where the training labels came from when not ``label_column`` (a file or column).
        accuracy_before: Accuracy of the uncorrected model on ``eval_split``.
        accuracy_after: Accuracy of the corrected model on ``eval_split``.
        command: The shell command that reproduces the correction.
        repo_id: The Hub repo the corrected model goes to (for the usage snippet).
        dataset_revision: The branch, tag or commit of a Hub dataset, when one was asked for.
        license: The base model's license (an SPDX-style Hub license ID such as ``"apache-2.0"``), carried over: a
            correction does not change the terms the weights come with.

    Example:
        >>> CardInfo(model_name="vit-sap", accuracy_before=0.8, accuracy_after=0.85).has_scores
        True
    """

    model_name: str
    base_model: str | None = None
    base_model_is_hub: bool = False
    base_model_revision: str | None = None
    library_name: str | None = None
    dataset: str | None = None
    dataset_is_hub: bool = False
    train_split: str | None = None
    eval_split: str | None = None
    label_column: str | None = None
    eval_labels: str | None = None
    noisy_labels: str | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    command: str | None = None
    repo_id: str | None = None
    license: str | None = None
    dataset_revision: str | None = None

    @property
    def has_scores(self) -> bool:
        """Whether both the before and after accuracies are known.

        Example:
            >>> CardInfo(model_name="m").has_scores
            False
        """
        return self.accuracy_before is not None and self.accuracy_after is not None


def shareable_name(source: str, is_hub: bool, placeholder: str = "./model") -> str:
    """How a card or a reproduce command names a model or dataset: a Hub ID as given, a local path by its base name.

    An absolute local path names a folder of the machine the correction ran on (often a user name): it means nothing
    elsewhere and should not be published with the model. ``placeholder`` stands in for a path with no base name.

    Example:
        >>> shareable_name("/home/ana/runs/resnet18", is_hub=False), shareable_name("org/vit", is_hub=True)
        ('resnet18', 'org/vit')
        >>> shareable_name("local-dir:/", is_hub=False)
        './model'
    """
    if is_hub:
        return source
    return Path(source.removeprefix("local-dir:")).expanduser().name or placeholder


def default_template() -> str:
    """Return the text of the card template: the packaged copy, or ``model_cards/`` of a source checkout.

    Raises:
        FileNotFoundError: Neither exists (a broken install); pass ``template_path=`` to :func:`render_model_card`.

    Example:
        >>> default_template().startswith("---\\n{{ card_data }}\\n---")
        True
    """
    packaged = resources.files("hf_verifix").joinpath("model_cards", TEMPLATE_NAME)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    if _REPO_TEMPLATE.is_file():
        return _REPO_TEMPLATE.read_text(encoding="utf-8")
    raise FileNotFoundError(
        f"the model card template {TEMPLATE_NAME} is neither packaged with hf_verifix nor at {_REPO_TEMPLATE}; "
        "reinstall hf_verifix, or pass template_path= to render_model_card"
    )


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def plot_alpha_search(
    curve: dict[float, float], baseline: float, best_alpha: float | None, path: str | os.PathLike[str]
) -> Path | None:
    """Draw the α-search curve (the report's :func:`~hf_verifix.reporting.figures.alpha_curve`) as a PNG at ``path``.

    Returns None (and writes nothing) when matplotlib is not installed or the curve is empty.

    Example:
        >>> import tempfile, os
        >>> png = plot_alpha_search({1e3: 0.5, 1e4: 0.7}, 0.6, 1e4, os.path.join(tempfile.mkdtemp(), "a.png"))
        >>> png is None or png.read_bytes()[:4] == b"\\x89PNG"
        True
    """
    if not curve or importlib.util.find_spec("matplotlib") is None:
        return None
    best = curve.get(best_alpha, baseline) if best_alpha is not None else baseline
    search = AlphaSearchResult(best_alpha, best, baseline, dict(curve))
    return alpha_curve(search, best_alpha, Path(path))


def _eval_results(info: CardInfo, applied_alpha: float | None) -> list[Any] | None:
    if not info.has_scores:
        return None
    from huggingface_hub import EvalResult

    dataset = shareable_name(info.dataset or "data", info.dataset_is_hub, "data")
    after = f"Accuracy after SAP (α = {format_alpha(applied_alpha)})" if applied_alpha else "Accuracy after SAP"
    common = dict(
        task_type="image-classification",
        task_name="Image Classification",
        dataset_type=dataset,
        dataset_name=dataset,
        dataset_split=info.eval_split,
        metric_type="accuracy",
    )
    return [
        EvalResult(**common, metric_value=float(info.accuracy_before), metric_name="Accuracy before SAP"),  # type: ignore[arg-type]
        EvalResult(**common, metric_value=float(info.accuracy_after), metric_name=after),  # type: ignore[arg-type]
    ]


def _trusted_text(trusted: dict[str, Any]) -> str:
    lines = [f"{trusted.get('count', 0)} samples, chosen by `{trusted.get('selector', '?')}`."]
    counts = trusted.get("class_counts")
    if counts:
        shown = ", ".join(f"{k}: {c}" for k, c in enumerate(counts))
        lines.append(f"Samples per (training) label: {shown}.")
    precision = trusted.get("precision")
    if isinstance(precision, (int, float)):
        lines.append(
            f"Fraction of the trusted samples whose training label was correct (known here because the clean "
            f"labels were available): {_percent(float(precision))}."
        )
    return " ".join(lines)


def _settings_rows(config: dict[str, Any], report: dict[str, Any], info: CardInfo) -> list[tuple[str, str]]:
    applied = report.get("applied_alpha")
    rows = [
        ("α (applied)", format_alpha(applied) if applied else "none (the uncorrected model scored best)"),
        (
            "selector",
            f"`{config.get('selector')}`" + (f" {config['selector_kwargs']}" if config.get("selector_kwargs") else ""),
        ),
        ("N_trust (requested)", str(config.get("n_trusted"))),
        ("balanced per class", "yes" if config.get("per_class") else "no"),
        ("BatchNorm recalibration", "yes" if config.get("recalibrate_batchnorm") else "no"),
        (
            "target layers",
            ", ".join(f"`{p}`" for p in config["target_modules"])
            if config.get("target_modules")
            else "every `Linear` and `Conv2d`",
        ),
        (
            "excluded layers",
            ", ".join(f"`{p}`" for p in config["exclude_modules"]) if config.get("exclude_modules") else "none",
        ),
        ("batch size", str(config.get("batch_size"))),
        ("seed", str(config.get("seed"))),
    ]
    if info.train_split:
        rows.append(("trusted set drawn from", f"split `{info.train_split}`"))
    if info.dataset_revision:
        rows.append(("dataset revision", f"`{info.dataset_revision}`"))
    if info.noisy_labels:
        rows.append(("training labels", info.noisy_labels))
    return rows


def _with_search_scores(info: CardInfo, search: Mapping[str, Any] | None, applied: float | None) -> CardInfo:
    """``info`` with the α search's before/after accuracies when it has neither and the model is as the search left
    it: the best α applied, or (no α beat the uncorrected model) none."""
    if info.accuracy_before is not None or info.accuracy_after is not None or not search:
        return info
    before, best = search.get("baseline_accuracy"), search.get("best_alpha")
    if best is None:
        after = before if applied is None else None
    else:
        after = search.get("best_accuracy") if applied is not None and float(applied) == float(best) else None
    if before is None or after is None:
        return info
    return replace(info, accuracy_before=float(before), accuracy_after=float(after))


def render_model_card(
    correction: CorrectionResult | Mapping[str, Any],
    info: CardInfo,
    template_path: str | os.PathLike[str] | None = None,
    plot_file: str | None = None,
    figures: Mapping[str, str] | None = None,
) -> Any:
    """Return the ``huggingface_hub.ModelCard`` of a correction.

    Args:
        correction: The :class:`~hf_verifix.results.CorrectionResult`, or its JSON summary (``correction_report.json``,
            :meth:`ProjectionCorrector.report`: config, trusted set, layers, α search).
        info: Provenance and scores; before/after accuracies become ``eval_results`` (the card's ``model-index``).
            When ``info`` has neither, the result's evaluation gives them, else the α search's (uncorrected, and
            the applied α's score).
        template_path: A Jinja template starting with ``---\\n{{ card_data }}\\n---`` (default: the packaged one).
        plot_file: File name of the α-search PNG next to the card, shown in it (None: not drawn).
        figures: Correction-report figures next to the card, ``{key: file name}`` with the keys of
            :data:`hf_verifix.results.FIGURES`; each is shown with its :data:`FIGURE_CAPTIONS` caption (the α curve
            stays in the α-search section).

    Example:
        >>> report = {"config": {"selector": "loss", "n_trusted": 2}, "applied_alpha": 3e4,
        ...           "trusted": {"count": 2, "selector": "loss", "class_counts": [1, 1]},
        ...           "layers": {"fc": {"rows": 2, "dim": 4}}, "skipped_layers": {}}
        >>> card = render_model_card(report, CardInfo("demo", accuracy_before=0.5, accuracy_after=0.75))
        >>> [r.metric_value for r in card.data.eval_results]
        [0.5, 0.75]
    """
    from huggingface_hub import ModelCard

    report = correction.summary if isinstance(correction, CorrectionResult) else dict(correction)
    info = _with_scores(info, correction)
    return ModelCard.from_template(
        _card_data(info, report.get("applied_alpha")),
        template_path=str(template_path) if template_path is not None else None,
        template_str=None if template_path is not None else default_template(),
        **_template_fields(report, info),
        plot_file=plot_file,
        figures=[
            (FIGURE_CAPTIONS.get(key, key), name) for key, name in (figures or {}).items() if key != "alpha_curve"
        ],
    )


def _with_scores(info: CardInfo, correction: CorrectionResult | Mapping[str, Any]) -> CardInfo:
    """``info`` with before/after accuracies from the result's evaluation, else from its α search, when it has none."""
    if info.accuracy_before is not None or info.accuracy_after is not None:
        return info
    if isinstance(correction, CorrectionResult):
        before, after = correction.accuracy_before, correction.accuracy_after
        if before is not None and after is not None:
            return replace(info, accuracy_before=before, accuracy_after=after)
        correction = correction.summary
    return _with_search_scores(info, correction.get("alpha_search"), correction.get("applied_alpha"))


def _card_data(info: CardInfo, applied: float | None) -> Any:
    from huggingface_hub import ModelCardData

    return ModelCardData(
        model_name=info.model_name,
        base_model=info.base_model if info.base_model_is_hub else None,
        datasets=[info.dataset] if info.dataset_is_hub and info.dataset else None,
        library_name=info.library_name,
        license=info.license,
        pipeline_tag="image-classification",
        tags=[*MODEL_TAGS, "image-classification"],
        eval_results=_eval_results(info, applied),
    )


def _provenance_fields(info: CardInfo) -> dict[str, Any]:
    base = info.base_model or "a classifier"
    if info.base_model_is_hub:
        revision = f" (revision `{info.base_model_revision[:12]}`)" if info.base_model_revision else ""
        base_text = f"[{base}](https://huggingface.co/{base}){revision}"
    else:
        base_text = f"`{shareable_name(base, False) if info.base_model else base}`"
    dataset = shareable_name(info.dataset, info.dataset_is_hub, "data") if info.dataset else "the held-out data"
    if info.eval_labels:
        label_note = (
            f"The held-out labels come from {info.eval_labels}, as noisy as the training labels: these accuracies "
            "are measured against noisy labels, and α was chosen on them."
        )
    else:
        label_note = (
            "The held-out labels are the data's own labels"
            + (f" (column `{info.label_column}`)" if info.label_column else "")
            + ", used as given to choose α: if they are noisy like the training labels, these accuracies are "
            "measured against noisy labels."
        )
    return {
        "base_model_text": base_text,
        "eval_text": f"`{dataset}`"
        + (f" (revision `{info.dataset_revision}`)" if info.dataset_revision else "")
        + (f", split `{info.eval_split}`" if info.eval_split else ""),
        "label_note": label_note,
    }


def _search_fields(search: Mapping[str, Any] | None) -> dict[str, Any]:
    if not search:
        return {"alpha_rows": [], "search_text": ""}
    curve = {float(a): float(v) for a, v in search.get("curve", {}).items()}
    best = search.get("best_alpha")
    rows = [
        (format_alpha(a) + (" (chosen)" if best is not None and a == float(best) else ""), _percent(v))
        for a, v in sorted(curve.items())
    ]
    text = (
        f"{len(curve)} values of α were tried on the held-out data; "
        + (
            f"α = {format_alpha(float(best))} scored best and was applied."
            if best is not None
            else "none beat the uncorrected model, so the weights were left unchanged."
        )
        + f" Uncorrected: {_percent(search.get('baseline_accuracy'))}."
    )
    return {"alpha_rows": rows, "search_text": text}


def _template_fields(report: Mapping[str, Any], info: CardInfo) -> dict[str, Any]:
    """Everything the card template shows besides the metadata and the figures."""
    from .._version import __version__

    applied = report.get("applied_alpha")
    layers = report.get("layers", {})
    accuracy_rows = (
        [("uncorrected", _percent(info.accuracy_before)), ("corrected (SAP)", _percent(info.accuracy_after))]
        if info.has_scores
        else []
    )
    return {
        "model_name": info.model_name,
        "version": __version__,
        **_provenance_fields(info),
        "library_text": {"transformers": "transformers", "timm": "timm"}.get(info.library_name or "", "safetensors"),
        "accuracy_rows": accuracy_rows,
        "alpha_text": format_alpha(applied) if applied else "none",
        **_search_fields(report.get("alpha_search")),
        "plot_missing_reason": "matplotlib is not installed (pip install matplotlib)",
        "settings_rows": _settings_rows(report.get("config", {}), dict(report), info),
        "trusted_text": _trusted_text(report.get("trusted", {})),
        "layers_corrected": [(n, v.get("rows"), v.get("dim")) for n, v in layers.items()],
        "layers_skipped": sorted(report.get("skipped_layers", {}).items()),
        "layers_shared": {n: v["shared_with"] for n, v in layers.items() if v.get("shared_with")},
        "usage_code": usage_code(info.library_name, info.repo_id),
        "command": info.command,
        "framework_rows": sorted(report.get("versions", {}).items()),
    }


def write_model_card(
    folder: str | os.PathLike[str],
    correction: CorrectionResult | Mapping[str, Any],
    info: CardInfo,
    template_path: str | os.PathLike[str] | None = None,
    figures: Mapping[str, str] | None = None,
) -> Path:
    """Write ``README.md`` (and ``alpha_search.png`` when there was an α search) into ``folder``; return the card path.

    With ``figures`` (the correction report's figures, already in ``folder``: ``{key: file name}``, keys of
    :data:`hf_verifix.results.FIGURES`), the card embeds them all; the report's ``alpha_curve`` then serves as the
    α-search plot instead of drawing ``alpha_search.png``. Each file is written to a temporary name and moved into
    place, so an interruption leaves no half-written file.

    Example:
        >>> import uuid
        >>> report = {"config": {}, "applied_alpha": 1e4, "trusted": {"count": 1, "selector": "loss"},
        ...           "layers": {"fc": {"rows": 1, "dim": 2}}, "skipped_layers": {}}
        >>> import tempfile
        >>> write_model_card(tempfile.mkdtemp(), report, CardInfo("demo")).name
        'README.md'
    """
    target = Path(folder)
    figures = dict(figures or {})
    missing = [name for name in figures.values() if not (target / name).is_file()]
    if missing:
        raise FileNotFoundError(f"figures {missing} are not in {str(target)!r}; write the report there first")
    report = correction.summary if isinstance(correction, CorrectionResult) else correction
    search = report.get("alpha_search")
    plot = None
    if "alpha_curve" in figures:
        plot_name: str | None = figures["alpha_curve"]
    else:
        if search and search.get("curve"):
            curve = {float(a): float(v) for a, v in search["curve"].items()}
            best = search.get("best_alpha")
            plot = plot_alpha_search(curve, float(search["baseline_accuracy"]), best, target / PLOT_NAME)
        plot_name = PLOT_NAME if plot is not None else None
    card = render_model_card(correction, info, template_path, plot_file=plot_name, figures=figures)
    path = target / CARD_NAME
    atomic_write(path, str(card))
    return path
