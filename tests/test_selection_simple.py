"""The random and expert selectors (hf_verifix.selection.simple) on 2-D Gaussian blobs with 25% of the labels
flipped."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from testing_utils import N_TRUSTED, NOISE, Blobs
from torch.utils.data import TensorDataset

from hf_verifix.data.source import SampleSource
from hf_verifix.errors import DataError
from hf_verifix.noise import symmetric_noise
from hf_verifix.selection.simple import ExpertSelector, RandomSelector

# These tensors are tiny: one thread is fastest, and several slow down badly on a busy CPU (conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def blobs(session_blobs: Blobs) -> Blobs:
    """conftest.py's ``Blobs``, trained once for every test_selection_* file that uses it."""
    return session_blobs


# --- random ------------------------------------------------------------------------------------------------------


def test_random_precision_is_the_clean_fraction_and_deterministic_per_seed(blobs):
    selector, source = RandomSelector(), blobs.source()
    first = selector.select(blobs.model, source, N_TRUSTED, seed=0)
    assert torch.equal(first.indices, selector.select(blobs.model, source, N_TRUSTED, seed=0).indices)
    assert not torch.equal(first.indices, selector.select(blobs.model, source, N_TRUSTED, seed=1).indices)
    precisions = [blobs.precision(selector.select(blobs.model, source, N_TRUSTED, seed=s)) for s in range(40)]
    assert all(0.6 <= p <= 0.9 for p in precisions)  # 150 of 600 with 75% clean: sd ≈ 0.03
    assert sum(precisions) / len(precisions) == pytest.approx(1 - NOISE, abs=0.02)
    assert sorted(first.scores.tolist()) == list(range(len(blobs.x)))
    # NumPy integers are integers too.
    assert torch.equal(selector.select(blobs.model, source, np.int64(N_TRUSTED)).indices, first.indices)  # type: ignore[arg-type]


def test_random_is_not_the_noise_injected_with_the_same_seed():
    # Both used to draw torch.randperm(n) from manual_seed(seed): the "random" trusted set was exactly the flipped
    # samples (precision 0) whenever the noise and the selection shared a seed.
    labels = torch.arange(1000) % 10
    for seed in (0, 1, 7):
        noisy = symmetric_noise(labels, 0.25, num_classes=10, seed=seed)
        source = SampleSource(TensorDataset(torch.zeros(1000, 1), noisy.labels))
        chosen = RandomSelector().select(None, source, 200, seed=seed).indices  # type: ignore[arg-type]
        assert 0.6 <= float((~noisy.flipped[chosen]).float().mean()) <= 0.9  # 75% expected; sd ≈ 0.03


def test_random_uses_no_model_and_reads_labels_from_any_dataset():
    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return torch.zeros(2), i % 3

    selection = RandomSelector().select(None, SampleSource(Pairs(), batch_size=4), 3, per_class=True)  # type: ignore[arg-type]
    assert selection.class_counts(3).tolist() == [1, 1, 1]
    assert selection.labels.tolist() == [0, 1, 2, 0, 1, 2]


# --- expert ------------------------------------------------------------------------------------------------------


def test_expert_returns_exactly_the_verified_samples(blobs):
    verified = [598, 3, 77, 250, 10]
    selection = ExpertSelector(verified).select(blobs.model, blobs.source(), n_trusted=5)
    assert selection.indices.tolist() == sorted(verified)
    assert selection.scores[selection.indices].tolist() == [0.0] * 5 and float(selection.scores.sum()) == 595
    mask = torch.zeros(len(blobs.x), dtype=torch.bool)
    mask[verified] = True
    assert ExpertSelector(mask).select(blobs.model, blobs.source(), 5).indices.tolist() == sorted(verified)
    assert ExpertSelector(torch.tensor(verified)).select(blobs.model, blobs.source(), 5).indices.tolist() == sorted(
        verified
    )
    # Fewer asked for: the verified samples with the lowest indices.
    assert ExpertSelector(verified).select(blobs.model, blobs.source(), 2).indices.tolist() == [3, 10]


def test_expert_errors(blobs):
    source = blobs.source()
    with pytest.raises(DataError, match=r"must lie in \[0, 600\).*\[600, 1000\]"):
        ExpertSelector([1, 600, 1000]).select(blobs.model, source, 3)
    with pytest.raises(DataError, match=r"only 2 samples are verified.*n_trusted=2"):
        ExpertSelector([1, 2]).select(blobs.model, source, 3)
    with pytest.raises(DataError, match="mask has 10 entries but the data has 600"):
        ExpertSelector(torch.ones(10, dtype=torch.bool)).select(blobs.model, source, 3)
    with pytest.raises(DataError, match="class\\(es\\) \\[1, 2\\] have fewer"):
        ExpertSelector(torch.nonzero(blobs.noisy == 0).flatten()[:6]).select(blobs.model, source, 6, per_class=True)
    cases: list[tuple[Any, str]] = [
        ([], "no verified sample"),
        ([1, -2], ">= 0"),
        ([1, 1, 2], "1 duplicate"),
        ([0.5, 1.0], "integer sample indices"),
        ([[1, 2]], "1-D"),
        (torch.zeros(4, dtype=torch.bool), "no verified sample"),
    ]
    for bad, message in cases:
        with pytest.raises(DataError, match=message):
            ExpertSelector(bad)
