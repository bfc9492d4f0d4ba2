"""Shared test setup: never touch the network, stay on 2 CPU threads, offer a tiny seeded image dataset, and build
what several test files share once per session (the Hub/CLI workspace, the selectors' blobs)."""

from __future__ import annotations

import os

# Set before any test module imports huggingface_hub / datasets / transformers, which read them at import time.
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")

import json  # noqa: E402
import shutil  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from testing_utils import (  # noqa: E402
    CLASSES,
    SNAPSHOT,
    Blobs,
    NoisyBlobs,
    cli_data_args,
    save_tiny_timm,
    tiny_vit,
    write_image_folder,
)
from torch.utils.data import TensorDataset  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run several times faster on one thread than on two on a shared 2-core machine.

    Use it for a whole file with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """``one_thread`` for a session-scoped fixture: those are set up before any module-scoped one, so they cannot
    rely on the ``one_thread`` of the file that first asks for them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def tiny_images() -> TensorDataset:
    """24 seeded 3x32x32 images with labels in {0, 1, 2} (every class present)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(24, 3, 32, 32, generator=generator)
    labels = torch.arange(24) % 3
    return TensorDataset(images, labels)


# ---------------------------------------------------------------------------------------------------------------------
# the Hub/CLI workspace: test_models_loading.py, test_data_loading.py, test_commands.py, test_integrations_hub.py
# ---------------------------------------------------------------------------------------------------------------------


def _tiny_vit(folder: Path) -> None:
    from transformers import ViTImageProcessor

    tiny_vit(num_labels=CLASSES, image_size=32, patch_size=8).save_pretrained(folder)  # 2 layers, 32 wide, seed 0
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def _image_folder(root: Path) -> None:
    write_image_folder(root, CLASSES, {"train": 8, "validation": 3})


def _seed_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """The layout huggingface_hub reads offline: refs/main names a snapshot folder holding the files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / SNAPSHOT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> dict[str, Path]:
    """A tiny transformers ViT and timm ResNet saved as Hub folders, an image folder (3 classes; train 8, validation
    3 per class), an offline HF cache holding both models by ID (``SNAPSHOT``) and noisy label files; built once."""
    with _one_torch_thread():
        root = tmp_path_factory.mktemp("hub_cli")
        paths = {
            "root": root,
            "vit": root / "vit",
            "timm": root / "timm",
            "images": root / "images",
            "cache": root / "hf_cache",
            "datasets_cache": root / "datasets_cache",
        }
        _tiny_vit(paths["vit"])
        save_tiny_timm(paths["timm"], CLASSES)
        _image_folder(paths["images"])
        _seed_cache(paths["cache"], "org/tiny-vit", paths["vit"])
        _seed_cache(paths["cache"], "timm/tiny-resnet", paths["timm"])
        # Training labels with 25% of them wrong (one per row of the train split, in imagefolder order).
        clean = np.repeat(np.arange(CLASSES), 8)
        noisy = clean.copy()
        flip = np.random.default_rng(1).choice(len(noisy), size=6, replace=False)
        noisy[flip] = (noisy[flip] + 1) % CLASSES
        paths["noisy"] = root / "noisy.txt"
        paths["noisy"].write_text("\n".join(map(str, noisy)) + "\n")
        # The validation split's labels, as noisy (α is chosen on them: no clean label is used).
        paths["eval_noisy"] = root / "eval_noisy.json"
        paths["eval_noisy"].write_text(json.dumps([0, 0, 1, 1, 1, 1, 2, 2, 0]))
        return paths


@pytest.fixture(scope="session")
def corrected_vit(work) -> Path:
    """One CLI correction of the tiny ViT (α searched on the validation split), shared by several tests."""
    from hf_verifix.commands.cli import main

    with _one_torch_thread():
        output = work["root"] / "vit-sap"
        argv = [
            "correct", "--model", str(work["vit"]), *cli_data_args(work), "--eval-split", "validation",
            "--noisy-labels", str(work["noisy"]), "--eval-noisy-labels", str(work["eval_noisy"]), "--n-trusted", "9",
            "--per-class", "--alphas", "10,1e3,1e5", "--output-dir", str(output),
        ]  # fmt: skip
        assert main(argv) == 0
        return output


# ---------------------------------------------------------------------------------------------------------------------
# the selectors' blobs: test_selection_*.py (each file names the one it uses `blobs`)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def session_blobs() -> Blobs:
    """``Blobs()``, trained once on one thread (base, curvature, simple and confident selectors)."""
    with _one_torch_thread():
        return Blobs()


@pytest.fixture(scope="session")
def session_noisy_blobs() -> NoisyBlobs:
    """``NoisyBlobs()``, trained once (bmm and coreset selectors)."""
    return NoisyBlobs()
