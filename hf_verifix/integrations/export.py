"""Saving a corrected model with everything that describes it: native weights, processor, config, report, card.

Example:
    >>> from hf_verifix.integrations.export import protected_files
    >>> import tempfile; protected_files(tempfile.mkdtemp())
    []
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..reporting.model_card import CardInfo, write_model_card
from ..reporting.report import write_correction_report
from ..results import FIGURES, CorrectionResult, output_files
from ..utils.distributed import is_main_process
from ..utils.staging import staged_directory

if TYPE_CHECKING:
    from ..corrector import ProjectionCorrector

__all__ = ["protected_files", "save_corrected"]


def protected_files(folder: str | os.PathLike[str]) -> list[str]:
    """The files in ``folder`` that a correction run may write: model, card, configs, report, figures, processor.

    Every one counts, hand-written ones included; the final move re-checks the exact set written (under a lock).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()); _ = (folder / "README.md").write_text("mine")
        >>> protected_files(folder)
        ['README.md']
    """
    where = Path(folder)
    return [name for name in output_files() if (where / name).exists()] if where.is_dir() else []


def save_corrected(
    corrector: ProjectionCorrector,
    output_dir: str | os.PathLike[str],
    *,
    result: CorrectionResult | None = None,
    processor: Any = None,
    card_info: CardInfo | None = None,
    clean_labels: torch.Tensor | Sequence[int] | None = None,
    report: bool = False,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
    template_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the corrected model, its image processor, config, summary, report and model card to ``output_dir``.

    Everything (:meth:`ProjectionCorrector.save_pretrained`'s native format, ``correction_config.json`` and
    ``correction_report.json``, then the processor, report and card) is written to one staging folder and moved
    into place together (:func:`hf_verifix.utils.staging.staged_directory`): when ``output_dir`` does not exist yet,
    an interruption leaves either no folder or the complete one; into an existing folder (``overwrite``) the files
    are moved one by one (each whole, Ctrl-C held until all are in). Only the main process writes (under
    ``accelerate launch`` the others return at once).

    Args:
        corrector: A fitted :class:`~hf_verifix.ProjectionCorrector` (the model as it should be saved).
        output_dir: Folder to write into (created).
        result: The correction's :class:`~hf_verifix.results.CorrectionResult` (default: ``corrector.result()``).
        processor: The model's image processor (saved with it so the folder loads with ``AutoImageProcessor``).
        card_info: What the card says beyond the result; None writes no card.
        clean_labels: True labels of the fitted data, when known and no ``result`` is given: the summary then gives
            the trusted set's precision.
        report: Also write the Markdown report and its figures (needs matplotlib); the card embeds the figures.
        class_names: One name per class id, for the report.
        overwrite: Replace files already in ``output_dir`` (any file this call writes: model, card, configs,
            report, figures). Without it nothing is replaced, also when another run wrote them meanwhile.
        template_path: Card template (default: the packaged one).

    Raises:
        FileExistsError: ``output_dir`` already holds a file this call writes and ``overwrite`` is False.
        ImportError: ``report=True`` without matplotlib (checked before anything is written).

    Example:
        >>> import tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> from hf_verifix import ProjectionCorrector
        >>> data = TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
        >>> corrector = ProjectionCorrector(torch.nn.Linear(3, 2), n_trusted=4, progress=False).fit(data)
        >>> folder = save_corrected(corrector, tempfile.mkdtemp(), card_info=CardInfo("demo"))
        >>> sorted(p.name for p in folder.iterdir())
        ['README.md', 'correction_config.json', 'correction_report.json', 'model.safetensors']
    """
    target = Path(output_dir)
    if not is_main_process():
        return target
    existing = protected_files(target)
    if existing and not overwrite:
        raise FileExistsError(
            f"{str(target)!r} already holds {', '.join(existing)}; pass overwrite=True to replace them, or choose "
            "another output folder"
        )
    if report and importlib.util.find_spec("matplotlib") is None:
        raise ImportError("report=True draws figures with matplotlib, which is not installed (pip install matplotlib)")
    result = result if result is not None else corrector.result(clean_labels)
    # One staging folder for everything: an interruption never leaves a model without its card (which would make a
    # re-run without overwrite refuse the folder).
    with staged_directory(target, overwrite=overwrite) as staging:
        corrector.save_pretrained(staging, summary=result.summary)
        if processor is not None and hasattr(processor, "save_pretrained"):
            processor.save_pretrained(staging)
        figures: dict[str, str] = {}
        if report:
            write_correction_report(result, staging, class_names)
            figures = {key: name for key, name in FIGURES.items() if (staging / name).is_file()}
        if card_info is not None:
            write_model_card(staging, result, card_info, template_path, figures=figures)
    return target
