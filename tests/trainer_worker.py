"""Run by tests/test_integrations_trainer.py, once as a plain process and once under `accelerate launch` (2 processes).

To compare the correction itself (not training, whose batches differ between 1 and 2 processes), every rank builds
the same seeded tiny ViT, trains it identically on its own (a few full-batch SGD steps, no collectives), then fires
``on_train_end`` exactly as ``Trainer.train()`` does: through the Trainer's callback handler, with the Trainer's own
prepared (shuffled, sharded) train and eval dataloaders. The callback is not bound to the Trainer and is given no
datasets, so it must find them through those dataloaders. Sizes are odd so the shards are unequal.

Every rank saves what it computed to ``OUT/rank<k>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from testing_utils import coded_images, pixel_dataset, tiny_vit
from transformers import Trainer, TrainingArguments, ViTForImageClassification

from hf_verifix import CorrectionConfig
from hf_verifix.integrations import SAPCallback
from hf_verifix.utils.distributed import process_rank_and_count


def noisy_images(n: int, seed: int) -> datasets.Dataset:
    """Colour- and stripe-coded 3-class (3, 16, 16) images; about a quarter of the labels are replaced at random."""
    images, labels, _ = coded_images(n, seed)
    return pixel_dataset(images, labels)


def trained_vit(train: datasets.Dataset) -> ViTForImageClassification:
    model = tiny_vit()  # 2 layers, 32 wide, 16x16 images in 4x4 patches, 3 labels, seed 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs, labels = train["pixel_values"][:], train["labels"][:]
    for _ in range(5):
        loss = F.cross_entropy(model(inputs).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def main(output: str) -> None:
    torch.set_num_threads(1)
    train, held_out = noisy_images(101, 0), noisy_images(53, 1)
    config = CorrectionConfig(alpha=10.0, n_trusted=31, per_class=True, batch_size=8, progress=False)
    # Fired through the Trainer's handler: a fixed α, so the weights surely change.
    fixed = SAPCallback(config, search_alpha=False)
    model = trained_vit(train)
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    args = TrainingArguments(
        output_dir=str(Path(output) / "trainer"), use_cpu=True, report_to=[], per_device_train_batch_size=8,
        per_device_eval_batch_size=8, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=held_out, callbacks=[fixed])
    rank, world = process_rank_and_count()
    handler = trainer.callback_handler
    handler.train_dataloader = trainer.get_train_dataloader()
    handler.eval_dataloader = trainer.get_eval_dataloader()
    trainer.control = handler.on_train_end(trainer.args, trainer.state, trainer.control)
    # Called directly on a second copy, with the same loaders: the α search.
    searched = SAPCallback(config, alphas=[1.0, 10.0, 1e3, 1e5], output_subdir="sap_search")
    other = trained_vit(train)
    searched.on_train_end(
        trainer.args, trainer.state, trainer.control, model=other,
        train_dataloader=handler.train_dataloader, eval_dataloader=handler.eval_dataloader,
    )  # fmt: skip
    assert fixed.corrector is not None and searched.corrector is not None and searched.corrector.search_result
    entries = [entry for entry in trainer.state.log_history if "sap/trusted" in entry]
    torch.save(
        {
            "world": world,
            "trained_state": trained,
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "searched_state": {k: v.detach().clone() for k, v in other.state_dict().items()},
            "trusted": fixed.corrector.trusted_indices,
            "curve": searched.corrector.search_result.curve,
            "logged": [{k: v for k, v in entry.items() if not k.endswith("_s")} for entry in entries],
            "loader_sizes": (len(handler.train_dataloader), len(handler.train_dataloader.dataset)),
        },
        Path(output) / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(sys.argv[1])
