"""The projection's math: parity with an explicit SVD of the materialised representation matrix, and invariants."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from testing_utils import small_conv_net, tiny_vit
from torch import nn
from torch.utils.data import TensorDataset

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.projection import LayerProjection, decompose, importance_scaling


def small_vit() -> nn.Module:
    """2 layers, 16 wide, 8x8 images in 4x4 patches, 4 labels, seed 0, in eval mode."""
    return tiny_vit(num_labels=4, image_size=8, hidden_size=16, intermediate_size=32).eval()


def materialised_rows(model: nn.Module, inputs: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Every layer's representation matrix, built explicitly (the reference way) from captured inputs."""
    captured: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):

            def hook(mod, args, _name=name):
                x = args[0].detach().double()
                if isinstance(mod, nn.Conv2d):
                    ph, pw = mod.padding
                    patches = F.unfold(x, mod.kernel_size, mod.dilation, (ph, pw), mod.stride)  # (N, C*k*k, L)
                    g = mod.groups
                    per = patches.shape[1] // g
                    mats = [patches[:, i * per : (i + 1) * per].transpose(1, 2).reshape(-1, per) for i in range(g)]
                else:
                    mats = [x.reshape(-1, x.shape[-1])]
                previous = captured.get(_name)
                captured[_name] = (
                    mats if previous is None else [torch.cat([p, m]) for p, m in zip(previous, mats, strict=True)]
                )

            handles.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        for start in range(0, inputs.shape[0], 5):
            model(inputs[start : start + 5])
    for h in handles:
        h.remove()
    return captured


