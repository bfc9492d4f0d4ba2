"""Which layers of a model a projection can correct, and why the others are left alone."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from ..config import _valid_patterns
from ..errors import LayerError

__all__ = ["LayerSelection", "find_target_layers"]

# Subclasses whose forward overrides the parent's but still computes F.linear(input, weight, bias).
_EQUIVALENT_LINEAR_FORWARDS = {"timm.layers.linear.Linear"}


@dataclass
class LayerSelection:
    """The layers a correction targets, by qualified name, and the skipped ones with the reason.

    Example:
        >>> from torch import nn
        >>> selection = find_target_layers(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
        >>> list(selection.targets)
        ['0', '2']
    """

    targets: dict[str, nn.Module] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _qualname(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _unsupported_reason(module: nn.Module) -> str | None:
    """Why ``module``'s stored weight is not the matrix its forward multiplies by (None when it is)."""
    if hasattr(module, "parametrizations"):
        return "its weight is parametrized (computed in forward), so the stored tensor is not what forward uses"
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} (only 'zeros' padding can be unfolded exactly)"
        if type(module).forward is not nn.Conv2d.forward:
            return (
                f"{type(module).__name__} overrides Conv2d.forward (e.g. pads or standardises the weight "
                "in forward), so the stored weight is not what it multiplies by"
            )
        return None
    if isinstance(module, nn.Linear):
        if type(module).forward is not nn.Linear.forward and _qualname(module) not in _EQUIVALENT_LINEAR_FORWARDS:
            return f"{type(module).__name__} overrides Linear.forward, so the stored weight may not be what it uses"
        return None
    return None


def _matches(name: str, patterns: list[str] | None) -> bool:
    return bool(patterns) and any(re.fullmatch(p, name) for p in patterns or ())


def _listing(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _skipped_by_parent(model: nn.Module) -> dict[str, str]:
    """Layers whose parent computes with their weight directly instead of calling them."""
    skipped: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            prefix = f"{name}." if name else ""
            skipped[f"{prefix}out_proj"] = (
                "nn.MultiheadAttention uses out_proj.weight (and in_proj_weight) directly, never calling the layer"
            )
    return skipped


def _shared_weights(model: nn.Module) -> dict[str, str]:
    owners: dict[int, str] = {}
    shared: dict[str, str] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, (nn.Linear, nn.Conv2d)) and isinstance(weight, nn.Parameter):
            first = owners.setdefault(id(weight), name)
            if first != name:
                reason = f"its weight is shared with {first!r}; one projection cannot fit both layers' inputs"
                shared[name] = reason
                shared[first] = f"its weight is shared with {name!r}; one projection cannot fit both layers' inputs"
    return shared


def find_target_layers(
    model: nn.Module,
    target_modules: list[str] | str | None = None,
    exclude_modules: list[str] | str | None = None,
) -> LayerSelection:
    """Return the ``nn.Linear`` / ``nn.Conv2d`` layers of ``model`` to correct, and the skipped ones with reasons.

    Layers are selected by type, never by name, so checkpoints with legacy names work. ``target_modules`` and
    ``exclude_modules`` are regular expressions matched in full against qualified names (``"layer1.0.conv1"``).
    Layers whose stored weight is not what their forward multiplies by (timm ``Conv2dSame``/``StdConv2d``,
    ``padding_mode != "zeros"``, parametrized weights, ``nn.MultiheadAttention.out_proj``, shared weights) are
    skipped, with the reason recorded.

    Args:
        model: Any ``nn.Module``.
        target_modules: Only layers matching one of these patterns (``None``: all).
        exclude_modules: Never layers matching one of these patterns.

    Raises:
        LayerError: No layer can be corrected, or ``target_modules`` matches no layer.
        ConfigError: A pattern is not a string or not a valid regular expression.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
        >>> list(find_target_layers(model, exclude_modules=["2"]).targets)
        ['0']
    """
    target_modules = _valid_patterns(target_modules, "target_modules")
    exclude_modules = _valid_patterns(exclude_modules, "exclude_modules")
    parent_skips = _skipped_by_parent(model)
    shared = _shared_weights(model)
    selection = LayerSelection()
    candidates: list[str] = []
    matched: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
                selection.skipped[name] = "transformers Conv1D stores its weight as (in, out); not supported"
            continue
        candidates.append(name)
        if target_modules is not None and not _matches(name, target_modules):
            continue
        matched.append(name)
        if _matches(name, exclude_modules):
            selection.skipped[name] = "excluded by exclude_modules"
            continue
        reason = parent_skips.get(name) or shared.get(name) or _unsupported_reason(module)
        if reason:
            selection.skipped[name] = reason
        else:
            selection.targets[name] = module
    if not selection.targets:
        if not candidates:
            kinds = sorted({type(m).__name__ for m in model.modules()})
            raise LayerError(
                f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer to correct (its modules are of type "
                f"{kinds}); SAP projects the weights of Linear and Conv2d layers, so pass a classifier that has them"
            )
        if not matched:
            raise LayerError(
                f"target_modules={target_modules!r} matches none of the {len(candidates)} Linear/Conv2d layers of "
                f"{type(model).__name__} ({_listing(candidates)}); patterns must match a whole qualified name "
                "(re.fullmatch), e.g. 'fc' or 'layer4\\..*'. Fix the patterns or pass target_modules=None"
            )
        detail = "; ".join(f"{n!r}: {selection.skipped[n]}" for n in matched if n in selection.skipped)
        raise LayerError(
            f"no targetable layer left in {type(model).__name__} (target_modules={target_modules!r}, "
            f"exclude_modules={exclude_modules!r}): every matching layer is skipped ({detail}). Loosen "
            "exclude_modules/target_modules or pass another model."
        )
    return selection
