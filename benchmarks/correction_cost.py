"""Cost of the correction itself: hf_verifix's streamed Grams vs the public reference code's materialised SVD.

Both methods correct the same trained timm resnet18 (trained once by this script on noisy Fashion-MNIST, saved to
``benchmarks/results/correction_cost_resnet18.pt``; its accuracy does not matter here) with the same 1000 trusted
samples (lowest loss per noisy class) and the same α, each in a FRESH Python process so that peak memory is its own:

* ``streamed`` (hf_verifix): ``ProjectionCorrector.fit(data, trusted_indices=idx)`` then ``apply(α)``: forward
  hooks add every layer's input rows to a float64 Gram ``Σ a aᵀ`` (d × d), ``eigh`` per layer, Ŵ = W·U diag(λ) Uᵀ.
* ``reference`` (the public SAP/Verifix code's way): forward hooks store every layer's input rows (Linear: rows;
  Conv2d: ``F.unfold`` patches transposed to rows) for all trusted samples in memory as float32 matrices, a random
  subsample of at most 50,000 rows per layer, ``torch.linalg.svd`` of each representation matrix, then the same
  λ scaling with the same α and Ŵ = W·U diag(λ) Uᵀ.

Peak memory is ``ru_maxrss`` at the end of the worker minus the RSS right after the model and data were loaded
(and one warm-up batch run). The reference's projected weights are compared with ours (they differ only through the
50k-row subsample and float32 arithmetic): the largest per-layer relative Frobenius difference is reported.

Run:

    .venv/bin/python benchmarks/correction_cost.py                  # 28×28 (Fashion-MNIST size)
    .venv/bin/python benchmarks/correction_cost.py --input-size 64  # images upsampled: rows grow 5×
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F

# Run as a script from benchmarks/, so the sibling benchmark imports directly; it loads the example the same way.
from fashion_mnist_sap import load_example
from torch import nn
from torch.utils.data import TensorDataset

RESULTS_DIR = Path(__file__).resolve().parent / "results"
METHODS = ("streamed", "reference")
REFERENCE_MAX_ROWS = 50_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-size", type=int, default=28, help="image side fed to the model (28: native)")
    parser.add_argument("--alpha", type=float, default=3e4)
    parser.add_argument("--n-trusted", type=int, default=1000)
    parser.add_argument("--n-train", type=int, default=2000, help="noisy images the checkpoint is trained on")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the checkpoint")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size of the forward passes (both)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--model", default="resnet18", help="timm architecture (e.g. test_resnet to smoke-test)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: results/correction_cost_<model>.pt")
    parser.add_argument("--retrain", action="store_true", help="train a new checkpoint even if one exists")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="default: results/correction_cost[_<size>].json")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--weights-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.checkpoint is None:
        args.checkpoint = RESULTS_DIR / f"correction_cost_{args.model}.pt"
    return args


# ---------------------------------------------------------------------------------------------- checkpoint
def make_checkpoint(opts: argparse.Namespace) -> None:
    """Train resnet18 as the example does (few epochs) and pick the trusted set; save both."""
    from hf_verifix.data.fashion_mnist import load_fashion_mnist_arrays
    from hf_verifix.data.source import as_source
    from hf_verifix.noise import symmetric_noise
    from hf_verifix.selection import get_selector

    example = load_example()
    argv = ["--model", opts.model, "--n-train", str(opts.n_train), "--epochs", str(opts.epochs), "--seed", "0"]
    args = example.parse_args(argv)
    torch.manual_seed(args.seed)
    images, labels = load_fashion_mnist_arrays("train", root=args.data_dir)
    image_indices = torch.randperm(len(labels), generator=torch.Generator().manual_seed(args.seed))[: args.n_train]
    noisy = symmetric_noise(torch.from_numpy(labels).long()[image_indices], args.noise, num_classes=10, seed=0)
    data = TensorDataset(example.to_inputs(torch.from_numpy(images)[image_indices]), noisy.labels)
    model = timm.create_model(args.model, pretrained=False, in_chans=1, num_classes=10)
    print(f"training the checkpoint: {args.model}, {args.n_train} images, {args.epochs} epoch(s)", flush=True)
    example.train(model, data, args)
    model.eval()
    selection = get_selector("loss").select(model, as_source(data, model, 256), opts.n_trusted, per_class=True)
    opts.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": args.model,
            "n_train": args.n_train,
            "epochs": args.epochs,
            "state_dict": model.state_dict(),
            "image_indices": image_indices,
            "labels": noisy.labels,
            "trusted": selection.indices,
        },
        opts.checkpoint,
    )
    print(f"checkpoint written to {opts.checkpoint}", flush=True)


def checkpoint_matches(opts: argparse.Namespace) -> bool:
    """Whether the saved checkpoint was made with this model, training size, epochs and trusted-set size."""
    if not opts.checkpoint.exists():
        return False
    saved = torch.load(opts.checkpoint, weights_only=True)
    wanted = (opts.model, opts.n_train, opts.epochs, opts.n_trusted)
    return (saved["model"], saved.get("n_train"), saved.get("epochs"), len(saved["trusted"])) == wanted


def load_model_and_data(opts: argparse.Namespace) -> tuple[nn.Module, TensorDataset, torch.Tensor]:
    from hf_verifix.data.fashion_mnist import load_fashion_mnist_arrays

    example = load_example()
    checkpoint = torch.load(opts.checkpoint, weights_only=True)
    model = timm.create_model(checkpoint["model"], pretrained=False, in_chans=1, num_classes=10)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    images, _ = load_fashion_mnist_arrays("train")
    inputs = example.to_inputs(torch.from_numpy(images)[checkpoint["image_indices"]])
    if opts.input_size != inputs.shape[-1]:
        inputs = F.interpolate(inputs, size=(opts.input_size, opts.input_size), mode="bilinear", align_corners=False)
    return model, TensorDataset(inputs.contiguous(), checkpoint["labels"]), checkpoint["trusted"]


# ---------------------------------------------------------------------------------------------- memory
def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# ---------------------------------------------------------------------------------------------- methods
def run_streamed(model: nn.Module, data: TensorDataset, trusted: torch.Tensor, opts: argparse.Namespace) -> dict:
    from hf_verifix import CorrectionConfig, ProjectionCorrector

    config = CorrectionConfig(
        alpha=opts.alpha,
        n_trusted=len(trusted),
        recalibrate_batchnorm=False,
        batch_size=opts.batch_size,
        progress=False,
    )
    start = time.perf_counter()
    corrector = ProjectionCorrector(model, config).fit(data, trusted_indices=trusted)
    corrector.apply(opts.alpha)
    total = time.perf_counter() - start
    layers = {name: {"rows": corrector.layer_rows[name], "dim": p.dim} for name, p in corrector.projections.items()}
    return {"timings_s": dict(corrector.timings), "total_s": total, "layers": layers, "skipped": corrector.skipped}


def reference_targets(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv2d and Linear layer, the classifier included (as the public code)."""
    targets = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if isinstance(module, nn.Conv2d) and module.groups != 1:
                raise NotImplementedError(f"{name}: grouped convolutions are not handled by this reference")
            targets[name] = module
    return targets


