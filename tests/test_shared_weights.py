"""Weights shared between layers (tied, or one layer applied twice) are projected once, from the summed Gram.

A weight W applied at several places multiplies the rows of every place; SAP's representation matrix is all of
them stacked, R = [A₁; A₂], whose Gram is RᵀR = A₁ᵀA₁ + A₂ᵀA₂. The hand computation below uses the matrix form of
the projection, Ŵ = W·P with P = α G̃ ((α−1) G̃ + I)⁻¹ and G̃ = G / tr G (the same function of G as
U diag(λ) Uᵀ, with no eigendecomposition), so it checks the library's result independently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, load_model
from torch import nn
from torch.utils.data import TensorDataset

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.errors import LayerError

ALPHA = 30.0  # moderate: λ well inside (0, 1), so projecting twice (λ²) is far from projecting once (λ)
TRUSTED = [0, 2, 5]  # 3 samples: each use's rows span only part of the 6-dimensional input


def config(**overrides: Any) -> CorrectionConfig:
    return CorrectionConfig(**{"n_trusted": 3, "progress": False, "alpha": ALPHA, **overrides})


class TiedPair(nn.Module):
    """Two Linear layers holding one weight Parameter, applied one after the other, and a head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Linear(6, 6)
        self.second = nn.Linear(6, 6)
        self.second.weight = self.first.weight
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.second(torch.tanh(self.first(x)))))


