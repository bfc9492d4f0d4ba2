"""Helpers shared by the test files: free loopback ports, the real 2-process `accelerate launch` command, tiny seeded
models (transformers ViT, timm ResNet, small CNNs), tiny seeded data (images, image folders, the selectors' blobs), the
Hub/CLI workspace's names (conftest.py builds it) and exact-exception, PNG and token checks.

transformers, timm, datasets, numpy, PIL and pytest are imported inside the helpers that use them, so the worker
scripts and the files that need none of them do not pay for them.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

if TYPE_CHECKING:
    import datasets
    from transformers import TimmWrapperForImageClassification, ViTForImageClassification

    from hf_verifix import CorrectionConfig, ProjectionCorrector
    from hf_verifix.data.source import SampleSource
    from hf_verifix.selection.base import Selection

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
    worker = subprocess.Popen(command, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker.relaunch = (list(arguments), processes)  # type: ignore[attr-defined]  # for finish's one retry
    return worker


def finish(worker: subprocess.Popen[str], timeout: float = 600) -> None:
    """Wait for ``worker`` (killed if it outlives ``timeout``) and assert that it exited 0, showing its last output.

    A launch whose rendezvous port was taken between ``free_port()`` and the bind is run once more, in the
    foreground, on a new port (as ``run_launched`` does): the failure says nothing about the code under test.
    """
    try:
        output, _ = worker.communicate(timeout=timeout)
    finally:
        if worker.poll() is None:
            worker.kill()
    arguments, processes = getattr(worker, "relaunch", (None, 1))
    if worker.returncode != 0 and processes > 1 and any(word in output for word in _PORT_TAKEN):
        done = run_launched(arguments, processes, timeout=timeout)
        worker.returncode, output = done.returncode, done.stdout + done.stderr
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


def small_cnn() -> nn.Module:
    """Two plain convolutions, global pooling and a linear head for 3 classes (seed 0); any input size from 5×5."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def small_conv_net() -> nn.Module:
    """Convolutions with padding, an asymmetric stride-2 kernel, groups and dilation, and a 5-class head (seed 0)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, (1, 3), stride=2, padding=(0, 1)),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, groups=2, dilation=2, padding=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 5),
    )


def weights_of(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The ``weight`` of each named layer, cloned."""
    modules = dict(model.named_modules())
    return {n: modules[n].weight.detach().clone() for n in names}


def quick_config(**overrides: Any) -> CorrectionConfig:
    """A ``CorrectionConfig`` with 8 trusted samples and no progress bars (test_models.py, test_data_source.py)."""
    from hf_verifix import CorrectionConfig

    return CorrectionConfig(**{"n_trusted": 8, "progress": False, **overrides})


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


