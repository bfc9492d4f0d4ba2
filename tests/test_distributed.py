"""Two real CPU processes under `accelerate launch` compute exactly what one process computes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from testing_utils import launch_env, run_launched

WORKER = Path(__file__).with_name("distributed_worker.py")
pytestmark = pytest.mark.distributed


def run_worker(output: Path, processes: int) -> None:
    if processes == 1:
        command = [sys.executable, str(WORKER), str(output)]
        done = subprocess.run(command, env=launch_env(), capture_output=True, text=True, timeout=600)
    else:
        done = run_launched([str(WORKER), str(output)], processes)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    single, double = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    run_worker(single, 1)
    run_worker(double, 2)
    load = lambda path: torch.load(path, weights_only=False)  # noqa: E731 - files this test just wrote
    return load(single / "rank0.pt"), load(double / "rank0.pt"), load(double / "rank1.pt")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b).clamp_min(1e-300))


def test_two_processes_really_ran(results):
    one, rank0, rank1 = results
    assert (one["world"], rank0["world"], rank1["world"]) == (1, 2, 2)


def test_selection_scores_and_trusted_set_equal_single_process(results):
    one, rank0, rank1 = results
    for distributed in (rank0, rank1):
        assert torch.equal(distributed["trusted"], one["trusted"])
        torch.testing.assert_close(distributed["loss_scores"], one["loss_scores"], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(distributed["curvature_scores"], one["curvature_scores"], rtol=1e-6, atol=1e-9)
        assert torch.equal(distributed["curvature_trusted"], one["curvature_trusted"])
        for name in ("random", "expert"):  # labels read from the data, each process reading its own shard
            assert torch.equal(distributed[name][0], one[name][0]) and torch.equal(distributed[name][1], one[name][1])
    given = torch.bincount(one["labels"][[1, 2, 3, 5, 8, 13, 21, 34]], minlength=3).tolist()
    assert one["given_trusted_counts"] == rank0["given_trusted_counts"] == rank1["given_trusted_counts"] == given
    assert torch.equal(one["random"][1], one["labels"]) and torch.equal(one["expert"][1], one["labels"])


def projection_tolerance(alpha: float, rows: int, dim: int, fan_in_before: int) -> float:
    """Bound on ‖Ŵ₁ − Ŵ₂‖_F / ‖W‖ between two float64 runs that sum the same rows in another order.

    Ŵ = W·f(Ĝ) with f(Ĝ) = αĜ(I + (α−1)Ĝ)⁻¹ = α/(α−1)·(I − M⁻¹), M = I + (α−1)Ĝ ⪰ I, so df = α·M⁻¹ dĜ M⁻¹ and
    ‖dŴ‖_F ≤ ‖W‖·α·‖dĜ‖_F. With Ĝ = G / tr G, ‖dĜ‖_F ≤ 2‖dG‖_F / tr G. Each run's sum of ``rows`` products has
    |dG_ij| ≤ rows·u·Σ|a_i a_j|, so ‖dG‖_F ≤ rows·u·tr G per run; the rows themselves (outputs of the float64 layers
    before, ``fan_in_before`` products per value) differ by at most 2·fan_in_before·u relatively, which changes G by
    twice that. eigh is backward stable (error ≤ dim·u·‖Ĝ‖ per run). Two runs, u = 2⁻⁵³; the bound is first-order,
    so it is doubled.
    """
    u = torch.finfo(torch.float64).eps / 2
    return 2 * alpha * 2 * (2 * rows + 4 * fan_in_before + dim) * u


def test_statistics_and_projected_weights_equal_single_process(results):
    one, rank0, rank1 = results
    assert rank0["rows"] == one["rows"] == rank1["rows"]
    # Products each value of a layer's input went through: '3' after the 3×3 conv '0' (9) and BatchNorm/GELU (2);
    # '7' after that and the grouped 3×3 conv '3' (3·9), GELU and the 2×2 average pool (4).
    fan_in_before = {"0": 0, "3": 11, "7": 11 + 27 + 1 + 4}
    for name, weight in one["projections"].items():
        assert weight.dtype == torch.float64, name
        dim = int(weight[0].numel())
        bound = projection_tolerance(1e3, one["rows"][name], dim, fan_in_before[name])
        error = float(
            torch.linalg.norm(rank0["projections"][name] - weight) / torch.linalg.norm(one["originals"][name])
        )
        assert error <= bound, (name, error, bound)
        assert torch.equal(rank0["projections"][name], rank1["projections"][name]), name  # identical on every rank


def test_alpha_search_and_corrected_model_equal_single_process(results):
    one, rank0, rank1 = results
    assert rank0["curve"] == one["curve"] == rank1["curve"]
    assert rank0["baseline"] == one["baseline"] and rank0["best_alpha"] == one["best_alpha"]
    for key, value in one["state"].items():
        if value.is_floating_point():
            assert relative_error(rank0["state"][key], value) <= 1e-6, key
        assert torch.equal(rank0["state"][key], rank1["state"][key]), key


def test_same_seed_gives_bit_identical_results_across_two_runs(results, tmp_path):
    one, _, _ = results
    run_worker(tmp_path, 1)  # a second, separate single-process run
    again = torch.load(tmp_path / "rank0.pt", weights_only=False)
    assert torch.equal(again["trusted"], one["trusted"])
    assert torch.equal(again["curvature_scores"], one["curvature_scores"])
    assert again["curve"] == one["curve"] and again["best_alpha"] == one["best_alpha"]
    for key, value in one["state"].items():
        assert torch.equal(again["state"][key], value), key
