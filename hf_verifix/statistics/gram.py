"""Streamed float64 Gram matrices G = Σ a aᵀ of every targeted layer's inputs, collected with forward hooks.

Each chunk's product aᵀa is computed in the Gram's ``precision`` (float64, or float32 for speed where its agreement
is measured to hold) and added into the float64 Gram; no chunk ever holds more than ``_CHUNK_ELEMENTS`` values.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..utils.distributed import sum_across_processes
from .conv_gram import conv_gram, has_structured_gram, structured_gram_pays
from .rows import check_conv_input, checked_input, conv_output_size, conv_row_chunks, conv_rows_at, linear_rows

__all__ = ["PRECISIONS", "LayerGram", "collect_grams", "gram_hooks", "summed_across_processes"]

# Rows are unfolded and multiplied in chunks of at most this many elements (128 MiB in float64) to bound memory.
_CHUNK_ELEMENTS = 1 << 24
PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
# A Gram is symmetric: from this width on, only the 10 diagonal and upper blocks of a 4×4 blocking are multiplied
# (measured on 2 CPU cores, float64: 1.53× faster at d = 4608, 1.44× at 2304, 1.27× at 576).
_SYMMETRIC_BLOCKS = 4
_SYMMETRIC_MIN_DIM = 512


def _image_chunks(x: torch.Tensor, per_image: int) -> Iterator[torch.Tensor]:
    """``x`` in runs of whole images, each about ``_CHUNK_ELEMENTS`` values when one image takes ``per_image``."""
    step = max(1, _CHUNK_ELEMENTS // max(1, per_image))
    for first in range(0, x.shape[0], step):
        yield x[first : first + step]


@dataclass
class LayerGram:
    """The Gram matrices of one layer's inputs: ``gram`` (float64) has shape ``(groups, d, d)``; ``rows`` counts the
    rows; ``precision`` is the dtype each chunk's product is computed in before it is added.

    ``positions`` (opt-in, ``None``: every row, exact) keeps at most that many rows per image: the same random
    output positions (or tokens) of every image, drawn from ``seed`` and the map's size, so every process and
    batching keeps the same rows. A Linear applied once per image (no positions) keeps its one row.

    Example:
        >>> stats = LayerGram.empty(groups=1, dim=3)
        >>> stats.add(torch.ones(1, 5, 3))
        >>> stats.rows, stats.gram[0, 0, 0].item()
        (5, 5.0)
    """

    gram: torch.Tensor
    rows: int = 0
    precision: torch.dtype = torch.float64
    positions: int | None = None
    seed: int = 0

    def kept_positions(self, length: int) -> torch.Tensor | None:
        """The positions of a ``length``-position map this Gram keeps, sorted (None: all of them).

        Example:
            >>> stats = LayerGram.empty(1, 2)
            >>> stats.positions = 3
            >>> stats.kept_positions(10).numel(), stats.kept_positions(2)
            (3, None)
        """
        if self.positions is None or length <= self.positions:
            return None
        generator = torch.Generator().manual_seed(self.seed + length)
        return torch.randperm(length, generator=generator)[: self.positions].sort().values

    @classmethod
    def empty(cls, groups: int, dim: int, precision: torch.dtype = torch.float64) -> LayerGram:
        """Return zero statistics for a layer with ``groups`` row spaces of dimension ``dim``.

        Example:
            >>> LayerGram.empty(2, 4).gram.shape
            torch.Size([2, 4, 4])
        """
        return cls(torch.zeros(groups, dim, dim, dtype=torch.float64), precision=precision)

    def _add_product(self, rows: torch.Tensor) -> None:
        """Add rowsᵀrows, computing only the diagonal and upper blocks of a wide Gram and mirroring them."""
        rows = rows.to(self.gram.device, self.precision)
        dim = rows.shape[-1]
        blocks = _SYMMETRIC_BLOCKS if dim >= _SYMMETRIC_MIN_DIM else 1
        edges = [dim * i // blocks for i in range(blocks + 1)]
        for i in range(blocks):
            rows_i = rows[:, :, edges[i] : edges[i + 1]]
            for j in range(i, blocks):
                block = torch.bmm(rows[:, :, edges[j] : edges[j + 1]].mT, rows_i).mT.to(torch.float64)
                self.gram[:, edges[i] : edges[i + 1], edges[j] : edges[j + 1]] += block
                if j > i:
                    self.gram[:, edges[j] : edges[j + 1], edges[i] : edges[i + 1]] += block.mT

    def add(self, rows: torch.Tensor) -> None:
        """Accumulate ``rows`` of shape ``(groups, M, d)`` (any float dtype) into the Gram matrices, a bounded chunk
        of rows at a time.

        Example:
            >>> stats = LayerGram.empty(1, 2)
            >>> stats.add(torch.tensor([[[1.0, 2.0]]]))
            >>> stats.gram[0].tolist()
            [[1.0, 2.0], [2.0, 4.0]]
        """
        step = max(1, _CHUNK_ELEMENTS // max(1, rows.shape[0] * rows.shape[2]))
        for start in range(0, rows.shape[1], step):
            self._add_product(rows[:, start : start + step])
        self.rows += rows.shape[1]

    def add_conv(self, x: torch.Tensor, layer: nn.Conv2d, name: str = "conv") -> None:
        """Accumulate the patches ``layer`` multiplies on input ``x``: from channel cross-correlations when that is
        cheaper (:func:`~.conv_gram.structured_gram_pays`: exact, up to 6× fewer products for 3×3 kernels), else
        unfolded a bounded chunk at a time (:func:`~.rows.conv_row_chunks`).

        Example:
            >>> layer = nn.Conv2d(2, 4, 3, padding=1)
            >>> stats = LayerGram.empty(1, 18)
            >>> stats.add_conv(torch.ones(1, 2, 5, 5), layer)
            >>> stats.rows
            25
        """
        check_conv_input(x, name)
        x = checked_input(x, name)
        out_h, out_w = conv_output_size(x.shape[2], x.shape[3], layer)
        kept = self.kept_positions(max(0, out_h) * max(0, out_w))
        if kept is not None:
            per_image = kept.numel() * x.shape[1] * layer.kernel_size[0] * layer.kernel_size[1]
            for images in _image_chunks(x, per_image):
                self._add_product(conv_rows_at(images, layer, kept))
            self.rows += x.shape[0] * kept.numel()
            return
        if has_structured_gram(layer) and structured_gram_pays(layer, out_h, out_w):
            for images in _image_chunks(x, x[0].numel()):
                self.gram += conv_gram(images.to(self.gram.device, self.precision), layer).to(torch.float64)
        else:
            for chunk in conv_row_chunks(x, layer, _CHUNK_ELEMENTS):
                self._add_product(chunk)
        self.rows += x.shape[0] * max(0, out_h) * max(0, out_w)

    def add_input(self, x: torch.Tensor, layer: nn.Module, name: str) -> None:
        """Accumulate the rows a Linear or Conv2d ``layer`` multiplies on its input ``x`` (refused if not finite).

        Example:
            >>> stats = LayerGram.empty(1, 3)
            >>> stats.add_input(torch.ones(2, 4, 3), nn.Linear(3, 1), "fc")
            >>> stats.rows
            8
        """
        if isinstance(layer, nn.Conv2d):
            self.add_conv(x, layer, name)
        elif isinstance(layer, nn.Linear):
            x = checked_input(x, name)
            kept = self.kept_positions(x.shape[-2]) if x.dim() >= 3 else None  # (..., tokens, features)
            self.add(linear_rows(x if kept is None else x.index_select(-2, kept.to(x.device)), layer))
        else:
            raise TypeError(f"layer {name!r} is a {type(layer).__name__}; only nn.Linear and nn.Conv2d have rows")


def _layer_dims(layer: nn.Module) -> tuple[int, int]:
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    groups = layer.groups if isinstance(layer, nn.Conv2d) else 1
    return groups, int(weight[0].numel())


@contextmanager
def gram_hooks(
    layers: dict[str, nn.Module],
    device: torch.device | None = None,
    precision: str = "float64",
    positions: int | None = None,
    seed: int = 0,
) -> Iterator[dict[str, LayerGram]]:
    """Within the block, every forward of a layer in ``layers`` adds its inputs to that layer's Gram.

    Layers that share one weight Parameter (with the same ``groups`` and input dimension) feed one Gram, kept under
    the first one's name: the Gram of every row that weight multiplies, wherever it is applied. SAP's
    representation matrix of a weight W used at two places is both places' input rows stacked, R = [A₁; A₂], so
    RᵀR = A₁ᵀA₁ + A₂ᵀA₂: its eigenvectors are R's right singular vectors and its eigenvalues σᵢ², and W is
    projected once onto the span of all its inputs. A layer called several times adds its rows each time (the
    same sum). ``positions`` and ``seed`` subsample each image's rows (see :class:`LayerGram`; each layer draws
    from ``seed`` and its name). Hooks are removed on exit, errors included.

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
            stats = LayerGram.empty(*dims, precision=PRECISIONS[precision])
            stats.positions, stats.seed = positions, (seed + zlib.crc32(name.encode())) % 2**62
            if device is not None:
                stats.gram = stats.gram.to(device)
            by_weight[key] = grams[name] = stats
        feeds[name] = by_weight[key]
    handles = []
    try:
        for name, layer in layers.items():

            def hook(module: nn.Module, args: tuple, kwargs: dict, _name: str = name) -> None:
                x = args[0] if args else kwargs.get("input", next(iter(kwargs.values())))
                feeds[_name].add_input(x, module, _name)

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
    precision: str = "float64",
    positions: int | None = None,
    seed: int = 0,
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

    with evaluation_mode(model), torch.no_grad(), gram_hooks(layers, device, precision, positions, seed) as grams:
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
