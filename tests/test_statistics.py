"""The statistics the projection is computed from (hf_verifix.statistics): convolution rows and streamed Grams."""

from __future__ import annotations

import pytest
import torch
from testing_utils import small_conv_net
from torch import nn

from hf_verifix.statistics.gram import LayerGram, collect_grams
from hf_verifix.statistics.rows import conv_rows

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
