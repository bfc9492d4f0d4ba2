"""Greedy facility location (hf_verifix.algorithms.facility_location): lazy greedy equals naive greedy, the objective
against brute force, on-demand similarities, and its errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from hf_verifix.algorithms.facility_location import Similarity, facility_location
from hf_verifix.errors import ConfigError, DataError


def brute_objective(features: torch.Tensor, selected: list[int], d_max: float) -> float:
    sim = d_max - torch.cdist(features.double(), features.double())
    return float(sim[:, selected].max(dim=1).values.clamp(min=0).sum()) if selected else 0.0


@pytest.mark.parametrize("seed", range(6))
def test_lazy_greedy_equals_naive_greedy(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    n = 25 + 12 * seed
    x = torch.randn(n, 1 + seed % 4, generator=generator)
    x[: n // 3] *= 0.2  # a dense cluster plus a spread-out rest
    k = 3 + 2 * seed
    variants: list[dict[str, Any]] = [{}, {"max_dense": 0, "block_size": 7}]
    for options in variants:  # dense matrix, then columns on demand in blocks of 7
        lazy = facility_location(x, k, **options)
        naive = facility_location(x, k, lazy=False, **options)
        assert lazy.indices.tolist() == naive.indices.tolist()
        assert lazy.objective == naive.objective
        assert torch.equal(lazy.weights, naive.weights)
    sim = (torch.rand(n, n, generator=generator) + torch.eye(n)).double()  # not symmetric: columns matter
    lazy, naive = facility_location(sim, k, precomputed=True), facility_location(sim, k, precomputed=True, lazy=False)
    assert lazy.indices.tolist() == naive.indices.tolist() and lazy.objective == naive.objective


def test_objective_is_monotone_and_matches_brute_force() -> None:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(80, 3, generator=generator)
    d_max = float(torch.cdist(x.double(), x.double()).max()) * 1.5  # any constant ≥ the largest distance
    full = facility_location(x, 20, d_max=d_max)
    objectives = []
    for k in range(21):
        result = facility_location(x, k, d_max=d_max)
        assert result.indices.tolist() == full.indices[:k].tolist()  # greedy solutions are nested
        assert result.objective == pytest.approx(brute_objective(x, result.indices.tolist(), d_max), rel=1e-6)
        assert int(result.weights.sum()) == (80 if k else 0)
        objectives.append(result.objective)
    gains = np.diff(objectives)
    assert (gains >= 0).all()
    assert (np.diff(gains) <= 1e-9).all()  # submodular: greedy gains never grow
    # Cluster sizes: each point goes to its nearest medoid.
    nearest = torch.cdist(x, x[full.indices]).argmin(dim=1)
    assert torch.equal(full.weights, torch.bincount(nearest, minlength=20))


def test_outer_product_pair_equals_explicit_features_and_on_demand_equals_dense() -> None:
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(60, 3, generator=generator).double(), torch.randn(60, 5, generator=generator).double()
    explicit = (a[:, :, None] * b[:, None, :]).reshape(60, 15)
    pair, flat = facility_location((a, b), 12), facility_location(explicit, 12)
    assert pair.indices.tolist() == flat.indices.tolist()
    assert pair.objective == pytest.approx(flat.objective, rel=1e-6)
    on_demand = facility_location((a, b), 12, max_dense=0, block_size=16)
    assert on_demand.indices.tolist() == pair.indices.tolist()
    assert on_demand.objective == pytest.approx(pair.objective, rel=1e-6)  # the dense matrix is float32
    assert Similarity((a, b), False, None, 16, 0).matrix is None  # nothing n × n is kept


def test_facility_location_k_zero_and_all() -> None:
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    empty = facility_location(x, 0)
    assert empty.indices.numel() == 0 and empty.weights.numel() == 0 and empty.objective == 0.0
    every = facility_location(x, 5)
    assert sorted(every.indices.tolist()) == list(range(5)) and every.weights.tolist() == [1] * 5


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((torch.randn(4, 2), 5), {}, ConfigError, "between 0 and"),
        ((torch.randn(4, 2), -1), {}, ConfigError, "between 0 and"),
        ((torch.randn(4, 2), 1.5), {}, ConfigError, "integer"),
        ((torch.randn(4, 2), 2), {"d_max": 1e-6}, ConfigError, "d_max"),
        ((torch.randn(4, 2), 2), {"block_size": 0}, ConfigError, "block_size"),
        ((torch.randn(4), 2), {}, DataError, r"\(n, d\)"),
        ((torch.tensor([[0.0], [float("nan")]]), 1), {}, DataError, "NaN"),
        ((torch.randn(3, 4), 1), {"precomputed": True}, DataError, "square"),
        ((-torch.ones(3, 3), 1), {"precomputed": True}, DataError, "non-negative"),
        (((torch.randn(3, 2), torch.randn(4, 2)), 1), {}, DataError, "as many rows"),
    ],
)
def test_facility_location_errors(args: tuple[Any, Any], kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        facility_location(*args, **kwargs)
