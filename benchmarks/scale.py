"""Scale benchmark: correct real models at real image sizes, and the reference code's way side by side (issue #16).

Each variant runs in a fresh process (its peak memory is its own): it builds the model (timm, ``pretrained=False``,
seed 0: every variant corrects the same weights), streams N real Fashion-MNIST training images (resized to the model's
input size, three channels) through the correction with the given trusted rows, applies one α = 3e4, and reports per
phase: wall time, peak resident memory (``ru_maxrss``, measured), the Gram multiply-add count (Σ groups·rows·d², what
multiplying the unfolded rows costs) and the effective collection rate against this machine's float32 and float64
GEMM rates, measured in the same run by the parent once the variants are done. The parent then compares every
variant's corrected weights with the first variant's (relative Frobenius distance per layer).

Variants:
    sap         hf_verifix's defaults: float64 Gram products (structured where it pays), one Cholesky solve per α
    sap32       the same with ``gram_precision="float32"``
    sap_cap     the same with ``max_rows_per_layer=50_000`` (opt-in subsample: the reference's row cap)
    sap_eigh    float64 Grams, ``solver="eigh"`` (one eigendecomposition per layer, as 0.1 did)
    unfold      float64, every convolution unfolded, eigh (0.1's collection and decomposition)
    reference   the reference code's procedure, re-implemented from its description: float32 rows materialised per
                layer, a random 50,000-row cap, ``torch.linalg.svd``, one α

    .venv/bin/python benchmarks/scale.py --models cifar_resnet18 --n 1000 --variants sap sap32 sap_eigh reference
    .venv/bin/python benchmarks/scale.py --models resnet50 vit_b16 inception_resnet_v2 --n 32 --variants sap sap32
    .venv/bin/python benchmarks/scale.py --device cuda --models resnet50 --n 1000   # when a GPU is present
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {
    "cifar_resnet18": ("resnet18", 32),  # the papers' CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool
    "resnet50": ("resnet50", 224),
    "vit_b16": ("vit_base_patch16_224", 224),
    "inception_resnet_v2": ("inception_resnet_v2", 299),
    "vit_b16_transformers": ("google/vit-base-patch16-224 architecture", 224),
}
VARIANTS = ("sap", "sap32", "sap_cap", "sap_eigh", "unfold", "reference")
ALPHA = 3e4
REFERENCE_ROW_CAP = 50_000


def build(name: str) -> torch.nn.Module:
    """The benchmark's model, untrained (timm, ``pretrained=False``, seed 0), in eval mode."""
    import timm

    torch.manual_seed(0)
    if name == "vit_b16_transformers":  # ViT-B/16's configuration (transformers' defaults), randomly initialised
        from transformers import ViTConfig, ViTForImageClassification

        return ViTForImageClassification(ViTConfig(num_labels=1000)).eval()
    arch, _ = MODELS[name]
    model = timm.create_model(arch, pretrained=False, num_classes=10 if name == "cifar_resnet18" else 1000)
    if name == "cifar_resnet18":
        model.conv1 = torch.nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = torch.nn.Identity()
    return model.eval()


class Images(torch.utils.data.Dataset):
    """N Fashion-MNIST training images (a fixed random draw), resized to ``size`` and repeated to three channels,
    normalised to zero mean and unit variance; made one at a time (no N-image tensor at 299 px)."""

    def __init__(self, n: int, size: int) -> None:
        from hf_verifix.data.fashion_mnist import load_fashion_mnist_arrays

        images, _ = load_fashion_mnist_arrays("train")
        chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n]
        self.images = torch.from_numpy(images[chosen.numpy()]).float().div(255).sub(0.286).div(0.353)
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index][None, None]
        if self.size != image.shape[-1]:
            image = torch.nn.functional.interpolate(image, size=(self.size, self.size), mode="bilinear")
        return image[0].expand(3, -1, -1).contiguous(), 0


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


def _sap(model: torch.nn.Module, data: Images, variant: str, batch: int, device: str) -> tuple[dict, dict]:
    """Correct with hf_verifix; return (figures, corrected weights of the corrected layers)."""
    import hf_verifix.statistics.gram as gram_module
    from hf_verifix import ProjectionCorrector

    if variant == "unfold":
        gram_module.has_structured_gram = lambda layer: False  # type: ignore[assignment]
    options = {
        "sap": {},
        "sap32": {"gram_precision": "float32"},
        "sap_cap": {"max_rows_per_layer": REFERENCE_ROW_CAP},
        "sap_eigh": {"solver": "eigh"},
        "unfold": {"solver": "eigh"},
    }[variant]
    corrector = ProjectionCorrector(
        model, batch_size=batch, progress=False, on_uncorrectable="skip", alpha=ALPHA, **options
    )
    corrector.fit(data, trusted_indices=range(len(data)))
    corrector.apply(ALPHA)
    if device == "cuda":
        torch.cuda.synchronize()
    projections = corrector.projections
    macs = sum(p.groups * corrector.layer_rows[name] * p.dim**2 for name, p in projections.items())
    figures = {
        "collection_s": corrector.timings["collection_s"],
        "decomposition_s": corrector.timings.get("decomposition_s", 0.0),
        "update_s": corrector.timings["update_s"],
        "gram_macs": float(macs),
        "gram_gib_float64": sum(p.groups * p.dim**2 * 8 for p in projections.values()) / 2**30,
        "layers": len(projections),
        "memory_bound_gib": 2 * sum(p.groups * p.dim**2 * 8 for p in projections.values()) / 2**30
        + sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**30
        + 1.0,
    }
    modules = dict(model.named_modules())
    return figures, {name: modules[name].weight.detach().cpu() for name in projections}


