"""Loading models and datasets by Hub ID or local path, saving a corrected model with its card, pushing it.

* :func:`load_model`: a transformers image classifier (``AutoModelForImageClassification`` + ``AutoImageProcessor``)
  or a timm model, from a Hub ID (``org/name``, ``timm/name``, ``hf-hub:org/name[@revision]``), a local folder
  (``save_pretrained`` / ``timm.models.save_for_hf`` layout) or a checkpoint file (``.safetensors``, or a pickle
  read with ``torch.load(weights_only=True)``). safetensors files are preferred; code from the Hub is never run
  unless ``trust_remote_code=True`` is passed explicitly.
* :func:`load_data`: a ``datasets.Dataset`` from a Hub ID, a ``save_to_disk`` folder, an image folder
  (``load_dataset("imagefolder", data_dir=...)``) or a data file, with split, columns, a seeded sample limit and
  training labels from another column or a file.
* :func:`save_corrected`: the corrected model in its native format, its image processor, ``correction_config.json``,
  ``correction_report.json`` and a model card (``README.md`` + ``alpha_search.png``), all on disk before any push.
* :func:`push_folder`: one ``HfApi.upload_folder`` commit; never replaces a card or model already on the repo without
  ``overwrite=True``; a failure raises :class:`HubError` naming the local folder, which is left untouched.

Hub endpoint and tokens: the endpoint is ``endpoint=``, else ``HF_ENDPOINT`` as set *now* (huggingface_hub itself
reads it once, at import), else huggingface_hub's default. Tokens come from ``token=``, ``HF_TOKEN`` or
``hf auth login``; they are never written to a file, a log or an error message (see :func:`scrub_secrets`).

Example:
    >>> scrub_secrets("Authorization: Bearer hf_abcdefghijklmnopqrstuvwxyz0123")
    'Authorization: Bearer ***'
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data.images import Transform, default_image_transform
from .data.source import _IMAGE_COLUMNS, _LABEL_COLUMNS, _column
from .distributed import is_main_process
from .errors import DataError, VerifixError
from .model_card import CardInfo, write_model_card
from .staging import staged_directory

__all__ = [
    "HubError",
    "LoadError",
    "LoadedData",
    "LoadedModel",
    "is_repo_id",
    "load_data",
    "load_model",
    "push_folder",
    "read_labels",
    "repo_clashes",
    "resolve_endpoint",
    "save_corrected",
    "scrub_secrets",
]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_DATA_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}
# Files of a corrected-model folder that must not be overwritten by accident (locally or on the Hub).
_PROTECTED = ("README.md", "config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class HubError(VerifixError, OSError):
    """Talking to the Hub failed (unreachable, refused credentials, a repo that already holds a model...).

    The message says what to do and, for a push, where the local copy is.

    Example:
        >>> isinstance(HubError("push failed"), OSError)
        True
    """


class LoadError(VerifixError, OSError):
    """A model or dataset could not be found or loaded; the message names what was tried and the fix.

    Example:
        >>> issubclass(LoadError, VerifixError)
        True
    """


# ---------------------------------------------------------------------------------------------------------- secrets
_TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
_BEARER_PATTERN = re.compile(r"(?i)(bearer\s+)[^\s'\",]+")
_URL_CREDENTIALS = re.compile(r"(?i)(\w+://)[^/\s:@]+:[^/\s@]+@")


def _known_secrets() -> list[str]:
    values = [os.environ.get(name, "") for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN")]
    try:
        from huggingface_hub import get_token

        values.append(get_token() or "")
    except Exception:  # a broken token file must not stop an error message from being shown
        pass
    return sorted({v for v in values if len(v) >= 8}, key=len, reverse=True)


def scrub_secrets(text: str, extra: Sequence[str | None] = ()) -> str:
    """Return ``text`` with Hub tokens, bearer credentials and URL passwords replaced by ``***``.

    The current ``HF_TOKEN`` (and the stored login token) are removed wherever they appear, as is anything shaped
    like a Hub token (``hf_`` + 20 or more letters and digits), plus any value in ``extra``.

    Example:
        >>> scrub_secrets("https://user:secret@host/x failed")
        'https://***@host/x failed'
    """
    for secret in [*(s for s in extra if s and len(s) >= 8), *_known_secrets()]:
        text = text.replace(secret, "***")
    text = _TOKEN_PATTERN.sub("***", text)
    text = _BEARER_PATTERN.sub(r"\1***", text)
    return _URL_CREDENTIALS.sub(r"\1***@", text)


# ---------------------------------------------------------------------------------------------------------- endpoint
def resolve_endpoint(endpoint: str | None = None) -> str:
    """Return the Hub endpoint to talk to: ``endpoint``, else ``HF_ENDPOINT`` as set now, else the library default.

    Example:
        >>> resolve_endpoint("http://127.0.0.1:8080/")
        'http://127.0.0.1:8080'
    """
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def is_repo_id(text: str) -> bool:
    """Whether ``text`` is a valid Hub repo ID (``name`` or ``namespace/name``).

    Example:
        >>> is_repo_id("google/vit-base-patch16-224"), is_repo_id("./runs/model"), is_repo_id("a//b")
        (True, False, False)
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------- models
@dataclass
class LoadedModel:
    """A loaded classifier with what is needed to preprocess its images, save it and describe where it came from.

    Attributes:
        model: The ``nn.Module`` (eval mode).
        library: ``"transformers"`` or ``"timm"``.
        source: What was asked for (a Hub ID or a path).
        path: The local folder (a Hub snapshot for an ID) or checkpoint file it was read from.
        repo_id: The Hub ID when it came from the Hub, else None.
        revision: The commit it was loaded at, when it came from the Hub.
        processor: The transformers image processor, when the model has one.

    Example:
        >>> import timm
        >>> loaded = LoadedModel(timm.create_model("test_resnet", num_classes=3), "timm", "test_resnet", Path("."))
        >>> loaded.num_classes
        3
    """

    model: nn.Module
    library: str
    source: str
    path: Path
    repo_id: str | None = None
    revision: str | None = None
    processor: Any = None

    @property
    def transform(self) -> Transform:
        """The model's own preprocessing of a PIL image: its image processor, else timm's or ViT's defaults.

        Example:
            >>> import timm
            >>> from PIL import Image
            >>> loaded = LoadedModel(timm.create_model("test_resnet", num_classes=3), "timm", "x", Path("."))
            >>> loaded.transform(Image.new("RGB", (40, 40))).shape[0]
            3
        """
        return self.processor if self.processor is not None else default_image_transform(self.model)

    @property
    def num_classes(self) -> int | None:
        """Number of classes the model predicts (None when it cannot be told from the model).

        Example:
            >>> import torch
            >>> LoadedModel(torch.nn.Linear(2, 5), "torch", "x", Path(".")).num_classes
            5
        """
        config = getattr(self.model, "config", None)
        for value in (getattr(config, "num_labels", None), getattr(self.model, "num_classes", None)):
            if isinstance(value, int) and value > 0:
                return value
        last = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        return last[-1].out_features if last else None


