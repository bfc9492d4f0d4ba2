"""The Cholesky solve per α (hf_verifix.projection.solve) gives the eigenvector projection's weights, and the
corrector's choice between the two never changes what is written.

Both compute Ŵ = α·W·Ĝ(I + (α−1)Ĝ)⁻¹ (‖Ĝ‖ ≤ 1). The solve is backward stable with A = I + (α−1)Ĝ perturbed by
O(d·u)‖A‖, so it errs by at most about κ(A)·d·u ≤ max(α, 1/α)·d·u relative; the eigendecomposition is backward
stable too, and λ(σ̃) has slope at most max(α, 1/α), so its error has the same bound. With the √d between spectral
and Frobenius norms, the two agree within 4·d²·max(α, 1/α)·u·‖W‖_F: a bound from the math, on any processor.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from hf_verifix import ProjectionCorrector
from hf_verifix.fitting import ready_projections
from hf_verifix.projection.solve import SolvedProjection, Spectra, eigh_pays
from hf_verifix.projection.spectrum import decompose
from hf_verifix.projection.update import LayerProjection

U = torch.finfo(torch.float64).eps / 2


def _bound(weight: torch.Tensor, dim: int, alpha: float) -> float:
    return 4 * dim**2 * max(alpha, 1 / alpha) * U * float(weight.double().norm())


@pytest.mark.parametrize("alpha", [0.25, 1.0, 10.0, 3e4, 1e6])
@pytest.mark.parametrize(("groups", "rows"), [(1, 200), (1, 12), (2, 40)])  # full rank, rank 12 of 24, grouped
def test_the_solve_gives_the_eigenvector_projection(alpha: float, groups: int, rows: int) -> None:
    generator = torch.Generator().manual_seed(rows + groups)
    dim = 24
    samples = torch.randn(groups, rows, dim, dtype=torch.float64, generator=generator) * torch.linspace(0.01, 3, dim)
    gram = samples.mT @ samples
    weight = torch.randn(6 * groups, dim, generator=generator)
    solved = SolvedProjection(weight, gram).weight(alpha)
    by_eigh = LayerProjection(weight, decompose(gram)).weight(alpha)
    assert solved.shape == weight.shape and solved.dtype == weight.dtype
    assert float((solved.double() - by_eigh.double()).norm()) <= _bound(weight, dim, alpha)
    other = LayerProjection(weight, decompose(gram)).weight(alpha * 4 + 1)  # the test can fail: another α differs
    assert float((solved.double() - other.double()).norm()) > _bound(weight, dim, alpha)


def test_the_spectrum_comes_from_the_eigenvalues_alone() -> None:
    samples = torch.randn(30, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gram = (samples.T @ samples)[None]
    solved = SolvedProjection(torch.randn(3, 8), gram)
    expected = decompose(gram).normalized()
    torch.testing.assert_close(solved.normalized, expected, rtol=0, atol=8 * 8 * U)
    assert dict(Spectra({"fc": solved})).keys() == {"fc"}


def test_a_non_finite_gram_gives_nan_weights_not_an_exception() -> None:
    gram = torch.full((1, 3, 3), float("nan"), dtype=torch.float64)
    assert bool(SolvedProjection(torch.ones(2, 3), gram).weight(10.0).isnan().all())


def test_eigh_pays_once_enough_alphas_are_asked_for() -> None:
    verdicts = [eigh_pays(4608, 512, n) for n in range(1, 40)]
    assert verdicts == sorted(verdicts) and not verdicts[0] and verdicts[-1]  # monotone: solve, then decompose
    assert eigh_pays(768, 3072, 2)  # few inputs, many outputs: the products dominate, decompose at once


def test_auto_decomposes_a_layer_once_its_solves_would_cost_more() -> None:
    samples = torch.randn(40, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    solved = SolvedProjection(torch.randn(4, 6), (samples.T @ samples)[None])
    threshold = next(n for n in range(1, 100) if eigh_pays(6, 4, n))
    assert ready_projections({"fc": solved}, threshold - 1, "auto")["fc"] is solved
    for _ in range(threshold - 1):
        solved.weight(10.0)  # the solves made so far count
    assert ready_projections({"fc": solved}, 1, "auto")["fc"].method == "eigh"
    assert ready_projections({"fc": solved}, 100, "cholesky")["fc"] is solved


def _data() -> TensorDataset:
    generator = torch.Generator().manual_seed(2)
    return TensorDataset(torch.randn(64, 12, generator=generator), torch.randint(0, 3, (64,), generator=generator))


@pytest.mark.parametrize(
    ("solver", "grid", "method"),
    [
        ("auto", [1e3, 1e4], "cholesky"),  # 2 solves cost less than decomposing either layer
        ("auto", [10.0 * 2**i for i in range(16)], "eigh"),  # 16 do not (eigh_pays: from 4 and 12 α)
        ("eigh", [1e3], "eigh"),
        ("cholesky", [10.0 * 2**i for i in range(16)], "cholesky"),
    ],
)
def test_search_alpha_uses_the_cheaper_method_and_writes_what_apply_writes(solver, grid, method) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    corrector = ProjectionCorrector(model, n_trusted=8, progress=False, solver=solver).fit(_data())
    # Labelled with the predictions of the first α: that α scores 100 %, the uncorrected model less (asserted).
    inputs = _data().tensors[0]
    labels = corrector.evaluate(_data(), alpha=grid[0]).predictions.clone()
    assert corrector.evaluate(_data()).predictions.tolist() != labels.tolist()
    found = corrector.search_alpha(TensorDataset(inputs, labels), alphas=grid)
    assert {p.method for p in corrector.projections.values()} == {method}
    assert found.best_alpha is not None and found.best_accuracy == 1.0
    kept = {name: model.get_submodule(name).weight.detach().clone() for name in corrector.projections}
    corrector.revert()
    corrector.apply(found.best_alpha)  # the search kept the best α's weights; recomputing gives the same bits
    for name, weight in kept.items():
        assert torch.equal(model.get_submodule(name).weight, weight), name


def test_the_solvers_correct_a_model_alike() -> None:
    weights = {}
    for solver in ("cholesky", "eigh"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        ProjectionCorrector(model, n_trusted=32, progress=False, solver=solver).fit(_data()).apply(3e4)
        weights[solver] = [model[0].weight.detach().double(), model[2].weight.detach().double()]
    for solved, by_eigh in zip(weights["cholesky"], weights["eigh"], strict=True):
        dim = solved.shape[1]
        # float32 weights: each result is also rounded once to float32 (u₃₂ relative per entry)
        bound = _bound(by_eigh, dim, 3e4) + 2 * torch.finfo(torch.float32).eps * float(by_eigh.norm())
        assert float((solved - by_eigh).norm()) <= bound


@pytest.mark.parametrize("alpha", [1e-9, 1e9])
def test_an_ill_conditioned_alpha_is_taken_from_the_eigenvectors(alpha: float) -> None:
    samples = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))  # rank 3 of 5
    gram, weight = (samples.T @ samples)[None], torch.randn(2, 5, generator=torch.Generator().manual_seed(5))
    solved = SolvedProjection(weight, gram)
    assert torch.equal(solved.weight(alpha), LayerProjection(weight, decompose(gram)).weight(alpha))
    assert solved.solves == 0 and solved.has_eigendecomposition
    assert ready_projections({"fc": solved}, 1, "auto")["fc"].method == "eigh"  # made once, then kept
