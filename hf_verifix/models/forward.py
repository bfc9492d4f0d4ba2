"""Running any image classifier the same way: logits out of timm, transformers and plain modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import InputTypeError

__all__ = ["evaluation_mode", "logits_of", "model_device", "model_input_channels"]


def logits_of(output: Any) -> torch.Tensor:
    """Return the logits tensor of a model's output (a tensor, a transformers ``ModelOutput``, a tuple or a dict).

    Example:
        >>> logits_of(torch.zeros(2, 3)).shape
        torch.Size([2, 3])
        >>> logits_of({"logits": torch.zeros(1, 5)}).shape
        torch.Size([1, 5])
    """
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise InputTypeError(
        f"cannot find logits in a model output of type {type(output).__name__}; the model must return a tensor, "
        "an object with .logits, a dict with 'logits' or a tuple whose first item is the logits"
    )


def model_device(model: nn.Module) -> torch.device:
    """Return the device of the model's first parameter (CPU for a model without parameters).

    Example:
        >>> model_device(nn.Linear(2, 2))
        device(type='cpu')
    """
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def model_input_channels(model: nn.Module) -> int | None:
    """Return the channel count the model's first Conv2d expects, or None for a model without one.

    Example:
        >>> model_input_channels(nn.Sequential(nn.Conv2d(1, 8, 3)))
        1
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode within the block and restore every submodule's mode on exit, errors included.

    Example:
        >>> model = nn.Sequential(nn.Dropout(), nn.Linear(2, 2)).train()
        >>> with evaluation_mode(model):
        ...     model.training
        False
        >>> model.training, model[0].training
        (True, True)
    """
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        yield model
    finally:
        for module, mode in modes.items():
            module.training = mode
