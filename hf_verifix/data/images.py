"""Turning images (PIL, arrays) into the tensors a model expects: the model's own preprocessing by default."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import DataError
from ..models.adapters import model_family
from ..models.forward import model_input_channels

if TYPE_CHECKING:
    import datasets

__all__ = ["default_image_transform", "float_image", "grayscale_image_dataset", "image_to_tensor"]

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


def _saved_image_processor(model: nn.Module) -> Any:
    """The image processor saved with a transformers model (read from its ``name_or_path``, local files only; a Hub
    ID counts when it is in the cache), or None."""
    source = getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
    if not source:
        return None
    try:
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, KeyError, ImportError):  # nothing saved there, or no processor for the type
        return None


def default_image_transform(model: nn.Module) -> Transform:
    """Return the evaluation preprocessing of ``model`` for PIL images: the model's own.

    timm models use their data config (``timm.data.resolve_model_data_config``), and so do transformers
    ``TimmWrapper`` models. Other transformers models use the image processor saved with them (read from
    ``model.name_or_path``, local files only); a ViT without one gets ViT's image processor defaults (resize to
    ``config.image_size``, mean = std = 0.5). Any other transformers model without a saved processor is refused
    (its preprocessing cannot be guessed: an HF ResNet or ConvNeXt does not normalise like a ViT), and a plain
    ``nn.Module`` gets ``ToTensor()``. Pass ``transform=`` (or an image processor) to ``fit`` to use another.

    Raises:
        DataError: A transformers model other than ViT with no image processor saved with it.

    Example:
        >>> import timm
        >>> from PIL import Image
        >>> model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
        >>> default_image_transform(model)(Image.new("RGB", (40, 40))).shape[0]
        3
    """
    channels = model_input_channels(model)
    family = model_family(model)
    if family == "timm":
        return _timm_transform(model, channels)
    if family == "plain":
        from torchvision import transforms

        return transforms.ToTensor()
    timm_model = getattr(model, "timm_model", None)
    if isinstance(timm_model, nn.Module):  # transformers' TimmWrapperForImageClassification
        return _timm_transform(timm_model, channels)
    processor = _saved_image_processor(model)
    if processor is not None:
        return processor
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    image_size = getattr(config, "image_size", None)
    if isinstance(image_size, (list, tuple)):
        image_size = image_size[0]
    if model_type == "vit" and isinstance(image_size, int):
        num_channels: int = channels or int(getattr(config, "num_channels", 3))
        return _transformers_transform(image_size, num_channels)
    raise DataError(
        f"cannot tell how to preprocess images for this {type(model).__name__} (model_type {model_type!r}): no image "
        f"processor was saved with it (name_or_path {getattr(model, 'name_or_path', '')!r}). Pass its own, e.g. "
        "transform=AutoImageProcessor.from_pretrained('<its Hub ID or folder>'), or data that already holds "
        "pixel_values"
    )


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


# High-bit-depth grayscale PIL modes, read as float: "F" as stored, 16-bit integers scaled by 1/65535.
_FLOAT_MODES = ("F", "I", "I;16", "I;16L", "I;16B", "I;16N")
_UINT16_MAX = 65535
# Channel counts an image array may plausibly carry (gray, RGB, RGBA), besides the model's own.
_CHANNEL_COUNTS = (1, 3, 4)


def float_image(image: Any) -> Any:
    """Return a high-bit-depth grayscale PIL image as a mode ``"F"`` image on a documented scale.

    ``"F"`` (float32) keeps its values as they are (like ``torchvision.transforms.ToTensor``, so expected on the
    0-1 scale); ``"I;16"`` (16-bit, e.g. a 16-bit PNG) is divided by 65535, and so is ``"I"`` (int32: older Pillow
    opens 16-bit PNGs this way) when its values lie in the 16-bit range [0, 65535]; other ``"I"`` images are
    refused, as their range is unknown. Other modes are returned unchanged.

    Raises:
        DataError: A mode ``"I"`` image with values outside [0, 65535].

    Example:
        >>> from PIL import Image
        >>> float_image(Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))).getextrema()
        (0.0, 1.0)
    """
    if image.mode not in _FLOAT_MODES or image.mode == "F":
        return image
    array = np.asarray(image)
    if image.mode == "I":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > _UINT16_MAX:
            raise DataError(
                f"got a mode 'I' (32-bit integer) image with values from {low} to {high}, outside the 16-bit range "
                f"[0, {_UINT16_MAX}] that is scaled by 1/{_UINT16_MAX}; its scale is unknown, so convert it "
                "yourself: a mode 'F' image on the 0-1 scale, e.g. Image.fromarray((np.asarray(image) / "
                "full_scale).astype(np.float32)), or pass transform= that reads it"
            )
    from PIL import Image

    return Image.fromarray(array.astype(np.float32) / np.float32(_UINT16_MAX))


def _converted_image(image: Any, channels: int | None, for_transform: bool) -> Any:
    """``image`` in a mode a transform (or :func:`_pil_tensor`) reads at the right scale, for ``channels``.

    1/L/LA/P/RGB/RGBA/CMYK/YCbCr become ``"L"`` or ``"RGB"`` by PIL's own conversion for a 1- or 3-channel model;
    a palette image without a known channel count is expanded through its palette (its indices are no colours).
    """
    if image.width == 0 or image.height == 0:
        raise DataError(f"got an empty image (size {image.size}); every sample needs its pixels")
    if image.mode in _FLOAT_MODES:
        image = float_image(image)
        if for_transform and channels == 3:
            # PIL has no float RGB: a 3-channel model's transform gets the 0-1 values as 8-bit RGB (F: clipped).
            from PIL import Image

            eight_bit = np.clip(np.round(np.asarray(image, dtype=np.float32) * 255), 0, 255).astype(np.uint8)
            return Image.fromarray(eight_bit).convert("RGB")
        return image
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    target = {1: "L", 3: "RGB"}.get(channels or 0)
    return image.convert(target) if target is not None and image.mode != target else image


def _pil_tensor(image: Any) -> torch.Tensor:
    """A CHW float tensor of a PIL image: 8-bit bands / 255, mode "1" as 0/1, float modes as :func:`float_image`."""
    if image.mode == "F":
        array = np.array(image, dtype=np.float32)
    elif image.mode == "1":
        array = np.asarray(image).astype(np.float32)
    else:
        array = np.asarray(image, dtype=np.float32) / np.float32(255)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)


def _channels_first(tensor: torch.Tensor, channels: int | None, integer: bool) -> torch.Tensor:
    """A 2-D (H, W) or 3-D (C, H, W) / (H, W, C) image as (C, H, W); 1-D feature vectors unchanged.

    A 3-D image is HWC when only its last size is a plausible channel count (1, 3, 4 or the model's), CHW when
    only its first is. When both are, the reading whose channel count is the model's wins; failing that, float
    arrays (preprocessed ``pixel_values``, which image processors lay out CHW) are CHW and integer ones are refused.
    """
    if tensor.dim() <= 1:
        return tensor
    if tensor.dim() == 2:
        return tensor[None]
    if tensor.dim() != 3:
        if channels is None:
            return tensor  # a model without Conv2d: any input shape may be what it takes
        raise DataError(
            f"expected one image of shape (height, width), (channels, height, width) or (height, width, channels), "
            f"got shape {tuple(tensor.shape)}; squeeze the extra dimensions (e.g. x[0] for a batch of one) or pass "
            "transform= that returns one (channels, height, width) image"
        )
    plausible = (*_CHANNEL_COUNTS, channels) if channels is not None else _CHANNEL_COUNTS
    first, last = tensor.shape[0], tensor.shape[-1]
    if first in plausible and last in plausible:
        if channels is not None and (first == channels) != (last == channels):
            return tensor.permute(2, 0, 1) if last == channels else tensor
        if integer:
            raise DataError(
                f"cannot tell the layout of an image of shape {tuple(tensor.shape)}: it reads as {first} channels "
                f"of {tuple(tensor.shape[1:])} (CHW) or as {last} channels of {tuple(tensor.shape[:2])} (HWC)"
                f"{f' for a model taking {channels} channels' if channels is not None else ''}; pass PIL images or "
                "CHW float tensors, or transform= that returns a (channels, height, width) tensor"
            )
        return tensor
    return tensor.permute(2, 0, 1) if last in plausible else tensor


def _with_channels(tensor: torch.Tensor, channels: int | None) -> torch.Tensor:
    """A CHW image with ``channels`` channels: gray repeated, RGB averaged, alpha dropped; others refused."""
    if channels is None or tensor.dim() != 3 or tensor.shape[0] == channels:
        return tensor
    have = tensor.shape[0]
    if have == 1:
        return tensor.expand(channels, *tensor.shape[1:])
    if channels == 1 and have in (2, 3, 4):
        return tensor[: 1 if have == 2 else 3].mean(dim=0, keepdim=True)  # LA: drop alpha; RGB(A): average
    if channels == 3 and have == 4:
        return tensor[:3]  # RGBA: drop the alpha channel
    raise DataError(
        f"got an image of {have} channels (shape {tuple(tensor.shape)}) for a model whose first Conv2d takes "
        f"{channels}; convert the images to {channels} channels first, or pass transform= that does"
    )


def image_to_tensor(image: Any, transform: Transform | None, channels: int | None) -> torch.Tensor:
    """Return a float CHW tensor for a PIL image, an HWC/CHW array or a tensor, converted to ``channels``.

    PIL images are read by mode: 8-bit modes (L, LA, P through its palette, RGB, RGBA, CMYK, YCbCr) as values /
    255 and "1" as 0/1, like ``torchvision.transforms.ToTensor``; float and 16-bit modes by :func:`float_image`
    ("F" as stored, "I;16" / 65535). For a 1- or 3-channel model PIL converts them to "L"/"RGB" first; a float
    image meant for a 3-channel model's transform goes to it as 8-bit RGB. Arrays and tensors are laid out by
    shape (see :func:`_channels_first`: ambiguous integer layouts such as (3, 8, 3) are refused); uint8 values are
    divided by 255, other numbers kept.

    ``transform`` may return a tensor or array, or be a transformers image processor (its ``pixel_values`` for
    the one image is used).

    Raises:
        DataError: An empty image, a non-numeric array, an ambiguous layout, a channel count that cannot be
            converted, a mode "I" image outside the 16-bit range.

    Example:
        >>> from PIL import Image
        >>> image_to_tensor(Image.new("L", (8, 8)), None, channels=3).shape
        torch.Size([3, 8, 8])
        >>> image_to_tensor(np.zeros((4, 8, 3), np.uint8), None, channels=3).shape  # HWC: 3 channels of 4x8
        torch.Size([3, 4, 8])
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        image = _converted_image(image, channels, for_transform=transform is not None)
        if transform is not None:
            return _transformed(transform(image))
        return _with_channels(_pil_tensor(image), channels)
    if isinstance(image, (np.ndarray, list)):
        try:
            array = np.array(image)  # a copy: arrays from datasets may be read-only
        except ValueError as err:  # NumPy refuses ragged nested lists
            raise DataError(
                f"cannot turn a nested list of rows of different lengths into an image tensor ({err}); every row "
                "of an image must have the same length: pad or resize the images to one shape first"
            ) from err
        if array.dtype.kind not in "biuf":
            raise DataError(f"cannot turn an array of dtype {array.dtype} into an image tensor; expected numbers")
        image = torch.from_numpy(array)
    if not isinstance(image, torch.Tensor):
        raise DataError(
            f"cannot turn an image of type {type(image).__name__} into a tensor; expected a PIL image, "
            "a numpy array or a tensor"
        )
    if image.is_complex():
        raise DataError(f"cannot turn a {image.dtype} tensor into an image tensor; expected real numbers")
    if image.numel() == 0:
        raise DataError(f"got an empty image (shape {tuple(image.shape)}); every sample needs its pixels")
    tensor = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    tensor = _with_channels(_channels_first(tensor, channels, not image.is_floating_point()), channels)
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