def _parse_model_source(text: str, revision: str | None) -> tuple[str, str | None]:
    """Split ``hf-hub:org/name@rev`` (timm's spelling) into the repo ID and revision."""
    if text.startswith("hf-hub:"):
        text = text[len("hf-hub:") :]
        if "@" in text:
            text, at = text.split("@", 1)
            revision = revision or at
    return text, revision


def _snapshot(
    repo_id: str,
    revision: str | None,
    patterns: list[str],
    token: str | bool | None,
    cache_dir: str | os.PathLike[str] | None,
    endpoint: str | None,
    repo_type: str = "model",
) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = resolve_endpoint(endpoint)
    try:
        folder = snapshot_download(
            repo_id,
            repo_type=repo_type,
            revision=revision,
            allow_patterns=patterns,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
            token=token,
            endpoint=where,
        )
    except GatedRepoError as err:
        raise LoadError(
            f"{repo_id!r} is a gated repo: accept its conditions on {where}/{repo_id} and log in "
            "(hf auth login, or set HF_TOKEN)"
        ) from err
    except RepositoryNotFoundError as err:
        raise LoadError(
            f"{repo_id!r} is not a local path, and no {repo_type} repo of that name was found on {where} "
            "(a private repo needs a token: hf auth login, or set HF_TOKEN); check the spelling"
        ) from err
    except RevisionNotFoundError as err:
        raise LoadError(
            f"{repo_id!r} has no revision {revision!r} on {where}; pass an existing branch, tag or commit"
        ) from err
    except LocalEntryNotFoundError as err:
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if _offline() else f"the Hub at {where} could not be reached"
        raise LoadError(
            f"{repo_id!r} is not a local path, and it is not in the Hugging Face cache "
            f"({cache_dir or 'the default cache'}) while {why}. Download it once with network access, point "
            "HF_HUB_CACHE (or --cache-dir) at a cache holding it, or pass a local folder"
        ) from err
    return Path(folder)


def _download_model(
    repo_id: str,
    revision: str | None,
    trust_remote_code: bool,
    token: str | bool | None,
    cache_dir: str | os.PathLike[str] | None,
    endpoint: str | None,
) -> Path:
    # Only what loading needs: configs and safetensors weights; pickled weights only when a repo has no
    # safetensors; Python files only when the caller trusts the repo's code.
    patterns = ["*.json", "*.safetensors", *(["*.py"] if trust_remote_code else [])]
    folder = _snapshot(repo_id, revision, patterns, token, cache_dir, endpoint)
    if not any(folder.glob("*.safetensors")):
        folder = _snapshot(repo_id, revision, [*patterns, "*.bin", "*.pth", "*.pt"], token, cache_dir, endpoint)
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LoadError(f"cannot read {str(path)!r} as JSON ({err}); is the model folder complete?") from err
    except RecursionError as err:  # json recurses once per nesting level: a hostile file exhausts the stack
        raise LoadError(
            f"{str(path)!r} nests JSON arrays/objects too deeply to be read, so it is no model config; replace it "
            "with the config.json written by save_pretrained / timm.models.save_for_hf"
        ) from err
    if not isinstance(data, dict):
        raise LoadError(f"{str(path)!r} holds a {type(data).__name__}, not a JSON object; is it a model config?")
    return data


def _folder_library(folder: Path) -> str:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise LoadError(
            f"{str(folder)!r} has no config.json, so it is neither a transformers (save_pretrained) nor a timm "
            "(timm.models.save_for_hf) model folder; for a bare checkpoint file pass the file and its timm "
            "architecture (--architecture / architecture=)"
        )
    config = _read_json(config_file)
    if "model_type" in config or "auto_map" in config:
        return "transformers"
    if "architecture" in config:
        return "timm"
    raise LoadError(
        f"{str(config_file)!r} has neither 'model_type' (transformers) nor 'architecture' (timm); cannot tell "
        "which library the model belongs to"
    )


