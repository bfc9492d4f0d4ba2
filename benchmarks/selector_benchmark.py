"""Selector benchmark: every trusted-sample selector on resnet18 trained on noisy Fashion-MNIST.

For each noise setting (25% symmetric; 40% asymmetric class-pair, c -> c+1 mod 10) and each seed, one timm resnet18
is trained exactly as ``examples/fashion_mnist_sap.py`` trains it (its ``parse_args``, ``to_inputs`` and ``train``
are imported from that file; only the noise model differs). Then, for every registered selector, one
:class:`hf_verifix.ProjectionCorrector` fit with ``n_trusted=1000`` (``per_class=True``: 100 per noisy label) is
measured:

* trusted-set precision: the fraction of the chosen samples whose noisy label equals the clean label;
* class coverage: the number of clean classes present in the trusted set (of 10);
* selection wall time (``corrector.timings["selection_s"]``);
* clean test accuracy after SAP, α chosen by ``search_alpha`` on a held-out set with the SAME noise (never on clean
  labels; "no correction" wins when no α beats the uncorrected model there).

Selectors: ``loss``, ``curvature``, ``bmm``, ``coreset`` (CRUST medoids), ``confident`` (cleanlab, on the model's own
in-sample probabilities — the documented approximation; out-of-sample probabilities would need cross-validated
training), ``random``, and ``expert``: a simulated expert who verified labels, i.e. 1000 samples drawn at random among
those whose noisy label is correct (an oracle baseline: precision 1 by construction).

Run (full: 2 noise settings x 3 seeds; about an hour and a half on an idle 2-core CPU):

    .venv/bin/python benchmarks/selector_benchmark.py

Smoke test (1 seed, 1 noise setting, 2 epochs, 2000 training and 2000 test images, a tiny timm model):

    .venv/bin/python benchmarks/selector_benchmark.py --quick --model test_resnet --output /tmp/sel.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from fashion_mnist_sap import RESULTS_DIR, _json_default, clean_fraction, load_example, log, mean_std, results_skeleton
from torch.utils.data import TensorDataset

from hf_verifix import CorrectionConfig, ProjectionCorrector, get_selector, list_selectors
from hf_verifix.data.source import as_source
from hf_verifix.metrics import source_accuracy
from hf_verifix.noise import NoisyLabels, pair_noise, symmetric_noise
from hf_verifix.selection.simple import ExpertSelector

NOISES = {"symmetric-25": ("symmetric", 0.25), "pair-40": ("pair", 0.40), "symmetric-10": ("symmetric", 0.10)}
SELECTORS = ("loss", "curvature", "bmm", "coreset", "confident", "random", "expert")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (--quick: 0)")
    parser.add_argument(
        "--noises", nargs="+", choices=list(NOISES), default=None, help="default: symmetric-25 pair-40"
    )
    parser.add_argument("--selectors", nargs="+", default=list(SELECTORS), help=f"default: {' '.join(SELECTORS)}")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the example's, 12)")
    parser.add_argument("--n-train", type=int, default=None, help="noisy training images (default: the example's)")
    parser.add_argument("--n-test", type=int, default=None, help="clean test images (default: all 10,000)")
    parser.add_argument("--n-trusted", type=int, default=1000)
    parser.add_argument("--model", default=None, help="timm architecture (default: the example's, resnet18)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 seed, symmetric only, 2 epochs, 2000")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "selectors.json")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    if args.noises is None:
        args.noises = ["symmetric-25"] if args.quick else ["symmetric-25", "pair-40"]
    if args.quick:
        args.epochs = args.epochs or 2
        args.n_train = args.n_train or 2000
        args.n_test = args.n_test or 2000
    unknown = sorted(set(args.selectors) - set(SELECTORS))
    if unknown:
        parser.error(f"unknown selector(s) {unknown}; choose from {list(SELECTORS)}")
    return args


def noisy(labels: torch.Tensor, noise: str, seed: int) -> NoisyLabels:
    kind, rate = NOISES[noise]
    if kind == "symmetric":
        return symmetric_noise(labels, rate, num_classes=10, seed=seed)
    return pair_noise(labels, rate, num_classes=10, seed=seed)


def prepare_data(
    example: Any, args: argparse.Namespace, noise: str, n_test: int | None
) -> tuple[TensorDataset, TensorDataset, TensorDataset, NoisyLabels, torch.Tensor]:
    """The example's data (its split) with the requested noise, and the clean labels of the training images."""
    clean: list[torch.Tensor] = []

    def make_noise(labels: torch.Tensor, seed: int) -> NoisyLabels:
        clean.append(labels)  # the training images' labels come first, then the held-out ones
        return noisy(labels, noise, seed)

    train_set, val_set, test_set, noisy_fit = example.prepare_data(args, n_test, noise=make_noise)
    return train_set, val_set, test_set, noisy_fit, clean[0]


def make_selector(name: str, noisy_fit: NoisyLabels, seed: int) -> Any:
    if name == "expert":
        # A simulated expert: a random subset of the samples whose label is correct, in random order so that
        # ExpertSelector's "first n by index" per class is a uniform draw.
        correct = torch.nonzero(~noisy_fit.flipped).flatten()
        shuffled = correct[torch.randperm(correct.numel(), generator=torch.Generator().manual_seed(seed))]
        return ExpertSelector(indices=shuffled)
    return get_selector(name)


