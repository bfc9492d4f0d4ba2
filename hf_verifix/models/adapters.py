"""What differs between model families (timm, transformers, any ``nn.Module``), decided in one place.

:func:`model_family` names the family; :func:`save_model` saves in its native format; :func:`class_names` reads the
class names it was saved with; :func:`usage_code` is the snippet that loads a saved one without hf_verifix.
(:func:`hf_verifix.data.images.default_image_transform` builds each family's preprocessing from its config.)

Example:
    >>> import torch
    >>> model_family(torch.nn.Linear(2, 2))
    'plain'
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from torch import nn

__all__ = ["Family", "class_names", "model_family", "save_model", "usage_code"]

Family = Literal["transformers", "timm", "plain"]


def model_family(model: nn.Module) -> Family:
    """``"transformers"`` (a ``PreTrainedModel``: ``save_pretrained`` and a ``config``), ``"timm"`` (a
    ``pretrained_cfg`` or a timm class) or ``"plain"``.

    Example:
        >>> import timm
        >>> model_family(timm.create_model("test_resnet", pretrained=False))
        'timm'
    """
    if callable(getattr(model, "save_pretrained", None)) and hasattr(model, "config"):
        return "transformers"
    if getattr(model, "pretrained_cfg", None) is not None or type(model).__module__.startswith("timm."):
        return "timm"
    return "plain"


def save_model(model: nn.Module, directory: Path) -> None:
    """Save ``model`` in its native format into ``directory`` (transformers, timm, or plain safetensors).

    transformers models use their own ``save_pretrained`` (safetensors), timm models ``timm.models.save_for_hf``
    (loadable by ``timm.create_model("local-dir:...")``), other modules ``model.safetensors``.

    Example:
        >>> import tempfile, torch
        >>> folder = Path(tempfile.mkdtemp())
        >>> save_model(torch.nn.Linear(2, 2), folder)
        >>> [p.name for p in folder.iterdir()]
        ['model.safetensors']
    """
    family = model_family(model)
    if family == "transformers":
        model.save_pretrained(directory)  # type: ignore[operator]
    elif family == "timm" and getattr(model, "pretrained_cfg", None) is not None:
        from timm.models import save_for_hf

        save_for_hf(model, str(directory), safe_serialization=True)
    else:
        from safetensors.torch import save_model as save_safetensors

        save_safetensors(model, str(directory / "model.safetensors"))


def class_names(model: nn.Module) -> list[str] | None:
    """The class names a model was saved with, by class id: transformers' ``config.id2label`` or timm's
    ``pretrained_cfg["label_names"]``; None when it has none (transformers' placeholder ``LABEL_i`` names count as
    none).

    Example:
        >>> from transformers import ViTConfig, ViTForImageClassification
        >>> config = ViTConfig(image_size=8, patch_size=4, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                    intermediate_size=8, id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
        >>> class_names(ViTForImageClassification(config))
        ['cat', 'dog']
        >>> class_names(nn.Linear(2, 2)) is None
        True
    """
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    if isinstance(id2label, Mapping) and id2label:
        names = [str(id2label.get(i, id2label.get(str(i), ""))) for i in range(len(id2label))]
        if not all(name == f"LABEL_{i}" for i, name in enumerate(names)):
            return names
        return None
    pretrained = getattr(model, "pretrained_cfg", None)
    label_names = pretrained.get("label_names") if isinstance(pretrained, Mapping) else None
    return [str(name) for name in label_names] if label_names else None


def usage_code(library: str | None, repo_id: str | None) -> str:
    """Python that loads a saved corrected model of ``library`` without hf_verifix, from ``repo_id`` or a folder.

    Example:
        >>> print(usage_code("timm", "me/resnet-sap"))
        import timm
        <BLANKLINE>
        model = timm.create_model("hf-hub:me/resnet-sap", pretrained=True).eval()
    """
    where = repo_id or "path/to/this/model"
    if library == "timm":
        prefix = "hf-hub:" if repo_id else "local-dir:"
        return f'import timm\n\nmodel = timm.create_model("{prefix}{where}", pretrained=True).eval()'
    if library == "transformers":
        return (
            "from transformers import AutoImageProcessor, AutoModelForImageClassification\n\n"
            f'model = AutoModelForImageClassification.from_pretrained("{where}")\n'
            f'processor = AutoImageProcessor.from_pretrained("{where}")  # when the repo has one'
        )
    file = "hf_hub_download(" + f'"{where}", "model.safetensors")' if repo_id else f'"{where}/model.safetensors"'
    download = "from huggingface_hub import hf_hub_download\n" if repo_id else ""
    return (
        f"{download}from safetensors.torch import load_model\n\n"
        f"model = ...  # build the same nn.Module architecture first\nload_model(model, {file})"
    )
