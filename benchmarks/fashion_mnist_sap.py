"""Accuracy benchmark: SAP on a timm resnet18 trained on Fashion-MNIST with 25% symmetric label noise.

For each seed, the model is trained exactly as ``examples/fashion_mnist_sap.py`` trains it (its ``parse_args``,
``to_inputs`` and ``train`` are imported from that file), then ONE :class:`hf_verifix.ProjectionCorrector` fit
(lowest-loss trusted set, ``n_trusted // 10`` per noisy class) is evaluated on the clean test set as:

* ``vanilla``: the trained model, uncorrected;
* ``bn_only``: BatchNorm statistics re-estimated on the trusted samples, no projection;
* ``sap``: projection only (the papers' method), α chosen by ``search_alpha`` on the noisy held-out set;
* ``sap_bn``: projection + BatchNorm recalibration, α searched again (the decomposition is reused);
* ``sap_global`` / ``sap_bn_global``: the same with the trusted set chosen globally (a second fit).

α is only ever chosen on the noisy validation set; the clean test curve is recorded for the plot only.

Run (full, about an hour on an idle 2-core CPU; see benchmarks/README.md):

    .venv/bin/python benchmarks/fashion_mnist_sap.py

Smoke test (1 seed, 2 epochs, 2000 training and 2000 test images):

    .venv/bin/python benchmarks/fashion_mnist_sap.py --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import timm
import torch
from torch.utils.data import TensorDataset

import hf_verifix
from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.data.source import SampleSource, as_source
from hf_verifix.metrics import source_accuracy
from hf_verifix.noise import NoisyLabels
from hf_verifix.projection.batchnorm import recalibrate_batchnorm

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PATH = ROOT / "examples" / "fashion_mnist_sap.py"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

VARIANTS = {
    "vanilla": "Vanilla (trained on noisy labels)",
    "bn_only": "BN recalibration only",
    "sap": "SAP (per-class trusted set)",
    "sap_bn": "SAP + BN recalibration (per-class)",
    "sap_global": "SAP (global trusted set)",
    "sap_bn_global": "SAP + BN recalibration (global)",
}
PHASES = ("selection_s", "collection_s", "decomposition_s", "update_s", "update_with_bn_s")


def load_example() -> ModuleType:
    """Import ``examples/fashion_mnist_sap.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("fashion_mnist_sap_example", EXAMPLE_PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the example {EXAMPLE_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (--quick: 0)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the example's, 12)")
    parser.add_argument("--n-train", type=int, default=None, help="noisy training images (default: the example's)")
    parser.add_argument("--n-test", type=int, default=None, help="clean test images (default: all 10,000)")
    parser.add_argument("--n-trusted", type=int, default=1000)
    parser.add_argument("--no-global", action="store_true", help="skip the global-selection variants (second fit)")
    parser.add_argument(
        "--global-test-curves", action="store_true", help="also record the clean test α curves of the global variants"
    )
    parser.add_argument("--model", default=None, help="timm architecture (default: the example's, resnet18)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 2 epochs, 2000 train/test images")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "fashion_mnist_sap.json")
    parser.add_argument("--plot", type=Path, default=RESULTS_DIR / "alpha_curve.png")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    if args.quick:
        args.epochs = args.epochs or 2
        args.n_train = args.n_train or 2000
        args.n_test = args.n_test or 2000
    return args


def example_args(example: ModuleType, seed: int, opts: argparse.Namespace) -> argparse.Namespace:
    """The example's own arguments for this seed: its defaults, overridden only by what the benchmark sets."""
    argv = ["--seed", str(seed), "--threads", str(opts.threads), "--n-trusted", str(opts.n_trusted)]
    if opts.epochs is not None:
        argv += ["--epochs", str(opts.epochs)]
    if opts.n_train is not None:
        argv += ["--n-train", str(opts.n_train)]
    if opts.model is not None:
        argv += ["--model", opts.model]
    return example.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def clean_fraction(noisy: NoisyLabels, indices: torch.Tensor) -> float:
    return float((~noisy.flipped[indices]).float().mean())


def test_curve(corrector: ProjectionCorrector, alphas: tuple[float, ...], test: SampleSource) -> dict[str, float]:
    """Clean test accuracy at every α (for the plot only; never used to choose α). Leaves the model reverted."""
    curve = {}
    for alpha in alphas:
        corrector.apply(alpha)
        curve[str(alpha)] = source_accuracy(corrector.model, test)
    corrector.revert()
    return curve


def evaluate_corrector(
    corrector: ProjectionCorrector,
    val_set: TensorDataset,
    test: SampleSource,
    with_test_curve: bool = True,
) -> dict[str, Any]:
    """search_alpha on the noisy validation set, then clean test accuracy of the chosen model (and the test curve)."""
    result = corrector.search_alpha(val_set)
    entry: dict[str, Any] = {
        "test_accuracy": source_accuracy(corrector.model, test),
        "alpha": result.best_alpha,
        "val_accuracy": result.best_accuracy,
        "val_accuracy_uncorrected": result.baseline_accuracy,
        "val_curve": {str(a): v for a, v in result.curve.items()},
    }
    corrector.revert()
    if with_test_curve:
        entry["test_curve"] = test_curve(corrector, corrector.config.alpha_grid, test)
    return entry


def time_updates(corrector: ProjectionCorrector, alpha: float) -> dict[str, float]:
    """Wall time of one apply(α) without and with BatchNorm recalibration (the model is reverted after each)."""
    recalibrate = corrector.config.recalibrate_batchnorm
    timings = {}
    for key, flag in (("update_s", False), ("update_with_bn_s", True)):
        corrector.config.recalibrate_batchnorm = flag
        corrector.apply(alpha)
        timings[key] = corrector.timings["update_s"]
        corrector.revert()
    corrector.config.recalibrate_batchnorm = recalibrate
    return timings


def run_seed(example: ModuleType, seed: int, opts: argparse.Namespace) -> dict[str, Any]:
    args = example_args(example, seed, opts)
    torch.manual_seed(args.seed)  # as the example's main: model init draws from the global generator
    train_set, val_set, test_set, noisy_fit = example.prepare_data(args, opts.n_test)
    log(
        f"seed {seed}: {len(train_set)} training images ({noisy_fit.rate:.0%} flipped), {len(val_set)} noisy "
        f"validation, {len(test_set)} clean test; training {args.model} for {args.epochs} epochs"
    )
    model = timm.create_model(args.model, pretrained=False, in_chans=1, num_classes=10)
    start = time.perf_counter()
    example.train(model, train_set, args)
    training_s = time.perf_counter() - start

    test = as_source(test_set, model, batch_size=256)
    val = as_source(val_set, model, batch_size=256)
    variants: dict[str, dict[str, Any]] = {}
    variants["vanilla"] = {
        "test_accuracy": source_accuracy(model, test),
        "val_accuracy": source_accuracy(model, val),
    }
    log(
        f"seed {seed}: trained in {training_s:.0f} s, vanilla test accuracy {variants['vanilla']['test_accuracy']:.2%}"
    )

    def make_config(per_class: bool) -> CorrectionConfig:
        return CorrectionConfig(
            n_trusted=args.n_trusted,
            per_class=per_class,
            recalibrate_batchnorm=False,
            alpha_grid=tuple(args.alphas),
            batch_size=256,
            progress=False,
        )

    # ---- one fit (per-class selection), reused by every per-class variant
    corrector = ProjectionCorrector(model, make_config(per_class=True)).fit(train_set)
    timings = {k: corrector.timings[k] for k in ("selection_s", "collection_s", "decomposition_s")}
    timings.update(time_updates(corrector, 3e4))
    trusted = corrector.trusted_indices
    trusted_clean = clean_fraction(noisy_fit, trusted)
    log(f"seed {seed}: fit in {sum(timings[k] for k in PHASES[:3]):.1f} s, trusted set {trusted_clean:.1%} clean")

    variants["sap"] = evaluate_corrector(corrector, val_set, test)
    log(f"seed {seed}: SAP α={variants['sap']['alpha']} test {variants['sap']['test_accuracy']:.2%}")

    corrector.revert()
    inputs = train_set.tensors[0][trusted]
    recalibrate_batchnorm(model, inputs.split(256))
    variants["bn_only"] = {"test_accuracy": source_accuracy(model, test), "val_accuracy": source_accuracy(model, val)}
    corrector.revert()  # restores the original BatchNorm statistics too
    log(f"seed {seed}: BN recalibration only: test {variants['bn_only']['test_accuracy']:.2%}")

    corrector.config.recalibrate_batchnorm = True
    variants["sap_bn"] = evaluate_corrector(corrector, val_set, test)
    log(f"seed {seed}: SAP + BN α={variants['sap_bn']['alpha']} test {variants['sap_bn']['test_accuracy']:.2%}")
    corrector.revert()
    del corrector

    record: dict[str, Any] = {
        "seed": seed,
        "training_s": training_s,
        "trusted_clean_fraction": trusted_clean,
        "noisy_training_clean_fraction": 1.0 - noisy_fit.rate,
        "timings_s": timings,
        "variants": variants,
    }

    # ---- a second fit with the trusted set chosen globally (selection + collection + decomposition again)
    if not opts.no_global:
        corrector = ProjectionCorrector(model, make_config(per_class=False)).fit(train_set)
        record["timings_global_s"] = {
            k: corrector.timings[k] for k in ("selection_s", "collection_s", "decomposition_s")
        }
        record["trusted_clean_fraction_global"] = clean_fraction(noisy_fit, corrector.trusted_indices)
        record["trusted_class_counts_global"] = torch.bincount(
            noisy_fit.labels[corrector.trusted_indices], minlength=10
        ).tolist()
        curves = opts.global_test_curves
        variants["sap_global"] = evaluate_corrector(corrector, val_set, test, with_test_curve=curves)
        corrector.config.recalibrate_batchnorm = True
        variants["sap_bn_global"] = evaluate_corrector(corrector, val_set, test, with_test_curve=curves)
        corrector.revert()
        log(
            f"seed {seed}: global trusted set {record['trusted_clean_fraction_global']:.1%} clean; "
            f"SAP test {variants['sap_global']['test_accuracy']:.2%}, "
            f"SAP + BN test {variants['sap_bn_global']['test_accuracy']:.2%}"
        )
    record["example_args"] = vars(args)
    return record


# ---------------------------------------------------------------------------------------------- summary
def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"variants": {}, "timings_s": {}}
    vanilla = [r["variants"]["vanilla"]["test_accuracy"] for r in runs]
    for key in VARIANTS:
        if not all(key in r["variants"] for r in runs):
            continue
        accs = [r["variants"][key]["test_accuracy"] for r in runs]
        mean, std = mean_std(accs)
        gain_mean, gain_std = mean_std([a - v for a, v in zip(accs, vanilla, strict=True)])
        summary["variants"][key] = {
            "test_accuracy_mean": mean,
            "test_accuracy_std": std,
            "gain_mean": gain_mean,
            "gain_std": gain_std,
            "alphas": [r["variants"][key].get("alpha") for r in runs],
        }
    for phase in PHASES:
        summary["timings_s"][phase] = mean_std([r["timings_s"][phase] for r in runs])
    summary["timings_s"]["training_s"] = mean_std([r["training_s"] for r in runs])
    summary["trusted_clean_fraction"] = mean_std([r["trusted_clean_fraction"] for r in runs])
    if all("trusted_clean_fraction_global" in r for r in runs):
        summary["trusted_clean_fraction_global"] = mean_std([r["trusted_clean_fraction_global"] for r in runs])
    return summary