def run_reference(model: nn.Module, data: TensorDataset, trusted: torch.Tensor, opts: argparse.Namespace) -> dict:
    """The public code's way: materialise every layer's float32 rows, subsample 50k, SVD, project."""
    targets = reference_targets(model)
    stored: dict[str, list[torch.Tensor]] = {name: [] for name in targets}

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().float()
            if isinstance(module, nn.Conv2d):
                patches = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # N, d, L
                rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
            else:
                rows = x.reshape(-1, x.shape[-1]).clone()
            stored[name].append(rows)

        return hook

    timings: dict[str, float] = {}
    start = time.perf_counter()
    handles = [module.register_forward_pre_hook(make_hook(name)) for name, module in targets.items()]
    try:
        inputs = data.tensors[0][trusted]
        with torch.no_grad():
            for batch in inputs.split(opts.batch_size):
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    matrices = {}
    for name in targets:
        matrices[name] = torch.cat(stored[name])
        stored[name] = []
    timings["collection_s"] = time.perf_counter() - start

    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    layers = {}
    for name, matrix in matrices.items():
        layers[name] = {
            "rows": matrix.shape[0],
            "dim": matrix.shape[1],
            "rows_used": min(matrix.shape[0], REFERENCE_MAX_ROWS),
        }
        if matrix.shape[0] > REFERENCE_MAX_ROWS:
            keep = torch.randperm(matrix.shape[0], generator=generator)[:REFERENCE_MAX_ROWS]
            matrices[name] = matrix[keep]
    timings["subsample_s"] = time.perf_counter() - start

    start = time.perf_counter()
    bases = {}
    for name, matrix in matrices.items():
        u, s, _ = torch.linalg.svd(matrix.T, full_matrices=False)  # representation matrix R: d × M
        bases[name] = (u, s)
    timings["decomposition_s"] = time.perf_counter() - start

    start = time.perf_counter()
    with torch.no_grad():
        for name, (u, s) in bases.items():
            weight = targets[name].weight
            energy = s**2
            normalized = energy / energy.sum()
            lam = opts.alpha * normalized / ((opts.alpha - 1) * normalized + 1)
            flat = weight.reshape(weight.shape[0], -1)
            weight.copy_((((flat @ u) * lam) @ u.T).reshape(weight.shape))
    timings["update_s"] = time.perf_counter() - start
    total = sum(timings.values())
    del matrices, bases
    return {"timings_s": timings, "total_s": total, "layers": layers}


