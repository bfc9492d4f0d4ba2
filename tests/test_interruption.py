"""Ctrl-C (SIGINT) in the middle of a correction: the input stays intact, no half-written output, a re-run works.

Each case runs a real correction in a child process (a script written to ``tmp_path``): it loads a tiny model from a
safetensors file, fits (loss selection, then Gram collection), projects, and saves with ``save_pretrained``. The
test sends SIGINT once the child signals, through a marker file, that it is (a) collecting activation statistics
(the dataset's ``__getitem__`` after the selection pass) or (b) saving: the child script, not the library, wraps
``safetensors.torch.save_model`` so that it writes the real file into the staging folder and then waits there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, load_model, save_model
from torch import nn
from torch.utils.data import TensorDataset

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.utils.staging import staged_directory

N_SAMPLES = 48

SCRIPT = f'''
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

torch.set_num_threads(1)
model_file, out_dir, mode, marker = sys.argv[1:5]
N_SAMPLES = {N_SAMPLES}


def build():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


class Images(torch.utils.data.Dataset):
    """Seeded images; in mode "collect" the first read after the selection pass announces itself and waits."""

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(N_SAMPLES, 1, 8, 8, generator=generator)
        self.y = torch.arange(N_SAMPLES) % 3
        self.reads = 0

    def __len__(self):
        return N_SAMPLES

    def __getitem__(self, index):
        self.reads += 1
        if mode == "collect" and self.reads == N_SAMPLES + 1:  # the selection pass read every sample once
            Path(marker).write_text("collecting")
            time.sleep(120)
        return self.x[index], self.y[index]


if mode == "save":
    import safetensors.torch

    real_save = safetensors.torch.save_model

    def save_then_wait(model, filename, *args, **kwargs):
        real_save(model, filename, *args, **kwargs)
        Path(marker).write_text(str(filename))
        time.sleep(120)

    safetensors.torch.save_model = save_then_wait

from safetensors.torch import load_model

from hf_verifix import CorrectionConfig, ProjectionCorrector

model = build()
load_model(model, model_file)
config = CorrectionConfig(n_trusted=16, alpha=100.0, batch_size=8, progress=False)
corrector = ProjectionCorrector(model, config).fit(Images())
corrector.apply()
corrector.save_pretrained(out_dir)
print("saved", flush=True)
'''

OUTPUT_FILES = ["correction_config.json", "correction_report.json", "model.safetensors"]
MODES = ("collect", "save")


class Job:
    """One run's files: the input model, the script, and the output folder alone in its parent folder."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.script = root / "correct.py"
        self.script.write_text(SCRIPT, encoding="utf-8")
        self.model_file = root / "model.safetensors"
        save_model(build(), str(self.model_file))
        self.model_bytes = self.model_file.read_bytes()
        self.outputs = root / "outputs"
        self.outputs.mkdir()
        self.out = self.outputs / "corrected"
        self.marker = root / "marker"

    def start(self, mode: str) -> subprocess.Popen[str]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        command = [sys.executable, str(self.script), str(self.model_file), str(self.out), mode, str(self.marker)]
        return subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def state(self) -> dict[str, Any]:
        """What is on disk now: is the input intact, what is beside and in the output folder."""
        return {
            "input_intact": self.model_file.read_bytes() == self.model_bytes,
            "beside_output": sorted(p.name for p in self.outputs.iterdir()),
            "output": sorted(p.name for p in self.out.iterdir()) if self.out.is_dir() else None,
        }


def finish(child: subprocess.Popen[str], what: str) -> tuple[int, str]:
    stdout, stderr = child.communicate(timeout=120)
    if child.returncode == 0:
        assert "saved" in stdout, f"{what}: {stderr}"
    return child.returncode, stderr


def build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


