"""Progress bars follow hf_verifix's own switch and the ecosystem's (TQDM_DISABLE, HF_HUB_DISABLE_PROGRESS_BARS)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.commands.cli import main


def fit_with_progress() -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(20, 3), torch.arange(20) % 2)
    ProjectionCorrector(torch.nn.Linear(3, 2), CorrectionConfig(n_trusted=8, progress=True)).fit(data)


@pytest.mark.parametrize("switch", [None, "TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"])
def test_the_environment_switches_silence_every_bar(switch, monkeypatch, capfd):
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    if switch:
        monkeypatch.setenv(switch, "1")
    fit_with_progress()
    err = capfd.readouterr().err
    if switch:
        assert "collecting Grams" not in err and "scoring" not in err
    else:
        assert "collecting Grams" in err and "scoring (loss)" in err


def test_no_progress_turns_off_the_hub_datasets_and_transformers_bars(tmp_path):
    import datasets
    import huggingface_hub.utils
    import transformers

    try:
        code = main(["evaluate", "--model", str(tmp_path / "missing"), "--dataset", str(tmp_path), "--no-progress"])
        assert code != 0  # the model does not exist; the switches are set before anything is loaded
        assert huggingface_hub.utils.are_progress_bars_disabled()
        assert not datasets.is_progress_bar_enabled()
        assert not transformers.utils.logging.is_progress_bar_enabled()
    finally:
        huggingface_hub.utils.enable_progress_bars()
        datasets.enable_progress_bars()
        transformers.utils.logging.enable_progress_bar()
