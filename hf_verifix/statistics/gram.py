"""Streamed float64 Gram matrices G = Σ a aᵀ of every targeted layer's inputs, collected with forward hooks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..utils.distributed import sum_across_processes
from .conv_gram import conv_gram, has_structured_gram
from .rows import check_conv_input, checked_input, conv_output_size, layer_rows

__all__ = ["LayerGram", "collect_grams", "gram_hooks", "summed_across_processes"]

# Rows are multiplied in chunks of at most this many float64 elements (~128 MiB) to bound peak memory.
_CHUNK_ELEMENTS = 1 << 24


@dataclass
class LayerGram:
    """The Gram matrices of one layer's inputs: ``gram`` has shape ``(groups, d, d)``; ``rows`` counts the rows.

    Example:
        >>> stats = LayerGram.empty(groups=1, dim=3)
        >>> stats.add(torch.ones(1, 5, 3, dtype=torch.float64))
        >>> stats.rows, stats.gram[0, 0, 0].item()
        (5, 5.0)
    """

    gram: torch.Tensor
    rows: int = 0

    @classmethod
    def empty(cls, groups: int, dim: int) -> LayerGram:
        """Return zero statistics for a layer with ``groups`` row spaces of dimension ``dim``.

        Example:
            >>> LayerGram.empty(2, 4).gram.shape
            torch.Size([2, 4, 4])
        """
        return cls(torch.zeros(groups, dim, dim, dtype=torch.float64))

    def add(self, rows: torch.Tensor) -> None:
        """Accumulate ``rows`` of shape ``(groups, M, d)`` (float64) into the Gram matrices.

        Example:
            >>> stats = LayerGram.empty(1, 2)
            >>> stats.add(torch.tensor([[[1.0, 2.0]]], dtype=torch.float64))
            >>> stats.gram[0].tolist()
            [[1.0, 2.0], [2.0, 4.0]]
        """
        rows = rows.to(self.gram.device)
        step = max(1, _CHUNK_ELEMENTS // max(1, rows.shape[0] * rows.shape[2]))
        for start in range(0, rows.shape[1], step):
            chunk = rows[:, start : start + step]
            self.gram.baddbmm_(chunk.transpose(1, 2), chunk)
        self.rows += rows.shape[1]

    def add_conv(self, x: torch.Tensor, layer: nn.Conv2d, name: str = "conv") -> None:
        """Accumulate the patches a stride-1 Conv2d multiplies on input ``x`` without unfolding them
        (:func:`~.conv_gram.conv_gram`: exact, about 6× fewer products for 3×3 kernels).

        Example:
            >>> layer = nn.Conv2d(2, 4, 3, padding=1)
            >>> stats = LayerGram.empty(1, 18)
            >>> stats.add_conv(torch.ones(1, 2, 5, 5), layer)
            >>> stats.rows
            25
        """
        check_conv_input(x, name)
        x = checked_input(x, name).to(self.gram.device)
        self.gram += conv_gram(x, layer)
        out_h, out_w = conv_output_size(x.shape[2], x.shape[3], layer)
        self.rows += x.shape[0] * max(0, out_h) * max(0, out_w)


def _layer_dims(layer: nn.Module) -> tuple[int, int]:
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    groups = layer.groups if isinstance(layer, nn.Conv2d) else 1
    return groups, int(weight[0].numel())


@contextmanager
def gram_hooks(layers: dict[str, nn.Module], device: torch.device | None = None) -> Iterator[dict[str, LayerGram]]:
    """Within the block, every forward of a layer in ``layers`` adds its inputs to that layer's Gram.

    Layers that share one weight Parameter (with the same ``groups`` and input dimension) feed one Gram, kept under
    the first one's name: the Gram of every row that weight multiplies, wherever it is applied. SAP's
    representation matrix of a weight W used at two places is both places' input rows stacked, R = [A₁; A₂], so
    RᵀR = A₁ᵀA₁ + A₂ᵀA₂: its eigenvectors are R's right singular vectors and its eigenvalues σᵢ², and W is
    projected once onto the span of all its inputs. A layer called several times adds its rows each time (the
    same sum). Hooks are removed on exit, errors included.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> with gram_hooks({"fc": layer}) as grams:
        ...     _ = layer(torch.ones(4, 3))
        >>> grams["fc"].rows, len(layer._forward_pre_hooks)
        (4, 0)
        >>> twin = nn.Linear(3, 2)
        >>> twin.weight = layer.weight  # tied
        >>> with gram_hooks({"fc": layer, "twin": twin}) as grams:
        ...     _, _ = layer(torch.ones(4, 3)), twin(torch.ones(2, 3))
        >>> list(grams), grams["fc"].rows
        (['fc'], 6)
    """
    grams: dict[str, LayerGram] = {}
    feeds: dict[str, LayerGram] = {}
    by_weight: dict[tuple[int, int, int], LayerGram] = {}
    for name, layer in layers.items():
        dims = _layer_dims(layer)
        key = (id(layer.weight), *dims)
        if key not in by_weight:
            stats = LayerGram.empty(*dims)
            if device is not None:
                stats.gram = stats.gram.to(device)
            by_weight[key] = grams[name] = stats
        feeds[name] = by_weight[key]
    handles = []
    try:
        for name, layer in layers.items():

            def hook(module: nn.Module, args: tuple, kwargs: dict, _name: str = name) -> None:
                x = args[0] if args else kwargs.get("input", next(iter(kwargs.values())))
                if has_structured_gram(module):
                    feeds[_name].add_conv(x, module, _name)
                else:
                    feeds[_name].add(layer_rows(x, module, _name))

            handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
        yield grams
    finally:
        for handle in handles:
            handle.remove()


def collect_grams(
    model: nn.Module,
    layers: dict[str, nn.Module],
    inputs: Iterable[torch.Tensor],
    device: torch.device | None = None,
) -> dict[str, LayerGram]:
    """Run ``model`` on every batch of ``inputs`` in eval mode and return each layer's streamed Gram.

    The model's train/eval mode is restored on exit, errors included.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> grams = collect_grams(model, {"0": model[0]}, [torch.randn(5, 3), torch.randn(2, 3)])
        >>> grams["0"].rows
        7
    """
    from ..models.forward import evaluation_mode

    with evaluation_mode(model), torch.no_grad(), gram_hooks(layers, device) as grams:
        for batch in inputs:
            model(batch)
    return grams


def summed_across_processes(stats: LayerGram) -> LayerGram:
    """``stats`` with its Gram and row count summed over every process (itself on one process).

    Example:
        >>> summed_across_processes(LayerGram(torch.eye(2, dtype=torch.float64)[None], rows=3)).rows
        3
    """
    stats.gram = sum_across_processes(stats.gram)
    stats.rows = int(sum_across_processes(torch.tensor([stats.rows]))[0])
    return stats