def _check_safetensors(path: Path) -> None:
    """Raise a LoadError naming ``path`` when it is not a complete safetensors file (empty, cut short, corrupt).

    Only the header is read (and checked against the file size), so the check is cheap even for large weights.
    """
    from safetensors import safe_open

    fix = "download it again (a cached copy: delete it first) or re-save the model with save_pretrained"
    if path.stat().st_size == 0:
        raise LoadError(f"the weights file {str(path)!r} is empty (0 bytes), e.g. an interrupted download; {fix}")
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except Exception as err:  # safetensors raises its own SafetensorError (no OSError/ValueError subclass)
        raise LoadError(
            f"the weights file {str(path)!r} is truncated or corrupt ({err}), e.g. an interrupted download or copy; "
            f"{fix}"
        ) from err


def _check_weight_files(folder: Path) -> None:
    """Raise a LoadError naming the first safetensors file of ``folder`` that is empty, cut short or corrupt."""
    for path in sorted(folder.glob("*.safetensors")):
        _check_safetensors(path)


def _no_weights(folder: Path) -> LoadError | None:
    """A LoadError naming ``folder`` and the fix when it holds no weights file, else None."""
    if any(p.suffix in _WEIGHT_SUFFIXES and p.is_file() for p in folder.iterdir()):
        return None
    return LoadError(
        f"the model folder {str(folder)!r} has a config.json but no weights file (model.safetensors, "
        "pytorch_model.bin, ...); copy the weights next to it, or save the model again with save_pretrained / "
        "timm.models.save_for_hf"
    )


def _pickle_weights(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".bin", ".pth", ".pt", ".ckpt") and p.is_file())


def _refused_pickle(folder: Path, err: BaseException) -> LoadError | None:
    """A LoadError when ``err`` is torch.load(weights_only=True) refusing a pickle of ``folder``, else None."""
    text = str(err)
    if not (isinstance(err, pickle.UnpicklingError) or "weights_only" in text or "Weights only load" in text):
        return None
    if any(folder.glob("*.safetensors")):
        return None
    names = ", ".join(p.name for p in _pickle_weights(folder)) or "its pickle weights"
    return LoadError(
        f"{names} in {str(folder)!r} holds objects other than tensors, and unpickling them could run arbitrary "
        "code, so it was not loaded (torch.load(weights_only=True) refused it). If you trust the file, convert it "
        "to safetensors where it was made: model.save_pretrained(folder, safe_serialization=True) (or "
        "safetensors.torch.save_file(state_dict, 'model.safetensors')); a model.safetensors is always preferred"
    )


