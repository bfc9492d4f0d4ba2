"""The Gram of a stride-1 convolution's unfolded patches, built from channel cross-correlations (no unfold).

For a stride-1 k×k convolution the patch Gram G = Σ aaᵀ over every output position has one C×C block per pair of
kernel taps (u, v), (u', v'). That block is the cross-correlation of the (zero-padded) input with itself at the
spatial offset ((u'−u)·dh, (v'−v)·dw), summed over the rectangle of positions tap (u, v) reads. Taps with the same
offset read shifted rectangles of one product map, so each offset is computed once, in GEMMs over the bands that the
rectangles' edges cut the map into, and each block is a sum of band products: exact, and about (2k−1)²/2 instead
of k⁴ C×C products per position (6× fewer for 3×3 kernels). The input is laid out once so that every band of whole
padded rows is a contiguous view (no copy per offset); the columns outside a tap's window are subtracted. Offsets
come in transposed pairs (G is symmetric), so only half are computed.

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
    2k positions each way for a k×k kernel.

    It costs per position about (2k−1)²/2 channel blocks instead of k⁴, on a padded map, plus thin column strips;
    on small maps the padding and the strips dominate. Measured on 2 CPU cores, float64, 3×3 kernels, 32 images,
    against unfolding: 4×4 (512 channels) 0.81×, 6×6 (384) 1.35×, 7×7 (512) 1.42×, 8×8 (256) 1.55×,
    16×16 (128) 2.6×, 32×32 (64) 3.1×, 56×56 (64) 3.2× (see the README's scale section).

    Example:
        >>> structured_gram_pays(nn.Conv2d(8, 8, 3, padding=1), 4, 4), structured_gram_pays(nn.Conv2d(8, 8, 3), 6, 6)
        (False, True)
    """
    kh, kw = layer.kernel_size
    return out_h >= 2 * kh and out_w >= 2 * kw


def _flat_layout(x: torch.Tensor, layer: nn.Conv2d) -> tuple[torch.Tensor, int, int, int]:
    """``x`` zero-padded for ``layer`` and laid out as (groups, margin + Hp·Wp + margin, N, c): every position's N×c
    block is contiguous, so any run of whole padded rows is a (rows·Wp·N, c) view. The zero margins hold the
    partners of the shifted products that fall off either end. Returns it, Wp, the margin and the padded height."""
    left, right, top, bottom = conv_padding(layer)
    n, channels, height, width = x.shape
    groups = layer.groups
    c = channels // groups
    padded_h, padded_w = height + top + bottom, width + left + right
    margin = (layer.kernel_size[1] - 1) * layer.dilation[1]
    flat = torch.zeros(groups, 2 * margin + padded_h * padded_w, n, c, dtype=x.dtype, device=x.device)
    grid = flat[:, margin : margin + padded_h * padded_w].view(groups, padded_h, padded_w, n, c)
    grid[:, top : top + height, left : left + width] = x.view(n, groups, c, height, width).permute(1, 3, 4, 0, 2)
    return flat, padded_w, margin, padded_h


def _offset_sums(
    flat: torch.Tensor,
    width: int,
    margin: int,
    shift: tuple[int, int],
    tops: list[int],
    lefts: list[int],
    size: tuple[int, int],
) -> dict[tuple[int, int], torch.Tensor]:
    """Σ x[p] x[p + shift]ᵀ over the rectangle [top, top + h) × [left, left + w), for every (top, left) pair.

    Whole padded rows first: the rows [top, top + h) of the flat layout are one contiguous run, and so is their
    partner run ``shift`` further on, so their product is one GEMM on views (over the row bands that the tops cut,
    each computed once). The columns outside [left, left + w) are then subtracted: thin strided strips, each the same
    products (a partner past the row's end is the next row's start, or the zero margin) that the run added."""
    (h, w), (dy, dx) = size, shift
    step = dy * width + dx
    groups, c = flat.shape[0], flat.shape[-1]

    def run(first_row: int, last_row: int) -> torch.Tensor:
        start = margin + first_row * width
        a = flat[:, start : start + (last_row - first_row) * width].reshape(groups, -1, c)
        b = flat[:, start + step : start + step + (last_row - first_row) * width].reshape(groups, -1, c)
        return torch.bmm(b.mT, a).mT  # = aᵀb; this operand order ran 1.2× faster for c = 64 (2 CPU cores)

    def column(first_row: int, last_row: int, col: int) -> torch.Tensor:
        start = margin + first_row * width + col
        a = flat[:, start : start + (last_row - first_row) * width : width].reshape(groups, -1, c)
        b = flat[:, start + step : start + step + (last_row - first_row) * width : width].reshape(groups, -1, c)
        return torch.bmm(a.mT, b)

    bands = _bands(tops, h)
    excess = sorted({col for left in lefts for col in range(width) if not left <= col < left + w})
    full = {band: run(*band) for band in bands}
    strips = {(band, col): column(*band, col) for band in bands for col in excess}
    sums: dict[tuple[int, int], torch.Tensor] = {}
    for top in tops:
        inside = [band for band in bands if top <= band[0] < top + h]
        for left in lefts:
            total = torch.stack([full[band] for band in inside]).sum(0)
            outside = [strips[(band, col)] for band in inside for col in excess if not left <= col < left + w]
            sums[(top, left)] = total - torch.stack(outside).sum(0) if outside else total
    return sums


def _bands(starts: list[int], length: int) -> list[tuple[int, int]]:
    """The bands that the windows [s, s + length) for s in ``starts`` cut their union into."""
    cuts = sorted({*starts, *(s + length for s in starts)})
    return list(itertools.pairwise(cuts))


def conv_gram(x: torch.Tensor, layer: nn.Conv2d) -> torch.Tensor:
    """The Gram ``(groups, d, d)`` of the patches ``layer`` multiplies on input ``x``, d = C/groups·kh·kw, ordered
    like ``weight[g].view(Cout/groups, -1)`` — equal to ``rows.mT @ rows`` of :func:`~.rows.conv_rows` up to
    round-off (the same products, summed in another order; see ``_offset_sums``), without unfolding.

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
    c = x.shape[1] // groups
    out_h, out_w = conv_output_size(x.shape[2], x.shape[3], layer)
    gram = torch.zeros(groups, c, kh, kw, c, kh, kw, dtype=x.dtype, device=x.device)
    if out_h <= 0 or out_w <= 0:
        return gram.reshape(groups, c * kh * kw, c * kh * kw)
    flat, width, margin, _ = _flat_layout(x, layer)
    for du in range(0, kh):
        for dv in range(-(kw - 1), kw):
            if du == 0 and dv < 0:  # the transpose of offset (0, -dv), filled from it below
                continue
            taps = [(u, v) for u in range(kh - du) for v in range(max(0, -dv), min(kw, kw - dv))]
            sums = _offset_sums(
                flat,
                width,
                margin,
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
