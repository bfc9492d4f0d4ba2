"""Loading an image classifier by Hub ID or local path: transformers or timm, safetensors first, no remote code.

:func:`load_model` takes a Hub ID (``org/name``, ``timm/name``, ``hf-hub:org/name[@revision]``), a local folder
(``save_pretrained`` / ``timm.models.save_for_hf`` layout) or a checkpoint file (``.safetensors``, or a pickle read
with ``torch.load(weights_only=True)``). Code from the Hub is never run unless ``trust_remote_code=True``.

Example:
    >>> from hf_verifix.models.loading import LoadedModel
    >>> LoadedModel.__name__
    'LoadedModel'
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.images import Transform, default_image_transform
from ..errors import LoadError
from ..utils.hub import hub_offline, is_repo_id, resolve_endpoint

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")


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
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if hub_offline() else f"the Hub at {where} could not be reached"
        raise LoadError(
            f"{repo_id!r} is not a local path, and it is not in the Hugging Face cache "
            f"({cache_dir or 'the default cache'}) while {why}. Download it once with network access, point "
            "HF_HUB_CACHE (or cache_dir=) at a cache holding it, or pass a local folder"
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
            "architecture (architecture=)"
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
                "that code, with trust_remote_code=True"
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
                f"{str(path.parent)!r} itself, or pass architecture= with the timm model name"
            )
        architecture = config["architecture"]
        kwargs = dict(config.get("model_args") or {})
    if architecture is None:
        raise LoadError(
            f"{str(path)!r} holds weights only; name its timm architecture (architecture='resnet18'), or pass a "
            "folder with a config.json"
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
