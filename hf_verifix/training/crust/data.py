"""CRUST's data: the epoch's coreset items (medoid, member, λ, r), how they are drawn, sampled and collated.

Algorithm 1 lines 3-12 (:func:`_draw_items`, on the main process, shared by :func:`share_items`), the items as a
dataset (:class:`_Items` over :class:`_Rows`), their seeded order (:class:`_EpochSampler`), the collators, and the
mixing of the inputs (:func:`_mix`, eq. 11).

Example:
    >>> coreset_size(0.25, 10)
    2
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ...errors import DataError, VerifixError
from ...selection.coreset import class_budgets, class_medoids, class_points
from ...utils.distributed import broadcast_from_main, is_main_process
from .._common import LABELS_KEY, as_row, is_map_style
from .config import CrustConfig

__all__ = ["CrustEpoch", "coreset_size", "share_items"]

# Keys of the training items and batches (never passed to the model).
_MEDOID_ROW, _MEMBER_ROW = "crust_medoid_row", "crust_member_row"
_MEMBER_INPUTS = "crust_member_inputs"
_MEDOID, _MEMBER, _LAMBDA, _WEIGHT = "crust_medoid", "crust_member", "crust_lambda", "crust_weight"
_LABELS = LABELS_KEY


@dataclass(frozen=True)
class CrustEpoch:
    """What CRUST trained on in one epoch: the coreset, its clusters and the weighted mixed samples.

    Indices are positions in the training dataset. The epoch trains on ``len(item_medoids)`` items, item t being
    x̂ = λ_t x_{member_t} + (1 - λ_t) x_{medoid_t} with weight r_t; an item whose medoid had no member left to mix
    with (a cluster smaller than ``members_per_medoid + 1``, or ``members_per_medoid=0``) is the medoid itself
    (member = medoid, λ = 0).

    Attributes:
        epoch: The 0-based epoch.
        coreset: The k medoids, class by class (ascending), each class's in greedy order.
        cluster_sizes: |V_j| of each medoid: how many samples of its class are closest to it (r_j of eq. 8).
        item_medoids: The medoid j of every item (each medoid ``max(1, members_per_medoid)`` times, in a row).
        item_members: The member i of every item.
        item_lambdas: λ of every item (float64).
        item_weights: r = |V_j| / max(1, members_per_medoid) of every item (float64); per medoid they sum to |V_j|.
        selection_s: Wall time of the selection (proxy pass, facility location, draws), in seconds.
        proxies_s: The proxy pass's share of it.

    Example:
        >>> record = CrustEpoch(0, torch.tensor([3]), torch.tensor([2]), torch.tensor([3, 3]), torch.tensor([5, 3]),
        ...                     torch.tensor([0.25, 0.0]), torch.tensor([1.0, 1.0]), 0.1, 0.05)
        >>> record.coreset.tolist(), float(record.item_weights.sum())
        ([3], 2.0)
    """

    epoch: int
    coreset: torch.Tensor
    cluster_sizes: torch.Tensor
    item_medoids: torch.Tensor
    item_members: torch.Tensor
    item_lambdas: torch.Tensor
    item_weights: torch.Tensor
    selection_s: float
    proxies_s: float


class _Rows(Dataset):
    """The user's training dataset with every sample as a dict (what the collators and the proxy pass read)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return as_row(self.dataset[int(index)], int(index))


class _Items(Dataset):
    """The epoch's training items: item t holds the rows of its medoid and member, λ_t and r_t."""

    def __init__(self, rows: _Rows, size: int) -> None:
        self.rows = rows
        self.size = size
        self.plan: CrustEpoch | None = None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, position: int) -> dict[str, Any]:
        plan = self.plan
        if plan is None:
            raise DataError(
                "CRUST's training items exist once an epoch's coreset is selected; iterate the training dataloader "
                "inside trainer.train() (or call trainer.select_coreset(epoch) first)"
            )
        medoid, member = int(plan.item_medoids[position]), int(plan.item_members[position])
        row = self.rows[medoid]
        return {
            _MEDOID_ROW: row,
            _MEMBER_ROW: row if member == medoid else self.rows[member],
            _MEDOID: medoid,
            _MEMBER: member,
            _LAMBDA: float(plan.item_lambdas[position]),
            _WEIGHT: float(plan.item_weights[position]),
        }


