"""What every selector shares (hf_verifix.selection.base): the registry, exact per-class counts, and the checks of
n_trusted, budgets, labels and options; on 2-D Gaussian blobs with 25% of the labels flipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from testing_utils import N_TRUSTED, NOISE, Blobs
from torch import nn
from torch.utils.data import TensorDataset

import hf_verifix.selection.confident
import hf_verifix.selection.curvature
import hf_verifix.selection.simple
from hf_verifix.data.source import SampleSource
from hf_verifix.errors import ConfigError, DataError
from hf_verifix.selection.base import get_selector, list_selectors
from hf_verifix.selection.bmm import BMMSelector
from hf_verifix.selection.confident import ConfidentSelector
from hf_verifix.selection.coreset import CoresetSelector
from hf_verifix.selection.curvature import CurvatureSelector
from hf_verifix.selection.simple import ExpertSelector, RandomSelector

# These tensors are tiny: one thread is fastest, and several slow down badly on a busy CPU (conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def blobs(session_blobs: Blobs) -> Blobs:
    """conftest.py's ``Blobs``, trained once for every test_selection_* file that uses it."""
    return session_blobs


def test_the_synthetic_noise_is_what_the_precisions_are_measured_against(blobs):
    assert float(blobs.is_clean.float().mean()) == pytest.approx(1 - NOISE)
    assert bool((blobs.noisy[~blobs.is_clean] != blobs.clean[~blobs.is_clean]).all())


def test_all_four_selectors_are_registered():
    assert {"curvature", "random", "expert", "confident"} <= set(list_selectors())
    curvature = get_selector("curvature", n=3, h=1e-2)
    assert isinstance(curvature, CurvatureSelector) and (curvature.n, curvature.h) == (3, 1e-2)
    assert isinstance(get_selector("random"), RandomSelector)
    assert isinstance(get_selector("expert", indices=[0, 1]), ExpertSelector)
    assert isinstance(get_selector("confident"), ConfidentSelector)


def test_selectors_are_registered() -> None:
    assert {"bmm", "coreset"} <= set(list_selectors())
    assert isinstance(get_selector("bmm"), BMMSelector)
    coreset = get_selector("coreset", gradient="logits")
    assert isinstance(coreset, CoresetSelector) and coreset.gradient == "logits"


def test_modules_register_on_import():
    for module in (hf_verifix.selection.curvature, hf_verifix.selection.confident, hf_verifix.selection.simple):
        assert module.__all__


@pytest.mark.parametrize("name", ["curvature", "random", "confident"])
def test_per_class_picks_exact_counts_of_each_noisy_label(blobs, name):
    if name == "confident":
        pytest.importorskip("cleanlab")
    selection = get_selector(name).select(blobs.model, blobs.source(), N_TRUSTED + 1, per_class=True)
    assert selection.class_counts(3).tolist() == [51, 50, 50]
    assert selection.indices.unique().numel() == N_TRUSTED + 1
    if name != "random":
        # Within each label, the picked samples are that label's lowest scores.
        for c in range(3):
            members = blobs.noisy == c
            picked = torch.zeros_like(members)
            picked[selection.indices] = True
            assert float(selection.scores[picked & members].max()) <= float(selection.scores[~picked & members].min())
    assert all(p.grad is None for p in blobs.model.parameters())


@pytest.mark.parametrize("selector", [CurvatureSelector(n=1), RandomSelector(), ExpertSelector([0, 1])])
@pytest.mark.parametrize("n_trusted", [0, -1, 1.5, 601])
def test_bad_n_trusted_is_a_data_error(blobs, selector, n_trusted):
    with pytest.raises(DataError, match="n_trusted"):
        selector.select(blobs.model, blobs.source(), n_trusted)


@pytest.mark.parametrize("name", ["bmm", "coreset"])
def test_selectors_reject_bad_budgets(name: str) -> None:
    source = SampleSource(TensorDataset(torch.randn(10, 2), torch.tensor([0] * 8 + [1] * 2)))
    model = nn.Linear(2, 2)
    with pytest.raises(DataError, match="larger than the data"):
        get_selector(name).select(model, source, 11)
    with pytest.raises(DataError, match="per_class"):
        get_selector(name).select(model, source, 6, per_class=True)
    bad_labels = SampleSource(TensorDataset(torch.randn(4, 2), torch.tensor([0, 1, 2, 5])))
    with pytest.raises(DataError, match="labels must be in"):
        get_selector(name).select(model, bad_labels, 2)


@pytest.mark.parametrize("name", ["loss", "curvature", "bmm", "coreset", "confident", "random", "expert"])
@pytest.mark.parametrize("n_trusted", [-1, 0, 2.0, True, "3"])
def test_every_selector_refuses_an_n_trusted_that_is_not_a_positive_integer(name: str, n_trusted: object) -> None:
    source = SampleSource(TensorDataset(torch.randn(10, 2), torch.tensor([0, 1] * 5)))
    selector = get_selector(name, indices=range(10)) if name == "expert" else get_selector(name)
    with pytest.raises(DataError, match=r"n_trusted must be an integer >= 1, got .*; the papers use 1000"):
        selector.select(nn.Linear(2, 2), source, n_trusted)
    assert selector.select(nn.Linear(2, 2), source, np.int64(4)).indices.numel() == 4  # NumPy integers are fine


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("coreset", {"gradient": "full"}, "gradient"),
        ("coreset", {"oversample": 0.5}, "oversample"),
        ("coreset", {"block_size": 0}, "block_size"),
        ("bmm", {"max_iters": 0}, "max_iters"),
        ("bmm", {"tails": "cut"}, "tails"),
    ],
)
def test_selectors_reject_bad_options(name: str, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        get_selector(name, **kwargs)


@pytest.mark.parametrize("name", ["loss", "random", "confident"])
def test_a_selector_takes_plain_data_like_cleanlabs_functions(name: str) -> None:
    import datasets as hf_datasets

    from hf_verifix.data.source import SampleSource
    from hf_verifix.selection import get_selector

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 4, generator=generator), torch.arange(30) % 3
    model = torch.nn.Linear(4, 3)
    expected = get_selector(name).select(model, SampleSource(TensorDataset(x, y)), 9, per_class=True)
    table = hf_datasets.Dataset.from_dict({"pixel_values": x.numpy(), "labels": y.numpy()}).with_format("torch")
    for plain in (TensorDataset(x, y), table):
        got = get_selector(name).select(model, plain, 9, per_class=True)
        assert torch.equal(got.indices, expected.indices), type(plain).__name__
