"""What several subcommands do: pre-flight checks, loading the model and a split, printing on the main process.

Checks that can run before anything is loaded do (a bad ``--device``, ``--selector-kwargs`` or output path costs no
download). :class:`UsageError` is a bad combination of options (exit code 2).

Example:
    >>> default_device(None).type in ("cpu", "cuda")
    True
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..config import available_devices, unavailable_device
from ..data.labels import align_labels, check_labels
from ..data.source import as_source
from ..hub import LoadedData, LoadedModel, load_data, load_model
from ..selection import get_selector, list_selectors
from ..utils.distributed import is_main_process
from ._options import PROG

__all__ = [
    "UsageError",
    "align_labels_if_asked",
    "blocking_file",
    "check_device",
    "check_output_file",
    "check_selector",
    "check_selector_kwargs",
    "default_device",
    "load_labelled_split",
    "load_model_of",
    "load_split",
    "run_quietly",
    "say",
    "source_of",
    "warn",
    "with_input_size",
    "writable_path",
]

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
T = TypeVar("T")


class UsageError(Exception):
    """A bad combination of options: the command exits with code 2.

    Example:
        >>> str(UsageError("--alphas needs --eval-split"))
        '--alphas needs --eval-split'
    """


# ---------------------------------------------------------------------------------------------------------- printing
def say(*parts: Any) -> None:
    """Print to stdout on the main process only.

    Example:
        >>> say("saved", 3)
        saved 3
    """
    if is_main_process():
        print(*parts, flush=True)


def warn(message: str) -> None:
    """Print ``hf-verifix: warning: message`` to stderr on the main process only.

    Example:
        >>> warn("no --eval-split")  # printed to stderr
    """
    if is_main_process():
        print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def run_quietly(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``function``; the warnings it raises are printed once each as CLI warnings (hf_verifix's own without
    their category, other packages' as Python shows them, deprecations dropped).

    Example:
        >>> run_quietly(sum, [1, 2])
        3
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return function(*args, **kwargs)
        finally:
            seen: set[str] = set()
            for item in caught:
                text = str(item.message)
                if text in seen:
                    continue
                seen.add(text)
                if Path(item.filename).resolve().is_relative_to(_PACKAGE_DIR):
                    warn(text)
                elif not issubclass(item.category, (DeprecationWarning, PendingDeprecationWarning)):
                    warn(f"{item.category.__name__}: {text}")  # as Python shows them by default


# ---------------------------------------------------------------------------------------------------------- checks
def _torch_device_problem(requested: str) -> str | None:
    """Why torch refuses ``requested`` as a device, or None."""
    import torch

    try:
        torch.device(requested)
    except (RuntimeError, ValueError) as err:
        return str(err)
    return None


def check_device(requested: str | None) -> None:
    """Refuse, before loading anything, a ``--device`` torch does not know or this machine does not have.

    Example:
        >>> check_device("cpu")
        >>> check_device("tpu")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        UsageError: --device 'tpu' is not a torch device (...); available devices: cpu ...
    """
    if not requested:
        return
    devices = ", ".join(available_devices())
    problem = _torch_device_problem(requested)
    if problem is not None:
        raise UsageError(
            f"--device {requested!r} is not a torch device ({problem}); available devices: {devices} (or omit "
            "--device: cuda when available, else cpu)"
        )
    if unavailable_device(requested) is not None:
        raise UsageError(
            f"--device {requested!r} is not available on this machine; available devices: {devices}. Pass one of "
            "them, or omit --device (cuda when available, else cpu)"
        )


def check_selector(name: str) -> None:
    """Refuse a ``--selector`` that is not registered.

    Example:
        >>> check_selector("loss")
    """
    if name not in list_selectors():
        raise UsageError(f"--selector {name!r} is not a registered selector; choose one of {list_selectors()}")


def _accepted_keywords(signature: inspect.Signature) -> str:
    keywords = [
        p.name + (" (required)" if p.default is p.empty else "")
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    return f"accepts {', '.join(keywords)}" if keywords else "accepts no keyword arguments"


def check_selector_kwargs(name: str, kwargs: dict[str, Any] | None) -> None:
    """Refuse, before loading anything, an unknown ``--selector``, or ``--selector-kwargs`` the selector's
    constructor does not accept or rejects; the message lists the keywords it accepts (read from its signature).

    Example:
        >>> check_selector_kwargs("curvature", {"n": 2})
    """
    from ..selection.base import selector_factory

    check_selector(name)
    signature = inspect.signature(selector_factory(name))
    accepted = _accepted_keywords(signature)
    given = json.dumps(kwargs or {}, sort_keys=True)
    try:
        signature.bind(**(kwargs or {}))
    except TypeError as err:
        raise UsageError(
            f"--selector-kwargs {given} does not fit the {name!r} selector ({err}): it {accepted}; fix or drop "
            "--selector-kwargs"
        ) from err
    try:
        get_selector(name, **(kwargs or {}))
    except (TypeError, ValueError) as err:  # ConfigError and DataError are ValueErrors
        raise UsageError(
            f"--selector-kwargs {given}: the {name!r} selector rejects them ({err}); it {accepted}"
        ) from err


def blocking_file(path: Path) -> Path | None:
    """The first existing folder above ``path`` that is really a file (nothing can be written below it), or None.

    Example:
        >>> blocking_file(Path(__file__) / "out" / "x.json") == Path(__file__)
        True
    """
    return next((p for p in path.absolute().parents if p.exists() and not p.is_dir()), None)


def writable_path(path: Path, flag: str, what: str, fix: str) -> None:
    """Refuse a ``flag`` path below a file, where it could not be created; the message ends with ``fix``.

    Example:
        >>> fix = "pass another --output path"
        >>> writable_path(Path("out") / "scores.json", "--output", "cannot be written", fix)
        >>> writable_path(Path(__file__) / "x.json", "--output", "cannot be written", fix)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        NotADirectoryError: --output '...' cannot be written: '...' is a file, not a folder; pass another --output path
    """
    blocking = blocking_file(path)
    if blocking is not None:
        raise NotADirectoryError(f"{flag} {str(path)!r} {what}: {str(blocking)!r} is a file, not a folder; {fix}")


def check_output_file(path: Path, example: str) -> None:
    """Refuse at once an ``--output`` that is a folder or lies below a file: the result could not be written there.

    Example:
        >>> check_output_file(Path("scores.json"), "scores.json")
    """
    if path.is_dir():
        raise IsADirectoryError(
            f"--output {str(path)!r} is a folder; pass a file path inside it such as "
            f"{str(path / example)!r}. Checked before loading, so nothing was computed"
        )
    writable_path(path, "--output", "cannot be written", "pass another --output path")


# ---------------------------------------------------------------------------------------------------------- loading
def default_device(requested: str | None) -> Any:
    """The ``torch.device`` to run on: ``requested``, else this process's GPU, else the CPU.

    Example:
        >>> default_device("cpu")
        device(type='cpu')
    """
    import torch

    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def load_model_of(args: argparse.Namespace) -> LoadedModel:
    """Load ``--model`` (with ``--revision``, ``--architecture`` ...) onto ``--device``.

    Example:
        >>> import tempfile, timm
        >>> from timm.models import save_for_hf
        >>> folder = tempfile.mkdtemp()
        >>> save_for_hf(timm.create_model("test_resnet", num_classes=3), folder, safe_serialization=True)
        >>> args = argparse.Namespace(model=folder, revision=None, architecture=None, trust_remote_code=False,
        ...                           cache_dir=None, device="cpu")
        >>> load_model_of(args).num_classes
        3
    """
    loaded = load_model(
        args.model,
        revision=args.revision,
        architecture=args.architecture,
        trust_remote_code=args.trust_remote_code,
        cache_dir=args.cache_dir,
    )
    if getattr(args, "input_size", None):
        with_input_size(loaded, args.input_size)
    loaded.model.to(default_device(args.device))
    return loaded


def with_input_size(loaded: LoadedModel, size: int) -> LoadedModel:
    """Set a timm model's data-config input size to ``size`` × ``size`` (``--input-size``); the rest of its
    preprocessing (mean, std, crop, interpolation) and the pretrained weights' identity are kept.

    Example:
        >>> import timm
        >>> from pathlib import Path
        >>> model = timm.create_model("test_resnet", pretrained=False)
        >>> loaded = with_input_size(LoadedModel(model, "timm", "test_resnet", Path(".")), 32)
        >>> loaded.model.pretrained_cfg["input_size"]
        (3, 32, 32)
    """
    if loaded.library != "timm":
        raise UsageError(
            f"--input-size applies to timm models; {loaded.source!r} is a {loaded.library} model, whose image "
            "processor sets its size: drop --input-size, or save the processor the model was trained with next to it"
        )
    import timm.data

    config = timm.data.resolve_model_data_config(loaded.model)
    channels = int(config["input_size"][0])
    cfg = dict(getattr(loaded.model, "pretrained_cfg", None) or {})
    cfg.update(input_size=(channels, size, size))
    cfg.pop("test_input_size", None)
    loaded.model.pretrained_cfg = cfg  # type: ignore[assignment]
    return loaded


def load_split(args: argparse.Namespace, split: str, training: bool) -> LoadedData:
    """Load ``split`` of ``--dataset``; the training split with ``--noisy-labels`` / ``--noisy-label-column``, an
    evaluation split with ``--eval-noisy-labels``.

    Example:
        >>> import datasets, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> table = datasets.Dataset.from_dict({"image": [[0.0, 1.0]] * 2, "label": [0, 1]})
        >>> datasets.DatasetDict(train=table).save_to_disk(folder)
        >>> args = argparse.Namespace(dataset=folder, image_column=None, label_column=None, limit=None, seed=0,
        ...                           dataset_cache_dir=None)
        >>> load_split(args, "train", training=False).label_column
        'label'
    """
    return load_data(
        args.dataset,
        split,
        image_column=args.image_column,
        label_column=args.label_column,
        noisy_labels=getattr(args, "noisy_labels" if training else "eval_noisy_labels", None),
        noisy_label_column=getattr(args, "noisy_label_column", None) if training else None,
        limit=args.limit,
        seed=args.seed,
        cache_dir=args.dataset_cache_dir,
        revision=getattr(args, "dataset_revision", None),
    )


def align_labels_if_asked(loaded: LoadedModel, data: LoadedData, args: argparse.Namespace) -> None:
    """With ``--align-labels``, renumber the dataset's own ClassLabel column to the model's class names (in place;
    see :func:`hf_verifix.data.labels.align_labels`).

    Example:
        >>> align_labels_if_asked(None, None, argparse.Namespace(align_labels=False))  # nothing to do
    """
    if getattr(args, "align_labels", False):
        align_labels(data, loaded.model)


def load_labelled_split(loaded: LoadedModel, args: argparse.Namespace, split: str, training: bool) -> LoadedData:
    """Load ``split`` (see :func:`load_split`), align its labels if asked and check that the model can predict them.

    Example:
        >>> import datasets, tempfile
        >>> from torch import nn
        >>> root = tempfile.mkdtemp()
        >>> _ = datasets.Dataset.from_dict({"x": [[0.0, 1.0]], "y": [3]}).to_parquet(f"{root}/rows.parquet")
        >>> args = argparse.Namespace(dataset=f"{root}/rows.parquet", image_column="x", label_column="y", limit=None,
        ...                           seed=0, dataset_cache_dir=None)
        >>> loaded = LoadedModel(nn.Linear(2, 2), "timm", "m", Path("."))  # 2 classes: label 3 is refused
        >>> load_labelled_split(loaded, args, "train", training=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        hf_verifix.errors.DataError: split 'train' has labels up to 3 in column 'y', but the model predicts 2 ...
    """
    data = load_split(args, split, training)
    align_labels_if_asked(loaded, data, args)
    check_labels(data, loaded.num_classes, split)
    return data


def source_of(loaded: LoadedModel, data: LoadedData, batch_size: int) -> Any:
    """The sample source of ``data`` preprocessed for ``loaded``'s model.

    Example:
        >>> import datasets
        >>> from torch import nn
        >>> data = LoadedData(datasets.Dataset.from_dict({"x": [[0.0, 1.0]] * 3, "y": [0, 1, 0]}), "x", "y")
        >>> len(source_of(LoadedModel(nn.Linear(2, 2), "timm", "m", Path(".")), data, batch_size=2))
        3
    """
    return as_source(data.dataset, loaded.model, batch_size, data.image_column, data.label_column, loaded.transform)