class _RowsCollator:
    """Collates samples as rows (:func:`as_row`): an evaluation set of ``(input, label)`` pairs reads as training's."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, samples: list[Any]) -> Any:
        return self.collate([as_row(sample) for sample in samples])


class _PairCollator:
    """Collates medoid rows and member rows separately with the Trainer's collator, plus the CRUST fields."""

    def __init__(self, rows: Callable[[list[Any]], Any]) -> None:
        self.rows = rows

    def _collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.rows(rows)
        if not isinstance(batch, Mapping):
            raise DataError(
                f"CrustTrainer needs the data collator to return a dict of batched columns (pixel_values, labels, "
                f"...), got {type(batch).__name__}; pass data_collator=transformers.default_data_collator (or "
                "none), or make yours return a dict"
            )
        return dict(batch)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._collate([item[_MEDOID_ROW] for item in items])
        batch[_MEMBER_INPUTS] = self._collate([item[_MEMBER_ROW] for item in items])
        batch[_MEDOID] = torch.tensor([item[_MEDOID] for item in items], dtype=torch.long)
        batch[_MEMBER] = torch.tensor([item[_MEMBER] for item in items], dtype=torch.long)
        batch[_LAMBDA] = torch.tensor([item[_LAMBDA] for item in items], dtype=torch.float32)
        batch[_WEIGHT] = torch.tensor([item[_WEIGHT] for item in items], dtype=torch.float32)
        return batch


class _EpochSampler(Sampler[int]):
    """Every item of the epoch once, in an order seeded by (seed, epoch): the same on every process."""

    def __init__(self, items: _Items, seed: int) -> None:
        self.items = items
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[int]:
        epoch = self.items.plan.epoch if self.items.plan is not None else 0
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return iter(torch.randperm(len(self.items), generator=generator).tolist())


def _label_key(batch: Mapping[str, Any]) -> str:
    key = next((k for k in (_LABELS, "label") if k in batch), None)
    if key is None:
        raise DataError(
            f"a CRUST training batch needs a 'labels' (or 'label') entry of class ids, got keys {sorted(batch)}; "
            "rename the dataset's label column to 'labels' (datasets: dataset.rename_column('...', 'labels'))"
        )
    return key


def _mix(medoids: dict[str, Any], members: Mapping[str, Any], lam: torch.Tensor) -> dict[str, Any]:
    """Eq. 11 on the inputs: λ x_member + (1 - λ) x_medoid for every floating-point tensor; others: the medoid's."""
    mixed = dict(medoids)
    for key, value in medoids.items():
        other = members.get(key)
        if isinstance(value, torch.Tensor) and value.is_floating_point() and isinstance(other, torch.Tensor):
            scale = lam.to(value.dtype).reshape(-1, *([1] * (value.dim() - 1)))
            mixed[key] = scale * other + (1 - scale) * value
    return mixed


