"""The Hub-facing functions in one place: load a model or dataset by ID or path, save a corrected model, push it.

A facade over where each concept lives (:mod:`hf_verifix.models.loading`, :mod:`hf_verifix.data.loading`,
:mod:`hf_verifix.integrations.export`, :mod:`hf_verifix.integrations.hub`, :mod:`hf_verifix.utils.hub`), so that
``from hf_verifix.hub import load_model, save_corrected, push_folder`` keeps working.

Hub endpoint and tokens: the endpoint is ``endpoint=``, else ``HF_ENDPOINT`` as set *now* (huggingface_hub itself
reads it once, at import), else huggingface_hub's default. Tokens come from ``token=``, ``HF_TOKEN`` or
``hf auth login``; they are never written to a file, a log or an error message (see :func:`scrub_secrets`).

Example:
    >>> scrub_secrets("Authorization: Bearer hf_abcdefghijklmnopqrstuvwxyz0123")
    'Authorization: Bearer ***'
"""

from .data.loading import LoadedData, load_data, read_labels
from .errors import HubError, LoadError
from .integrations.export import save_corrected
from .integrations.hub import push_folder, push_to_hub, repo_clashes
from .models.loading import LoadedModel, load_model
from .utils.hub import is_repo_id, resolve_endpoint, scrub_secrets

__all__ = [
    "HubError",
    "LoadError",
    "LoadedData",
    "LoadedModel",
    "is_repo_id",
    "load_data",
    "load_model",
    "push_folder",
    "push_to_hub",
    "read_labels",
    "repo_clashes",
    "resolve_endpoint",
    "save_corrected",
    "scrub_secrets",
]