def _reference(model: torch.nn.Module, data: Images, batch: int, device: str) -> tuple[dict, dict]:
    """The reference procedure: per layer, float32 input rows of the trusted images materialised (each batch keeps a
    random share, so at most 50,000 rows in all), then ``torch.linalg.svd`` and the same λ(α) on σ²."""
    from hf_verifix.statistics.layers import find_target_layers
    from hf_verifix.statistics.rows import conv_rows

    targets = find_target_layers(model, on_uncorrectable="skip").targets
    generator = torch.Generator().manual_seed(0)
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in targets}

    def rows_of(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(module, torch.nn.Conv2d):
            assert module.groups == 1, "the reference procedure handles ungrouped layers only"
            return conv_rows(x.detach().float(), module)[0]
        return x.detach().float().reshape(-1, x.shape[-1])

    handles = []
    for name, layer in targets.items():

        def hook(module: torch.nn.Module, args: tuple, _name: str = name) -> None:
            rows = rows_of(module, args[0])
            share = max(1, REFERENCE_ROW_CAP * args[0].shape[0] // len(data))
            if rows.shape[0] > share:
                rows = rows[torch.randperm(rows.shape[0], generator=generator)[:share].to(rows.device)]
            kept[_name].append(rows.cpu())

        handles.append(layer.register_forward_pre_hook(hook))
    loader = torch.utils.data.DataLoader(data, batch_size=batch)
    start = time.perf_counter()
    with torch.no_grad():
        for images, _ in loader:
            model(images.to(device))
    for handle in handles:
        handle.remove()
    collection = time.perf_counter() - start
    start = time.perf_counter()
    corrected = {}
    for name, layer in targets.items():
        rows = torch.cat(kept.pop(name)).to(device)
        _, singular, vh = torch.linalg.svd(rows, full_matrices=False)
        del rows
        energy = singular.double() ** 2
        normalized = energy / energy.sum()
        lam = ALPHA * normalized / ((ALPHA - 1) * normalized + 1)
        weight = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
        v = vh.double().T
        corrected[name] = ((weight @ v) * lam @ v.T).reshape(layer.weight.shape).float().cpu()
    decomposition = time.perf_counter() - start
    figures = {"collection_s": collection, "decomposition_s": decomposition, "update_s": 0.0, "layers": len(targets)}
    return figures, corrected


def one(name: str, variant: str, n: int, batch: int, device: str, weights_path: str) -> dict:
    """Run one variant in this process; save its corrected weights; return its figures (peak memory included)."""
    model = build(name).to(device)
    data = Images(n, MODELS[name][1])
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if variant == "reference":
        figures, weights = _reference(model, data, batch, device)
    else:
        figures, weights = _sap(model, data, variant, batch, device)
    total = time.perf_counter() - start
    torch.save(weights, weights_path)
    figures.update(
        model=name,
        variant=variant,
        n=n,
        image_size=MODELS[name][1],
        device=device,
        total_s=total,
        peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        rss_gib_before=base_rss / 2**20,
        extrapolated_collection_s_n1000=figures["collection_s"] * 1000 / n,
    )
    if "gram_macs" in figures:
        figures["collection_rate_macs_per_s"] = figures["gram_macs"] / figures["collection_s"]
    return figures


def agreement(weights: dict[str, torch.Tensor], baseline: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative Frobenius distance ‖Ŵ − Ŵ₀‖ / ‖Ŵ₀‖ per common layer: its maximum and median."""
    distances = sorted(
        float((weights[k].double() - baseline[k].double()).norm() / baseline[k].double().norm().clamp(min=1e-300))
        for k in baseline
        if k in weights
    )
    return {"max": distances[-1], "median": distances[len(distances) // 2], "layers": len(distances)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cifar_resnet18"], choices=sorted(MODELS))
    parser.add_argument("--variants", nargs="+", default=["sap", "sap32"], choices=VARIANTS)
    parser.add_argument("--n", type=int, default=64, help="trusted images streamed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS / "scale_cpu.json"))
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "VARIANT", "WEIGHTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], args.n, args.batch_size, args.device, args.one[2])))
        return {}
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            first: dict | None = None
            for variant in args.variants:  # each in a fresh process: its peak memory is its own
                weights_path = str(Path(folder) / f"{name}-{variant}.pt")
                command = [sys.executable, __file__, "--one", name, variant, weights_path, "--n", str(args.n)]
                command += ["--batch-size", str(args.batch_size), "--device", args.device]
                command += ["--threads", str(args.threads)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{name} {variant} failed:\n{done.stderr[-3000:]}")
                run = json.loads(done.stdout.strip().splitlines()[-1])
                weights = torch.load(weights_path)
                if first is None:
                    first = weights
                else:
                    run["agreement_with_" + args.variants[0]] = agreement(weights, first)
                runs.append(run)
                print(
                    f"{name:>20} {variant:>10}: total {run['total_s']:.1f} s = collection {run['collection_s']:.1f}"
                    f" + decomposition {run['decomposition_s']:.1f} + update {run['update_s']:.1f}; "
                    f"peak RSS {run['peak_rss_gib']:.2f} GiB; "
                    f"{run.get('agreement_with_' + args.variants[0], '')}",
                    flush=True,
                )
    rates = gemm_rates(args.device)
    for run in runs:
        if "collection_rate_macs_per_s" in run:
            run["collection_rate_vs_gemm"] = {k: run["collection_rate_macs_per_s"] / v for k, v in rates.items()}
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
