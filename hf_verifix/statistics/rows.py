"""The rows a layer multiplies its weight with: tokens for Linear, unfolded patches for Conv2d."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, NumericalError

__all__ = [
    "check_conv_input",
    "checked_input",
    "conv_output_size",
    "conv_padding",
    "conv_row_chunks",
    "conv_rows",
    "conv_rows_at",
    "linear_rows",
]


def conv_padding(layer: nn.Conv2d) -> tuple[int, int, int, int]:
    """Return the (left, right, top, bottom) zero padding ``layer`` applies, resolving ``"same"``/``"valid"``.

    Example:
        >>> from torch import nn
        >>> conv_padding(nn.Conv2d(1, 1, (1, 4), padding="same"))
        (1, 2, 0, 0)
    """
    if isinstance(layer.padding, str):
        if layer.padding == "valid":
            return (0, 0, 0, 0)
        pads: list[int] = []
        for k, d in zip(reversed(layer.kernel_size), reversed(layer.dilation), strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return (pads[0], pads[1], pads[2], pads[3])
    ph, pw = layer.padding
    return (pw, pw, ph, ph)


def conv_output_size(height: int, width: int, layer: nn.Conv2d) -> tuple[int, int]:
    """The output size of ``layer`` on an input of ``height`` × ``width`` (padding, dilation and stride applied;
    zero or less when the kernel does not fit).

    Example:
        >>> from torch import nn
        >>> conv_output_size(7, 5, nn.Conv2d(1, 1, 3, padding=1, dilation=2))
        (5, 3)
    """
    left, right, top, bottom = conv_padding(layer)
    (kh, kw), (dh, dw), (sh, sw) = layer.kernel_size, layer.dilation, layer.stride
    return (
        (height + top + bottom - dh * (kh - 1) - 1) // sh + 1,
        (width + left + right - dw * (kw - 1) - 1) // sw + 1,
    )


def linear_rows(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """Return the input rows of a Linear layer, shape ``(1, M, in_features)``: every token/position is a row.

    Example:
        >>> from torch import nn
        >>> linear_rows(torch.ones(2, 5, 8), nn.Linear(8, 3)).shape
        torch.Size([1, 10, 8])
    """
    if x.shape[-1] != layer.in_features:
        raise DataError(
            f"Linear expects inputs of size {layer.in_features} in the last dimension, got {tuple(x.shape)}"
        )
    return x.reshape(1, -1, layer.in_features)


def _zero_padded(x: torch.Tensor, layer: nn.Conv2d) -> torch.Tensor:
    """``x`` with the zero padding ``layer`` applies (``x`` itself when there is none)."""
    left, right, top, bottom = conv_padding(layer)
    return F.pad(x, (left, right, top, bottom)) if left or right or top or bottom else x


def _group_rows(patches: torch.Tensor, groups: int) -> torch.Tensor:
    """``F.unfold``'s ``(N, C·kh·kw, L)`` patches as ``(groups, N·L, C/groups·kh·kw)`` rows (a row space per group)."""
    n, cols, length = patches.shape
    per_group = cols // groups
    # (N, g, d, L) -> (g, N, L, d) -> (g, N·L, d)
    return patches.view(n, groups, per_group, length).permute(1, 0, 3, 2).reshape(groups, n * length, per_group)


def conv_rows(x: torch.Tensor, layer: nn.Conv2d, name: str = "conv") -> torch.Tensor:
    """Return the unfolded patches a Conv2d multiplies, shape ``(groups, M, Cin/groups·kh·kw)``.

    Each row is ordered like ``weight[g].view(Cout/groups, -1)``; kernel size, stride, padding (including
    ``"same"``) and dilation are honoured, and grouped/depthwise convolutions get one row space per group.

    Example:
        >>> from torch import nn
        >>> conv_rows(torch.ones(2, 4, 8, 8), nn.Conv2d(4, 6, 3, padding=1, groups=2)).shape
        torch.Size([2, 128, 18])
    """
    check_conv_input(x, name)
    x = _zero_padded(x, layer)
    patches = F.unfold(x, layer.kernel_size, dilation=layer.dilation, stride=layer.stride)  # (N, C·kh·kw, L)
    return _group_rows(patches, layer.groups)


