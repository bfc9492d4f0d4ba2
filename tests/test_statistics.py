"""The statistics the projection is computed from (hf_verifix.statistics): convolution rows and streamed Grams."""

from __future__ import annotations

import pytest
import torch
from testing_utils import small_conv_net
from torch import nn

from hf_verifix.statistics.gram import LayerGram, collect_grams
from hf_verifix.statistics.rows import conv_rows, conv_rows_at

CONV_CASES = {
    "3x3-pad1": dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    "stride2-pad2": dict(in_channels=4, out_channels=6, kernel_size=5, stride=2, padding=2),
    "dilation2": dict(in_channels=4, out_channels=6, kernel_size=3, dilation=2, padding=1),
    "groups2": dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1),
    "depthwise": dict(in_channels=4, out_channels=8, kernel_size=3, groups=4, stride=2),
    "1x7": dict(in_channels=4, out_channels=6, kernel_size=(1, 7), padding=(0, 3)),
    "7x1": dict(in_channels=4, out_channels=6, kernel_size=(7, 1), padding=(3, 0)),
    "same-even-1x4-asymmetric": dict(in_channels=4, out_channels=6, kernel_size=(1, 4), padding="same"),
    "same-even-1x4-dilated": dict(in_channels=4, out_channels=6, kernel_size=(1, 4), dilation=2, padding="same"),
    "same-odd-3x5": dict(in_channels=4, out_channels=6, kernel_size=(3, 5), padding="same"),
    "same-dilated": dict(in_channels=4, out_channels=6, kernel_size=3, dilation=3, padding="same"),
    "valid": dict(in_channels=4, out_channels=6, kernel_size=2, padding="valid"),
    "asym-stride": dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("kwargs", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv_rows_times_weight_is_the_convolution(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(bias=False, **kwargs).double()
    x = torch.randn(3, 4, 11, 13, dtype=torch.float64)
    rows = conv_rows(x, conv)  # (g, N*L, d)
    out = conv(x)  # (N, Cout, H', W')
    g = conv.groups
    w = conv.weight.reshape(g, conv.out_channels // g, -1)
    via_rows = torch.bmm(rows, w.transpose(1, 2))  # (g, N*L, Cout/g)
    n, cout, h, wd = out.shape
    expected = out.reshape(n, g, cout // g, h * wd).permute(1, 0, 3, 2).reshape(g, n * h * wd, cout // g)
    torch.testing.assert_close(via_rows, expected, rtol=1e-12, atol=1e-12)


def test_gram_is_independent_of_batching():
    torch.manual_seed(0)
    model = small_conv_net().double()  # float64 forward: activations do not depend on the batch's BLAS path
    x = torch.randn(17, 3, 12, 12, dtype=torch.float64)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    one = collect_grams(model, layers, [x])
    many = collect_grams(model, layers, [x[:1], x[1:9], x[9:]])
    for name in layers:
        assert one[name].rows == many[name].rows
        torch.testing.assert_close(one[name].gram, many[name].gram, rtol=1e-12, atol=1e-9)


def test_gram_chunking_matches_direct_product(monkeypatch):
    import hf_verifix.statistics.gram as gram_module

    rows = torch.randn(2, 1000, 7, dtype=torch.float64)
    monkeypatch.setattr(gram_module, "_CHUNK_ELEMENTS", 100)
    stats = LayerGram.empty(2, 7)
    stats.add(rows)
    torch.testing.assert_close(stats.gram, rows.transpose(1, 2) @ rows, rtol=1e-12, atol=1e-9)
    assert stats.rows == 1000


# ------------------------------------------------------------------------------------- opt-in row subsample
SUBSAMPLED_LAYERS = [
    nn.Conv2d(4, 6, 3, padding=1),
    nn.Conv2d(4, 6, 3, stride=2, padding=1),
    nn.Conv2d(4, 6, (3, 2), dilation=(2, 1), padding=(2, 0), groups=2),
    nn.Conv2d(4, 6, 1),
]


@pytest.mark.parametrize("layer", SUBSAMPLED_LAYERS)
def test_rows_at_positions_are_exactly_those_rows_of_the_unfold(layer: nn.Conv2d) -> None:
    x = torch.randn(3, 4, 9, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    every = conv_rows(x, layer)
    groups, _, dim = every.shape
    length = every.shape[1] // 3
    positions = torch.tensor([0, 2, length - 1])
    expected = every.view(groups, 3, length, dim)[:, :, positions].reshape(groups, -1, dim)
    assert torch.equal(conv_rows_at(x, layer, positions), expected)


@pytest.mark.parametrize("layer", SUBSAMPLED_LAYERS)
def test_a_subsampled_gram_keeps_the_same_positions_of_every_image_whatever_the_batching(layer) -> None:
    x = torch.randn(5, 4, 9, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model = nn.Sequential(layer).double()
    one = collect_grams(model, {"0": layer}, [x], positions=4, seed=3)["0"]
    many = collect_grams(model, {"0": layer}, [x[:2], x[2:]], positions=4, seed=3)["0"]
    every = conv_rows(x, layer)
    length = every.shape[1] // 5
    kept = one.kept_positions(length)
    assert kept is not None and kept.numel() == 4 and one.rows == many.rows == 20
    rows = every.view(every.shape[0], 5, length, -1)[:, :, kept].reshape(every.shape[0], 20, -1)
    bound = 2 * 20 * torch.finfo(torch.float64).eps * (rows.abs().mT @ rows.abs())
    assert bool(((one.gram - rows.mT @ rows).abs() <= bound).all())
    assert bool(((many.gram - rows.mT @ rows).abs() <= bound).all())
    other = collect_grams(model, {"0": layer}, [x], positions=4, seed=4)["0"]
    assert not torch.equal(other.gram, one.gram)  # another seed keeps other positions


def test_a_subsample_keeps_tokens_of_linear_layers_and_the_one_row_of_a_flat_input() -> None:
    layer = nn.Linear(3, 2).double()
    tokens = torch.randn(4, 10, 3, dtype=torch.float64)
    stats = collect_grams(layer, {"": layer}, [tokens], positions=2)[""]
    kept = stats.kept_positions(10)
    assert kept is not None and stats.rows == 8
    rows = tokens[:, kept].reshape(-1, 3)
    torch.testing.assert_close(stats.gram[0], rows.T @ rows, rtol=1e-13, atol=0)
    flat = collect_grams(layer, {"": layer}, [torch.randn(6, 3, dtype=torch.float64)], positions=2)[""]
    assert flat.rows == 6


def test_positions_above_the_map_size_keep_every_row_exactly() -> None:
    layer = nn.Conv2d(2, 3, 3, padding=1).double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    full = collect_grams(nn.Sequential(layer), {"0": layer}, [x])["0"]
    capped = collect_grams(nn.Sequential(layer), {"0": layer}, [x], positions=16)["0"]
    assert torch.equal(full.gram, capped.gram) and full.rows == capped.rows == 32


def test_a_wide_gram_multiplies_the_upper_blocks_only_and_is_exactly_symmetric():
    rows = torch.randn(2, 300, 600, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    stats = LayerGram.empty(2, 600)
    stats.add(rows)
    stats.add(rows[:, :7])
    every = torch.cat([rows, rows[:, :7]], dim=1)
    bound = 2 * every.shape[1] * torch.finfo(torch.float64).eps * (every.abs().mT @ every.abs())
    assert bool(((stats.gram - every.mT @ every).abs() <= bound).all())
    # The blocks off the diagonal (edges at 150, 300, 450) are computed once and mirrored: exactly transposed.
    assert torch.equal(stats.gram[:, :150, 150:], stats.gram[:, 150:, :150].mT)
    assert torch.equal(stats.gram[:, 300:450, 450:], stats.gram[:, 450:, 300:450].mT)
