"""Shared test setup: never touch the network, stay on 2 CPU threads, and offer a tiny seeded image dataset."""

from __future__ import annotations

import os

# Set before any test module imports huggingface_hub / datasets / transformers, which read them at import time.
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")

import pytest  # noqa: E402
import torch  # noqa: E402
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


@pytest.fixture
def tiny_images() -> TensorDataset:
    """24 seeded 3x32x32 images with labels in {0, 1, 2} (every class present)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(24, 3, 32, 32, generator=generator)
    labels = torch.arange(24) % 3
    return TensorDataset(images, labels)