def uninterrupted(model_file: Path) -> dict[str, torch.Tensor]:
    """The script's correction run here, uninterrupted, single-threaded like the child."""
    model = build()
    load_model(model, model_file)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(N_SAMPLES, 1, 8, 8, generator=generator), torch.arange(N_SAMPLES) % 3)
    config = CorrectionConfig(n_trusted=16, alpha=100.0, batch_size=8, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ProjectionCorrector(model, config).fit(data).apply()
    finally:
        torch.set_num_threads(threads)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run every child once, the two modes side by side (each child is mostly its ~5 s import of hf_verifix).

    Phase 1: one run per mode, interrupted by SIGINT as soon as it signals; the disk is recorded right after each
    interruption. Phase 2: both are re-run to completion. The reference is the same correction, uninterrupted,
    computed in this process.
    """
    root = tmp_path_factory.mktemp("interruption")
    jobs = {mode: Job(root / mode) for mode in MODES}
    started: list[subprocess.Popen[str]] = []
    try:
        children = {mode: jobs[mode].start(mode) for mode in MODES}
        started += children.values()
        deadline = time.monotonic() + 120
        waiting = set(MODES)
        while waiting:
            for mode in sorted(waiting):
                if jobs[mode].marker.exists():
                    children[mode].send_signal(signal.SIGINT)
                    waiting.discard(mode)
                elif children[mode].poll() is not None or time.monotonic() > deadline:
                    children[mode].kill()
                    pytest.fail(f"the {mode!r} run never signalled: {children[mode].communicate()[1]}")
            time.sleep(0.02)
        results: dict[str, Any] = {}
        for mode in MODES:
            code, stderr = finish(children[mode], mode)
            results[mode] = {"returncode": code, "stderr": stderr, "after_interrupt": jobs[mode].state()}
            results[mode]["staged_file"] = jobs[mode].marker.read_text()
            results[mode]["outputs"] = jobs[mode].outputs
        reruns = {mode: jobs[mode].start("none") for mode in MODES}
        started += reruns.values()
        results["reference"] = {
            "weights": uninterrupted(jobs["collect"].model_file),
            "input": load_file(jobs["collect"].model_file),
        }
        for mode in MODES:
            code, stderr = finish(reruns[mode], f"re-run after {mode}")
            assert code == 0, stderr
            results[mode]["after_rerun"] = jobs[mode].state()
            results[mode]["weights"] = load_file(jobs[mode].out / "model.safetensors")
        yield results
    finally:
        for child in started:
            if child.poll() is None:
                child.kill()
                child.communicate()


NOTHING_WRITTEN = {"input_intact": True, "beside_output": [], "output": None}
COMPLETE = {"input_intact": True, "beside_output": ["corrected"], "output": OUTPUT_FILES}


def assert_bit_identical(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[k], expected[k]) for k in expected), "the re-run differs from an uninterrupted run"


def test_the_uninterrupted_correction_changes_the_weights(runs: dict[str, Any]) -> None:
    weights, original = runs["reference"]["weights"], runs["reference"]["input"]
    assert weights.keys() == original.keys()
    assert not torch.equal(weights["0.weight"], original["0.weight"])
    assert not torch.equal(weights["3.weight"], original["3.weight"])


def test_sigint_while_collecting_statistics(runs: dict[str, Any]) -> None:
    run = runs["collect"]
    assert run["returncode"] == -signal.SIGINT, f"expected death by KeyboardInterrupt: {run['stderr']}"
    assert run["stderr"].rstrip().endswith("KeyboardInterrupt")
    assert "in collect_grams" in run["stderr"] and "in __getitem__" in run["stderr"]  # stopped in the Gram pass
    assert run["after_interrupt"] == NOTHING_WRITTEN
    assert run["after_rerun"] == COMPLETE
    assert_bit_identical(run["weights"], runs["reference"]["weights"])


def test_sigint_while_saving(runs: dict[str, Any]) -> None:
    run = runs["save"]
    assert run["returncode"] == -signal.SIGINT, f"expected death by KeyboardInterrupt: {run['stderr']}"
    assert run["stderr"].rstrip().endswith("KeyboardInterrupt")
    assert "in save_pretrained" in run["stderr"] and "in save_then_wait" in run["stderr"]
    staged = Path(run["staged_file"])  # the real model file had been written, into a staging folder ...
    assert staged.name == "model.safetensors" and staged.parent.parent == run["outputs"]
    assert staged.parent.name.startswith(".corrected.verifix-")
    assert run["after_interrupt"] == NOTHING_WRITTEN  # ... which is gone, with the file in it
    assert run["after_rerun"] == COMPLETE
    assert_bit_identical(run["weights"], runs["reference"]["weights"])


def test_sigint_while_moving_files_into_an_existing_folder_is_held_until_all_are_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last step (moving finished files into a folder that already exists) is not cut short by Ctrl-C."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old a")
    (out / "b.txt").write_text("old b")
    real_replace, moved = os.replace, []

    def replace_and_interrupt(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        real_replace(source, target)
        moved.append(Path(target).name)
        if len(moved) == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C after the first of three files

    with pytest.raises(KeyboardInterrupt), staged_directory(out) as staging:
        for name in ("a.txt", "b.txt", "c.txt"):
            (staging / name).write_text(f"new {name[0]}")
        monkeypatch.setattr(os, "replace", replace_and_interrupt)
    monkeypatch.undo()
    assert moved == ["a.txt", "b.txt", "c.txt"]
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a.txt": "new a", "b.txt": "new b", "c.txt": "new c"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the usual handler is back


def test_save_corrected_writes_model_and_card_in_one_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the card is written (after the model): no folder holding a model without its card."""
    import hf_verifix.integrations.export as export
    from hf_verifix.reporting.model_card import CardInfo

    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(8, 3, generator=generator), torch.arange(8) % 2)
    corrector = ProjectionCorrector(nn.Linear(3, 2), n_trusted=4, progress=False).fit(data)
    written: list[str] = []

    def interrupted_card(staging: Path, *args: Any, **kwargs: Any) -> None:
        written.extend(sorted(p.name for p in staging.iterdir()))
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "write_model_card", interrupted_card)
    with pytest.raises(KeyboardInterrupt):
        export.save_corrected(corrector, tmp_path / "out", card_info=CardInfo("demo"))
    assert written == OUTPUT_FILES  # the model had been written (staged) when the card was interrupted
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    folder = export.save_corrected(
        corrector, tmp_path / "out", card_info=CardInfo("demo")
    )  # the re-run needs no --overwrite
    assert sorted(p.name for p in folder.iterdir()) == sorted([*OUTPUT_FILES, "README.md"])
