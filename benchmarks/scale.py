"""Scale benchmark: the Gram collection and decomposition of real models at real image sizes (issue #16).

For each model and Gram path, a fresh process builds the model (``pretrained=False``: the cost does not depend on
the weights), streams N random images through the Gram hooks of every Linear/Conv2d layer, decomposes every Gram,
and reports per phase: wall time, peak resident memory (``ru_maxrss`` of that process, measured), the Gram
multiply-add count (Σ groups·rows·d² per layer, what the unfolded path computes) and the effective rate against this
machine's float32 and float64 GEMM rates, measured in the same run by the parent process.

Paths: ``structured`` (the default: stride-1 convolutions from channel cross-correlations, no unfold) and
``unfold`` (every convolution unfolded). Collection is linear in N and decomposition does not depend on it, so a run
at small N is extrapolated to N = 1000 (``extrapolated_collection_s_n1000``; stated as an extrapolation).

    .venv/bin/python benchmarks/scale.py --models cifar_resnet18 resnet50 --n 64 --paths structured unfold
    .venv/bin/python benchmarks/scale.py --device cuda --models resnet50 --n 1000   # when a GPU is present
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {
    "cifar_resnet18": ("resnet18", 32),  # the papers' CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool
    "resnet50": ("resnet50", 224),
    "vit_b16": ("vit_base_patch16_224", 224),
    "inception_resnet_v2": ("inception_resnet_v2", 299),
}


def build(name: str) -> torch.nn.Module:
    """The benchmark's model, untrained (timm, ``pretrained=False``), in eval mode."""
    import timm

    arch, _ = MODELS[name]
    model = timm.create_model(arch, pretrained=False, num_classes=10 if name == "cifar_resnet18" else 1000)
    if name == "cifar_resnet18":
        model.conv1 = torch.nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = torch.nn.Identity()
    return model.eval()


def gemm_rates(device: str, size: int = 2048, repeats: int = 3) -> dict[str, float]:
    """Multiply-adds per second of one square matmul, float32 and float64, best of ``repeats``."""
    rates = {}
    for dtype in (torch.float32, torch.float64):
        a = torch.randn(size, size, dtype=dtype, device=device)
        best = float("inf")
        for _ in range(repeats + 1):  # the first is a warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ a
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        rates[str(dtype).removeprefix("torch.")] = size**3 / best
    return rates


def gram_macs(grams: dict) -> float:
    """Σ groups·rows·d² over the collected Grams: what multiplying the unfolded rows costs."""
    return float(sum(s.gram.shape[0] * s.rows * s.gram.shape[-1] ** 2 for s in grams.values()))


def one(name: str, path: str, n: int, batch: int, device: str) -> dict:
    """Collect and decompose in this process; return its figures (peak memory included)."""
    import hf_verifix.statistics.gram as gram_module
    from hf_verifix.projection.spectrum import decompose
    from hf_verifix.statistics.layers import find_target_layers

    if path == "unfold":
        gram_module.has_structured_gram = lambda layer: False  # type: ignore[assignment]
    torch.manual_seed(0)
    model = build(name).to(device)
    size = MODELS[name][1]
    targets = find_target_layers(model, on_uncorrectable="skip").targets
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    inputs = (torch.randn(min(batch, n - i), 3, size, size, device=device) for i in range(0, n, batch))
    start = time.perf_counter()
    grams = gram_module.collect_grams(model, targets, inputs, device=torch.device(device))
    if device == "cuda":
        torch.cuda.synchronize()
    collection = time.perf_counter() - start
    collect_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    macs = gram_macs(grams)
    gram_bytes = sum(s.gram.numel() * 8 for s in grams.values())
    start = time.perf_counter()
    for key in list(grams):
        stats = grams.pop(key)
        decompose(stats.gram, key)
    decomposition = time.perf_counter() - start
    return {
        "model": name,
        "path": path,
        "n": n,
        "image_size": size,
        "device": device,
        "layers": len(targets),
        "gram_macs": macs,
        "gram_gib_float64": gram_bytes / 2**30,
        "collection_s": collection,
        "decomposition_s": decomposition,
        "collection_rate_macs_per_s": macs / collection,
        "peak_rss_gib_after_collection": collect_rss / 2**20,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rss_gib_before": base_rss / 2**20,
        "extrapolated_collection_s_n1000": collection * 1000 / n,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cifar_resnet18"], choices=sorted(MODELS))
    parser.add_argument("--paths", nargs="+", default=["structured", "unfold"], choices=["structured", "unfold"])
    parser.add_argument("--n", type=int, default=64, help="trusted images streamed (extrapolated to 1000)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS / "scale_cpu.json"))
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], args.n, args.batch_size, args.device)))
        return {}
    runs = []
    for name in args.models:
        for path in args.paths:  # each in a fresh process: its peak memory is its own
            command = [sys.executable, __file__, "--one", name, path, "--n", str(args.n)]
            command += ["--batch-size", str(args.batch_size), "--device", args.device, "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            run = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append(run)
            print(
                f"{name:>20} {path:>10}: collection {run['collection_s']:.2f} s "
                f"({run['collection_rate_macs_per_s'] / 1e9:.1f} GMAC/s), "
                f"decomposition {run['decomposition_s']:.2f} s, peak RSS {run['peak_rss_gib']:.2f} GiB",
                flush=True,
            )
    rates = gemm_rates(args.device)
    result = {
        "machine": {"device": args.device, "threads": args.threads, "torch": torch.__version__},
        "gemm_macs_per_s": rates,
        "runs": runs,
        "command": "benchmarks/scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(rates))
    return result


if __name__ == "__main__":
    main()
