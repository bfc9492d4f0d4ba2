"""The beta mixture of Arazo et al. (hf_verifix.algorithms.mixture): EM on known mixtures, parity with a port of the
reference code, the monotone posterior, and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hf_verifix.algorithms.mixture import BetaMixture
from hf_verifix.errors import ConfigError, DataError


def two_betas(seed: int, n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Samples of 0.7 Beta(2, 8) + 0.3 Beta(8, 2), and which came from the second (the 'noisy') component."""
    rng = np.random.default_rng(seed)
    second = rng.random(n) < 0.3
    return np.where(second, rng.beta(8, 2, n), rng.beta(2, 8, n)), second


@pytest.mark.parametrize("seed", [0, 1])
def test_em_core_recovers_known_beta_mixture(seed: int) -> None:
    x, _ = two_betas(seed)
    bmm = BetaMixture(normalize=False, max_iters=200).fit(x)
    order = torch.argsort(bmm.means)
    means, weights = bmm.means[order], bmm.weights[order]
    assert means.tolist() == pytest.approx([0.2, 0.8], abs=0.03)
    assert weights.tolist() == pytest.approx([0.7, 0.3], abs=0.05)
    assert bmm.alphas[order].tolist() == pytest.approx([2, 8], rel=0.15)
    assert bmm.betas[order].tolist() == pytest.approx([8, 2], rel=0.15)
    assert bmm.noisy_component == int(order[1])


def test_noisy_component_is_the_larger_mean_even_when_em_swaps_indices() -> None:
    x, second = two_betas(2, n=5000)
    usual = BetaMixture(normalize=False, max_iters=100).fit(x)
    swapped = BetaMixture(normalize=False, max_iters=100, alphas_init=(2, 1), betas_init=(1, 2)).fit(x)
    assert usual.noisy_component == 1 and swapped.noisy_component == 0
    assert swapped.clean_component == 1
    assert float(swapped.means[0]) > 0.7 > 0.3 > float(swapped.means[1])
    # Both name the same samples noisy, whatever the index of the component.
    assert torch.allclose(usual.noisy_posterior(x), swapped.noisy_posterior(x), atol=1e-3)
    accuracy = float(((swapped.noisy_posterior(x) > 0.5).numpy() == second).mean())
    assert accuracy > 0.95


def reference_bmm(losses: np.ndarray, max_iters: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A direct numpy port of the paper's code (BetaMixture1D and its percentile normalisation), for comparison."""
    low, high = np.percentile(losses, 5), np.percentile(losses, 95)
    x = (losses[(losses >= low) & (losses <= high)] - low) / (high - low)
    x = np.clip(x, 1e-4, 1 - 1e-4)
    alphas, betas, weights = np.array([1.0, 2.0]), np.array([2.0, 1.0]), np.array([0.5, 0.5])
    for _ in range(max_iters):
        log_b = np.array(
            [math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b) for a, b in zip(alphas, betas, strict=True)]
        )
        pdf = np.exp((alphas[:, None] - 1) * np.log(x) + (betas[:, None] - 1) * np.log1p(-x) - log_b[:, None])
        r = np.maximum(weights[:, None] * pdf, 1e-12)
        r /= r.sum(axis=0)
        for k in range(2):
            mean = np.sum(r[k] * x) / np.sum(r[k])
            var = np.sum(r[k] * (x - mean) ** 2) / np.sum(r[k])
            alphas[k] = mean * (mean * (1 - mean) / var - 1)
            betas[k] = alphas[k] * (1 - mean) / mean
        weights = r.sum(axis=1) / r.sum()
    return alphas, betas, weights


@pytest.mark.parametrize("seed", [0, 3])
def test_em_matches_a_port_of_the_reference_code(seed: int) -> None:
    rng = np.random.default_rng(seed)
    noisy = rng.random(4000) < 0.3
    losses = np.where(noisy, rng.gamma(9.0, 0.3, 4000), rng.gamma(1.0, 0.15, 4000))
    alphas, betas, weights = reference_bmm(losses)
    bmm = BetaMixture(tol=0).fit(losses)
    assert bmm.n_iter == 10
    assert bmm.alphas.numpy() == pytest.approx(alphas, rel=1e-6)
    assert bmm.betas.numpy() == pytest.approx(betas, rel=1e-6)
    assert bmm.weights.numpy() == pytest.approx(weights, rel=1e-6)


