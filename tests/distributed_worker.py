"""Run by tests/test_distributed.py, once as a plain process and once under `accelerate launch` (2 processes).

Fits, searches α and scores with two selectors on odd-sized data; every rank saves what it computed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.data.source import SampleSource
from hf_verifix.selection import CurvatureSelector, ExpertSelector, RandomSelector
from hf_verifix.utils.distributed import process_rank_and_count


def model() -> nn.Module:
    """A float64 model: its activations then carry float64 round-off only, whatever the batch composition."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.GELU(),
        nn.Conv2d(6, 8, 3, stride=2, groups=2),
        nn.GELU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 3),
    ).double()


def data(n: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.randn(n, 1, 9, 9, generator=generator, dtype=torch.float64),
        torch.randint(0, 3, (n,), generator=generator),
    )


def main(output: str) -> None:
    torch.set_num_threads(1)
    rank, world = process_rank_and_count()
    train, held_out = data(37, 0), data(23, 1)  # odd sizes: shards are unequal, nothing may be padded
    corrected = model()
    config = CorrectionConfig(n_trusted=11, per_class=True, recalibrate_batchnorm=True, batch_size=4, progress=False)
    corrector = ProjectionCorrector(corrected, config).fit(train)
    result = corrector.search_alpha(held_out, alphas=[1.0, 10.0, 1e3, 1e5])
    curvature = CurvatureSelector(n=3).select(model(), SampleSource(train, batch_size=5), 7, seed=3)
    # No labels given to the source: these selectors read them from the data, each process its own shard.
    random = RandomSelector().select(model(), SampleSource(train, batch_size=5, num_classes=3), 9, per_class=True)
    given = ProjectionCorrector(model(), config).fit(list(train), trusted_indices=[1, 2, 3, 5, 8, 13, 21, 34])
    expert = ExpertSelector(indices=range(0, 37, 2)).select(model(), SampleSource(train, batch_size=5), 6, True)
    torch.save(
        {
            "world": world,
            "state": {k: v.clone() for k, v in corrected.state_dict().items()},
            "projections": {n: p.weight(1e3) for n, p in corrector.projections.items()},
            "originals": {n: w.clone() for n, w in corrector._state.weights.items()},
            "trusted": corrector.trusted_indices,
            "loss_scores": corrector.selection.scores,
            "rows": dict(corrector.layer_rows),
            "curve": result.curve,
            "baseline": result.baseline_accuracy,
            "best_alpha": result.best_alpha,
            "curvature_scores": curvature.scores,
            "curvature_trusted": curvature.indices,
            "labels": train.tensors[1],
            "random": (random.indices, random.labels),
            "given_trusted_counts": given.report()["trusted"]["class_counts"],
            "expert": (expert.indices, expert.labels),
        },
        Path(output) / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(sys.argv[1])
