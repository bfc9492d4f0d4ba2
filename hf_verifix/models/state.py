"""A model's weights as the corrector keeps them: exact copies to restore, and marks that notice any other write.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(2, 2)
    >>> state = WeightState(model)
    >>> state.keep([""], buffers={})
    >>> _ = torch.nn.init.zeros_(model.weight)
    >>> state.changed_tensors()
    ['weight']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import VerifixError

__all__ = ["WeightState"]


def _version(tensor: torch.Tensor) -> int:
    try:
        return int(tensor._version)
    except RuntimeError:  # an inference-mode tensor keeps no version counter
        return -1


class WeightState:
    """The original weights of some layers (and the model's buffers), and the model as last written by their owner.

    ``mark()`` records every parameter's and buffer's identity and in-place version counter (bumped by each in-place
    write: an optimizer step, ``load_state_dict``, an edit); ``changed_tensors()`` lists what differs since.

    Example:
        >>> model = torch.nn.Linear(2, 2)
        >>> state = WeightState(model)
        >>> state.changed_tensors()  # nothing marked yet
        []
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.weights: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self._marks: dict[str, tuple[int, int]] = {}

    def keep(self, layers: Iterable[str], buffers: dict[str, torch.Tensor]) -> None:
        """Copy the weights of ``layers`` and the given buffers (by qualified name), then mark the model.

        Example:
            >>> state = WeightState(torch.nn.Linear(2, 2))
            >>> state.keep([""], buffers={})
            >>> list(state.weights)
            ['']
        """
        modules = dict(self.model.named_modules())
        self.weights = {name: modules[name].weight.detach().clone() for name in layers}
        self.buffers = {name: b.detach().clone() for name, b in buffers.items()}
        self.mark()

    def forget(self) -> None:
        """Drop the copies and the marks.

        Example:
            >>> state = WeightState(torch.nn.Linear(2, 2))
            >>> state.forget(); state.weights
            {}
        """
        self.weights, self.buffers, self._marks = {}, {}, {}

    def _now(self) -> dict[str, tuple[int, int]]:
        tensors = [*self.model.named_parameters(remove_duplicate=False), *self.model.named_buffers()]
        return {name: (id(t), _version(t)) for name, t in tensors}

    def mark(self) -> None:
        """Record the model as its owner left it.

        Example:
            >>> WeightState(torch.nn.Linear(2, 2)).mark()
        """
        self._marks = self._now()

    @property
    def marked(self) -> bool:
        """Whether the model was marked since the last ``forget``.

        Example:
            >>> WeightState(torch.nn.Linear(2, 2)).marked
            False
        """
        return bool(self._marks)

    def changed_tensors(self) -> list[str]:
        """The parameters and buffers written by anything else since the last mark (sorted; [] when unmarked).

        Example:
            >>> WeightState(torch.nn.Linear(2, 2)).changed_tensors()
            []
        """
        if not self._marks:
            return []
        now = self._now()
        return sorted(n for n in set(now) | set(self._marks) if now.get(n) != self._marks.get(n))

    def refuse_if_changed(self, action: str) -> None:
        """Raise a VerifixError naming ``action`` when anything else wrote the model since the last mark.

        Restoring the kept copy then would overwrite the user's newer weights (trained or edited since).

        Example:
            >>> model = torch.nn.Linear(2, 2)
            >>> state = WeightState(model)
            >>> state.keep([""], buffers={})
            >>> _ = torch.nn.init.zeros_(model.weight)
            >>> state.refuse_if_changed("apply")
            Traceback (most recent call last):
            ...
            hf_verifix.errors.VerifixError: apply would overwrite the model's current weights ...
        """
        changed = self.changed_tensors()
        if changed:
            raise VerifixError(
                f"{action} would overwrite the model's current weights with the copy taken at fit time, but the "
                f"model changed since (e.g. trained or edited): {len(changed)} tensor(s) differ, e.g. {changed[:3]}. "
                "Nothing was written. Call corrector.fit(train_data) again to correct the current weights"
            )

    def restore(self) -> None:
        """Write the kept weights and buffers back, bit-exactly (the mark is not moved).

        Example:
            >>> model = torch.nn.Linear(2, 2)
            >>> state = WeightState(model)
            >>> state.keep([""], buffers={})
            >>> before = model.weight.clone()
            >>> _ = torch.nn.init.zeros_(model.weight)
            >>> state.restore(); torch.equal(model.weight, before)
            True
        """
        self.write(self.weights, self.buffers)

    def write(self, weights: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]) -> None:
        """Copy ``weights`` (by layer name) and ``buffers`` (by qualified name) into the model, without gradients.

        Example:
            >>> model = torch.nn.Linear(1, 1)
            >>> WeightState(model).write({"": torch.ones(1, 1)}, {})
            >>> model.weight.item()
            1.0
        """
        modules = dict(self.model.named_modules())
        named = dict(self.model.named_buffers())
        with torch.no_grad():
            for name, weight in weights.items():
                target = modules[name].weight
                target.copy_(weight.to(target.device))
            for name, buffer in buffers.items():
                named[name].copy_(buffer)

    def snapshot(self, layers: Iterable[str]) -> dict[str, Any]:
        """Copies of the current weights of ``layers`` and of every buffer, for :meth:`write`.

        Example:
            >>> sorted(WeightState(torch.nn.BatchNorm1d(2)).snapshot([])["buffers"])
            ['num_batches_tracked', 'running_mean', 'running_var']
        """
        modules = dict(self.model.named_modules())
        return {
            "weights": {name: modules[name].weight.detach().clone() for name in layers},
            "buffers": {name: b.detach().clone() for name, b in self.model.named_buffers()},
        }
