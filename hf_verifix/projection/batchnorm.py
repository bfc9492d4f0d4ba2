"""Re-estimating BatchNorm running statistics after the weights that feed them changed."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..models.forward import evaluation_mode

__all__ = ["batchnorm_buffers", "batchnorm_layers", "recalibrate_batchnorm"]


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Return the BatchNorm layers of ``model`` that track running statistics.

    Example:
        >>> len(batchnorm_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))))
        1
    """
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def recalibrate_batchnorm(model: nn.Module, inputs: Iterable[torch.Tensor]) -> int:
    """Reset and re-estimate every BatchNorm's running mean/variance on ``inputs``; return how many were updated.

    Statistics are the exact average over all batches (``momentum=None``); only BatchNorm layers run in train
    mode (dropout and the rest stay in eval); modes and momenta are restored on exit, errors included.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
        >>> recalibrate_batchnorm(model, [torch.randn(4, 1, 8, 8)])
        1
        >>> int(model[1].num_batches_tracked)
        1
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [bn.momentum for bn in layers]
    with evaluation_mode(model), torch.no_grad():
        try:
            for bn in layers:
                bn.reset_running_stats()
                bn.momentum = None
                bn.train()
            for batch in inputs:
                model(batch)
        finally:
            for bn, momentum in zip(layers, momenta, strict=True):
                bn.momentum = momentum
    return len(layers)


def batchnorm_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The running statistics of every BatchNorm layer, by qualified name (what a projection makes stale).

    Example:
        >>> sorted(batchnorm_buffers(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))))
        ['1.num_batches_tracked', '1.running_mean', '1.running_var']
    """
    layers = set(map(id, batchnorm_layers(model)))
    return {
        f"{prefix}.{name}" if prefix else name: buffer
        for prefix, layer in model.named_modules()
        if id(layer) in layers
        for name, buffer in layer.named_buffers(recurse=False)
    }