class AppliedTwice(nn.Module):
    """One Linear layer called twice in the forward pass."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.block(torch.tanh(self.block(x)))))


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(8, 6, generator=generator, dtype=torch.float64), torch.arange(8) % 3)


def inputs_of(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every input row ``layer`` sees on ``x`` (all calls), float64."""
    rows: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _m, args: rows.append(args[0].detach().double()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return torch.cat(rows)


def projection_matrix(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    normalized = gram / torch.trace(gram)
    eye = torch.eye(gram.shape[0], dtype=torch.float64)
    return alpha * normalized @ torch.linalg.inv((alpha - 1.0) * normalized + eye)


def gram(rows: torch.Tensor) -> torch.Tensor:
    return rows.T @ rows


def test_tied_weight_is_projected_once_onto_the_summed_gram() -> None:
    model = TiedPair().double()
    x = data().tensors[0][TRUSTED]
    w = model.first.weight.detach().clone()
    rows_first, rows_second = inputs_of(model, model.first, x), inputs_of(model, model.second, x)
    summed = projection_matrix(gram(rows_first) + gram(rows_second), ALPHA)

    corrector = ProjectionCorrector(model, config()).fit(data(), trusted_indices=TRUSTED)
    assert list(corrector.projections) == ["first", "head"]  # one projection for the shared weight
    assert corrector.tied == {"first": ["second"]} and corrector.skipped == {}
    report = corrector.report()["layers"]["first"]
    assert report["rows"] == 6 and report["shared_with"] == ["second"]  # 3 samples × 2 uses

    version = model.first.weight._version
    corrector.apply()
    assert model.first.weight._version == version + 1, "the shared weight must be written exactly once"
    assert model.second.weight is model.first.weight
    projected = model.first.weight.detach()
    torch.testing.assert_close(projected, w @ summed, rtol=1e-9, atol=1e-12)

    # What the other ways would give, to show the check can tell them apart.
    wrong = {
        "projected twice (once per use)": w
        @ projection_matrix(gram(rows_first), ALPHA)
        @ projection_matrix(gram(rows_second), ALPHA),
        "the summed projection applied twice": w @ summed @ summed,
        "only the first use's rows": w @ projection_matrix(gram(rows_first), ALPHA),
    }
    for label, other in wrong.items():
        assert (projected - other).abs().max() > 1e-3, label


def test_model_card_names_the_layers_that_share_the_corrected_weight() -> None:
    from hf_verifix.reporting.model_card import CardInfo, render_model_card

    corrector = ProjectionCorrector(TiedPair().double(), config()).fit(data(), trusted_indices=TRUSTED)
    text = str(render_model_card(corrector.report(), CardInfo(model_name="tied")))
    assert "- `first`: 6 rows, d = " in text
    assert "(the same weight as `second`: corrected once, from their summed Gram)" in text
    assert text.count("the same weight as") == 1  # `head` shares nothing


def test_one_layer_called_twice_gets_the_gram_of_both_calls() -> None:
    model = AppliedTwice().double()
    x = data().tensors[0][TRUSTED]
    rows = inputs_of(model, model.block, x)
    assert rows.shape == (6, 6)  # 3 samples, 2 calls
    w = model.block.weight.detach().clone()
    corrector = ProjectionCorrector(model, config()).fit(data(), trusted_indices=TRUSTED)
    assert corrector.layer_rows["block"] == 6 and corrector.tied == {}
    corrector.apply()
    torch.testing.assert_close(
        model.block.weight.detach(), w @ projection_matrix(gram(rows), ALPHA), rtol=1e-9, atol=1e-12
    )


def test_revert_restores_the_shared_weight_bit_exactly_and_keeps_the_tie() -> None:
    model = TiedPair()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    float_data = TensorDataset(data().tensors[0].float(), data().tensors[1])
    corrector = ProjectionCorrector(model, config()).fit(float_data, trusted_indices=TRUSTED)
    corrector.apply(1e3)
    corrector.apply(ALPHA)
    assert not torch.equal(model.first.weight, state["first.weight"])
    corrector.revert()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert model.second.weight is model.first.weight


def test_saving_and_reloading_keeps_the_tie(tmp_path: Path) -> None:
    model = TiedPair()
    float_data = TensorDataset(data().tensors[0].float(), data().tensors[1])
    corrector = ProjectionCorrector(model, config()).fit(float_data, trusted_indices=TRUSTED)
    corrector.apply()
    corrector.save_pretrained(tmp_path / "out")
    stored = load_file(tmp_path / "out" / "model.safetensors")
    assert "first.weight" in stored and "second.weight" not in stored  # one copy of the shared tensor
    fresh = TiedPair()
    load_model(fresh, tmp_path / "out" / "model.safetensors")
    assert fresh.second.weight is fresh.first.weight
    assert torch.equal(fresh.first.weight, model.first.weight)
    assert torch.equal(fresh.second.weight, model.second.weight)


# ---------------------------------------------------------------------------------------------
# sharing that cannot be summed: refused (default) or skipped
# ---------------------------------------------------------------------------------------------


class GroupMismatch(nn.Module):
    """Two convolutions holding one (4, 4, 3, 3) weight: one over 4 channels, one over 8 channels in 2 groups."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.plain = nn.Conv2d(4, 4, 3, padding=1)
        self.grouped = nn.Conv2d(8, 4, 3, padding=1, groups=2)
        self.grouped.weight = self.plain.weight
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.plain(x[:, :4]), self.grouped(x)
        return self.head(torch.cat([a, b], 1).mean(dim=(2, 3)))


def images() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(6, 8, 5, 5, generator=generator), torch.arange(6) % 3)


def test_shared_weight_of_layers_with_different_groups_is_refused_then_skipped() -> None:
    with pytest.raises(LayerError) as info:
        ProjectionCorrector(GroupMismatch(), config()).fit(images())
    message = str(info.value)
    assert "2 targeted layer(s) cannot be corrected" in message
    reason = "its weight is shared by layers that split their inputs into different numbers of groups"
    assert f"'plain', 'grouped': {reason} ({{'plain': 1, 'grouped': 2}})" in message  # one reason, named once
    assert "on_uncorrectable='skip'" in message and "adding ['plain', 'grouped'] to exclude_modules" in message

    model = GroupMismatch()
    before = model.plain.weight.detach().clone()
    with pytest.warns(UserWarning, match=r"leaving 2 layer\(s\) uncorrected: 'plain': .*'grouped': "):
        corrector = ProjectionCorrector(model, config(on_uncorrectable="skip")).fit(images())
    assert list(corrector.projections) == ["head"]
    corrector.apply()
    assert torch.equal(model.plain.weight, before)


class TiedToEmbedding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(6, 6)
        self.proj = nn.Linear(6, 6)
        self.proj.weight = self.embed.weight
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.proj(x) + self.embed.weight.sum(0))


def test_weight_also_used_outside_a_layer_is_refused() -> None:
    with pytest.raises(LayerError, match=r"'proj': its weight is also Embedding 'embed''s 'weight'"):
        ProjectionCorrector(TiedToEmbedding(), config()).fit(data())


def test_excluding_one_of_the_tied_layers_excludes_the_weight() -> None:
    with pytest.raises(LayerError, match=r"'first': its weight is shared with 'second', which is excluded by"):
        ProjectionCorrector(TiedPair(), config(exclude_modules=["second"])).fit(data())
    with pytest.raises(LayerError, match=r"'second': its weight is shared with 'first', which is not matched by"):
        ProjectionCorrector(TiedPair(), config(target_modules=["second", "head"])).fit(data())
    both = ProjectionCorrector(TiedPair().double(), config(exclude_modules=["first|second"]))
    with pytest.warns(UserWarning, match=r"leaving 2 layer\(s\) uncorrected: 'first': excluded .*'second': excluded"):
        both.fit(data(), trusted_indices=TRUSTED)
    assert list(both.projections) == ["head"]
