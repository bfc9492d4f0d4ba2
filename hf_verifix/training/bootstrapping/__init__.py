"""M-DYR-H and its BMM-guided mixup variants (Arazo et al., 2019) for the Hugging Face ``Trainer``.

Noisy labels are learned later than clean ones, so early in training a two-component beta mixture (BMM) fitted to the
per-sample losses tells each sample's probability of being mislabelled. M-DYR-H (mixup + dynamic hard bootstrapping
+ regularisation) trains on mixed pairs (x = λx_p + (1 − λ)x_q) with, for each sample, a target that moves from its
label towards the model's own prediction as that probability grows (seed eqs. 2 and 8), plus a class-prior
regulariser that stops the model from predicting one class for everything. The dynamic-mixup variants (MD-DYR-SH,
seed sec. 4.4 and 5.2) also weight each pair by how likely its samples are clean.

What :class:`BootstrappingTrainer` does (a ``transformers.Trainer`` subclass):

1. For ``warmup_epochs`` epochs: plain mixup with λ ~ Beta(α, α) on the labels (the reference code's warm-up for the
   mixup methods; ``warmup="ce"`` trains with plain cross-entropy instead).
2. At the start of every later epoch: one pass over the whole training set in eval mode without gradients (exact
   shards per process, summed, so every process holds the same vector), the per-sample cross-entropy under the
   given labels, a :class:`~hf_verifix.algorithms.mixture.BetaMixture` fitted to it (the same code as the ``bmm``
   selector: 5th/95th percentile normalisation, at most 10 EM iterations, noisy component = the larger mean), and
   each sample's p(noisy | loss) kept by sample index. The BMM's means, the share of samples with p(noisy) > 0.5
   and the pass's duration are logged through ``Trainer.log`` (``bootstrapping/*``).
3. Each training step of those epochs: an extra forward pass without gradients on the un-mixed batch gives the
   predictions z; the batch is mixed with a random permutation; the loss is eq. 8 with the kept posteriors plus
   η·R (the class-prior regulariser).

Each sample's index travels with it: the training set is wrapped in :class:`IndexedDataset`, whose items are dicts
with a ``"sample_index"`` key (``(input, label)`` tuples become ``{"pixel_values", "labels"}``), and the Trainer's
``remove_unused_columns`` keeps that key, ``pixel_values`` and ``labels`` (they are added to its signature columns).

Recipe for a benchmark script (a timm model wrapped as ``TimmWrapperForImageClassification``, or any ``nn.Module``
whose ``forward(pixel_values)`` returns logits; data a ``TensorDataset(images, labels)`` or a ``datasets.Dataset``
with ``pixel_values``/``labels`` columns in torch format)::

    from transformers import TrainingArguments
    from hf_verifix.training.bootstrapping import BootstrappingConfig, BootstrappingTrainer

    args = TrainingArguments(
        output_dir="out", num_train_epochs=E, per_device_train_batch_size=128, per_device_eval_batch_size=512,
        optim="sgd", optim_args="momentum=0.9", learning_rate=0.1, weight_decay=1e-4, lr_scheduler_type="cosine",
        save_strategy="no", report_to=[], logging_strategy="epoch", seed=0,
        max_grad_norm=0.0,   # the reference code does not clip; the Trainer's default clips to norm 1.0
    )
    trainer = BootstrappingTrainer(
        model, args, train_dataset=TensorDataset(images, noisy_labels),
        bootstrapping=BootstrappingConfig(warmup_epochs=E // 3),   # M-DYR-H; see BootstrappingConfig.for_method
    )
    trainer.train()   # trains ``model`` in place; trainer.noisy_posterior holds the last epoch's p(noisy)

The package: :mod:`.config` (:class:`BootstrappingConfig`, :data:`METHODS`), :mod:`.losses` (the targets, the loss,
R and the mixing weights, pure functions), :mod:`.data` (:class:`IndexedDataset`) and :mod:`.trainer`
(:class:`BootstrappingTrainer`, whose per-epoch work runs from the training methods' shared
:class:`~hf_verifix.training._common.EpochCallback`).

Example:
    >>> import torch
    >>> bootstrapped_targets(torch.tensor([0]), torch.tensor([[0.0, 2.0]]), torch.tensor([0.25])).tolist()
    [[0.75, 0.25]]
"""

from .config import METHODS, BootstrappingConfig
from .data import INDEX_KEY, IndexedDataset
from .losses import (
    beta_guided_weights,
    binomial_guided_weights,
    bootstrapped_targets,
    class_prior_regularizer,
    dynamic_mixup_weights,
    mixup_bootstrapping_loss,
    static_mixup_weights,
)
from .trainer import LOG_PREFIX, BootstrappingTrainer

__all__ = [
    "INDEX_KEY",
    "LOG_PREFIX",
    "METHODS",
    "BootstrappingConfig",
    "BootstrappingTrainer",
    "IndexedDataset",
    "beta_guided_weights",
    "binomial_guided_weights",
    "bootstrapped_targets",
    "class_prior_regularizer",
    "dynamic_mixup_weights",
    "mixup_bootstrapping_loss",
    "static_mixup_weights",
]
