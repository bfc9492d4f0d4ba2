"""Pushing a corrected model to the Hub in one commit, never replacing a card or model without ``overwrite``.

:func:`push_to_hub` saves a corrector's model with its card (:func:`~hf_verifix.integrations.export.save_corrected`)
and pushes it; :func:`push_folder` pushes any folder; :func:`repo_clashes` lists what a push would replace.

Example:
    >>> from hf_verifix.integrations.hub import push_folder
    >>> push_folder.__name__
    'push_folder'
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, HubError
from ..results import CorrectionResult, is_protected
from ..utils.distributed import is_main_process
from ..utils.hub import is_repo_id, resolve_endpoint, scrub_secrets
from .export import save_corrected

if TYPE_CHECKING:
    from ..corrector import ProjectionCorrector
    from ..reporting.model_card import CardInfo

__all__ = ["push_folder", "push_to_hub", "repo_clashes"]


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
        >>> repo_clashes("me/new-model", ["alpha_search.png"])  # no card or model file: nothing to ask the Hub
        []
    """
    from huggingface_hub import HfApi

    api = HfApi(endpoint=resolve_endpoint(endpoint), token=token)
    candidates = [name for name in files if is_protected(name)]
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
                f"pass overwrite=True to replace them, or push to another repo. {kept}"
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


def push_to_hub(
    corrector: ProjectionCorrector,
    repo_id: str,
    *,
    result: CorrectionResult | None = None,
    card_info: CardInfo | None = None,
    processor: Any = None,
    private: bool | None = None,
    overwrite: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Save the corrected model with its model card and push it to the Hub model repo ``repo_id`` in one commit.

    :func:`~hf_verifix.integrations.export.save_corrected` writes the model, config, summary and card to a temporary
    folder and :func:`push_folder` uploads it (nothing on the repo is replaced without ``overwrite``); if the push
    fails, that folder is kept and the error names it. ``card_info`` defaults to a
    :class:`~hf_verifix.reporting.model_card.CardInfo` named after the repo; the card's before/after accuracies then
    come from ``result`` (default: ``corrector.result()``, the last α search's). Returns the commit URL ("" on the
    other processes).

    Raises:
        ConfigError: ``repo_id`` is not a Hub repo ID (checked before anything is written).
        HubError: Unreachable Hub, refused token, offline mode, or files that would be replaced.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from hf_verifix import ProjectionCorrector
        >>> data = TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
        >>> corrector = ProjectionCorrector(torch.nn.Linear(3, 2), n_trusted=4, progress=False).fit(data)
        >>> push_to_hub(corrector, "me/linear-sap")  # doctest: +SKIP
        'https://huggingface.co/me/linear-sap/commit/...'
    """
    import shutil
    import tempfile

    from ..reporting.model_card import CardInfo

    if not isinstance(repo_id, str) or not is_repo_id(repo_id):
        raise ConfigError(
            f"repo_id must be a Hub repo ID such as 'me/model-sap' (letters, digits, '-', '_', '.'; at most one "
            f"'/'), got {repo_id!r}; nothing was written"
        )
    result = result if result is not None else corrector.result()  # raises if the corrector was not fitted
    if not is_main_process():  # only the main process writes and pushes
        return ""
    info = card_info if card_info is not None else CardInfo(model_name=repo_id.split("/")[-1], repo_id=repo_id)
    scratch = Path(tempfile.mkdtemp(prefix="hf_verifix_push_"))
    folder = scratch / repo_id.split("/")[-1]
    save_corrected(corrector, folder, result=result, processor=processor, card_info=info)
    url = push_folder(
        folder, repo_id, overwrite=overwrite, private=private, token=token, commit_message=commit_message
    )
    shutil.rmtree(scratch, ignore_errors=True)  # kept when the push fails: its error names the folder to retry
    return url