def image_dataset(images: Sequence[Any], labels: Sequence[int], classes: int = 3) -> datasets.Dataset:
    """A ``datasets.Dataset`` of raw PIL ``image`` (an ``Image`` feature) and ClassLabel ``label`` columns."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=classes)})
    return datasets.Dataset.from_dict({"image": list(images), "label": list(labels)}, features=features)


# The selectors' blobs (test_selection_*.py): 3 classes of N_PER_CLASS points, a NOISE share of the labels flipped.
N_PER_CLASS = 200
NOISE = 0.25
N_TRUSTED = 150


class Blobs:
    """Three 2-D Gaussian blobs, 25% of the labels flipped to another class, and a GELU MLP trained on them."""

    def __init__(self, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        centers = torch.tensor([[0.0, 2.0], [-1.8, -1.0], [1.8, -1.0]])
        self.clean = torch.arange(3).repeat_interleave(N_PER_CLASS)
        self.x = centers[self.clean] + 0.7 * torch.randn(len(self.clean), 2, generator=generator)
        self.noisy = self.clean.clone()
        flip = torch.randperm(len(self.clean), generator=generator)[: int(NOISE * len(self.clean))]
        self.noisy[flip] = (self.clean[flip] + torch.randint(1, 3, (len(flip),), generator=generator)) % 3
        self.is_clean = self.clean == self.noisy
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(2, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 3))
        optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        for _ in range(300):
            optimizer.zero_grad()
            F.cross_entropy(self.model(self.x), self.noisy).backward()
            optimizer.step()
        self.model.zero_grad(set_to_none=True)

    def source(
        self, batch_size: int = 100, size: int | None = None, labels: torch.Tensor | None = None
    ) -> SampleSource:
        from hf_verifix.data.source import SampleSource

        end = len(self.x) if size is None else size
        y = (self.noisy if labels is None else labels)[:end]
        return SampleSource(TensorDataset(self.x[:end], y), batch_size=batch_size)

    def precision(self, selection: Selection) -> float:
        return float(self.is_clean[selection.indices].float().mean())


class NoisyBlobs:
    """Three 2-D Gaussian blobs (200 points each), 25% of labels flipped, and a small MLP trained on them."""

    def __init__(self, seed: int = 0) -> None:
        from hf_verifix.data.source import SampleSource
        from hf_verifix.noise import symmetric_noise

        generator = torch.Generator().manual_seed(seed)
        centers = torch.tensor([[0.0, 4.0], [-3.5, -2.0], [3.5, -2.0]])
        clean = torch.arange(3).repeat_interleave(200)
        inputs = centers[clean] + torch.randn(600, 2, generator=generator)
        noisy = symmetric_noise(clean, rate=0.25, seed=seed, num_classes=3)
        self.flipped = noisy.flipped
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
        optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        for _ in range(60):  # full batch, stopped before the flipped labels are memorised
            optimizer.zero_grad()
            nn.functional.cross_entropy(self.model(inputs), noisy.labels).backward()
            optimizer.step()
        self.source = SampleSource(TensorDataset(inputs, noisy.labels), batch_size=128)
        self.labels = noisy.labels

    def precision(self, indices: torch.Tensor) -> float:
        return 1.0 - float(self.flipped[indices].float().mean())


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three Gaussian blobs in 4-D: a task a tiny MLP learns, so the α curve and accuracies mean something."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    return centres[labels] + torch.randn(n, 4, generator=generator), labels


def fitted_blob_corrector(
    recalibrate: bool = False, search: bool = True
) -> tuple[ProjectionCorrector, TensorDataset, torch.Tensor]:
    """A tiny MLP (with BatchNorm if ``recalibrate``) trained on 4-D blobs with 10% wrong labels, a fitted corrector
    (α searched unless ``search`` is false), held-out blobs and the training set's clean labels (test_reporting.py,
    test_corrector.py)."""
    from hf_verifix import CorrectionConfig, ProjectionCorrector

    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(4, 16)]
    if recalibrate:
        layers.append(nn.BatchNorm1d(16))
    layers += [nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)]
    model = nn.Sequential(*layers)
    x, clean = _blobs(120, seed=0)
    noisy = clean.clone()
    noisy[::10] = (noisy[::10] + 1) % 3  # 10% wrong labels
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), noisy).backward()
        optimizer.step()
    model.eval()
    config = CorrectionConfig(n_trusted=60, per_class=True, progress=False, recalibrate_batchnorm=recalibrate)
    corrector = ProjectionCorrector(model, config).fit(TensorDataset(x, noisy))
    if search:
        corrector.search_alpha(TensorDataset(x, noisy), alphas=[1.0, 10.0, 1e3, 1e6])
    return corrector, TensorDataset(*_blobs(90, seed=1)), clean


def cloned_state(corrector: ProjectionCorrector) -> dict[str, torch.Tensor]:
    """The corrector's model's state dict, cloned."""
    return {k: v.detach().clone() for k, v in corrector.model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------------
# the Hub/CLI workspace (conftest.py's session-scoped `work` and `corrected_vit`)
# ---------------------------------------------------------------------------------------------------------------------

FAKE_TOKEN = "hf_FAKEtokenDoNotLeak0123456789abcdef"  # planted, then searched for in every output
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"  # the revision the seeded HF cache holds
CLASSES = 3


def cli_data_args(work: dict[str, Path]) -> list[str]:
    """The CLI options that read ``work``'s image folder with its own datasets cache and no progress bars."""
    return ["--dataset", str(work["images"]), "--dataset-cache-dir", str(work["datasets_cache"]), "--no-progress"]


def safetensors_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``folder/model.safetensors``."""
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


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


def assert_no_token(*texts: str, folders: tuple[Path, ...] = ()) -> None:
    """Assert that ``FAKE_TOKEN`` is in none of ``texts`` and in no file under ``folders``."""
    for text in texts:
        assert FAKE_TOKEN not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def assert_valid_png(path: Path) -> None:
    """Assert that ``path`` is a PNG file PIL can verify, larger than 100×100 pixels."""
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 0, path
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert width > 100 and height > 100