def reference_projection(weight: torch.Tensor, mats: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """Ŵ = W·U diag(λ) Uᵀ with U, σ from torch.linalg.svd of the materialised representation matrix."""
    groups = len(mats)
    w = weight.double().reshape(groups, weight.shape[0] // groups, -1)
    out = []
    for g, rows in enumerate(mats):
        _, sigma, vh = torch.linalg.svd(rows, full_matrices=True)
        sig2 = torch.zeros(vh.shape[0], dtype=torch.float64)
        sig2[: sigma.numel()] = sigma**2
        normalized = sig2 / sig2.sum()
        lam = alpha * normalized / ((alpha - 1) * normalized + 1)
        out.append(w[g] @ (vh.T @ torch.diag(lam) @ vh))
    return torch.stack(out).reshape(weight.shape)


@pytest.mark.parametrize("alpha", [1e2, 3e4, 1e6])
@pytest.mark.parametrize("build, shape", [(small_conv_net, (3, 12, 12)), (small_vit, (3, 8, 8))], ids=["conv", "vit"])
def test_streamed_gram_matches_explicit_svd(build, shape, alpha):
    model = build()
    torch.manual_seed(1)
    inputs = torch.randn(23, *shape)
    reference_model = build()
    mats = materialised_rows(reference_model, inputs)
    corrector = ProjectionCorrector(model, CorrectionConfig(batch_size=4, progress=False))
    corrector.fit(TensorDataset(inputs, torch.zeros(23, dtype=torch.long)), trusted_indices=torch.arange(23))
    corrector.apply(alpha)
    modules = dict(model.named_modules())
    assert set(corrector.projections) == set(mats)
    for name, rows in mats.items():
        expected = reference_projection(dict(reference_model.named_modules())[name].weight.detach(), rows, alpha)
        got = modules[name].weight.detach().double()
        assert torch.linalg.norm(got - expected) <= 1e-5 * torch.linalg.norm(expected), name


def test_importance_scaling_is_the_papers_formula():
    normalized = torch.tensor([0.0, 0.01, 0.2, 0.79], dtype=torch.float64)
    for alpha in (0.5, 1.0, 3e4):
        expected = torch.tensor([alpha * s / ((alpha - 1) * s + 1) for s in normalized.tolist()], dtype=torch.float64)
        torch.testing.assert_close(importance_scaling(normalized, alpha), expected)
    torch.testing.assert_close(importance_scaling(normalized, 1.0), normalized)  # α = 1: λ = σ̃


def test_large_alpha_on_full_rank_gram_leaves_weights_unchanged():
    torch.manual_seed(0)
    layer = nn.Linear(6, 3)
    original = layer.weight.detach().clone()
    x = torch.randn(200, 6)
    corrector = ProjectionCorrector(layer, progress=False)
    corrector.fit(TensorDataset(x, torch.zeros(200, dtype=torch.long)), trusted_indices=torch.arange(200))
    corrector.apply(alpha=1e14)
    torch.testing.assert_close(layer.weight.detach(), original, rtol=1e-6, atol=1e-6)
    corrector.apply(alpha=1e2)
    assert not torch.allclose(layer.weight.detach(), original, atol=1e-3)


def test_outputs_in_trusted_span_kept_and_orthogonal_directions_removed():
    torch.manual_seed(0)
    layer = nn.Linear(16, 5, bias=False)
    basis = torch.linalg.qr(torch.randn(16, 16)).Q
    span, orthogonal = basis[:, :4], basis[:, 4:]
    trusted = torch.randn(300, 4) @ span.T  # rank-4 trusted activations
    corrector = ProjectionCorrector(layer, progress=False)
    corrector.fit(TensorDataset(trusted, torch.zeros(300, dtype=torch.long)), trusted_indices=torch.arange(300))
    in_span = torch.randn(10, 4) @ span.T
    off_span = torch.randn(10, 12) @ orthogonal.T
    with torch.no_grad():
        before = layer(in_span)
        corrector.apply(alpha=1e9)
        torch.testing.assert_close(layer(in_span), before, rtol=1e-4, atol=1e-4)
        assert layer(off_span).abs().max() < 1e-5


def test_eigh_failure_falls_back_to_svd_with_same_weights(monkeypatch):
    torch.manual_seed(0)
    rows = torch.randn(40, 9, dtype=torch.float64) @ torch.randn(9, 9, dtype=torch.float64)
    rows[:, -3:] = 0  # rank-deficient
    gram = (rows.T @ rows)[None]
    weight = torch.randn(4, 9)
    reference = LayerProjection(weight, decompose(gram)).weight(3e4)

    def failing_eigh(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "eigh", failing_eigh)
    spectrum = decompose(gram, "layer")
    assert spectrum.method == "svd"
    torch.testing.assert_close(LayerProjection(weight, spectrum).weight(3e4), reference, rtol=1e-5, atol=1e-6)


def test_zero_coordinates_split_off_give_the_full_eigendecomposition_result():
    torch.manual_seed(0)
    rows = torch.randn(30, 12, dtype=torch.float64)
    rows[:, [1, 4, 5, 11]] = 0  # coordinates never activated (padding taps, dead channels)
    gram = (rows.T @ rows)[None]
    weight = torch.randn(5, 12, dtype=torch.float64)
    spectrum = decompose(gram)
    values, vectors = torch.linalg.eigh(gram[0])
    for alpha in (1.0, 3e4, 1e8):
        # eigh of the full matrix leaves round-off (~1e-15) where the exact eigenvalue is 0; at α = 1e8 that alone
        # would give λ ~ 1e-8, so the reference zeroes it as exact arithmetic would.
        exact = torch.where(values > 1e-10 * values.max(), values, torch.zeros_like(values))
        normalized = exact / exact.sum()
        expected = weight @ vectors @ torch.diag(importance_scaling(normalized, alpha)) @ vectors.T
        torch.testing.assert_close(LayerProjection(weight, spectrum).weight(alpha), expected, rtol=1e-9, atol=1e-9)
    assert torch.allclose(spectrum.eigenvectors[0].T @ spectrum.eigenvectors[0], torch.eye(12, dtype=torch.float64))
    assert (spectrum.eigenvalues[0, 8:] == 0).all()  # the 4 inactive coordinates: eigenvalue exactly 0
    assert (LayerProjection(weight, spectrum).weight(3e4)[:, [1, 4, 5, 11]] == 0).all()


def test_the_update_keeps_only_directions_with_positive_eigenvalues_in_any_order_and_equals_the_full_formula():
    from hf_verifix.projection.spectrum import Spectrum, importance_scaling
    from hf_verifix.projection.update import LayerProjection

    generator = torch.Generator().manual_seed(3)
    basis, _ = torch.linalg.qr(torch.randn(2, 5, 5, generator=generator, dtype=torch.float64))
    values = torch.tensor([[0.0, 2.0, 0.0, 1.0, 0.0], [3.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)  # unsorted
    spectrum = Spectrum(values, basis)
    weight = torch.randn(4, 5, 1, 1, generator=generator, dtype=torch.float64)  # a 2-group 1x1 conv, 2 outputs each
    projection = LayerProjection(weight, spectrum)
    assert projection.eigenvectors.shape == (2, 5, 2) and projection.normalized.shape == (2, 5)  # k = 2 of d = 5
    for alpha in (1.0, 30.0, 3e4):
        lam = importance_scaling(spectrum.normalized(), alpha)
        full = torch.stack([weight.reshape(2, 2, 5)[g] @ basis[g] @ torch.diag(lam[g]) @ basis[g].T for g in range(2)])
        torch.testing.assert_close(projection.weight(alpha), full.reshape(weight.shape), rtol=1e-12, atol=1e-12)