def conv_rows_at(x: torch.Tensor, layer: nn.Conv2d, positions: torch.Tensor) -> torch.Tensor:
    """The patches of :func:`conv_rows` at the given output ``positions`` only (flat indices into the output map,
    the same for every image), gathered without unfolding the rest: shape ``(groups, N·len(positions), d)``.

    Example:
        >>> from torch import nn
        >>> layer, x = nn.Conv2d(2, 3, 3, padding=1), torch.randn(2, 2, 4, 4)
        >>> every = conv_rows(x, layer).view(1, 2, 16, 18)
        >>> torch.equal(conv_rows_at(x, layer, torch.tensor([5, 9])), every[:, :, [5, 9]].reshape(1, 4, 18))
        True
    """
    check_conv_input(x, "conv")
    padded = _zero_padded(x, layer)
    out_w = conv_output_size(x.shape[2], x.shape[3], layer)[1]
    (kh, kw), (dh, dw), (sh, sw) = layer.kernel_size, layer.dilation, layer.stride
    out_rows, out_cols = positions // out_w, positions % out_w
    taps_u = torch.arange(kh).repeat_interleave(kw)[:, None]
    taps_v = torch.arange(kw).repeat(kh)[:, None]
    rows = (out_rows[None] * sh + taps_u * dh).to(x.device)  # (kh·kw, k)
    cols = (out_cols[None] * sw + taps_v * dw).to(x.device)
    patches = padded[:, :, rows, cols]  # (N, C, kh·kw, k)
    n, channels, taps, k = patches.shape
    groups = layer.groups
    grouped = patches.view(n, groups, channels // groups, taps, k).permute(1, 0, 4, 2, 3)
    return grouped.reshape(groups, n * k, channels // groups * taps)


def checked_input(x: torch.Tensor, name: str) -> torch.Tensor:
    """A layer's input, detached, refused when it holds NaN or Inf (naming the layer). Its dtype is kept: the Gram
    converts one bounded chunk at a time.

    Example:
        >>> checked_input(torch.ones(2, 3), "fc").requires_grad
        False
    """
    if not torch.isfinite(x).all():
        raise NumericalError(
            f"the inputs of layer {name!r} contain NaN or Inf; check the data (and the model's earlier layers) "
            "for non-finite values before correcting"
        )
    return x.detach()


def check_conv_input(x: torch.Tensor, name: str) -> None:
    """Refuse a Conv2d input that is not ``(batch, channels, height, width)``.

    Example:
        >>> check_conv_input(torch.ones(1, 3, 4, 4), "conv")  # 4-D: nothing to say
    """
    if x.dim() != 4:
        raise DataError(
            f"expected a 4-D input (batch, channels, height, width) for Conv2d {name!r}, got shape "
            f"{tuple(x.shape)}; pass batched inputs"
        )


def conv_row_chunks(x: torch.Tensor, layer: nn.Conv2d, max_elements: int) -> Iterator[torch.Tensor]:
    """The unfolded patches of :func:`conv_rows`, a bounded chunk at a time: each ``(groups, M, d)`` chunk holds at
    most ``max_elements`` values, or one output row of one image when that alone is larger.

    Chunks are whole images when they fit, else bands of output rows of one image (each unfolded from the input
    rows it reads, so nothing is unfolded twice): the rows of every chunk together are exactly those of
    :func:`conv_rows`, in another order (a Gram does not depend on the order).

    Example:
        >>> from torch import nn
        >>> layer = nn.Conv2d(2, 3, 3, padding=1)
        >>> [chunk.shape[1] for chunk in conv_row_chunks(torch.ones(1, 2, 4, 4), layer, max_elements=18 * 8)]
        [8, 8]
    """
    check_conv_input(x, "conv")
    padded = _zero_padded(x, layer)
    out_h, out_w = conv_output_size(x.shape[2], x.shape[3], layer)
    if out_h <= 0 or out_w <= 0:
        return
    (kh, kw), (dh, dw), (sh, sw) = layer.kernel_size, layer.dilation, layer.stride
    row_values = out_w * x.shape[1] * kh * kw  # one output row of one image, every group
    images = max(1, max_elements // (row_values * out_h))
    bands = out_h if row_values * out_h <= max_elements else max(1, max_elements // row_values)
    groups = layer.groups
    for first in range(0, x.shape[0], images):
        for row in range(0, out_h, bands):
            last = min(out_h, row + bands)
            window = padded[first : first + images, :, row * sh : (last - 1) * sh + dh * (kh - 1) + 1]
            patches = F.unfold(window, (kh, kw), dilation=(dh, dw), stride=(sh, sw))  # (n, C·kh·kw, L)
            yield _group_rows(patches, groups)
