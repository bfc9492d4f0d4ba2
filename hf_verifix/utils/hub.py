"""Hub plumbing shared by loading and pushing: the endpoint, repo IDs, offline mode and secret scrubbing.

Example:
    >>> scrub_secrets("Authorization: Bearer hf_abcdefghijklmnopqrstuvwxyz0123")
    'Authorization: Bearer ***'
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

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


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE=1``).

    Example:
        >>> isinstance(hub_offline(), bool)
        True
    """
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
