"""The curvature selector (hf_verifix.selection.curvature) on 2-D Gaussian blobs with 25% of the labels flipped,
and its score against Verifix's Equation 5 recomputed one sample and one direction at a time."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from testing_utils import N_TRUSTED, Blobs
from torch import nn
from torch.utils.data import TensorDataset

from hf_verifix.data.source import Batch, SampleSource
from hf_verifix.errors import ConfigError, DataError
from hf_verifix.selection.curvature import CurvatureSelector, _rademacher, per_sample_curvature

# These tensors are tiny: one thread is fastest, and several slow down badly on a busy CPU (conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def blobs(session_blobs: Blobs) -> Blobs:
    """conftest.py's ``Blobs``, trained once for every test_selection_* file that uses it."""
    return session_blobs


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
