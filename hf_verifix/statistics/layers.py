"""Which layers of a model a projection can correct, and why the others are left alone."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from .._validation import valid_on_uncorrectable, valid_patterns
from ..errors import LayerError

__all__ = ["LayerSelection", "find_target_layers"]

_EXCLUDED = "excluded by exclude_modules"

# Subclasses whose forward overrides the parent's but still computes F.linear(input, weight, bias).
_EQUIVALENT_LINEAR_FORWARDS = {"timm.layers.linear.Linear"}


@dataclass
class LayerSelection:
    """The layers a correction targets, by qualified name, and the skipped ones with the reason.

    ``skipped`` holds every layer left alone (excluded ones included); ``uncorrectable`` the subset that was not
    excluded by the user but cannot be corrected exactly, with why; ``tied`` maps the first of several targeted
    layers sharing one weight to the others (their Grams are summed and the weight is projected once).

    Example:
        >>> from torch import nn
        >>> fc = nn.Linear(3, 3)
        >>> model = nn.Sequential(nn.Linear(4, 3), fc, nn.ReLU(), nn.Linear(3, 3), nn.Linear(3, 2))
        >>> model[3].weight = fc.weight  # tied: one Parameter, two layers
        >>> selection = find_target_layers(model)
        >>> list(selection.targets), selection.tied
        (['0', '1', '3', '4'], {'1': ['3']})
    """

    targets: dict[str, nn.Module] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    uncorrectable: dict[str, str] = field(default_factory=dict)
    tied: dict[str, list[str]] = field(default_factory=dict)


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


_ADAPTER_REASON = (
    "part of an adapter wrapper ({wrapper}, e.g. a peft LoRA layer): the wrapper's forward adds the adapter's "
    "output to the base layer's, so what it multiplies is not this weight alone, and a saved adapter would not "
    "hold the correction. Merge the adapters first (model = model.merge_and_unload()) and correct the merged model"
)


def _is_adapter_wrapper(module: nn.Module) -> bool:
    """A module that wraps a ``base_layer`` and adds adapter layers' outputs to it (peft's ``BaseTunerLayer``)."""
    return isinstance(getattr(module, "base_layer", None), nn.Module) and bool(
        getattr(module, "adapter_layer_names", None)
    )


def _skipped_by_parent(model: nn.Module) -> dict[str, str]:
    """Layers whose parent computes with their weight directly instead of calling them, or adds to their output."""
    skipped: dict[str, str] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.MultiheadAttention):
            skipped[f"{prefix}out_proj"] = (
                "nn.MultiheadAttention uses out_proj.weight (and in_proj_weight) directly, never calling the layer"
            )
        elif _is_adapter_wrapper(module):
            reason = _ADAPTER_REASON.format(wrapper=type(module).__name__)
            for inner, _ in module.named_modules():
                if inner:
                    skipped[prefix + inner] = reason
    return skipped


def _weight_uses(model: nn.Module) -> dict[int, list[tuple[str, nn.Module, str]]]:
    """Every distinct (module, attribute) holding each Parameter, as ``(qualified name, module, attribute)``.

    A module registered under two names is one use (the first name); one Parameter held by two modules is two.
    """
    uses: dict[int, list[tuple[str, nn.Module, str]]] = {}
    seen: set[tuple[int, str]] = set()
    for name, module in model.named_modules(remove_duplicate=False):
        for attr, param in module._parameters.items():
            if param is None or (id(module), attr) in seen:
                continue
            seen.add((id(module), attr))
            uses.setdefault(id(param), []).append((name, module, attr))
    return uses


def _groups(module: nn.Module) -> int:
    return module.groups if isinstance(module, nn.Conv2d) else 1


def _shared_weight_reasons(
    model: nn.Module, candidates: dict[str, nn.Module], own_reasons: dict[str, str], excluded: set[str]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Why each layer whose weight other modules also hold cannot be corrected, and the groups that can.

    ``candidates`` are the targeted layers (matched by ``target_modules``, not excluded); ``own_reasons`` why some
    of them cannot be corrected on their own; ``excluded`` the layers excluded by ``exclude_modules``. A weight
    shared only by candidate Linear (or Conv2d with equal ``groups``) layers that can each be corrected is
    corrected once from the sum of their Grams: the second result maps the first such layer's name to the others'.
    """
    reasons: dict[str, str] = {}
    tied: dict[str, list[str]] = {}
    names = {id(m): n for n, m in candidates.items()}
    for uses in _weight_uses(model).values():
        layers = [(n, m) for n, m, attr in uses if attr == "weight" and isinstance(m, (nn.Linear, nn.Conv2d))]
        if len(uses) < 2 or not any(id(m) in names for _, m in layers):
            continue
        sharing = [n for n, m in layers if id(m) in names]
        problem = None
        for other, module, attr in uses:
            if attr != "weight" or not isinstance(module, (nn.Linear, nn.Conv2d)):
                problem = (
                    f"its weight is also {type(module).__name__} {other!r}'s {attr!r}, which does not multiply "
                    "it by its inputs like a Linear/Conv2d layer, so no projection can keep that use intact"
                )
            elif id(module) not in names:
                why = _EXCLUDED if other in excluded else "not matched by target_modules"
                problem = (
                    f"its weight is shared with {other!r}, which is {why}; correcting the weight would change that "
                    "layer too: target or exclude all the layers sharing it together"
                )
            elif other in own_reasons:
                problem = f"its weight is shared with {other!r}, which cannot be corrected ({own_reasons[other]})"
            if problem:
                break
        groups = {n: _groups(m) for n, m in layers}
        if problem is None and len(set(groups.values())) > 1:
            problem = (
                f"its weight is shared by layers that split their inputs into different numbers of groups "
                f"({groups}), so their Grams have different shapes and cannot be summed into one projection"
            )
        if problem:
            for name in sharing:
                reasons[name] = problem
        else:
            tied[sharing[0]] = sharing[1:]
    return reasons, tied


