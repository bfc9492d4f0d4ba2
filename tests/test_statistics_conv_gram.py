"""The structured convolution Gram (hf_verifix.statistics.conv_gram) equals the unfolded patches' Gram.

Both sum the same products a_i·b_i, in different orders. For n terms, recursive or blocked summation in precision u
errs by at most (n − 1)·u·Σ|a_i·b_i| per entry (Higham, Accuracy and Stability, §3.1), so each entry is compared
against 2·n·u times the Gram of the absolute patches: a bound from the math, on any processor.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from hf_verifix.statistics.conv_gram import conv_gram, has_structured_gram
from hf_verifix.statistics.gram import LayerGram, collect_grams
from hf_verifix.statistics.rows import conv_rows

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


@pytest.mark.parametrize(("kernel", "padding", "dilation", "groups", "size"), CASES)
def test_structured_gram_equals_the_unfolded_gram(kernel, padding, dilation, groups, size) -> None:
    layer = nn.Conv2d(4, 6, kernel, padding=padding, dilation=dilation, groups=groups)
    x = torch.randn(3, 4, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(sum(size)))
    try:
        rows = conv_rows(x, layer)
    except RuntimeError:  # the kernel does not fit the padded input: no case to compare
        pytest.skip("kernel larger than the padded input")
    _assert_within_summation_bound(conv_gram(x, layer), rows)


def test_the_hook_path_uses_it_and_counts_rows_like_unfold() -> None:
    layer = nn.Conv2d(3, 5, 3, padding=1, dilation=2)
    x = torch.randn(2, 3, 8, 6, generator=torch.Generator().manual_seed(0))
    structured = LayerGram.empty(1, 27)
    structured.add_conv(x, layer)
    unfolded = LayerGram.empty(1, 27)
    rows = conv_rows(x.double(), layer)
    unfolded.add(rows)
    assert structured.rows == unfolded.rows == rows.shape[1]
    _assert_within_summation_bound(structured.gram, rows)
    grams = collect_grams(nn.Sequential(layer), {"0": layer}, [x])
    _assert_within_summation_bound(grams["0"].gram, rows)


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
