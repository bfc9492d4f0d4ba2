"""Fine-tune a tiny ViT with ``transformers.Trainer`` on noisy Fashion-MNIST; ``SAPCallback`` corrects it at the end.

The training labels get 25% symmetric noise (``hf_verifix.noise.add_label_noise``); a held-out validation split
gets the same kind of noise and is the only data used to choose α, as in practice (no clean labels are used for
any choice). The clean test split is only used to print the accuracy before and after the correction.

Run on a CPU (about a minute on a 2-core machine with the defaults):

    python examples/trainer_callback.py --output-dir outputs/trainer_callback

Data: the Debian package ``dataset-fashion-mnist`` (offline) or the Hub's ``zalando-datasets/fashion_mnist``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from transformers import EvalPrediction, Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

from hf_verifix import Accuracy, CorrectionConfig
from hf_verifix.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from hf_verifix.integrations import SAPCallback
from hf_verifix.noise import add_label_noise

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST pixel statistics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=2000, help="training images (noisy labels)")
    parser.add_argument("--n-val", type=int, default=1000, help="held-out images with the same noise, for α")
    parser.add_argument("--n-test", type=int, default=2000, help="clean test images, for the printout only")
    parser.add_argument("--noise", type=float, default=0.25, help="symmetric label-noise rate")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden-size", type=int, default=96, help="ViT width (4 heads, MLP 2× wider)")
    parser.add_argument("--layers", type=int, default=3, help="ViT depth")
    parser.add_argument("--n-trusted", type=int, default=500)
    parser.add_argument("--alphas", type=float, nargs="+", default=[1e1, 3e1, 1e2, 3e2, 1e3, 1e4, 1e5])
    parser.add_argument("--seed", type=int, default=0)
    # The model is tiny: one thread beats two on a 2-core machine, and by far when other work shares the cores.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's choice)")
    parser.add_argument("--output-dir", default="outputs/trainer_callback")
    return parser.parse_args(argv)


def to_pixels(batch: dict[str, list[Any]]) -> dict[str, Any]:
    """``with_transform`` preprocessing: PIL images to normalised 1×28×28 tensors, labels as the model expects."""
    pixels = [(torch.from_numpy(np.asarray(image, dtype=np.float32)) / 255.0 - MEAN) / STD for image in batch["image"]]
    return {"pixel_values": [p[None] for p in pixels], "labels": batch["label"]}


def accuracy(prediction: EvalPrediction) -> dict[str, float]:
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return Accuracy().compute(predictions=np.argmax(logits, axis=-1), references=prediction.label_ids)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()

    everything = load_fashion_mnist("train", limit=args.n_train + args.n_val)
    train = add_label_noise(everything.select(range(args.n_train)), rate=args.noise, seed=args.seed)
    val = add_label_noise(everything.select(range(args.n_train, len(everything))), rate=args.noise, seed=args.seed + 1)
    test = load_fashion_mnist("test", limit=args.n_test)
    print(
        f"Fashion-MNIST: {len(train)} training images ({sum(train['is_noisy'])} labels flipped), {len(val)} noisy "
        f"validation images, {len(test)} clean test images"
    )

    torch.manual_seed(args.seed)
    config = ViTConfig(
        image_size=28, patch_size=7, num_channels=1, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
        num_attention_heads=4, intermediate_size=2 * args.hidden_size, num_labels=10,
        id2label=dict(enumerate(FASHION_MNIST_CLASSES)),
    )  # fmt: skip
    model = ViTForImageClassification(config)
    callback = SAPCallback(
        CorrectionConfig(n_trusted=args.n_trusted, per_class=True, batch_size=256), alphas=args.alphas
    )
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=args.output_dir,
            use_cpu=True,
            report_to=[],
            num_train_epochs=args.epochs,
            per_device_train_batch_size=64,
            per_device_eval_batch_size=256,
            learning_rate=args.lr,
            weight_decay=0.01,
            lr_scheduler_type="cosine",
            warmup_steps=20,
            logging_steps=50,
            save_strategy="no",
            eval_strategy="no",
            remove_unused_columns=False,  # with_transform reads the raw image column
            seed=args.seed,
            disable_tqdm=True,
        ),
        train_dataset=train.with_transform(to_pixels),
        eval_dataset=val.with_transform(to_pixels),
        compute_metrics=accuracy,
        callbacks=[callback],
    )
    trainer.train()  # SAPCallback binds this Trainer (its eval_dataset, trainer.log) and corrects at the end
    sap = callback.history[-1]

    clean_test = test.with_transform(to_pixels)
    after = trainer.evaluate(clean_test, metric_key_prefix="test")["test_accuracy"]
    corrector = callback.corrector
    assert corrector is not None
    applied = corrector.applied_alpha
    corrector.revert()  # the uncorrected weights, bit-exactly, to measure "before" on the clean test set
    before = trainer.evaluate(clean_test, metric_key_prefix="test")["test_accuracy"]
    if applied is not None:
        corrector.apply(alpha=applied)
    trainer.save_model()  # the corrected model, loadable with ViTForImageClassification.from_pretrained

    flipped = np.asarray(train["is_noisy"])[corrector.trusted_indices.numpy()]
    summary = {
        "noisy_val_accuracy_before": sap["sap/accuracy_before"],
        "noisy_val_accuracy_after": sap["sap/accuracy_after"],
        "test_accuracy_before": before,
        "test_accuracy_after": after,
        "alpha": applied,
        "trusted_clean_fraction": float(1 - flipped.mean()),
        "total_s": time.perf_counter() - started,
    }
    result = corrector.search_result
    assert result is not None
    curve = ", ".join(f"{alpha:g}: {acc:.2%}" for alpha, acc in result.curve.items())
    print(f"\nα search on the noisy validation set (uncorrected: {result.baseline_accuracy:.2%}): {curve}")
    if applied is None:
        print("no α beat the uncorrected model on the noisy validation set: the model is kept as trained")
    print(f"trusted set: {flipped.size} samples, {summary['trusted_clean_fraction']:.1%} truly clean")
    print(f"noisy validation accuracy: {sap['sap/accuracy_before']:.2%} -> {sap['sap/accuracy_after']:.2%}")
    print(f"clean test accuracy:       {before:.2%} -> {after:.2%}  (α = {applied})")
    print(
        f"model in {args.output_dir}/, correction_config.json and correction_report.json in "
        f"{args.output_dir}/{callback.output_subdir}/ ({summary['total_s']:.0f} s)"
    )
    return summary


if __name__ == "__main__":
    main()