def run_setting(example: Any, noise: str, seed: int, opts: argparse.Namespace) -> dict[str, Any]:
    argv = ["--seed", str(seed), "--threads", str(opts.threads), "--n-trusted", str(opts.n_trusted)]
    for flag, value in (("--epochs", opts.epochs), ("--n-train", opts.n_train), ("--model", opts.model)):
        if value is not None:
            argv += [flag, str(value)]
    args = example.parse_args(argv)
    torch.manual_seed(seed)
    train_set, val_set, test_set, noisy_fit, clean = prepare_data(example, args, noise, opts.n_test)
    log(f"{noise} seed {seed}: training {args.model} on {len(train_set)} images ({noisy_fit.rate:.0%} flipped)")
    model = timm.create_model(args.model, pretrained=False, in_chans=1, num_classes=10)
    start = time.perf_counter()
    example.train(model, train_set, args)
    training_s = time.perf_counter() - start
    test = as_source(test_set, model, batch_size=256)
    vanilla = source_accuracy(model, test)
    log(f"{noise} seed {seed}: trained in {training_s:.0f} s, vanilla test accuracy {vanilla:.2%}")
    record: dict[str, Any] = {
        "noise": noise,
        "seed": seed,
        "training_s": training_s,
        "vanilla_test_accuracy": vanilla,
        "training_clean_fraction": 1.0 - noisy_fit.rate,
        "selectors": {},
    }
    for name in opts.selectors:
        config = CorrectionConfig(
            n_trusted=args.n_trusted, per_class=True, alpha_grid=tuple(args.alphas), batch_size=256, progress=False
        )
        corrector = ProjectionCorrector(model, config).fit(train_set, selector=make_selector(name, noisy_fit, seed))
        trusted = corrector.trusted_indices
        result = corrector.search_alpha(val_set)
        accuracy = source_accuracy(model, test)
        corrector.revert()
        entry = {
            "precision": clean_fraction(noisy_fit, trusted),
            "clean_classes_covered": int(torch.unique(clean[trusted]).numel()),
            "clean_class_counts": torch.bincount(clean[trusted], minlength=10).tolist(),
            "selection_s": corrector.timings["selection_s"],
            "collection_s": corrector.timings["collection_s"],
            "decomposition_s": corrector.timings["decomposition_s"],
            "alpha": result.best_alpha,
            "val_curve": {str(a): v for a, v in result.curve.items()},
            "test_accuracy": accuracy,
        }
        record["selectors"][name] = entry
        log(
            f"{noise} seed {seed}: {name:9s} precision {entry['precision']:.1%}, "
            f"selection {entry['selection_s']:.1f} s, "
            f"α={result.best_alpha}, test {accuracy:.2%} ({accuracy - vanilla:+.2%})"
        )
        del corrector
    return record


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for noise in dict.fromkeys(r["noise"] for r in runs):
        group = [r for r in runs if r["noise"] == noise]
        vanilla = [r["vanilla_test_accuracy"] for r in group]
        rows: dict[str, Any] = {"vanilla": {"test_accuracy": mean_std(vanilla), "seeds": len(group)}}
        for name in group[0]["selectors"]:
            entries = [r["selectors"][name] for r in group if name in r["selectors"]]
            rows[name] = {
                "precision": mean_std([e["precision"] for e in entries]),
                "classes_covered": mean_std([float(e["clean_classes_covered"]) for e in entries]),
                "selection_s": mean_std([e["selection_s"] for e in entries]),
                "test_accuracy": mean_std([e["test_accuracy"] for e in entries]),
                "gain": mean_std([e["test_accuracy"] - v for e, v in zip(entries, vanilla, strict=True)]),
                "alphas": [e["alpha"] for e in entries],
            }
        summary[noise] = rows
    return summary


def markdown(summary: dict[str, Any]) -> str:
    lines = []
    for noise, rows in summary.items():
        v_mean, v_std = rows["vanilla"]["test_accuracy"]
        lines += [
            f"**{noise}** ({rows['vanilla']['seeds']} seed(s); vanilla {v_mean:.2%} ± {v_std:.2%}):",
            "",
            "| Selector | Precision | Selection time (s) | Test accuracy after SAP | Δ vs vanilla | α per seed |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in rows.items():
            if name == "vanilla":
                continue
            alphas = ", ".join("—" if a is None else f"{a:g}" for a in row["alphas"])
            lines.append(
                f"| {name} | {row['precision'][0]:.1%} ± {row['precision'][1]:.1%} | "
                f"{row['selection_s'][0]:.1f} ± {row['selection_s'][1]:.1f} | "
                f"{row['test_accuracy'][0]:.2%} ± {row['test_accuracy'][1]:.2%} | "
                f"{row['gain'][0]:+.2%} ± {row['gain'][1]:.2%} | {alphas} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse_args(argv)
    torch.set_num_threads(opts.threads)
    np.random.seed(0)
    example = load_example()
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    output = results_skeleton("selectors", opts, runs)
    output["environment"]["registered_selectors"] = list_selectors()
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    for seed in opts.seeds:  # seed-major, so an interrupted run still covers every noise setting
        for noise in opts.noises:
            runs.append(run_setting(example, noise, seed, opts))
            output["summary"] = summarize(runs)
            output["total_s"] = time.perf_counter() - started
            # partial results survive an interruption
            opts.output.write_text(json.dumps(output, indent=2, default=_json_default) + "\n")
    print("\n" + markdown(output["summary"]))
    log(f"results written to {opts.output} in {output['total_s']:.0f} s")
    return output


if __name__ == "__main__":
    main()