def test_full_pipeline_normalises_raw_losses_and_orders_components() -> None:
    x, noisy = two_betas(4, n=4000)
    losses = 0.2 + 5.0 * x  # raw losses on another scale
    bmm = BetaMixture().fit(losses)  # the paper's settings: 10 iterations, 5/95th percentiles, eps 1e-4
    low, high = bmm.bounds
    assert low == pytest.approx(np.percentile(losses, 5)) and high == pytest.approx(np.percentile(losses, 95))
    assert bmm.n_iter <= 10
    assert float(bmm.means[bmm.noisy_component]) > float(bmm.means[bmm.clean_component])
    p_noisy = bmm.noisy_posterior(losses)
    assert float(((p_noisy > 0.5).numpy() == noisy).mean()) > 0.95
    normalized = bmm.normalized(losses)
    assert float(normalized.min()) == pytest.approx(1e-4) and float(normalized.max()) == pytest.approx(1 - 1e-4)
    # Far outside the fitted range the posterior is defined (clipped) and monotone.
    extremes = bmm.clean_posterior([-1.0, 0.0, 100.0])
    assert extremes[0] == extremes[1] > 0.9 and float(extremes[2]) < 0.01
    clipped = BetaMixture(tails="clip").fit(losses)
    assert float(clipped.means[clipped.noisy_component]) > float(clipped.means[clipped.clean_component])


def test_monotone_posterior_fixes_a_u_shaped_noisy_component() -> None:
    generator = torch.Generator().manual_seed(0)
    losses = torch.cat([torch.rand(90, generator=generator) * 0.2, 2 + torch.rand(10, generator=generator)])
    bmm = BetaMixture().fit(losses)
    noisy = bmm.noisy_component
    assert float(bmm.alphas[noisy]) < 1 and float(bmm.betas[noisy]) < 1  # U-shaped: it claims the smallest losses
    smallest = losses.min().reshape(1)
    assert float(bmm.noisy_posterior(smallest, monotone=False)) > 0.5  # the raw posterior's artefact
    grid = torch.linspace(-0.5, 3.5, 2001, dtype=torch.float64)
    p = bmm.noisy_posterior(grid)
    assert bool((p[1:] >= p[:-1]).all())
    assert float(p[0]) < 0.05 and float(p[-1]) > 0.95
    low, high = bmm.increasing_range()
    inside = (bmm.normalized(grid) >= low) & (bmm.normalized(grid) <= high)
    assert torch.equal(p[inside], bmm.noisy_posterior(grid, monotone=False)[inside])


def test_fit_restarts_from_the_initialisation_and_handles_tiny_inputs() -> None:
    x, _ = two_betas(5, n=500)
    bmm = BetaMixture()
    first = bmm.fit(x).alphas
    assert torch.equal(bmm.fit(x).alphas, first)  # no warm start from the previous fit
    tiny = BetaMixture().fit([0.1, 2.0])  # both outside the 5-95th percentiles: fitted clipped instead of dropped
    low_p, high_p = tiny.noisy_posterior([0.1, 2.0]).tolist()
    assert low_p < 0.5 < high_p


def test_mixture_handles_constant_losses() -> None:
    bmm = BetaMixture().fit(torch.full((50,), 0.3))
    assert torch.isfinite(torch.cat([bmm.alphas, bmm.betas, bmm.weights])).all()
    assert torch.isfinite(bmm.clean_posterior(torch.full((3,), 0.3))).all()


@pytest.mark.parametrize(
    ("losses", "kwargs", "error", "match"),
    [
        ([0.1, float("nan"), 0.3], {}, DataError, "finite"),
        ([[0.1, 0.2], [0.3, 0.4]], {}, DataError, "1-D"),
        ([0.5, 1.5], {"normalize": False}, DataError, r"\[0, 1\]"),
        ([0.5], {}, DataError, "at least 2"),
        (["a", "b"], {}, DataError, "numbers"),
        ([True, False], {}, DataError, "real numbers"),
    ],
)
def test_mixture_rejects_bad_losses(losses: object, kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        BetaMixture(**kwargs).fit(losses)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_iters": 0}, "max_iters"),
        ({"tol": -1.0}, "tol"),
        ({"eps": 0.6}, "eps"),
        ({"percentiles": (95, 5)}, "percentiles"),
        ({"tails": "cut"}, "tails"),
        ({"alphas_init": (1.0, -2.0)}, "alphas_init"),
        ({"weights_init": (0.0, 0.0)}, "weights_init"),
    ],
)
def test_mixture_rejects_bad_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BetaMixture(**kwargs)  # type: ignore[arg-type]
