"""The curvature, random, expert and confident selectors on 2-D Gaussian blobs with 25% of the labels flipped."""

from __future__ import annotations

import copy
import sys
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import hf_verifix.selection.confident
import hf_verifix.selection.curvature
import hf_verifix.selection.simple
from hf_verifix.data.source import Batch, SampleSource
from hf_verifix.errors import ConfigError, DataError
from hf_verifix.noise import symmetric_noise
from hf_verifix.selection.base import Selection, get_selector, list_selectors
from hf_verifix.selection.confident import ConfidentSelector, confident_scores, model_probabilities
from hf_verifix.selection.curvature import CurvatureSelector, _rademacher, per_sample_curvature
from hf_verifix.selection.simple import ExpertSelector, RandomSelector

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
        end = len(self.x) if size is None else size
        y = (self.noisy if labels is None else labels)[:end]
        return SampleSource(TensorDataset(self.x[:end], y), batch_size=batch_size)

    def precision(self, selection: Selection) -> float:
        return float(self.is_clean[selection.indices].float().mean())


# These tensors are tiny: one thread is fastest, and several slow down badly on a busy CPU (conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def blobs(one_thread) -> Blobs:
    return Blobs()


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


# --- curvature ---------------------------------------------------------------------------------------------------


def test_curvature_picks_mostly_clean_samples(blobs):
    selection = CurvatureSelector().select(blobs.model, blobs.source(), N_TRUSTED)
    assert selection.indices.numel() == N_TRUSTED
    assert bool((selection.indices[1:] > selection.indices[:-1]).all())
    assert selection.scores.shape == (len(blobs.x),) and torch.equal(selection.labels, blobs.noisy)
    assert blobs.precision(selection) >= 0.9  # measured 0.99 (0.96..0.99 over seeds 0-5); random gives 0.75
    # Flipped samples sit on a sharper loss than clean ones, on average.
    assert selection.scores[~blobs.is_clean].median() > 3 * selection.scores[blobs.is_clean].median()


def _input_gradient(model: nn.Module, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    z = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(z[None]), label[None]), z)
    return grad


def _equation_5(model: nn.Module, x: torch.Tensor, label: torch.Tensor, directions: torch.Tensor, h: float):
    """Equation 5 for one sample, one direction at a time: the differences and the largest gradient norm."""
    base = _input_gradient(model, x, label)
    differences = torch.stack([_input_gradient(model, x + h * v, label) - base for v in directions])
    largest = max(float(base.norm()), *(float((d + base).norm()) for d in differences))
    return differences, largest


def test_curvature_is_equation_5_exactly(blobs):
    """The score is (1/n) Σ_j ‖∇L(x + h v_j) − ∇L(x)‖², recomputed here one sample and one direction at a time.

    Both sides are float64. Each gradient entry is a sum of products through the 2→32→32→3 MLP (2·32 + 32·32 + 32·3
    multiply-adds forward, as many back), so either computation of a gradient is off by at most ``c·u·‖∇L‖`` with
    c = 4·(64 + 1024 + 96) and u = 2⁻⁵³; a difference of two gradients by twice that (δ), and its squared norm by
    2·‖d‖·δ + δ².
    """
    model = copy.deepcopy(blobs.model).double()
    x, y = blobs.x[:6].double(), blobs.noisy[:6]
    n, h = 4, 1e-3
    scores, labels, k = per_sample_curvature(model, SampleSource(TensorDataset(x, y), batch_size=4), n=n, h=h)
    assert k == 3 and torch.equal(labels, y) and scores.dtype == torch.float64
    u, c = torch.finfo(torch.float64).eps / 2, 4 * (64 + 1024 + 96)
    for i in range(len(x)):
        batch = Batch(x[i : i + 1], y[i : i + 1], torch.tensor([i]))
        v = _rademacher(batch, n, 0, torch.Generator(), torch.device("cpu"))[0].double()
        assert set(v.unique().tolist()) <= {-1.0, 1.0}
        differences, largest = _equation_5(model, x[i], y[i], v, h)
        squared = differences.pow(2).sum(dim=1)
        delta = 2 * c * u * largest
        bound = float((2 * squared.sqrt() * delta + delta**2).mean())
        assert abs(float(scores[i]) - float(squared.mean())) <= bound, (i, float(scores[i]), float(squared.mean()))
        # The base gradient matters: without subtracting it the score would be far off.
        assert float(scores[i]) < 0.5 * float(((differences + _input_gradient(model, x[i], y[i])) ** 2).sum(1).mean())


