"""The structured convolution Gram (hf_verifix.statistics.conv_gram) equals the unfolded patches' Gram.

For n terms, recursive or blocked summation in precision u errs by at most (n − 1)·u·Σ|a_i·b_i| per entry (Higham,
Accuracy and Stability, §3.1). The unfolded Gram sums the patch products directly: within 2·n·u times the Gram of the
absolute patches. The structured Gram sums whole padded rows and subtracts the columns outside each tap's window, so
its terms are products x_c[p]·x_c'[p + δ] over at most every padded position p (n_all of them): by Cauchy–Schwarz
each such sum of |products| is at most ‖x_c‖·‖x_c'‖, and the entry errs by at most 4·n_all·u·‖x_c‖·‖x_c'‖ (the rows,
the subtracted strips, and the reference's own error). Both bounds come from the math, on any processor.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from hf_verifix.statistics import gram as gram_module
from hf_verifix.statistics.conv_gram import conv_gram, has_structured_gram, structured_gram_pays
from hf_verifix.statistics.gram import LayerGram, collect_grams
from hf_verifix.statistics.rows import conv_output_size, conv_row_chunks, conv_rows

U = torch.finfo(torch.float64).eps / 2

CASES = [
    pytest.param(kernel, padding, dilation, groups, size, id=f"k{kernel}-p{padding}-d{dilation}-g{groups}-{size}")
    for index, (kernel, padding, dilation, groups) in enumerate(
        itertools.product([(3, 3), (3, 2), (5, 5), (2, 4)], [0, 1, "same", (2, 0)], [(1, 1), (2, 1), (2, 3)], [1, 2])
    )
    for size in [[(7, 5), (9, 11)][index % 2]]  # odd sizes, alternating so each kernel meets both
]


def _assert_within_summation_bound(got: torch.Tensor, rows: torch.Tensor) -> None:
    reference = rows.mT @ rows
    bound = 2 * max(rows.shape[1], 1) * U * (rows.abs().mT @ rows.abs())
    assert got.shape == reference.shape
    assert bool(((got - reference).abs() <= bound).all()), float(((got - reference).abs() - bound).max())


def _assert_within_structured_bound(got: torch.Tensor, x: torch.Tensor, layer: nn.Conv2d, u: float = U) -> None:
    rows = conv_rows(x, layer)
    n, channels, height, width = x.shape
    kh, kw = layer.kernel_size
    out_h, out_w = conv_output_size(height, width, layer)
    padded_h, padded_w = out_h + (kh - 1) * layer.dilation[0], out_w + (kw - 1) * layer.dilation[1]
    n_all = n * padded_h * (padded_w + 2 * (kw - 1) * layer.dilation[1])  # every position, the margins included
    norms = x.reshape(n, layer.groups, channels // layer.groups, -1).norm(dim=(0, 3))  # (groups, c)
    norms = norms[:, :, None].expand(-1, -1, kh * kw).reshape(layer.groups, -1)
    bound = 4 * n_all * u * norms[:, :, None] * norms[:, None, :]
    reference = rows.mT @ rows
    assert got.shape == reference.shape
    assert bool(((got - reference).abs() <= bound).all()), float(((got - reference).abs() - bound).max())
    extra = torch.zeros_like(got)
    extra[:, 0, -1] = float((x**2).mean())  # the test can fail: one typical product more or less is outside it
    assert not bool(((got + extra - reference).abs() <= bound).all())


@pytest.mark.parametrize(("kernel", "padding", "dilation", "groups", "size"), CASES)
def test_structured_gram_equals_the_unfolded_gram(kernel, padding, dilation, groups, size) -> None:
    layer = nn.Conv2d(4, 6, kernel, padding=padding, dilation=dilation, groups=groups)
    x = torch.randn(3, 4, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(sum(size)))
    try:
        rows = conv_rows(x, layer)
    except RuntimeError:  # the kernel does not fit the padded input: no case to compare
        pytest.skip("kernel larger than the padded input")
    assert rows.shape[1] > 0
    _assert_within_structured_bound(conv_gram(x, layer), x, layer)


def test_the_hook_path_uses_it_and_counts_rows_like_unfold(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = nn.Conv2d(3, 5, 3, padding=1, dilation=2)
    x = torch.randn(2, 3, 10, 9, generator=torch.Generator().manual_seed(0))
    assert structured_gram_pays(layer, *conv_output_size(10, 9, layer))  # an 8×7 output: the structured path
    monkeypatch.setattr(gram_module, "conv_row_chunks", None)  # unfolding would fail: the hook must not unfold
    structured = LayerGram.empty(1, 27)
    structured.add_conv(x, layer)
    unfolded = LayerGram.empty(1, 27)
    rows = conv_rows(x.double(), layer)
    unfolded.add(rows)
    assert structured.rows == unfolded.rows == rows.shape[1]
    _assert_within_structured_bound(structured.gram, x.double(), layer)
    grams = collect_grams(nn.Sequential(layer), {"0": layer}, [x])
    _assert_within_structured_bound(grams["0"].gram, x.double(), layer)


@pytest.mark.parametrize(
    ("layer", "structured"),
    [
        (nn.Conv2d(2, 2, 3, padding=1), True),
        (nn.Conv2d(2, 2, 3, stride=2, padding=1), False),  # each tap on its own lattice: unfolded
        (nn.Conv2d(2, 2, 1), False),  # its patches are its pixels: already one GEMM
        (nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), False),
        (nn.Linear(2, 2), False),
    ],
)
def test_which_layers_take_the_structured_path(layer: nn.Module, structured: bool) -> None:
    assert has_structured_gram(layer) is structured


def test_an_output_smaller_than_the_kernel_gives_an_empty_gram() -> None:
    layer = nn.Conv2d(1, 1, 3, dilation=3)
    gram = conv_gram(torch.ones(1, 1, 5, 5, dtype=torch.float64), layer)
    assert torch.equal(gram, torch.zeros(1, 9, 9, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kernel", "out", "pays"),
    [((3, 3), (5, 6), False), ((3, 3), (6, 6), True), ((3, 3), (7, 5), False), ((5, 1), (10, 2), True)],
)
def test_the_structured_path_is_taken_from_2k_positions_each_way(kernel, out, pays) -> None:
    assert structured_gram_pays(nn.Conv2d(2, 2, kernel), *out) is pays


def test_small_maps_are_unfolded_in_the_hook_and_give_the_same_gram() -> None:
    layer = nn.Conv2d(4, 6, 3, padding=1)  # a 4×4 output: unfolded
    x = torch.randn(3, 4, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    stats = LayerGram.empty(1, 36)
    stats.add_conv(x, layer)
    rows = conv_rows(x, layer)
    assert stats.rows == rows.shape[1] == 48
    _assert_within_summation_bound(stats.gram, rows)


CHUNK_CASES = [
    (nn.Conv2d(4, 6, 3, padding=1), (9, 7)),
    (nn.Conv2d(4, 6, 3, stride=2, padding=1), (9, 7)),
    (nn.Conv2d(4, 6, (3, 2), stride=(2, 1), dilation=(2, 1), padding=(2, 0), groups=2), (11, 6)),
    (nn.Conv2d(4, 6, 1), (5, 5)),
]


@pytest.mark.parametrize("max_elements", [1, 50, 400, 10**6])
@pytest.mark.parametrize(("layer", "size"), CHUNK_CASES)
def test_row_chunks_are_bounded_and_hold_exactly_the_unfolded_rows(layer, size, max_elements) -> None:
    x = torch.randn(3, 4, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    rows = conv_rows(x, layer)
    chunks = list(conv_row_chunks(x, layer, max_elements))
    one_output_row = conv_output_size(*size, layer)[1] * rows.shape[0] * rows.shape[2]
    assert all(chunk.numel() <= max(max_elements, one_output_row) for chunk in chunks)
    assert sum(chunk.shape[1] for chunk in chunks) == rows.shape[1]
    # The same multiset of rows: equal sorted rows (exact, no arithmetic in between).
    got = torch.cat(chunks, dim=1)
    for group in range(rows.shape[0]):
        assert torch.equal(_sorted_rows(got[group]), _sorted_rows(rows[group]))


def _sorted_rows(rows: torch.Tensor) -> torch.Tensor:
    order = sorted(range(rows.shape[0]), key=lambda i: tuple(rows[i].tolist()))
    return rows[order]


def test_float32_products_stay_within_their_rounding_bound() -> None:
    # Each entry sums n products of rows rounded to float32 (relative error u₃₂ per factor) in float32 (at most
    # (n − 1)·u₃₂·Σ|a·b|), then adds the chunks in float64: within 2·(n + 2)·u₃₂·Σ|a·b| of the exact Gram.
    u32 = torch.finfo(torch.float32).eps / 2
    rows = torch.randn(2, 3000, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    stats = LayerGram.empty(2, 9, precision=torch.float32)
    stats.add(rows)
    exact = rows.mT @ rows
    bound = 2 * (rows.shape[1] + 2) * u32 * (rows.abs().mT @ rows.abs())
    assert bool(((stats.gram - exact).abs() <= bound).all())
    assert not torch.equal(stats.gram, exact)  # it did compute in float32
    layer = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 9, 8, generator=torch.Generator().manual_seed(4))  # float32 input: exact in float32
    structured = LayerGram.empty(1, 27, precision=torch.float32)
    structured.add_conv(x, layer)  # a 9×8 output: the structured path, in float32
    _assert_within_structured_bound(structured.gram, x.double(), layer, u=u32 + U)


def test_the_structured_path_takes_a_bounded_number_of_images_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    seen: list[int] = []
    original = gram_module.conv_gram
    monkeypatch.setattr(
        gram_module, "conv_gram", lambda images, conv: seen.append(len(images)) or original(images, conv)
    )
    monkeypatch.setattr(gram_module, "_CHUNK_ELEMENTS", 2 * 3 * 8 * 8)  # two images' values
    chunked = LayerGram.empty(1, 27)
    chunked.add_conv(x, layer)
    assert seen == [2, 2, 1] and chunked.rows == 5 * 64
    _assert_within_structured_bound(chunked.gram, x, layer)