def markdown(summary: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    n = len(runs)
    lines = [
        f"Clean test accuracy over {n} seed(s) (mean ± std; α chosen on the noisy validation set):",
        "",
        "| Variant | Test accuracy | Δ vs vanilla | α per seed |",
        "|---|---|---|---|",
    ]
    for key, stats in summary["variants"].items():
        alphas = ", ".join("—" if a is None else f"{a:g}" for a in stats["alphas"])
        gain = "—" if key == "vanilla" else f"{stats['gain_mean']:+.2%} ± {stats['gain_std']:.2%}"
        alpha_text = "—" if key in ("vanilla", "bn_only") else alphas
        lines.append(
            f"| {VARIANTS[key]} | {stats['test_accuracy_mean']:.2%} ± {stats['test_accuracy_std']:.2%} | {gain} | "
            f"{alpha_text} |"
        )
    clean_mean, clean_std = summary["trusted_clean_fraction"]
    lines += ["", f"Trusted set truly clean: per-class {clean_mean:.1%} ± {clean_std:.1%}"]
    if "trusted_clean_fraction_global" in summary:
        g_mean, g_std = summary["trusted_clean_fraction_global"]
        lines[-1] += f", global {g_mean:.1%} ± {g_std:.1%}"
    lines += ["", "| Phase | Seconds (mean ± std) |", "|---|---|"]
    names = {
        "training_s": "training",
        "selection_s": "selection (loss of every training image)",
        "collection_s": "Gram collection (1000 trusted images)",
        "decomposition_s": "decomposition (eigh per layer)",
        "update_s": "update (one α, projection only)",
        "update_with_bn_s": "update (one α, + BN recalibration)",
    }
    for key, label in names.items():
        mean, std = summary["timings_s"][key]
        lines.append(f"| {label} | {mean:.2f} ± {std:.2f} |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
    styles = {
        "sap": ("C0", "-", "o"),
        "sap_bn": ("C1", "-", "o"),
        "sap_global": ("C0", "--", "s"),
        "sap_bn_global": ("C1", "--", "s"),
    }
    panels = (
        ("val_curve", "val_accuracy", "noisy validation set (α chosen here)"),
        ("test_curve", "test_accuracy", "clean test set (not used for any choice)"),
    )
    for ax, (curve_key, flat_key, title) in zip(axes, panels, strict=True):
        for key, (color, linestyle, marker) in styles.items():
            if not all(key in r["variants"] and curve_key in r["variants"][key] for r in runs):
                continue
            alphas = [float(a) for a in runs[0]["variants"][key][curve_key]]
            values = torch.tensor([[r["variants"][key][curve_key][str(a)] for a in alphas] for r in runs]) * 100
            mean = values.mean(0)
            ax.plot(alphas, mean, marker=marker, linestyle=linestyle, color=color, label=VARIANTS[key], alpha=0.85)
            if len(runs) > 1:
                std = values.std(0)
                ax.fill_between(alphas, mean - std, mean + std, color=color, alpha=0.15)
        for key, style in (("vanilla", "--"), ("bn_only", ":")):
            level = statistics.fmean(r["variants"][key][flat_key] for r in runs) * 100
            ax.axhline(level, color="grey", linestyle=style, label=VARIANTS[key])
        ax.set_xscale("log")
        ax.set_xlabel("α")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    model = runs[0].get("example_args", {}).get("model", "resnet18")
    fig.suptitle(f"{model}, Fashion-MNIST, 25% symmetric label noise — mean ± std over {len(runs)} seed(s)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def results_skeleton(name: str, opts: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON every benchmark writes: its name, options, software and machine, and the (growing) list of runs."""
    return {
        "benchmark": name,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "hf_verifix": hf_verifix.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "processor": platform.processor(),
        },
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse_args(argv)
    torch.set_num_threads(opts.threads)
    example = load_example()
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    output = results_skeleton("fashion_mnist_sap", opts, runs)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    for seed in opts.seeds:
        runs.append(run_seed(example, seed, opts))
        output["summary"] = summarize(runs)
        output["total_s"] = time.perf_counter() - started
        opts.output.write_text(json.dumps(output, indent=2, default=_json_default) + "\n")  # partial results survive
    table = markdown(output["summary"], runs)
    print("\n" + table + "\n")
    plot(runs, opts.plot)
    log(f"results written to {opts.output} and {opts.plot} in {output['total_s']:.0f} s")
    return output


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    main()
