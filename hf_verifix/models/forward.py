"""Running any image classifier the same way: logits out of timm, transformers and plain modules."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import torch
from torch import nn

from ..errors import DataError, InputTypeError, VerifixError

__all__ = [
    "as_model_dtype",
    "evaluation_mode",
    "explained_input_errors",
    "input_error",
    "logits_of",
    "model_device",
    "model_dtype",
    "model_input_channels",
]

# What PyTorch, timm and transformers say when a batch does not fit the model (shape or dtype), not a model bug.
_SHAPE_ERRORS = re.compile(
    r"shapes cannot be multiplied|to have \d+ channels|Expected \d+D \(unbatched\)|Kernel size can't be greater|"
    r"must match the size of tensor|Sizes of tensors must match|is invalid for input of size|doesn't match model|"
    r"size mismatch"
)
_DTYPE_ERRORS = re.compile(
    r"must have the same dtype|Input type \(|should be the same|expected scalar type|expected m1 and m2 to have the "
    r"same dtype|not implemented for '(Long|Int|Short|Char|Byte|Bool)'"
)


def logits_of(output: Any) -> torch.Tensor:
    """Return the logits tensor of a model's output (a tensor, a transformers ``ModelOutput``, a tuple or a dict).

    Example:
        >>> logits_of(torch.zeros(2, 3)).shape
        torch.Size([2, 3])
        >>> logits_of({"logits": torch.zeros(1, 5)}).shape
        torch.Size([1, 5])
    """
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise InputTypeError(
        f"cannot find logits in a model output of type {type(output).__name__}; the model must return a tensor, "
        "an object with .logits, a dict with 'logits' or a tuple whose first item is the logits"
    )


def model_device(model: nn.Module) -> torch.device:
    """Return the device of the model's first parameter (CPU for a model without parameters).

    Example:
        >>> model_device(nn.Linear(2, 2))
        device(type='cpu')
    """
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """Return the dtype of the model's first floating-point parameter (its compute dtype), or None if it has none.

    Example:
        >>> model_dtype(nn.Linear(2, 2).to(torch.bfloat16)), model_dtype(nn.ReLU())
        (torch.bfloat16, None)
    """
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return None


def as_model_dtype(inputs: Any, dtype: torch.dtype | None) -> Any:
    """Return floating-point ``inputs`` in ``dtype`` (a model's :func:`model_dtype`); anything else unchanged.

    A float32 dataset then feeds a float16, bfloat16 or float64 model, while integer inputs (token ids, or pixels
    the model is meant to refuse) are left alone.

    Example:
        >>> as_model_dtype(torch.zeros(2), torch.float16).dtype, as_model_dtype(torch.arange(2), torch.float16).dtype
        (torch.float16, torch.int64)
    """
    if dtype is None or not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        return inputs
    return inputs if inputs.dtype == dtype else inputs.to(dtype)


def _first_layer(model: nn.Module) -> str | None:
    """What the first Linear/Conv2d the model registers takes, for error messages (None without one)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            return f"its first Linear layer {name!r} takes {module.in_features} features in the last dimension"
        if isinstance(module, nn.Conv2d):
            return (
                f"its first Conv2d layer {name!r} takes images of shape (batch, {module.in_channels}, height, width)"
            )
    return None


def _input_size(model: nn.Module) -> str | None:
    """The input size a timm (``pretrained_cfg``) or transformers (``config.image_size``) model was built for."""
    pretrained = getattr(model, "pretrained_cfg", None)
    if isinstance(pretrained, dict) and pretrained.get("input_size"):
        return f"its data config gives the input size {tuple(pretrained['input_size'])}"
    size = getattr(getattr(model, "config", None), "image_size", None)
    return f"its config gives image_size={size}" if size is not None else None


def input_error(error: BaseException, inputs: Any, model: nn.Module) -> DataError | None:
    """Return a DataError explaining ``error`` if the model raised it because ``inputs`` do not fit it, else None.

    The message names the batch's shape and dtype, the original error, what the model's first layer takes and the
    fix; shape mismatches (feature width, image size, channels) and dtype mismatches are recognised by PyTorch's,
    timm's and transformers' messages. Out-of-memory and other errors give None: they are not the data's fault.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 2))
        >>> try:
        ...     model(torch.zeros(3, 5))
        ... except RuntimeError as err:
        ...     print(str(input_error(err, torch.zeros(3, 5), model))[:62])
        the model failed on a batch of torch.float32 inputs of shape (
    """
    if isinstance(error, (VerifixError, torch.cuda.OutOfMemoryError)):
        return None
    message = str(error)
    shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else None
    received = f"a batch of {inputs.dtype} inputs of shape {shape}" if shape is not None else "a batch"
    if _DTYPE_ERRORS.search(message):
        fix = (
            f"its weights are {model_dtype(model)}; pass floating-point inputs (e.g. x.float() / 255 for 0-255 "
            "integer pixels, or a transform that returns float tensors)"
        )
    elif _SHAPE_ERRORS.search(message):
        known = "; ".join(part for part in (_first_layer(model), _input_size(model)) if part)
        fix = (
            f"{known + '; ' if known else ''}pass inputs of the shape the model was built for: for images, a "
            "transform= that resizes them to its input size (e.g. torchvision.transforms.Resize((height, width))) "
            "and converts them to its channel count; for feature vectors, the width its first layer takes"
        )
    else:
        return None
    return DataError(f"the model failed on {received}: {message.strip()}. The data does not fit the model: {fix}")


@contextmanager
def explained_input_errors(model: nn.Module) -> Iterator[None]:
    """Within the block, an error the model raises because a batch does not fit it becomes a DataError.

    A hook on the model records each batch it is called with, so the DataError (see :func:`input_error`) names the
    batch's shape; the original error is its ``__cause__``. Errors raised outside a forward pass of ``model`` pass
    through unchanged, and the hooks are removed on exit, errors included.

    Example:
        >>> model = nn.Linear(4, 2)
        >>> with explained_input_errors(model):  # doctest: +IGNORE_EXCEPTION_DETAIL
        ...     model(torch.zeros(3, 5))
        Traceback (most recent call last):
        DataError: the model failed on a batch of torch.float32 inputs of shape (3, 5): ...
    """
    state: dict[str, Any] = {"inputs": None, "running": False}

    def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
        state["inputs"] = next((v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)), None)
        state["running"] = True

    def after(module: nn.Module, args: tuple, output: Any) -> None:
        state["running"] = False

    handles = []
    # A scripted module takes no Python hooks: its errors then pass unchanged.
    with suppress(RuntimeError, AttributeError):
        handles.append(model.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(model.register_forward_hook(after))
    try:
        yield
    except (RuntimeError, ValueError, AssertionError) as err:
        explained = input_error(err, state["inputs"], model) if state["running"] else None
        if explained is None:
            raise
        raise explained from err
    finally:
        for handle in handles:
            handle.remove()
        state.clear()


def model_input_channels(model: nn.Module) -> int | None:
    """Return the channel count the model's first Conv2d expects, or None for a model without one.

    Example:
        >>> model_input_channels(nn.Sequential(nn.Conv2d(1, 8, 3)))
        1
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode within the block and restore every submodule's mode on exit, errors included.

    Every pass that runs the model (selection scoring, Gram collection, BatchNorm recalibration, evaluation) runs
    in this block, so a batch that does not fit the model raises a DataError there (see
    :func:`explained_input_errors`) instead of PyTorch's bare shape or dtype error.

    Example:
        >>> model = nn.Sequential(nn.Dropout(), nn.Linear(2, 2)).train()
        >>> with evaluation_mode(model):
        ...     model.training
        False
        >>> model.training, model[0].training
        (True, True)
    """
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with explained_input_errors(model):
            yield model
    finally:
        for module, mode in modes.items():
            module.training = mode
