"""Helpers shared by the test files: free loopback ports, the real 2-process `accelerate launch` command, tiny seeded
models (transformers ViT, timm ResNet), tiny seeded data (images, image folders) and an exact-exception check.

transformers, timm, datasets, numpy, PIL and pytest are imported inside the helpers that use them, so the worker
scripts and the files that need none of them do not pay for them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    import datasets
    from transformers import TimmWrapperForImageClassification, ViTForImageClassification

# Words gloo/c10d print when the rendezvous port was taken between free_port() and the launch.
_PORT_TAKEN = ("EADDRINUSE", "address already in use", "Address already in use")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (no test uses a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_command(arguments: Sequence[str], processes: int = 2) -> list[str]:
    """Return ``accelerate launch`` with ``processes`` real CPU processes (gloo) running ``arguments``.

    ``--cpu`` would silently run ONE process; ``--multi_gpu`` with ``ACCELERATE_USE_CPU=1`` (see ``launch_env``)
    starts real gloo processes on the CPU.
    """
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), *arguments,
    ]  # fmt: skip


def launch_env(**extra: str) -> dict[str, str]:
    """Return the environment for ``launch_command``: CPU processes, one thread each."""
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", **extra}


def run_launched(
    arguments: Sequence[str], processes: int = 2, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``arguments`` under ``accelerate launch``; once more on a new port if another program took the first."""
    for attempt in range(2):
        done = subprocess.run(
            launch_command(arguments, processes), env=env or launch_env(), capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        if done.returncode == 0 or attempt or not any(word in done.stderr for word in _PORT_TAKEN):
            return done
    raise AssertionError("unreachable")


def start_worker(arguments: Sequence[str], processes: int = 2) -> subprocess.Popen[str]:
    """Start ``python arguments`` in the background: plainly for 1 process, else under ``accelerate launch`` with
    ``processes`` CPU processes; stdout and stderr go to one pipe, which ``finish`` reads."""
    command = launch_command(arguments, processes) if processes > 1 else [sys.executable, *arguments]
    return subprocess.Popen(command, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(worker: subprocess.Popen[str], timeout: float = 600) -> None:
    """Wait for ``worker`` (killed if it outlives ``timeout``) and assert that it exited 0, showing its last output."""
    try:
        output, _ = worker.communicate(timeout=timeout)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, output[-6000:]


def write_image_folder(root: Path, classes: int, per_class: dict[str, int]) -> None:
    """Write an image folder ``root/<split>/class<k>/<i>.png`` of seeded 32×32 RGB images, brighter per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 90, (32, 32, 3)) + 70 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")


# ---------------------------------------------------------------------------------------------------------------------
# tiny seeded models
# ---------------------------------------------------------------------------------------------------------------------


def tiny_vit(
    seed: int = 0,
    *,
    num_labels: int = 3,
    image_size: int = 16,
    patch_size: int = 4,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    intermediate_size: int = 64,
    num_attention_heads: int = 2,
) -> ViTForImageClassification:
    """A random transformers ViT on RGB images, initialised after ``torch.manual_seed(seed)`` (in training mode).

    The defaults are the 2-layer, 32-wide ViT on 16×16 images with 3 labels; each test file names what it changes.
    """
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        num_hidden_layers=num_hidden_layers, hidden_size=hidden_size, num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size, image_size=image_size, patch_size=patch_size, num_channels=3,
        num_labels=num_labels,
    )  # fmt: skip
    return ViTForImageClassification(config)


def tiny_timm_wrapper(num_labels: int = 3, seed: int = 0) -> TimmWrapperForImageClassification:
    """timm's random ``test_resnet`` inside transformers' ``TimmWrapperForImageClassification``, seeded."""
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    torch.manual_seed(seed)
    return TimmWrapperForImageClassification(TimmWrapperConfig(architecture="test_resnet", num_labels=num_labels))


def save_tiny_timm(folder: Path, classes: int) -> nn.Module:
    """Save timm's random ``test_resnet`` (seed 0) as a Hub folder whose data config asks for 32×32 inputs; return it.

    Its own data config says 160×160: 32×32 keeps the passes fast.
    """
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    overlay = dict(input_size=(3, 32, 32), crop_pct=1.0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=classes, pretrained_cfg_overlay=overlay)
    save_for_hf(model, str(folder), safe_serialization=True)
    return model


# ---------------------------------------------------------------------------------------------------------------------
# tiny seeded data
# ---------------------------------------------------------------------------------------------------------------------


def coded_images(
    n: int,
    seed: int,
    *,
    noise: float = 0.25,
    stripe_class_1: bool = False,
    flip_to_other: bool = False,
    shape: tuple[int, int, int] = (3, 16, 16),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Colour- and stripe-coded 3-class images, their noisy labels and their clean labels (``arange(n) % 3``).

    Class c is 1 brighter in channel c and class 0 in every 4th row (``stripe_class_1``: class 1 in every 4th
    column too). A ``noise`` share of the labels is redrawn uniformly from the 3 classes, so some keep their class
    (``flip_to_other``: redrawn among the 2 other classes, so every redrawn label is wrong).
    """
    generator = torch.Generator().manual_seed(seed)
    clean = torch.arange(n) % 3
    images = torch.randn(n, *shape, generator=generator)
    for c in range(3):
        images[clean == c, c] += 1.0
    images[clean == 0, :, ::4, :] += 1.0
    if stripe_class_1:
        images[clean == 1, :, :, ::4] += 1.0
    flip = torch.rand(n, generator=generator) < noise
    if flip_to_other:
        redrawn = (clean + torch.randint(1, 3, (n,), generator=generator)) % 3
    else:
        redrawn = torch.randint(0, 3, (n,), generator=generator)
    return images, torch.where(flip, redrawn, clean), clean


def pixel_dataset(
    images: torch.Tensor, labels: torch.Tensor, notes: Sequence[str] | None = None, classes: int = 3
) -> datasets.Dataset:
    """A ``datasets.Dataset`` of preprocessed float32 ``pixel_values`` (N, C, H, W) and ClassLabel ``labels``, in
    torch format; with ``notes``, also a string column ``note`` that no model takes (the Trainer drops it)."""
    import datasets

    columns = {
        "pixel_values": datasets.Array3D(tuple(images.shape[1:]), "float32"),
        "labels": datasets.ClassLabel(num_classes=classes),
    }
    data = {"pixel_values": images.numpy(), "labels": labels.numpy()}
    if notes is not None:
        columns["note"] = datasets.Value("string")
        data["note"] = list(notes)
    return datasets.Dataset.from_dict(data, features=datasets.Features(columns)).with_format("torch")


# ---------------------------------------------------------------------------------------------------------------------
# assertions
# ---------------------------------------------------------------------------------------------------------------------


def raises_exactly(call: Callable[[], Any], error: type[BaseException], match: str) -> BaseException:
    """Call ``call``, assert that it raises ``error`` itself (not a subclass) matching ``match``, and return that."""
    import pytest

    with pytest.raises(error, match=match) as info:
        call()
    assert type(info.value) is error, f"expected exactly {error.__name__}, got {type(info.value).__name__}"
    return info.value
