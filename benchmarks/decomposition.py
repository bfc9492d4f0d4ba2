"""Decompose once, or solve per α? hf_verifix's eigendecomposition vs a Cholesky solve for every α.

SAP's projected weight is Ŵ = W·U diag(λ(α)) Uᵀ with λᵢ = ασ̃ᵢ / ((α−1)σ̃ᵢ + 1). Since λ is a rational function of
Ĝ = G / tr G, the same weight is also Ŵᵀ = α (I + (α−1)Ĝ)⁻¹ Ĝ Wᵀ: one Cholesky factorisation and solve per α, no
eigendecomposition. With ``solver="eigh"`` hf_verifix decomposes each Gram once (``hf_verifix.projection.spectrum.
decompose``: ``eigh`` of the block of coordinates that were ever non-zero) and keeps W·U, so each α then costs one
product; ``solver="cholesky"`` solves per α, and the default ``"auto"`` picks per layer by cost. This script
times both ways for one layer, for an α search of ``--alphas`` values, on two kinds of Gram:

* ``full rank``: rows with every coordinate active (a 3×3 convolution deep in a network at a large input size);
* ``active 512`` (d/2 for d < 1024): only 512 coordinates ever non-zero (resnet18's last stage at 28×28 input:
  most patch taps only see zero padding), the rest exactly zero.

Both ways solve only the block of coordinates that were ever non-zero and do their α-independent work once. It
also reports the largest relative difference between the two ways' weights. Run (a few minutes):

    .venv/bin/python benchmarks/decomposition.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from hf_verifix.projection.spectrum import decompose
from hf_verifix.projection.update import LayerProjection

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[1152, 2304, 4608], help="input dimensions d")
    parser.add_argument("--out-features", type=int, default=512)
    parser.add_argument("--alphas", type=float, nargs="+", default=[1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "decomposition.json")
    return parser.parse_args()


def gram(d: int, active: int, seed: int) -> torch.Tensor:
    """A float64 Gram of ``4 d`` random rows whose first ``active`` coordinates are non-zero (the rest exactly 0)."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.zeros(4 * d, d, dtype=torch.float64)
    mixing = torch.randn(active, active, generator=generator, dtype=torch.float64) / active**0.5
    rows[:, :active] = torch.randn(4 * d, active, generator=generator, dtype=torch.float64) @ mixing
    return rows.T @ rows


def cholesky_weights(weight: torch.Tensor, g: torch.Tensor, alphas: list[float]) -> list[torch.Tensor]:
    """Ŵ = (α (I + (α−1)Ĝ)⁻¹ Ĝ Wᵀ)ᵀ with Ĝ = G / tr G for each α: one Cholesky factorisation and solve per α.

    Like ``decompose``, only the block of coordinates that were ever non-zero is solved (the others' rows of ĜWᵀ
    are zero, so their rows of the solution are too), and the α-independent ĜWᵀ is computed once.
    """
    active = torch.nonzero(g.diagonal() > 0).flatten()
    g_hat = g[active][:, active] / torch.trace(g)
    rhs = g_hat @ weight[:, active].T
    eye = torch.eye(active.numel(), dtype=g.dtype)
    weights = []
    for alpha in alphas:
        factor = torch.linalg.cholesky(eye + (alpha - 1.0) * g_hat)
        projected = torch.zeros_like(weight)
        projected[:, active] = (alpha * torch.cholesky_solve(rhs, factor)).T
        weights.append(projected)
    return weights


def measure(d: int, active: int, args: argparse.Namespace) -> dict[str, float | int | str]:
    g = gram(d, active, seed=d + active)
    weight = torch.randn(args.out_features, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    start = time.perf_counter()
    projection = LayerProjection(weight, decompose(g[None], "bench"))
    decomposed = time.perf_counter() - start
    start = time.perf_counter()
    ours = [projection.weight(alpha) for alpha in args.alphas]
    updates = time.perf_counter() - start
    start = time.perf_counter()
    theirs = cholesky_weights(weight, g, args.alphas)
    cholesky = time.perf_counter() - start
    difference = max(float(torch.linalg.norm(a - b) / torch.linalg.norm(b)) for a, b in zip(ours, theirs, strict=True))
    return {
        "d": d,
        "active": active,
        "kind": "full rank" if active == d else f"active {active}",
        "eigh_s": decomposed,
        "eigh_updates_s": updates,
        "eigh_total_s": decomposed + updates,
        "cholesky_total_s": cholesky,
        "max_relative_difference": difference,
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    measure(64, 32, argparse.Namespace(out_features=8, alphas=args.alphas))  # warm-up: first linalg calls load kernels
    results = [measure(d, active, args) for d in args.dims for active in (d, min(512, d // 2))]
    print(f"one layer, {args.out_features} outputs, {len(args.alphas)} α values, float64, {args.threads} threads")
    print("| d | Gram | eigh once (+ updates) | Cholesky per α | ratio | max rel. difference |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['d']} | {r['kind']} | {r['eigh_total_s']:.2f} s ({r['eigh_s']:.2f} + {r['eigh_updates_s']:.2f}) "
            f"| {r['cholesky_total_s']:.2f} s | {float(r['cholesky_total_s']) / float(r['eigh_total_s']):.2f}× "
            f"| {r['max_relative_difference']:.1e} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    settings = {"machine": platform.machine(), "threads": args.threads, "alphas": args.alphas}
    args.output.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
