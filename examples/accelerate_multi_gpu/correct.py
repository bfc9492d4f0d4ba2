"""Train and correct an image classifier on several GPUs (or CPU processes) with ``accelerate launch``.

Every process runs the same script: the ``Trainer`` trains with DDP, then ``SAPCallback`` corrects each process's copy
of the model identically. Each pass over data (trusted-sample scoring, activation statistics, α evaluation) visits
an exact shard of the samples per process and is summed once, so the corrected weights equal a single process's (to
float64 rounding); the main process alone writes the model, ``sap_correction/correction_config.json`` and
``sap_correction/correction_report.json``.

The data is Fashion-MNIST with 25% symmetric label noise (a noisy validation split chooses α); the model a tiny ViT
built from a config, or any saved ``ViTForImageClassification``/``TimmWrapperForImageClassification`` (``--model``).
``--correct-only`` skips training and corrects the given model as it is. See README.md in this folder for the
commands.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForImageClassification,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
)

from hf_verifix import CorrectionConfig
from hf_verifix.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from hf_verifix.integrations import SAPCallback
from hf_verifix.noise import add_label_noise

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST pixel statistics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a saved image classifier (default: a tiny ViT from a config)")
    parser.add_argument("--correct-only", action="store_true", help="do not train: correct --model as it is")
    parser.add_argument("--n-train", type=int, default=2000, help="training images (noisy labels)")
    parser.add_argument("--n-val", type=int, default=1000, help="held-out images with the same noise, for α")
    parser.add_argument("--noise", type=float, default=0.25, help="symmetric label-noise rate")
    parser.add_argument("--epochs", type=float, default=15)
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--n-trusted", type=int, default=500)
    parser.add_argument("--alphas", type=float, nargs="+", default=[1e1, 1e2, 1e3, 1e4, 1e5])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="outputs/sap_multi_gpu")
    args = parser.parse_args(argv)
    if args.correct_only and args.model is None:
        parser.error("--correct-only corrects a trained model: pass --model <saved model folder>")
    return args


def to_pixels(batch: dict[str, list[Any]]) -> dict[str, Any]:
    """``with_transform`` preprocessing: PIL images to normalised 1×28×28 tensors, labels as the model expects."""
    pixels = [(torch.from_numpy(np.asarray(image, dtype=np.float32)) / 255.0 - MEAN) / STD for image in batch["image"]]
    return {"pixel_values": [p[None] for p in pixels], "labels": batch["label"]}


def tiny_vit(seed: int) -> ViTForImageClassification:
    torch.manual_seed(seed)  # the same initial weights on every process (DDP also broadcasts rank 0's)
    config = ViTConfig(
        image_size=28, patch_size=7, num_channels=1, hidden_size=96, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=192, num_labels=10, id2label=dict(enumerate(FASHION_MNIST_CLASSES)),
    )  # fmt: skip
    return ViTForImageClassification(config)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    everything = load_fashion_mnist("train", limit=args.n_train + args.n_val)
    train = add_label_noise(everything.select(range(args.n_train)), rate=args.noise, seed=args.seed)
    val = add_label_noise(everything.select(range(args.n_train, len(everything))), rate=args.noise, seed=args.seed + 1)
    model = AutoModelForImageClassification.from_pretrained(args.model) if args.model else tiny_vit(args.seed)

    callback = SAPCallback(
        CorrectionConfig(n_trusted=args.n_trusted, per_class=True, batch_size=256), alphas=args.alphas
    )
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        # GPUs when there are; CPU processes under ACCELERATE_USE_CPU=1 (see README.md).
        use_cpu=os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") or not torch.cuda.is_available(),
        report_to=[],
        ddp_find_unused_parameters=False,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=256,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        logging_steps=20,
        save_strategy="no",
        eval_strategy="no",
        remove_unused_columns=False,  # with_transform reads the raw image column
        seed=args.seed,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train.with_transform(to_pixels),
        eval_dataset=val.with_transform(to_pixels),
        callbacks=[callback],
    )
    callback.set_trainer(trainer)  # metrics through trainer.log; the Trainer's datasets are the callback's data
    if args.correct_only:
        # What Trainer.train() does at its end, without training: every process calls the event.
        callback.on_train_end(trainer.args, trainer.state, trainer.control, model=trainer.model)
    else:
        trainer.train()
    trainer.save_model()  # writes on the main process only

    if trainer.is_world_process_zero():
        sap = callback.history[-1]
        print(
            f"\n{training_args.world_size} process(es), device {training_args.device}: noisy validation accuracy "
            f"{sap['sap/accuracy_before']:.2%} -> {sap['sap/accuracy_after']:.2%}, "
            f"α = {sap.get('sap/alpha', 'none (model kept as trained)')}, {sap['sap/trusted']} trusted samples, "
            f"correction {sap['sap/total_s']:.1f} s, total {time.perf_counter() - started:.0f} s"
        )
        print(f"corrected model in {args.output_dir}/, report in {args.output_dir}/{callback.output_subdir}/")


if __name__ == "__main__":
    main()