def test_curvature_of_a_sample_does_not_depend_on_its_batch(blobs):
    one = per_sample_curvature(blobs.model, blobs.source(batch_size=1, size=40))[0]
    sixteen = per_sample_curvature(blobs.model, blobs.source(batch_size=16, size=40))[0]
    torch.testing.assert_close(one, sixteen, rtol=1e-2, atol=1e-4 * float(one.max()))


def test_curvature_is_deterministic_per_seed(blobs):
    source = blobs.source(size=60)
    first = per_sample_curvature(blobs.model, source, n=4, seed=3)[0]
    assert torch.equal(first, per_sample_curvature(blobs.model, source, n=4, seed=3)[0])
    assert not torch.allclose(first, per_sample_curvature(blobs.model, source, n=4, seed=4)[0])


def test_curvature_uses_the_labels_the_source_gives(blobs):
    size, sample = 30, 5
    relabelled = blobs.noisy.clone()
    relabelled[sample] = (relabelled[sample] + 1) % 3
    before = per_sample_curvature(blobs.model, blobs.source(size=size), n=4)[0]
    after = per_sample_curvature(blobs.model, blobs.source(size=size, labels=relabelled), n=4)[0]
    assert abs(float(after[sample] - before[sample])) > 0.1 * float(before[sample])
    others = torch.arange(size) != sample
    torch.testing.assert_close(after[others], before[others])


def test_curvature_leaves_no_parameter_gradients_and_restores_the_mode(blobs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Dropout(0.5), nn.GELU(), nn.Linear(16, 3)).train()
    source = blobs.source(size=50)
    first = CurvatureSelector(n=3).select(model, source, 10)
    # Eval mode: dropout is off, so the same seed gives the same scores; the training mode comes back afterwards.
    assert torch.equal(first.scores, CurvatureSelector(n=3).select(model, source, 10).scores)
    assert model.training and model[1].training
    assert all(p.grad is None for p in model.parameters())


def test_curvature_runs_under_no_grad_and_inference_mode():
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2))
    source = SampleSource(TensorDataset(torch.randn(5, 2), torch.tensor([0, 1, 0, 1, 0])))
    with torch.no_grad():
        scores = per_sample_curvature(model, source, n=2)[0]
    assert bool((scores > 0).all())
    with torch.inference_mode():
        assert torch.equal(per_sample_curvature(model, source, n=2)[0], scores)


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 0}, {"n": -3}, {"n": 2.5}, {"n": True}, {"h": 0}, {"h": -1e-3}, {"h": float("nan")}, {"h": "0.001"}],
)
def test_curvature_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ConfigError, match=r"n \(the number|h \(the finite"):
        CurvatureSelector(**kwargs)


def test_curvature_rejects_integer_inputs_and_bad_labels():
    model = nn.Sequential(nn.Linear(2, 3))
    with pytest.raises(DataError, match="floating point"):
        integers = TensorDataset(torch.ones(4, 2, dtype=torch.long), torch.zeros(4, dtype=torch.long))
        per_sample_curvature(model, SampleSource(integers))
    with pytest.raises(DataError, match=r"labels must be in \[0, 3\)"):
        per_sample_curvature(model, SampleSource(TensorDataset(torch.randn(4, 2), torch.tensor([0, 1, 5, 2]))))


def test_curvature_rejects_a_model_not_differentiable_in_its_inputs():
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.detach())

    source = SampleSource(TensorDataset(torch.randn(4, 2), torch.tensor([0, 1, 0, 1])))
    with pytest.raises(DataError, match="does not depend differentiably"):
        per_sample_curvature(Detached(), source, n=1)


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


# --- confident ---------------------------------------------------------------------------------------------------


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


# --- shared behaviour --------------------------------------------------------------------------------------------


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


def test_modules_register_on_import():
    for module in (hf_verifix.selection.curvature, hf_verifix.selection.confident, hf_verifix.selection.simple):
        assert module.__all__
