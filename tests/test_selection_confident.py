"""The confident-learning selector (hf_verifix.selection.confident, with cleanlab) on 2-D Gaussian blobs with 25%
of the labels flipped."""

from __future__ import annotations

import sys

import pytest
import torch
from testing_utils import N_TRUSTED, Blobs

from hf_verifix.errors import ConfigError, DataError
from hf_verifix.selection.confident import ConfidentSelector, confident_scores, model_probabilities

# These tensors are tiny: one thread is fastest, and several slow down badly on a busy CPU (conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def blobs(session_blobs: Blobs) -> Blobs:
    """conftest.py's ``Blobs``, trained once for every test_selection_* file that uses it."""
    return session_blobs


def test_confident_picks_mostly_clean_samples_and_flags_the_flipped_ones(blobs):
    pytest.importorskip("cleanlab")
    selector = ConfidentSelector()
    selection = selector.select(blobs.model, blobs.source(), N_TRUSTED)
    assert blobs.precision(selection) >= 0.9  # measured 0.987 (0.987..1.0 over seeds 0-3)
    assert selector.issues is not None
    flagged = selector.issues
    assert float((~blobs.is_clean[flagged]).float().mean()) >= 0.8  # flags are mostly flipped labels
    assert not bool(flagged[selection.indices].any())
    # Passing the same probabilities explicitly gives the same selection.
    probs, labels = model_probabilities(blobs.model, blobs.source())
    explicit = ConfidentSelector(pred_probs=probs.numpy()).select(blobs.model, blobs.source(), N_TRUSTED)
    assert torch.equal(explicit.indices, selection.indices) and torch.equal(labels, blobs.noisy)


def test_confident_scores_rank_unflagged_samples_first():
    probs = torch.tensor([[0.99, 0.01], [0.6, 0.4], [0.3, 0.7]], dtype=torch.float64)
    scores = confident_scores(torch.tensor([0, 0, 1]), probs, torch.tensor([True, False, False]))
    assert scores.tolist() == pytest.approx([2 - 0.99, -0.6, -0.7])
    assert torch.argsort(scores).tolist() == [2, 1, 0]


def test_confident_errors(blobs):
    pytest.importorskip("cleanlab")
    probs = torch.full((600, 3), 1 / 3)
    with pytest.raises(DataError, match="pred_probs has 599 rows but the data has 600"):
        ConfidentSelector(pred_probs=probs[:599]).select(blobs.model, blobs.source(), 10)
    with pytest.raises(DataError, match=r"labels must be in \[0, 2\)"):
        ConfidentSelector(pred_probs=torch.full((600, 2), 0.5)).select(blobs.model, blobs.source(), 10)
    for bad, message in [
        (probs[0], "shape \\(num_samples, num_classes\\)"),
        (probs * 4, "must lie in \\[0, 1\\]"),
        (probs * 0.5, "row 0 sums to 0.5"),
        (probs[:, :1], "at least 2 classes"),
    ]:
        with pytest.raises(ConfigError, match=message):
            ConfidentSelector(pred_probs=bad)
    with pytest.raises(ConfigError, match="filter_by must be one of"):
        ConfidentSelector(filter_by="nope")
    with pytest.raises(ConfigError, match="frac_noise"):
        ConfidentSelector(frac_noise=0)


def test_confident_without_cleanlab_says_how_to_install_it(blobs, monkeypatch):
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    selector = ConfidentSelector()  # constructing needs no cleanlab
    with pytest.raises(ImportError, match=r"pip install hf_verifix\[cleanlab\]"):
        selector.select(blobs.model, blobs.source(), 10)