def _draw_items(
    groups: torch.Tensor,
    budgets: list[int],
    errors: torch.Tensor,
    features: torch.Tensor | None,
    config: CrustConfig,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Algorithm 1 lines 3-12 for every class: ``(item_medoids, item_members, item_lambdas, item_weights)``."""
    slots = max(1, config.members_per_medoid)
    medoids: list[int] = []
    members: list[int] = []
    weights: list[float] = []
    for c, budget in enumerate(budgets):
        in_class = torch.nonzero(groups == c).flatten()
        if budget == 0:
            continue
        chosen, owner, _, _ = class_medoids(
            class_points(errors, features, in_class), budget, config.block_size, config.max_dense
        )
        order = torch.argsort(owner, stable=True)
        clusters = torch.split(in_class[order], torch.bincount(owner, minlength=budget).tolist())
        for j, cluster in zip(in_class[chosen].tolist(), clusters, strict=True):
            others = cluster[cluster != j].numpy()
            picked = rng.choice(others, size=min(config.members_per_medoid, others.size), replace=False)
            members += picked.tolist() + [j] * (slots - picked.size)
            medoids += [j] * slots
            weights += [cluster.numel() / slots] * slots
    medoid_t, member_t = torch.tensor(medoids, dtype=torch.long), torch.tensor(members, dtype=torch.long)
    lambdas = torch.from_numpy(rng.beta(config.mixup_alpha, config.mixup_alpha, size=len(medoids)))
    lambdas[member_t == medoid_t] = 0.0
    return medoid_t, member_t, lambdas, torch.tensor(weights, dtype=torch.float64)


def _check_indexable(dataset: Any) -> None:
    if not is_map_style(dataset):
        raise DataError(
            f"CRUST revisits training samples by index every epoch, but train_dataset is a "
            f"{type(dataset).__name__}; pass a map-style dataset (datasets.Dataset without streaming, a torch "
            "Dataset with __getitem__ and __len__)"
        )


def coreset_size(fraction: float, n: int) -> int:
    """k = round(``fraction`` × n), at most n: how many medoids CRUST selects from n training samples.

    Raises:
        DataError: k rounds to 0 (too small a fraction of too few samples).

    Example:
        >>> coreset_size(0.5, 7), coreset_size(1.0, 3)
        (4, 3)
    """
    k = min(n, round(fraction * n))
    if k < 1:
        raise DataError(
            f"fraction={fraction} of {n} training samples rounds to a coreset of {k} medoids; raise "
            "CrustConfig(fraction=...) or add data"
        )
    return k


def share_items(
    proxies: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, int],
    config: CrustConfig,
    size: int,
    seed: int,
    epoch: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The epoch's ``size`` items, drawn by the main process and broadcast: the same on every process.

    The main process groups the samples into classes (by label, or by prediction), splits the coreset over them
    and draws the items (:func:`_draw_items`, seeded by ``(seed, epoch)``). Its status (0: ok, 1: failed) goes out
    before its items, so an error there stops every process instead of leaving the others waiting.

    Args:
        proxies: ``(errors, features, labels, num_classes)`` of every training sample, as
            :func:`~hf_verifix.selection.coreset.gradient_proxies` returns them (the same on every process).
        config: CRUST's hyperparameters.
        size: The number of items (``len`` of the epoch's dataset), the shape the other processes receive.
        seed: The selection's seed; with ``epoch``, it seeds the members R_j and the λ draws.
        epoch: The 0-based epoch.

    Returns:
        ``(item_medoids, item_members, item_lambdas, item_weights)``, as :class:`CrustEpoch` holds them.

    Raises:
        VerifixError: On a process other than the main one, when the main process failed (it raises its own error).

    Example:
        >>> errors = torch.tensor([[0.1, -0.1], [0.2, -0.2], [-0.3, 0.3], [-0.1, 0.1]])
        >>> medoids, members, lambdas, weights = share_items(
        ...     (errors, None, torch.tensor([0, 0, 1, 1]), 2), CrustConfig(fraction=0.5), 2, seed=0, epoch=0)
        >>> medoids.numel(), float(weights.sum())  # 2 medoids mixed with 1 member each; each cluster holds 2
        (2, 4.0)
    """
    errors, features, labels, num_classes = proxies
    plan = (
        torch.zeros(size, dtype=torch.long),
        torch.zeros(size, dtype=torch.long),
        torch.zeros(size, dtype=torch.float64),
        torch.zeros(size, dtype=torch.float64),
    )
    failure: Exception | None = None
    if is_main_process():
        try:
            groups = labels
            if config.classes == "predictions":
                probabilities = errors.clone()
                probabilities[torch.arange(labels.numel()), labels] += 1.0  # E = softmax - onehot(label)
                groups = probabilities.argmax(dim=1)
            k = coreset_size(config.fraction, labels.numel())
            budgets = class_budgets(torch.bincount(groups, minlength=num_classes), k, per_class=False)
            rng = np.random.default_rng([seed, epoch])
            plan = _draw_items(groups, budgets, errors, features, config, rng)
        except Exception as error:  # told to the other processes first, so none waits for items never sent
            failure = error
    # Rank 0's status (0: ok, 1: failed) before its items: a rank-0 error stops every process, none hangs.
    status = int(broadcast_from_main(torch.tensor([0 if failure is None else 1], dtype=torch.long)).item())
    if failure is not None:
        raise failure
    if status != 0:
        raise VerifixError(
            f"the main process (rank 0) failed while selecting the CRUST coreset of epoch {epoch} (facility "
            "location and draws run there only), so this process stops too; fix the error in rank 0's "
            "traceback and rerun"
        )
    medoids, members, lambdas, weights = (broadcast_from_main(t) for t in plan)
    return medoids, members, lambdas, weights
