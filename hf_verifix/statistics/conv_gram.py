"""The Gram of a stride-1 convolution's unfolded patches, built from channel cross-correlations (no unfold).

For a stride-1 k×k convolution the patch Gram G = Σ aaᵀ over every output position has one C×C block per pair of
kernel taps (u, v), (u', v'). That block is the cross-correlation of the (zero-padded) input with itself at the
spatial offset ((u'−u)·dh, (v'−v)·dw), summed over the rectangle of positions tap (u, v) reads. Taps with the same
offset read shifted rectangles of one product map, so each offset is computed once, in GEMMs over the bands that the
rectangles' edges cut the map into, and each block is a sum of band products: exact, and about (2k−1)²/2 instead
of k⁴ C×C products per position (6× fewer for 3×3 kernels). Offsets come in transposed pairs (G is symmetric), so
only half are computed.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from hf_verifix.statistics.rows import conv_rows
    >>> layer = nn.Conv2d(2, 3, 3, padding=1)
    >>> x = torch.randn(2, 2, 5, 6, dtype=torch.float64)
    >>> rows = conv_rows(x, layer)
    >>> torch.allclose(conv_gram(x, layer), rows.mT @ rows)
    True
"""

from __future__ import annotations

import itertools
from typing import TypeGuard

import torch
import torch.nn.functional as F
from torch import nn

from .rows import conv_output_size, conv_padding

__all__ = ["conv_gram", "has_structured_gram", "structured_gram_pays"]


def has_structured_gram(layer: nn.Module) -> TypeGuard[nn.Conv2d]:
    """Whether :func:`conv_gram` applies: a Conv2d with stride 1 and a kernel larger than 1×1.

    (A 1×1 stride-1 convolution's patches are its input pixels: their Gram is already one GEMM. Other strides sample
    each tap on its own lattice, which breaks the shared product map.)

    Example:
        >>> has_structured_gram(nn.Conv2d(3, 8, 3, padding=1)), has_structured_gram(nn.Conv2d(3, 8, 3, stride=2))
        (True, False)
    """
    return (
        isinstance(layer, nn.Conv2d)
        and tuple(layer.stride) == (1, 1)
        and tuple(layer.kernel_size) != (1, 1)
        and layer.padding_mode == "zeros"
    )


def structured_gram_pays(layer: nn.Conv2d, out_h: int, out_w: int) -> bool:
    """Whether the structured Gram is faster than unfolding for an output of ``out_h`` × ``out_w``: at least
    2k + 1 positions each way for a k×k kernel.

    Its band products cost per position about (2k−1)²/2 channel blocks instead of k⁴, but the bands at the borders
    are thin: on small maps they are many tiny products. Measured on 2 CPU cores, float64, 3×3 kernels, 16 images
    (``benchmarks/scale.py``): at 4×4 unfolding is 1.35× faster, at 6×6 the two tie, at 7×7 the structured Gram is
    1.35× faster, at 56×56 3.2×.

    Example:
        >>> structured_gram_pays(nn.Conv2d(8, 8, 3, padding=1), 4, 4), structured_gram_pays(nn.Conv2d(8, 8, 3), 7, 7)
        (False, True)
    """
    kh, kw = layer.kernel_size
    return out_h >= 2 * kh + 1 and out_w >= 2 * kw + 1


def _bands(starts: list[int], length: int) -> list[tuple[int, int]]:
    """The bands that the windows [s, s + length) for s in ``starts`` cut their union into."""
    cuts = sorted({*starts, *(s + length for s in starts)})
    return list(itertools.pairwise(cuts))


def _tap_sums(
    x: torch.Tensor, shift: tuple[int, int], tops: list[int], lefts: list[int], size: tuple[int, int]
) -> dict[tuple[int, int], torch.Tensor]:
    """Σ x[:, :, p, q] x[:, :, p + shift]ᵀ over the rectangle [top, top + h) × [left, left + w), for every
    (top, left) pair: (groups, c, c) each, from one GEMM per band pair of the rectangles' union."""
    (h, w), (dy, dx) = size, shift
    rows, cols = _bands(tops, h), _bands(lefts, w)
    groups, c = x.shape[1], x.shape[2]
    blocks: dict[tuple[int, int], torch.Tensor] = {}
    for r0, r1 in rows:
        for c0, c1 in cols:
            a = x[:, :, :, r0:r1, c0:c1]
            b = x[:, :, :, r0 + dy : r1 + dy, c0 + dx : c1 + dx]
            # (N, g, c, h', w') -> (g, c, N·h'·w'): one GEMM per group over every sample and position of the band.
            a = a.permute(1, 2, 0, 3, 4).reshape(groups, c, -1)
            b = b.permute(1, 2, 0, 3, 4).reshape(groups, c, -1)
            blocks[(r0, c0)] = torch.bmm(a, b.mT)
    sums: dict[tuple[int, int], torch.Tensor] = {}
    for top in tops:
        for left in lefts:
            inside = [block for (r0, c0), block in blocks.items() if top <= r0 < top + h and left <= c0 < left + w]
            sums[(top, left)] = torch.stack(inside).sum(0) if len(inside) > 1 else inside[0].clone()
    return sums


def conv_gram(x: torch.Tensor, layer: nn.Conv2d) -> torch.Tensor:
    """The Gram ``(groups, d, d)`` of the patches ``layer`` multiplies on input ``x``, d = C/groups·kh·kw, ordered
    like ``weight[g].view(Cout/groups, -1)`` — equal to ``rows.mT @ rows`` of :func:`~.rows.conv_rows`, exactly up to
    the order of the float additions, without unfolding.

    Args:
        x: The layer's input, ``(N, C, H, W)``, in the dtype to accumulate in (float64 for the corrector).
        layer: A stride-1 Conv2d with zero padding (see :func:`has_structured_gram`).

    Example:
        >>> layer = nn.Conv2d(4, 2, (3, 2), padding="same", dilation=(2, 1), groups=2)
        >>> conv_gram(torch.randn(1, 4, 7, 5, dtype=torch.float64), layer).shape
        torch.Size([2, 12, 12])
    """
    kh, kw = layer.kernel_size
    dh, dw = layer.dilation
    groups = layer.groups
    left, right, top, bottom = conv_padding(layer)
    padded = F.pad(x, (left, right, top, bottom)) if left or right or top or bottom else x
    n, channels, height, width = padded.shape
    c = channels // groups
    out_h, out_w = conv_output_size(x.shape[2], x.shape[3], layer)
    grouped = padded.reshape(n, groups, c, height, width)
    gram = torch.zeros(groups, c, kh, kw, c, kh, kw, dtype=x.dtype, device=x.device)
    if out_h <= 0 or out_w <= 0:
        return gram.reshape(groups, c * kh * kw, c * kh * kw)
    for du in range(0, kh):
        for dv in range(-(kw - 1), kw):
            if du == 0 and dv < 0:  # the transpose of offset (0, -dv), filled from it below
                continue
            taps = [(u, v) for u in range(kh - du) for v in range(max(0, -dv), min(kw, kw - dv))]
            sums = _tap_sums(
                grouped,
                (du * dh, dv * dw),
                sorted({u * dh for u, _ in taps}),
                sorted({v * dw for _, v in taps}),
                (out_h, out_w),
            )
            for u, v in taps:
                block = sums[(u * dh, v * dw)]
                gram[:, :, u, v, :, u + du, v + dv] = block
                if du or dv:
                    gram[:, :, u + du, v + dv, :, u, v] = block.mT
    return gram.reshape(groups, c * kh * kw, c * kh * kw)
