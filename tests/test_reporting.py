"""The Markdown/PNG correction report and the model card's figures (hf_verifix.reporting)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from testing_utils import assert_valid_png as _assert_valid_png
from testing_utils import cloned_state as _state
from testing_utils import fitted_blob_corrector as _fitted

pytest.importorskip("matplotlib")
pytest.importorskip("PIL.Image")

from hf_verifix.reporting.report import FIGURES, REPORT_FILE, SUMMARY_FILE, write_correction_report


def test_report_writes_every_figure_and_references_them(tmp_path: Path) -> None:
    corrector, eval_data, clean = _fitted()
    result = corrector.result(clean, eval_data=eval_data)
    path = write_correction_report(result, tmp_path / "report", class_names=["a", "b", "c"])
    assert path == tmp_path / "report" / REPORT_FILE
    text = path.read_text(encoding="utf-8")
    for name in FIGURES.values():
        _assert_valid_png(path.parent / name)
        assert f"]({name})" in text, f"report.md does not reference {name}"
    assert (path.parent / SUMMARY_FILE).is_file()
    assert "precision" in text and "| a |" in text
    assert corrector.search_result is not None
    if corrector.search_result.best_alpha is not None:
        assert "| chosen |" in text


def test_model_card_embeds_the_report_figures(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from hf_verifix.hub import save_corrected
    from hf_verifix.reporting.model_card import FIGURE_CAPTIONS, CardInfo

    corrector, eval_data, clean = _fitted()
    result = corrector.result(clean, eval_data=eval_data)
    report = write_correction_report(result, tmp_path / "report")
    out = save_corrected(corrector, tmp_path / "out", result=result, card_info=CardInfo("demo"), report=True)
    card = ModelCard.load(out / "README.md")
    images = [line for line in card.text.splitlines() if line.startswith("![")]
    assert images == [f"![{FIGURE_CAPTIONS[key]}]({name})" for key, name in FIGURES.items()]
    assert (out / REPORT_FILE).read_bytes() == (report.parent / REPORT_FILE).read_bytes()
    for name in FIGURES.values():
        _assert_valid_png(out / name)
    assert not (out / "alpha_search.png").exists()  # the report's α curve is the card's α plot


@pytest.mark.parametrize("applied", [None, 1e6])
def test_result_evaluation_restores_batchnorm_state(tmp_path: Path, applied: float | None) -> None:
    corrector, eval_data, _ = _fitted(recalibrate=True, search=False)
    if applied is None:
        corrector.revert()
    else:
        corrector.apply(applied)
    before = _state(corrector)
    result = corrector.result(eval_data=eval_data)
    if applied is None:
        corrector.evaluate(eval_data, alpha=1e3)
    after = _state(corrector)
    assert corrector.applied_alpha == applied
    assert all(torch.equal(before[k], after[k]) for k in before)
    path = write_correction_report(result, tmp_path)
    text = path.read_text(encoding="utf-8")
    assert "`search_alpha` was not run" in text
    assert not (tmp_path / FIGURES["alpha_curve"]).exists()


def test_report_without_eval_data_or_applied_alpha(tmp_path: Path) -> None:
    corrector, _, _ = _fitted(search=False)
    corrector.revert()
    path = write_correction_report(corrector.result(), tmp_path)
    text = path.read_text(encoding="utf-8")
    assert "No `eval_data` was given" in text
    assert "config.alpha, not applied" in text
    for key in ("trusted_classes", "spectrum", "timings"):
        _assert_valid_png(tmp_path / FIGURES[key])
        assert FIGURES[key] in text
    for key in ("alpha_curve", "per_class_accuracy", "confusion_matrices"):
        assert not (tmp_path / FIGURES[key]).exists()
    assert corrector.applied_alpha is None


def test_report_rejects_too_few_class_names(tmp_path: Path) -> None:
    corrector, eval_data, _ = _fitted(search=False)
    with pytest.raises(ValueError, match="class_names holds 2 names"):
        write_correction_report(corrector.result(eval_data=eval_data), tmp_path, class_names=["a", "b"])


def test_report_renders_headless_without_touching_pyplot(tmp_path: Path) -> None:
    """No display, and a GUI backend requested: the report draws on its own Agg canvas, never through pyplot."""
    script = textwrap.dedent(
        f"""
        import sys, torch
        from torch.utils.data import TensorDataset
        from hf_verifix import ProjectionCorrector
        from hf_verifix.reporting.report import write_correction_report
        data = TensorDataset(torch.randn(40, 3), torch.arange(40) % 2)
        corrector = ProjectionCorrector(torch.nn.Linear(3, 2), n_trusted=20, progress=False)
        result = corrector.correct(data, data, alphas=[10.0, 1e4])
        write_correction_report(corrector.result(eval_data=data), {str(tmp_path)!r})
        assert "matplotlib.pyplot" not in sys.modules
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MPLBACKEND"] = "TkAgg"  # would fail to open without a display if pyplot were used
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in FIGURES.values():
        _assert_valid_png(tmp_path / name)