def worker(opts: argparse.Namespace) -> None:
    torch.set_num_threads(opts.threads)
    model, data, trusted = load_model_and_data(opts)
    with torch.no_grad():
        model(data.tensors[0][:8])  # warm-up: one-time kernel/thread-pool set-up is not part of either method
    baseline_rss, baseline_peak = current_rss_mib(), peak_rss_mib()
    run = run_streamed if opts.worker == "streamed" else run_reference
    result = run(model, data, trusted, opts)
    peak = peak_rss_mib()
    result.update(
        method=opts.worker,
        baseline_rss_mib=baseline_rss,
        baseline_peak_rss_mib=baseline_peak,
        peak_rss_mib=peak,
        peak_rss_delta_mib=peak - baseline_rss,
    )
    layers = reference_targets(model)
    torch.save({name: m.weight.detach().clone() for name, m in layers.items()}, opts.weights_file)
    opts.result_file.write_text(json.dumps(result, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- parent
def run_worker(method: str, opts: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    result_file, weights_file = scratch / f"{method}.json", scratch / f"{method}.pt"
    command = [
        sys.executable, str(Path(__file__).resolve()), "--worker", method,
        "--result-file", str(result_file), "--weights-file", str(weights_file),
        "--input-size", str(opts.input_size), "--alpha", str(opts.alpha), "--batch-size", str(opts.batch_size),
        "--checkpoint", str(opts.checkpoint), "--threads", str(opts.threads),
    ]  # fmt: skip
    print(f"running {method} in a fresh process ...", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    result = json.loads(result_file.read_text())
    result["process_wall_s"] = time.perf_counter() - start
    return result


def compare_weights(reference: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> dict[str, Any]:
    per_layer = {}
    for name, ref in reference.items():
        mine = ours[name].double()
        per_layer[name] = float((ref.double() - mine).norm() / mine.norm().clamp_min(1e-30))
    worst = max(per_layer, key=per_layer.__getitem__)
    return {"max_relative_frobenius": per_layer[worst], "worst_layer": worst, "per_layer": per_layer}


def markdown(results: dict[str, dict[str, Any]], opts: argparse.Namespace, comparison: dict | None) -> str:
    phases = ("selection_s", "collection_s", "subsample_s", "decomposition_s", "update_s")
    names = ("selection", "collection", "subsample", "decomposition", "update")
    methods = [m for m in METHODS if m in results]
    header = "| Method | " + " | ".join(f"{n} (s)" for n in names) + " | total (s) | peak memory (MiB) |"
    lines = [
        f"Correction cost, {opts.model} at {opts.input_size}×{opts.input_size}, {opts.n_trusted} trusted samples, "
        f"α = {opts.alpha:g}, {opts.threads} threads:",
        "",
        header,
        "|---" * (len(names) + 3) + "|",
    ]
    for method in methods:
        r = results[method]
        cells = [f"{r['timings_s'][p]:.2f}" if p in r["timings_s"] else "—" for p in phases]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {r['total_s']:.2f} | {r['peak_rss_delta_mib']:.0f} |")
    if len(methods) == 2:
        ref, ours = results["reference"], results["streamed"]
        cells = []
        for p in phases:
            if p in ref["timings_s"] and p in ours["timings_s"] and ours["timings_s"][p] > 0:
                cells.append(f"{ref['timings_s'][p] / ours['timings_s'][p]:.2g}×")
            else:
                cells.append("—")
        lines.append(
            "| reference / streamed | " + " | ".join(cells) + f" | {ref['total_s'] / ours['total_s']:.1f}× | "
            f"{ref['peak_rss_delta_mib'] / max(ours['peak_rss_delta_mib'], 1e-9):.1f}× |"
        )
    if comparison is not None:
        lines += [
            "",
            f"Max relative difference (Frobenius, per layer) between the reference's projected weights and ours: "
            f"{comparison['max_relative_frobenius']:.2e} (layer {comparison['worst_layer']!r}); they differ only "
            f"through the {REFERENCE_MAX_ROWS:,}-row subsample and float32 arithmetic.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse_args(argv)
    if opts.worker:
        worker(opts)
        return {}
    torch.set_num_threads(opts.threads)
    if opts.retrain or not checkpoint_matches(opts):
        make_checkpoint(opts)
    else:
        print(f"using the checkpoint {opts.checkpoint} (--retrain to train a new one)", flush=True)
    results: dict[str, dict[str, Any]] = {}
    comparison = None
    with tempfile.TemporaryDirectory(prefix="verifix-cost-") as tmp:
        scratch = Path(tmp)
        for method in opts.methods:
            results[method] = run_worker(method, opts, scratch)
        if {"streamed", "reference"} <= results.keys():
            comparison = compare_weights(
                torch.load(scratch / "reference.pt", weights_only=True),
                torch.load(scratch / "streamed.pt", weights_only=True),
            )
    output = {
        "benchmark": "correction_cost",
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items() if v is not None},
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "machine": platform.machine(),
        },
        "results": results,
        "weight_difference": comparison,
    }
    suffix = "".join(
        part
        for part, default in (
            (f"_{opts.model}", opts.model == "resnet18"),
            (f"_{opts.input_size}", opts.input_size == 28),
        )
        if not default
    )
    path = opts.output or RESULTS_DIR / f"correction_cost{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(output, indent=2) + "\n")
    print("\n" + markdown(results, opts, comparison) + "\n")
    print(f"results written to {path}")
    return output


if __name__ == "__main__":
    main()