def _load_transformers(folder: Path, trust_remote_code: bool) -> tuple[nn.Module, Any]:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    try:
        model, info = AutoModelForImageClassification.from_pretrained(
            folder, trust_remote_code=trust_remote_code, output_loading_info=True
        )
    except pickle.UnpicklingError as err:
        raise _refused_pickle(folder, err) or LoadError(
            f"transformers cannot load an image classifier from {str(folder)!r}: {err}"
        ) from err
    except ValueError as err:
        if "trust_remote_code" in str(err) and not trust_remote_code:
            raise LoadError(
                f"the model in {str(folder)!r} needs its own Python code from the repo; run it only if you trust "
                "that code, with --trust-remote-code (trust_remote_code=True)"
            ) from err
        raise LoadError(f"transformers cannot load an image classifier from {str(folder)!r}: {err}") from err
    except OSError as err:  # no weights is found only here: a repo that needs remote code says so first
        raise _no_weights(folder) or LoadError(
            f"transformers cannot load an image classifier from {str(folder)!r}: {err}"
        ) from err
    missing = list(info.get("missing_keys", []))
    if missing:
        raise LoadError(
            f"the checkpoint in {str(folder)!r} lacks {len(missing)} weight(s) of "
            f"{type(model).__name__} (e.g. {missing[:4]}), so they would be random: SAP corrects a trained "
            "classifier; pass a checkpoint fine-tuned for image classification"
        )
    if (folder / "preprocessor_config.json").is_file():
        _read_json(folder / "preprocessor_config.json")  # a hostile file is refused here, not deep in transformers
    try:
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError):
        processor = None  # no preprocessor_config.json: default_image_transform(model) is used
    return model.eval(), processor


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        _check_safetensors(path)

        state: Any = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise LoadError(
                f"cannot read {str(path)!r} with torch.load(weights_only=True) ({err}); only tensors are loaded "
                "from pickle files, never code. Re-save the checkpoint as a state dict (or safetensors)"
            ) from err
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LoadError(f"{str(path)!r} does not hold a state dict of tensors; save model.state_dict()")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_timm_checkpoint(path: Path, architecture: str | None) -> nn.Module:
    import timm

    state = _read_state_dict(path)
    kwargs: dict[str, Any] = {}
    config_file = path.parent / "config.json"
    if architecture is None and config_file.is_file():
        config = _read_json(config_file)
        if "architecture" not in config:
            raise LoadError(
                f"{str(path)!r} sits next to a config.json that is not a timm config; load the folder "
                f"{str(path.parent)!r} itself, or pass --architecture with the timm model name"
            )
        architecture = config["architecture"]
        kwargs = dict(config.get("model_args") or {})
    if architecture is None:
        raise LoadError(
            f"{str(path)!r} holds weights only; name its timm architecture (--architecture resnet18 / "
            "architecture='resnet18'), or pass a folder with a config.json"
        )
    try:
        model = timm.create_model(architecture, pretrained=False, **kwargs)
    except RuntimeError as err:
        raise LoadError(f"timm has no model {architecture!r} ({err}); see timm.list_models()") from err
    if not kwargs:
        # Size the classifier and the stem from the checkpoint itself.
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        classifier = cfg.get("classifier")
        first_conv = cfg.get("first_conv")
        head = state.get(f"{classifier}.weight") if isinstance(classifier, str) else None
        stem = state.get(f"{first_conv}.weight") if isinstance(first_conv, str) else None
        if head is not None and head.shape[0] != getattr(model, "num_classes", head.shape[0]):
            kwargs["num_classes"] = int(head.shape[0])
        if stem is not None and stem.dim() == 4 and stem.shape[1] != 3:
            kwargs["in_chans"] = int(stem.shape[1])
        if kwargs:
            model = timm.create_model(architecture, pretrained=False, **kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise LoadError(f"the weights in {str(path)!r} do not fit timm's {architecture!r}: {err}") from err
    return model.eval()


def load_model(
    model: str | os.PathLike[str],
    *,
    revision: str | None = None,
    architecture: str | None = None,
    trust_remote_code: bool = False,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
) -> LoadedModel:
    """Load an image classifier by Hub ID, from a local folder, or from a checkpoint file.

    Args:
        model: ``org/name`` (transformers or timm, told apart by its ``config.json``), ``timm/name``,
            ``hf-hub:org/name[@revision]``, a folder written by ``save_pretrained`` or ``timm.models.save_for_hf``
            (``local-dir:`` prefix optional), or a weights file (``.safetensors``/``.pth``/``.bin``) of a timm model.
        revision: Branch, tag or commit of a Hub model.
        architecture: The timm model name of a bare checkpoint file (its class count and input channels are read
            from the weights).
        trust_remote_code: Run Python code shipped in the model repo. Off unless you pass it; only for repos you trust.
        token: Hub token (default: ``HF_TOKEN`` or the stored login).
        cache_dir: Hugging Face cache folder (default: ``HF_HUB_CACHE``). With ``HF_HUB_OFFLINE=1`` models load from
            it with no network access.
        endpoint: Hub endpoint (default: :func:`resolve_endpoint`).

    Raises:
        LoadError: Not found locally, in the cache or on the Hub; not a classifier; needs remote code.

    Example:
        >>> import tempfile, timm
        >>> from timm.models import save_for_hf
        >>> folder = tempfile.mkdtemp()
        >>> save_for_hf(timm.create_model("test_resnet", num_classes=4), folder, safe_serialization=True)
        >>> loaded = load_model(folder)
        >>> loaded.library, loaded.num_classes
        ('timm', 4)
    """
    text = os.fspath(model)
    local = Path(text.removeprefix("local-dir:")).expanduser()
    if local.exists():
        return _load_local(local, text, architecture, trust_remote_code)
    repo_id, revision = _parse_model_source(text, revision)
    if not is_repo_id(repo_id):
        raise LoadError(
            f"{text!r} is neither an existing local path nor a valid Hub model ID (org/name); check the path"
        )
    folder = _download_model(repo_id, revision, trust_remote_code, token, cache_dir, endpoint)
    loaded = _load_local(folder, text, architecture, trust_remote_code)
    loaded.repo_id = repo_id
    # A snapshot folder is named after the commit it holds.
    loaded.revision = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else revision
    return loaded


def _load_local(path: Path, source: str, architecture: str | None, trust_remote_code: bool) -> LoadedModel:
    if path.is_file():
        if path.suffix not in _WEIGHT_SUFFIXES:
            raise LoadError(
                f"{str(path)!r} is not a model folder nor a weights file ({', '.join(_WEIGHT_SUFFIXES)}); pass a "
                "folder written by save_pretrained / timm.models.save_for_hf, or a checkpoint file"
            )
        return LoadedModel(_load_timm_checkpoint(path, architecture), "timm", source, path)
    library = _folder_library(path)
    _check_weight_files(path)
    if library == "transformers":
        network, processor = _load_transformers(path, trust_remote_code)
        return LoadedModel(network, "transformers", source, path, processor=processor)
    import timm

    missing = _no_weights(path)
    if missing is not None:
        raise missing
    try:
        network = timm.create_model(f"local-dir:{path}", pretrained=True)
    except (RuntimeError, OSError, KeyError, ValueError, pickle.UnpicklingError) as err:
        raise _refused_pickle(path, err) or LoadError(
            f"timm cannot load the model folder {str(path)!r}: {err}"
        ) from err
    return LoadedModel(network.eval(), "timm", source, path)


# ---------------------------------------------------------------------------------------------------------- data
@dataclass
class LoadedData:
    """A dataset split ready for :class:`~hf_verifix.ProjectionCorrector`, with where it came from.

    Attributes:
        dataset: The ``datasets.Dataset`` (limited, with the training labels in ``label_column``).
        image_column: Its image column.
        label_column: The labels to use (the noisy training labels when they were given separately).
        reference_column: The dataset's own labels when ``label_column`` was replaced, else None.
        rows: For each row, its position in the full split (differs from ``range(n)`` after a limit).
        source: What was asked for (a Hub ID or a path).
        split: The split (spec) that was loaded.
        is_hub: Whether ``source`` was loaded from the Hub.

    Example:
        >>> import datasets
        >>> ds = datasets.Dataset.from_dict({"image": [[0.0]], "label": [0]})
        >>> LoadedData(ds, "image", "label").num_rows
        1
    """

    dataset: Any
    image_column: str
    label_column: str
    reference_column: str | None = None
    rows: list[int] = field(default_factory=list)
    source: str = ""
    split: str | None = None
    is_hub: bool = False

    @property
    def num_rows(self) -> int:
        """Number of rows.

        Example:
            >>> import datasets
            >>> LoadedData(datasets.Dataset.from_dict({"x": [1, 2]}), "x", "x").num_rows
            2
        """
        return len(self.dataset)

    def labels(self, column: str | None = None) -> torch.Tensor:
        """The integer labels of ``column`` (default: ``label_column``) as a tensor.

        Example:
            >>> import datasets
            >>> LoadedData(datasets.Dataset.from_dict({"x": [0], "y": [2]}), "x", "y").labels().tolist()
            [2]
        """
        values = self.dataset.with_format(None)[column or self.label_column]
        return torch.as_tensor(list(values), dtype=torch.long)


def read_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Read integer labels from a file: one per line (``.txt``/``.csv``/other), ``.npy``, or ``.json``.

    A JSON file holds a list of integers or an object with a ``"labels"`` (or ``"noisy_labels"``) list.

    Raises:
        DataError: The file is missing, empty, or holds something other than non-negative integers.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "labels.txt"
        >>> _ = path.write_text("0\\n2\\n1\\n")
        >>> read_labels(path).tolist()
        [0, 2, 1]
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(f"no label file at {str(source)!r}; pass a .txt (one integer per line), .npy or .json file")
    try:
        if source.suffix == ".npy":
            values: Any = np.load(source, allow_pickle=False)
        elif source.suffix == ".json":
            values = json.loads(source.read_text(encoding="utf-8"))
            if isinstance(values, dict):
                key = next((k for k in ("labels", "noisy_labels") if k in values), None)
                if key is None:
                    raise DataError(
                        f"{str(source)!r} holds a JSON object without a 'labels' list (keys: {sorted(values)[:8]})"
                    )
                values = values[key]
        else:
            lines = [line.split(",")[0].strip() for line in source.read_text(encoding="utf-8").splitlines()]
            values = [int(line) for line in lines if line]
    except (ValueError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(
            f"cannot read integer labels from {str(source)!r} ({err}); write one integer class id per line, or a "
            ".npy / .json array"
        ) from err
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise DataError(f"{str(source)!r} must hold a flat, non-empty list of labels, got shape {array.shape}")
    if array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu" or int(array.min()) < 0:
        raise DataError(f"{str(source)!r} must hold non-negative integer class ids, got {array.dtype} values")
    return array.astype(np.int64)


_SPLIT_SLICE = re.compile(r"^(?P<name>[\w.-]+)(?:\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


def _slice_bound(text: str | None, size: int) -> int | None:
    if text is None:
        return None
    if text.endswith("%"):
        return round(size * int(text[:-1]) / 100)
    return int(text)


def _pick_split(data: Any, split: str | None, source: str) -> Any:
    """A split (``name`` or ``name[a:b]``, integers or percentages) of a DatasetDict, or a slice of a Dataset.

    A ``Dataset`` saved on its own is a single split: its name is not checked, only its slice is applied.
    """
    import datasets

    match = _SPLIT_SLICE.match(split) if split is not None else None
    if isinstance(data, datasets.DatasetDict):
        if match is None or match["name"] not in data:
            raise DataError(
                f"{source!r} has no split {split!r}; its splits are {sorted(data)}. Pass --split / split= one of "
                "them (optionally sliced: 'train[:80%]')"
            )
        data = data[match["name"]]
    elif split is not None and match is None:
        raise DataError(f"split {split!r} is not a split name nor a slice like 'train[:80%]' or 'train[10:50]'")
    if match is not None and (match["start"] is not None or match["stop"] is not None):
        bounds = slice(_slice_bound(match["start"], len(data)), _slice_bound(match["stop"], len(data)))
        data = data.select(range(len(data))[bounds])
    return data


def _looks_like_image_folder(folder: Path) -> bool:
    for count, item in enumerate(folder.rglob("*")):
        if item.suffix.lower() in _IMAGE_SUFFIXES:
            return True
        if count > 2000:
            break
    return False


def _load_raw(
    dataset: Any,
    split: str | None,
    cache_dir: str | os.PathLike[str] | None,
    token: str | bool | None,
    revision: str | None,
) -> tuple[Any, bool]:
    import datasets

    if isinstance(dataset, (datasets.Dataset, datasets.DatasetDict)):
        return _pick_split(dataset, split, "the dataset"), False
    text = os.fspath(dataset)
    path = Path(text).expanduser()
    cache = os.fspath(cache_dir) if cache_dir is not None else None
    if path.suffix == ".py" or (path.is_dir() and (path / f"{path.name}.py").is_file()):
        raise _script_refused(text)
    try:
        if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
            return _pick_split(datasets.load_from_disk(str(path)), split, text), False
        if path.is_dir() and _looks_like_image_folder(path):
            return datasets.load_dataset("imagefolder", data_dir=str(path), split=split, cache_dir=cache), False
        if path.is_file() and path.suffix in _DATA_FILE_BUILDERS:
            builder = _DATA_FILE_BUILDERS[path.suffix]
            return datasets.load_dataset(builder, data_files={"train": str(path)}, split=split, cache_dir=cache), False
        if path.exists():
            return datasets.load_dataset(str(path), split=split, cache_dir=cache), False
        if not is_repo_id(text):
            raise LoadError(f"{text!r} is neither an existing local path nor a valid Hub dataset ID (org/name)")
        return datasets.load_dataset(text, split=split, cache_dir=cache, token=token, revision=revision), True
    except DataError:
        raise
    except ValueError as err:
        if "split" in str(err).lower():
            raise DataError(f"{text!r}: {str(err).rstrip('.')}. Pass --split / split= an existing split") from err
        raise LoadError(f"cannot load the dataset {text!r}: {err}") from err
    except (FileNotFoundError, ConnectionError) as err:
        raise LoadError(
            f"cannot load the dataset {text!r}: {err}. With no network, pass a local folder (save_to_disk output or "
            "an image folder), or a dataset already in the datasets cache"
        ) from err
    except RuntimeError as err:
        if "script" in str(err).lower():  # datasets >= 4 refuses loading scripts; it never runs them
            raise _script_refused(text) from err
        raise LoadError(f"cannot load the dataset {text!r}: {type(err).__name__}: {err}") from err


def _script_refused(source: str) -> LoadError:
    return LoadError(
        f"the dataset {source!r} would be loaded by a Python script (a dataset script); hf_verifix never runs "
        "dataset scripts, and datasets >= 4 cannot. Pass the data itself: a folder written by Dataset.save_to_disk, "
        "an image folder (class_name/image.png), a .parquet/.csv/.json file, or a Hub dataset converted to data files "
        "(the Hub's 'refs/convert/parquet' revision)"
    )


def load_data(
    dataset: Any,
    split: str | None = "train",
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    noisy_labels: str | os.PathLike[str] | Sequence[int] | np.ndarray | None = None,
    noisy_label_column: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
) -> LoadedData:
    """Load one split of a dataset by Hub ID, from a local folder or file, or from a ``datasets`` object.

    Args:
        dataset: A Hub dataset ID, a ``save_to_disk`` folder, an image folder (``class_name/image.png`` files, read
            with ``load_dataset("imagefolder", data_dir=...)``), a ``.parquet``/``.csv``/``.json``/``.arrow`` file,
            or a ``datasets.Dataset`` / ``DatasetDict``.
        split: Split name, optionally sliced as in ``datasets`` (``"train[:80%]"``, ``"test[100:200]"``).
        image_column: Image column (detected from its ``Image`` feature or a common name when None).
        label_column: Label column (detected from its ``ClassLabel`` feature or a common name when None).
        noisy_labels: The labels the model was trained with, one per row of the split: a file for
            :func:`read_labels` or a sequence. They become the ``noisy_label`` column used for correction; the
            dataset's own labels stay as ``reference_column``.
        noisy_label_column: Like ``noisy_labels``, but an existing column.
        limit: Keep at most this many rows: a seeded random subset, in split order (same rows for the same seed).
        seed: Seed of the subset.
        cache_dir: ``datasets`` cache folder.
        token: Hub token for a private dataset.
        revision: Branch, tag or commit of a Hub dataset.

    Raises:
        DataError: Unknown split or column, labels of the wrong length or type, a bad limit.
        LoadError: The dataset cannot be found or read.

    Example:
        >>> import datasets
        >>> ds = datasets.Dataset.from_dict({"image": [[[0.0]]] * 4, "label": [0, 1, 0, 1]})
        >>> data = load_data(ds, noisy_labels=[1, 1, 0, 0], limit=3)
        >>> data.label_column, data.reference_column, data.num_rows
        ('noisy_label', 'label', 3)
    """
    import datasets

    if noisy_labels is not None and noisy_label_column is not None:
        raise DataError("pass noisy labels either as a file/sequence (noisy_labels) or as a column, not both")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive integer number of rows, got {limit!r}")
    data, is_hub = _load_raw(dataset, split, cache_dir, token, revision)
    if isinstance(data, datasets.DatasetDict):  # load_dataset with split=None
        raise DataError(f"pick one split of {sorted(data)} with split=")
    if len(data) == 0:
        raise DataError(f"split {split!r} of {dataset!r} is empty; pass a split with labelled images")
    image = _column(data, image_column, "image", _IMAGE_COLUMNS, "Image")
    reference: str | None = None
    if noisy_labels is not None or noisy_label_column is not None:
        reference = label_column if label_column is not None else _maybe_column(data, _LABEL_COLUMNS, "ClassLabel")
        if reference is not None and reference not in data.column_names:
            raise DataError(f"label column {reference!r} is not in the dataset; its columns are {data.column_names}")
    if noisy_label_column is not None:
        if noisy_label_column not in data.column_names:
            raise DataError(
                f"noisy label column {noisy_label_column!r} is not in the dataset; its columns are {data.column_names}"
            )
        label = noisy_label_column
    elif noisy_labels is not None:
        values = (
            read_labels(noisy_labels) if isinstance(noisy_labels, (str, os.PathLike)) else np.asarray(noisy_labels)
        )
        if values.ndim != 1 or len(values) != len(data):
            where = f"{str(noisy_labels)!r}" if isinstance(noisy_labels, (str, os.PathLike)) else "noisy_labels"
            raise DataError(
                f"{where} holds {len(values)} labels but split {split!r} has {len(data)} rows; give one label per "
                "row of the split, in order (before any limit)"
            )
        label = "noisy_label"
        if label in data.column_names:
            data = data.remove_columns(label)
        feature = data.features.get(reference) if reference else None
        data = data.add_column(label, [int(v) for v in values])
        if feature is not None and type(feature).__name__ == "ClassLabel":
            if int(values.max()) >= feature.num_classes:
                top = int(values.max())
                raise DataError(f"the noisy labels go up to {top} but {reference!r} has {feature.num_classes} classes")
            data = data.cast_column(label, feature)
    else:
        label = _column(data, label_column, "label", _LABEL_COLUMNS, "ClassLabel")
    rows = list(range(len(data)))
    if limit is not None and limit < len(data):
        rows = sorted(int(i) for i in np.random.default_rng(seed).choice(len(data), size=limit, replace=False))
        data = data.select(rows)
    return LoadedData(
        data,
        image,
        label,
        reference,
        rows,
        os.fspath(dataset) if isinstance(dataset, (str, os.PathLike)) else type(dataset).__name__,
        split,
        is_hub,
    )


def _maybe_column(data: Any, candidates: Sequence[str], feature: str) -> str | None:
    try:
        return _column(data, None, "label", candidates, feature)
    except DataError:
        return None


# ---------------------------------------------------------------------------------------------------------- saving
def _protected_files(folder: Path) -> list[str]:
    """The files in ``folder`` that a correction run may write: model, card, configs, report, figures, processor.

    Every one counts, hand-written ones included; the final move re-checks the exact set written (under a lock).
    """
    from .config import CONFIG_NAME
    from .corrector import REPORT_NAME
    from .report import FIGURES, REPORT_FILE

    names = [*_PROTECTED, CONFIG_NAME, REPORT_NAME, REPORT_FILE, *FIGURES.values(), "preprocessor_config.json"]
    return [name for name in dict.fromkeys(names) if (folder / name).exists()]


def _report_figures(report_dir: Path) -> dict[str, str]:
    """The figures a correction report in ``report_dir`` holds, ``{key: file name}`` in the report's order."""
    from .report import FIGURES, REPORT_FILE

    if not (report_dir / REPORT_FILE).is_file():
        raise FileNotFoundError(
            f"report_dir {str(report_dir)!r} holds no {REPORT_FILE}; write it with corrector.write_report(report_dir, "
            "eval_data=...) first, or pass report_dir=None"
        )
    return {key: name for key, name in FIGURES.items() if (report_dir / name).is_file()}


def save_corrected(
    corrector: Any,
    output_dir: str | os.PathLike[str],
    *,
    processor: Any = None,
    card_info: CardInfo | None = None,
    clean_labels: torch.Tensor | Sequence[int] | None = None,
    report_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    template_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the corrected model, its image processor, config, report and model card to ``output_dir``.

    Everything (:meth:`ProjectionCorrector.save_pretrained`'s native format, ``correction_config.json`` and
    ``correction_report.json``, then the processor, report and card) is written to one staging folder and moved
    into place together (:func:`hf_verifix.staging.staged_directory`): when ``output_dir`` does not exist yet, an
    interruption leaves either no folder or the complete one; into an existing folder (``overwrite``) the files are
    moved one by one (each whole, Ctrl-C held until all are in). Only the main process writes (under
    ``accelerate launch`` the others return at once).

    Args:
        corrector: A fitted :class:`~hf_verifix.ProjectionCorrector` (the model as it should be saved).
        output_dir: Folder to write into (created).
        processor: The model's image processor (saved with it so the folder loads with ``AutoImageProcessor``).
        card_info: What the card says beyond the report; None writes no card.
        clean_labels: True labels of the fitted data, when known: the report then gives the trusted set's precision.
        report_dir: A folder written by :meth:`~hf_verifix.ProjectionCorrector.write_report` for this correction:
            its ``report.md`` and figures are copied next to the model and the card embeds the figures.
        overwrite: Replace files already in ``output_dir`` (any file this call writes: model, card, configs,
            report, figures). Without it nothing is replaced, also when another run wrote them meanwhile.
        template_path: Card template (default: the packaged one).

    Raises:
        FileExistsError: ``output_dir`` already holds a file this call writes and ``overwrite`` is False.
        FileNotFoundError: ``report_dir`` holds no ``report.md``.

    Example:
        >>> import tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> from hf_verifix import ProjectionCorrector
        >>> data = TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
        >>> corrector = ProjectionCorrector(torch.nn.Linear(3, 2), n_trusted=4, progress=False).fit(data)
        >>> folder = save_corrected(corrector, tempfile.mkdtemp(), card_info=CardInfo("demo"))
        >>> sorted(p.name for p in folder.iterdir())
        ['README.md', 'correction_config.json', 'correction_report.json', 'model.safetensors']
    """
    target = Path(output_dir)
    if not is_main_process():
        return target
    existing = _protected_files(target) if target.is_dir() else []
    if existing and not overwrite:
        raise FileExistsError(
            f"{str(target)!r} already holds {', '.join(existing)}; pass --overwrite (overwrite=True) to replace "
            "them, or choose another output folder"
        )
    figures = _report_figures(Path(report_dir)) if report_dir is not None else {}  # checked before any write
    from .corrector import REPORT_NAME

    report = corrector.report(clean_labels=clean_labels) if clean_labels is not None else corrector.report()
    # One staging folder for everything: an interruption never leaves a model without its card (which would make a
    # re-run without --overwrite refuse the folder).
    with staged_directory(target, overwrite=overwrite) as staging:
        corrector.save_pretrained(staging)
        if processor is not None and hasattr(processor, "save_pretrained"):
            processor.save_pretrained(staging)
        if clean_labels is not None:
            (staging / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        if report_dir is not None:
            from .report import REPORT_FILE

            for name in [REPORT_FILE, *figures.values()]:
                shutil.copyfile(Path(report_dir) / name, staging / name)
        if card_info is not None:
            write_model_card(staging, report, card_info, template_path, figures=figures)
    return target


# ---------------------------------------------------------------------------------------------------------- pushing
def _describe_failure(err: BaseException) -> str:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return "offline mode is on (HF_HUB_OFFLINE=1); unset it to push"
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, HfHubHTTPError) and status in (401, 403):
        return (
            f"the Hub refused the credentials (HTTP {status}); log in with `hf auth login` or set HF_TOKEN to a token "
            "with write access"
        )
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    name = type(err).__name__
    if "connect" in name.lower() or "connect" in text.lower() or isinstance(err, (ConnectionError, TimeoutError)):
        return f"the Hub could not be reached ({name}: {text}); check the network and HF_ENDPOINT"
    return f"{name}: {text}"


def repo_clashes(
    repo_id: str, files: Sequence[str], *, endpoint: str | None = None, token: str | None = None
) -> list[str]:
    """Return the card and model files among ``files`` that the model repo ``repo_id`` already holds.

    Only files a push must not replace silently are checked (``README.md``, ``config.json``, weights...); an absent
    repo has none. Network errors propagate (callers decide whether a failed check is fatal).

    Example:
        >>> from hf_verifix.hub import _is_protected
        >>> [_is_protected(n) for n in ("README.md", "model.safetensors", "alpha_search.png")]
        [True, True, False]
    """
    from huggingface_hub import HfApi

    api = HfApi(endpoint=resolve_endpoint(endpoint), token=token)
    candidates = [name for name in files if _is_protected(name)]
    if not candidates or not api.repo_exists(repo_id):
        return []
    return [name for name in candidates if api.file_exists(repo_id, name)]


def _validate_card(endpoint: str, content: str) -> None:
    """Ask the Hub to validate the card's metadata (what ``ModelCard.validate`` does, at ``endpoint``)."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    response = get_session().post(
        f"{endpoint}/api/validate-yaml",
        json={"repoType": "model", "content": content},
        headers={"Accept": "text/plain"},
    )
    if response.status_code == 400:
        raise HubError(f"the Hub rejected the model card's metadata (README.md): {response.text.strip()[:500]}")
    hf_raise_for_status(response)


def _is_protected(name: str) -> bool:
    return name in _PROTECTED or name.endswith(_WEIGHT_SUFFIXES)


def push_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    overwrite: bool = False,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload every file of ``folder`` to the model repo ``repo_id`` in one commit; return the commit URL.

    Creates the repo when needed. If the repo already holds a file this would replace among the card and model files
    (``README.md``, ``config.json``, weights ...), nothing is uploaded unless ``overwrite=True``. On any failure the
    local folder is left as it is and :class:`HubError` says where it is and how to retry. Only the main process
    pushes (the others return an empty string).

    Raises:
        HubError: Unreachable Hub, refused token, offline mode, or files that would be replaced.
        FileNotFoundError: ``folder`` does not exist or is empty.

    Example:
        >>> import tempfile
        >>> try:
        ...     push_folder(tempfile.mkdtemp(), "me/demo")
        ... except FileNotFoundError as err:
        ...     print("nothing to push" in str(err))
        True
    """
    source = Path(folder)
    files = (
        sorted(
            p.relative_to(source).as_posix()
            for p in source.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts)
        )
        if source.is_dir()
        else []
    )
    if not files:
        raise FileNotFoundError(f"nothing to push: {str(source)!r} does not exist or holds no files")
    if not is_main_process():
        return ""
    from huggingface_hub import HfApi

    where = resolve_endpoint(endpoint)
    retry = f"hf-verifix push {shlex.quote(str(source))} --repo {repo_id}"
    kept = f"Nothing was lost: the model and its card are in {str(source)!r}"
    api = HfApi(endpoint=where, token=token)
    try:
        clashes = [] if overwrite else repo_clashes(repo_id, files, endpoint=where, token=token)
        if clashes:
            raise HubError(
                f"{repo_id!r} on {where} already holds {', '.join(clashes)}, which this push would replace; "
                f"pass --overwrite (overwrite=True) to replace them, or push to another repo. {kept}"
            )
        if "README.md" in files:
            _validate_card(where, (source / "README.md").read_text(encoding="utf-8"))
        api.create_repo(repo_id, exist_ok=True, private=private)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=source,
            commit_message=commit_message or "Upload SAP-corrected model (hf_verifix)",
            ignore_patterns=[".*", "**/.*"],
        )
    except HubError:
        raise
    except Exception as err:
        reason = scrub_secrets(_describe_failure(err), [token])
        raise HubError(
            f"push of {str(source)!r} to {repo_id!r} on {where} failed: {reason}. {kept}; retry with: {retry}"
        ) from None
    return str(getattr(info, "commit_url", info))
