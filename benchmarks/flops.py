"""Analytical compute of training and correction, counted as the Verifix paper counts it (sec. 5.3, Figure 8).

Only ``nn.Conv2d`` and ``nn.Linear`` layers count; normalisation, pooling and non-linearities are ignored. A forward
pass of one sample costs, per layer, ``f_in * f_out`` (Linear, per token) or ``h_o * w_o * C_in/groups * k_h * k_w *
C_out`` (Conv2d); a backward pass costs twice the forward pass, so one SGD step costs 3 forward passes per sample.
A correction adds: the trusted-sample scoring (forward passes over the training set), one forward pass over the
trusted set for its activations, and per layer with ``m`` activation rows of dimension ``d``: the Gram (the paper's
SVD of an ``m x d`` matrix, ``m d^2``), its decomposition (``d^3``) and the weight update (``C_out d^2`` per α).

Example (run from ``benchmarks/``):
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(64, 2))
    >>> costs = layer_costs(model, torch.zeros(1, 1, 4, 4))
    >>> [(c.name, c.forward_macs, c.rows_per_sample, c.dim) for c in costs]
    [('0', 576, 16, 9), ('2', 128, 1, 64)]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerCost:
    """One Linear/Conv2d layer: its forward multiply-adds per sample and its activation rows per sample."""

    name: str
    forward_macs: int
    rows_per_sample: int
    dim: int
    out_features: int


def layer_costs(model: nn.Module, example: torch.Tensor) -> list[LayerCost]:
    """Run one sample through ``model`` and count each Linear/Conv2d layer's cost for it."""
    costs: list[LayerCost] = []
    hooks = []

    def hook(name: str, module: nn.Module):  # type: ignore[no-untyped-def]
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                dim = module.in_channels // module.groups * kh * kw
                positions = output.shape[-2] * output.shape[-1]
                costs.append(
                    LayerCost(name, positions * dim * module.out_channels, positions, dim, module.out_channels)
                )
            else:
                assert isinstance(module, nn.Linear)
                tokens = inputs[0].numel() // inputs[0].shape[-1] // inputs[0].shape[0]
                costs.append(
                    LayerCost(
                        name,
                        tokens * module.in_features * module.out_features,
                        tokens,
                        module.in_features,
                        module.out_features,
                    )
                )

        return record

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name, module)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    return costs


def forward_macs(costs: list[LayerCost]) -> int:
    """Multiply-adds of one forward pass of one sample."""
    return sum(c.forward_macs for c in costs)


def training_compute(costs: list[LayerCost], samples_seen: int, extra_forward_samples: int = 0) -> float:
    """SGD: 3 forward-pass costs per sample seen (forward + backward), plus forward-only passes (e.g. scoring)."""
    return float(forward_macs(costs)) * (3 * samples_seen + extra_forward_samples)


def correction_compute(costs: list[LayerCost], scored_samples: int, n_trusted: int, n_alphas: int) -> float:
    """SAP: score ``scored_samples`` (forward), one forward pass over the trusted set, then per layer Gram,
    decomposition and one weight update per α tried."""
    total = float(forward_macs(costs)) * (scored_samples + n_trusted)
    for c in costs:
        rows = n_trusted * c.rows_per_sample
        total += float(rows) * c.dim**2 + float(c.dim) ** 3 + n_alphas * float(c.out_features) * c.dim**2
    return total
