"""Turning images (PIL, arrays) into the tensors a model expects: the model's own preprocessing by default."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import DataError
from ..models.forward import model_input_channels

if TYPE_CHECKING:
    import datasets

__all__ = ["default_image_transform", "grayscale_image_dataset", "image_to_tensor"]

Transform = Callable[[Any], torch.Tensor]


def _timm_transform(model: nn.Module, channels: int | None) -> Transform:
    import timm.data

    config = dict(timm.data.resolve_model_data_config(model))
    if channels is not None and len(config["mean"]) != channels:
        # timm keeps the 3-channel ImageNet config for in_chans=1 models; average it to the real channel count.
        config["mean"] = (float(np.mean(config["mean"])),) * channels
        config["std"] = (float(np.mean(config["std"])),) * channels
        config["input_size"] = (channels, *config["input_size"][1:])
    return timm.data.create_transform(**config, is_training=False)


def _transformers_transform(size: int, channels: int) -> Transform:
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * channels, [0.5] * channels),
        ]
    )


def default_image_transform(model: nn.Module) -> Transform:
    """Return the evaluation preprocessing of ``model`` for PIL images.

    timm models use their data config (``timm.data.resolve_model_data_config``); transformers models resize to
    ``config.image_size`` and normalise with mean = std = 0.5 (ViT's image processor defaults); any other module
    gets ``ToTensor()``. Pass ``transform=`` (or an ``image_processor``) to ``fit`` to use another.

    Example:
        >>> import timm
        >>> from PIL import Image
        >>> model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
        >>> default_image_transform(model)(Image.new("RGB", (40, 40))).shape[0]
        3
    """
    channels = model_input_channels(model)
    if getattr(model, "pretrained_cfg", None) is not None or type(model).__module__.startswith("timm."):
        return _timm_transform(model, channels)
    config = getattr(model, "config", None)
    image_size = getattr(config, "image_size", None)
    if isinstance(image_size, (list, tuple)):
        image_size = image_size[0]
    if isinstance(image_size, int):
        num_channels: int = channels or int(getattr(config, "num_channels", 3))
        return _transformers_transform(image_size, num_channels)
    from torchvision import transforms

    return transforms.ToTensor()


def _transformed(output: Any) -> torch.Tensor:
    """The image tensor a transform returned: a tensor, an array, or an image processor's ``pixel_values``."""
    batched = False
    if isinstance(output, Mapping):  # a transformers image processor's BatchFeature (or any dict)
        if "pixel_values" not in output:
            raise DataError(
                f"the transform returned a {type(output).__name__} without 'pixel_values' (keys {sorted(output)}); "
                "it must return the image as a tensor"
            )
        output = output["pixel_values"]
        if isinstance(output, (list, tuple)):
            if len(output) != 1:
                raise DataError(f"the transform returned {len(output)} images for one image; expected exactly one")
            output = output[0]
        batched = True
    if isinstance(output, np.ndarray):
        output = torch.from_numpy(np.array(output))  # a copy: the array may be read-only
    if not isinstance(output, torch.Tensor):
        raise DataError(
            f"the transform returned a {type(output).__name__}, not a tensor; end it with "
            "torchvision.transforms.ToTensor() (or pass an image processor)"
        )
    if batched and output.dim() == 4 and output.shape[0] == 1:
        output = output[0]
    return output


def image_to_tensor(image: Any, transform: Transform | None, channels: int | None) -> torch.Tensor:
    """Return a float CHW tensor for a PIL image, an HWC/CHW array or a tensor, converted to ``channels``.

    ``transform`` may return a tensor or array, or be a transformers image processor (its ``pixel_values`` for
    the one image is used).

    Example:
        >>> from PIL import Image
        >>> image_to_tensor(Image.new("L", (8, 8)), None, channels=3).shape
        torch.Size([3, 8, 8])
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        mode = {1: "L", 3: "RGB"}.get(channels or 0)
        if mode is not None and image.mode != mode:
            image = image.convert(mode)
        if transform is not None:
            return _transformed(transform(image))
        array = np.asarray(image, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array)
        return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    if isinstance(image, (np.ndarray, list)):
        array = np.array(image)  # a copy: arrays from datasets may be read-only
        if array.dtype.kind not in "biuf":
            raise DataError(f"cannot turn an array of dtype {array.dtype} into an image tensor; expected numbers")
        image = torch.from_numpy(array)
    if not isinstance(image, torch.Tensor):
        raise DataError(
            f"cannot turn an image of type {type(image).__name__} into a tensor; expected a PIL image, "
            "a numpy array or a tensor"
        )
    if image.numel() == 0:
        raise DataError(f"got an empty image (shape {tuple(image.shape)}); every sample needs its pixels")
    tensor = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    if tensor.dim() == 2:
        tensor = tensor[None]
    elif tensor.dim() == 3 and tensor.shape[-1] in (1, 3, 4) and tensor.shape[0] not in (1, 3, 4):
        tensor = tensor.permute(2, 0, 1)
    if channels is not None and tensor.dim() == 3 and tensor.shape[0] != channels:
        if tensor.shape[0] == 1:
            tensor = tensor.expand(channels, *tensor.shape[1:])
        elif channels == 1 and tensor.shape[0] == 3:
            tensor = tensor.mean(dim=0, keepdim=True)
        elif channels == 3 and tensor.shape[0] == 4:
            tensor = tensor[:3]  # RGBA: drop the alpha channel
    if transform is not None:
        return _transformed(transform(tensor))
    return tensor


def grayscale_image_dataset(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], split: str = "train"
) -> datasets.Dataset:
    """A :class:`datasets.Dataset` of ``image`` (:class:`datasets.Image`) and ``label`` (``ClassLabel``) columns.

    ``images`` are ``uint8`` arrays ``(N, H, W)``, stored losslessly as binary PGM (much faster to build than PNG)
    and decoded to grayscale ``PIL`` images on access; the schema is the Hub's MNIST and Fashion-MNIST one.

    Example:
        >>> ds = grayscale_image_dataset(np.zeros((2, 4, 3), np.uint8), np.array([1, 0]), ["zero", "one"])
        >>> ds[0]["image"].size, ds[0]["image"].mode, ds.features["label"].int2str(ds[0]["label"])
        ((3, 4), 'L', 'one')
    """
    import datasets

    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"expected uint8 grayscale images of shape (N, H, W), got {images.dtype} images of shape {images.shape}; "
            "convert 0-255 pixels with .astype(np.uint8) and color images with a mean over their channel axis"
        )
    if len(images) != len(labels):
        raise DataError(f"got {len(images)} images but {len(labels)} labels; pass one label per image")
    height, width = images.shape[1:]
    header = f"P5\n{width} {height}\n255\n".encode("ascii")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(class_names))})
    return datasets.Dataset.from_dict(
        {"image": [{"bytes": header + image.tobytes(), "path": None} for image in images], "label": labels},
        features=features,
        split=datasets.NamedSplit(split),
    )
