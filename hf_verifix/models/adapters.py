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

from ..errors import ConfigError, InputTypeError

__all__ = [
    "Family",
    "check_image_model",
    "class_names",
    "model_family",
    "record_preprocessing",
    "save_model",
    "usage_code",
]

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


def check_image_model(model: nn.Module) -> None:
    """Refuse a model that does not take images: a transformers model whose ``main_input_name`` is not
    ``pixel_values`` (a text classifier takes ``input_ids`` and an ``attention_mask`` that SAP's rows would have to
    honour — padding must never enter a Gram — which hf_verifix does not do yet).

    Raises:
        InputTypeError: The model takes another input (naming it, and what is supported).

    Example:
        >>> check_image_model(nn.Linear(2, 2))  # plain modules: their input is whatever they are given
    """
    main_input = getattr(model, "main_input_name", None)
    if model_family(model) == "transformers" and isinstance(main_input, str) and main_input != "pixel_values":
        raise InputTypeError(
            f"{type(model).__name__} takes {main_input!r}, not images: hf_verifix corrects image classifiers "
            "(transformers models that take pixel_values, timm models, plain modules). Text classifiers are not "
            "supported yet: their token rows would have to be taken under the attention mask. Nothing was computed"
        )


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


# pretrained_cfg fields that name where pretrained weights came from: wrong for a model trained on other data.
_WEIGHTS_IDENTITY = (
    "url",
    "hf_hub_id",
    "hf_hub_filename",
    "tag",
    "license",
    "origin_url",
    "paper_ids",
    "paper_name",
    "notes",
    "source",
    "test_input_size",
    "test_crop_pct",
)


def record_preprocessing(
    model: nn.Module,
    input_size: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    interpolation: str = "bilinear",
    crop_pct: float = 1.0,
) -> nn.Module:
    """Make a timm model's ``pretrained_cfg`` describe the preprocessing it was trained with; return the model.

    ``timm.create_model("resnet18", pretrained=False)`` carries the ImageNet configuration of its default weights
    (224 px, ImageNet mean and std, their license and paper). A model trained from scratch on other images and saved
    with it is read back by timm's ``resolve_data_config`` with the wrong preprocessing. This sets the input size,
    mean, std, interpolation and crop of the training, and drops the fields that name the pretrained weights, so the
    saved ``config.json`` (``save_pretrained``, the CLI) says what the model needs.

    Raises:
        InputTypeError: ``model`` is not a timm model (save a transformers model's image processor instead:
            ``processor.save_pretrained(folder)``).
        ConfigError: ``mean`` or ``std`` does not have one value per input channel.

    Example:
        >>> import timm
        >>> model = timm.create_model("test_resnet", pretrained=False, in_chans=1)
        >>> cfg = record_preprocessing(model, (1, 28, 28), (0.286,), (0.353,)).pretrained_cfg
        >>> cfg["input_size"], cfg["mean"], "hf_hub_id" in cfg
        ((1, 28, 28), (0.286,), False)
    """
    if model_family(model) != "timm":
        raise InputTypeError(
            f"record_preprocessing describes a timm model's preprocessing in its pretrained_cfg; got a "
            f"{type(model).__name__} ({model_family(model)}). For a transformers model, save the image processor it "
            "was trained with next to it (processor.save_pretrained(folder))"
        )
    channels = int(input_size[0])
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(
            f"mean and std need one value per input channel ({channels}, from input_size={tuple(input_size)}), got "
            f"mean={tuple(mean)} and std={tuple(std)}"
        )
    cfg = {k: v for k, v in dict(getattr(model, "pretrained_cfg", None) or {}).items() if k not in _WEIGHTS_IDENTITY}
    cfg.update(
        input_size=tuple(int(v) for v in input_size),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        interpolation=interpolation,
        crop_pct=float(crop_pct),
        crop_mode="center",
    )
    model.pretrained_cfg = cfg  # type: ignore[assignment]
    return model


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