def find_target_layers(
    model: nn.Module,
    target_modules: list[str] | str | None = None,
    exclude_modules: list[str] | str | None = None,
    on_uncorrectable: str = "error",
) -> LayerSelection:
    """Return the ``nn.Linear`` / ``nn.Conv2d`` layers of ``model`` to correct, and the skipped ones with reasons.

    Layers are selected by type, never by name, so checkpoints with legacy names work. ``target_modules`` and
    ``exclude_modules`` are regular expressions matched in full against qualified names (``"layer1.0.conv1"``).
    Layers whose stored weight is not what their forward multiplies by (timm ``Conv2dSame``/``StdConv2d``,
    ``padding_mode != "zeros"``, parametrized weights, ``nn.MultiheadAttention.out_proj``, transformers
    ``Conv1D``, weights also used outside Linear/Conv2d layers or by layers of another ``groups``) cannot be
    corrected exactly: with ``on_uncorrectable="error"`` they are refused, all listed with their reason, before
    anything is computed; with ``"skip"`` they are left alone, with the reason recorded. A weight shared by several
    targeted layers is corrected once (see :class:`LayerSelection`'s ``tied``).

    Args:
        model: Any ``nn.Module``.
        target_modules: Only layers matching one of these patterns (``None``: all).
        exclude_modules: Never layers matching one of these patterns.
        on_uncorrectable: ``"error"`` (refuse the model) or ``"skip"`` (leave those layers alone).

    Raises:
        LayerError: A targeted layer cannot be corrected (with ``on_uncorrectable="error"``), no layer can be
            corrected, or ``target_modules`` matches no layer.
        ConfigError: A pattern is not a string or not a valid regular expression, or ``on_uncorrectable`` is
            neither ``"error"`` nor ``"skip"``.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
        >>> list(find_target_layers(model, exclude_modules=["2"]).targets)
        ['0']
        >>> model[0].padding_mode = "reflect"
        >>> find_target_layers(model)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        hf_verifix.errors.LayerError: refusing to correct Sequential: 1 targeted layer(s) cannot be corrected ...
        >>> find_target_layers(model, on_uncorrectable="skip").skipped
        {'0': "padding_mode='reflect' (only 'zeros' padding can be unfolded exactly)"}
    """
    target_modules = valid_patterns(target_modules, "target_modules")
    exclude_modules = valid_patterns(exclude_modules, "exclude_modules")
    on_uncorrectable = valid_on_uncorrectable(on_uncorrectable)
    parent_skips = _skipped_by_parent(model)
    selection = LayerSelection()
    candidates: list[str] = []
    matched: list[str] = []
    targeted: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        conv1d = type(module).__name__ == "Conv1D" and hasattr(module, "nf")
        if not isinstance(module, (nn.Linear, nn.Conv2d)) and not conv1d:
            continue
        candidates.append(name)
        if target_modules is not None and not _matches(name, target_modules):
            continue
        matched.append(name)
        if _matches(name, exclude_modules):
            selection.skipped[name] = _EXCLUDED
        elif conv1d:
            selection.uncorrectable[name] = "transformers Conv1D stores its weight as (in, out); not supported"
        else:
            targeted[name] = module
    own = {n: r for n, m in targeted.items() if (r := parent_skips.get(n) or _unsupported_reason(m))}
    excluded = {n for n, r in selection.skipped.items() if r == _EXCLUDED}
    shared, selection.tied = _shared_weight_reasons(model, targeted, own, excluded)
    for name, module in targeted.items():
        reason = own.get(name) or shared.get(name)
        if reason:
            selection.uncorrectable[name] = reason
        else:
            selection.targets[name] = module
    selection.skipped.update(selection.uncorrectable)
    # Both in the model's order.
    selection.skipped = {n: selection.skipped[n] for n in matched if n in selection.skipped}
    selection.uncorrectable = {n: r for n, r in selection.skipped.items() if n in selection.uncorrectable}
    if selection.uncorrectable and on_uncorrectable == "error":
        raise LayerError(_refusal(model, selection.uncorrectable))
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
        detail = "; ".join(f"{n!r}: {r}" for n, r in selection.skipped.items())
        raise LayerError(
            f"no targetable layer left in {type(model).__name__} (target_modules={target_modules!r}, "
            f"exclude_modules={exclude_modules!r}): every matching layer is skipped ({detail}). Loosen "
            "exclude_modules/target_modules or pass another model."
        )
    selection.tied = {n: others for n, others in selection.tied.items() if n in selection.targets}
    return selection


def _refusal(model: nn.Module, uncorrectable: dict[str, str]) -> str:
    """The refusal's message: every layer, grouped by reason (each reason said once), and the fixes."""
    names = list(uncorrectable)
    by_reason: dict[str, list[str]] = {}
    for name, reason in uncorrectable.items():
        by_reason.setdefault(reason, []).append(name)
    listed = "; ".join(f"{', '.join(map(repr, layers))}: {reason}" for reason, layers in by_reason.items())
    return (
        f"refusing to correct {type(model).__name__}: {len(names)} targeted layer(s) cannot be corrected exactly "
        f"({listed}). Nothing was computed. Leave them out by adding {[re.escape(n) for n in names]!r} to "
        "exclude_modules=, or pass on_uncorrectable='skip' to correct the other layers and leave these unchanged"
    )
