"""The rows a layer multiplies its weight with: tokens for Linear, unfolded patches for Conv2d."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, NumericalError

__all__ = [
    "check_conv_input",
    "checked_input",
    "conv_output_size",
    "conv_padding",
    "conv_rows",
    "layer_rows",
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
    left, right, top, bottom = conv_padding(layer)
    if left or right or top or bottom:
        x = F.pad(x, (left, right, top, bottom))
    patches = F.unfold(x, layer.kernel_size, dilation=layer.dilation, stride=layer.stride)  # (N, C·kh·kw, L)
    groups = layer.groups
    n, cols, length = patches.shape
    per_group = cols // groups
    # (N, g, d, L) -> (g, N, L, d) -> (g, N·L, d)
    return patches.view(n, groups, per_group, length).permute(1, 0, 3, 2).reshape(groups, n * length, per_group)


def checked_input(x: torch.Tensor, name: str) -> torch.Tensor:
    """A layer's input as a detached float64 tensor, refused when it holds NaN or Inf (naming the layer).

    Example:
        >>> checked_input(torch.ones(2, 3), "fc").dtype
        torch.float64
    """
    if not torch.isfinite(x).all():
        raise NumericalError(
            f"the inputs of layer {name!r} contain NaN or Inf; check the data (and the model's earlier layers) "
            "for non-finite values before correcting"
        )
    return x.detach().to(torch.float64)


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


def layer_rows(x: torch.Tensor, layer: nn.Module, name: str) -> torch.Tensor:
    """Return the float64 input rows of a targeted layer, shape ``(groups, M, d)``, after checking they are finite.

    Example:
        >>> from torch import nn
        >>> layer_rows(torch.ones(3, 4), nn.Linear(4, 2), "fc").dtype
        torch.float64
    """
    x = checked_input(x, name)
    if isinstance(layer, nn.Conv2d):
        return conv_rows(x, layer, name)
    if isinstance(layer, nn.Linear):
        return linear_rows(x, layer)
    raise TypeError(f"layer {name!r} is a {type(layer).__name__}; only nn.Linear and nn.Conv2d have rows")
