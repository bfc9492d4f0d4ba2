"""Integrations with the Hugging Face stack: :class:`SAPCallback` for ``transformers.Trainer``, saving, pushing.

``SAPCallback`` is imported when first asked for (the Trainer machinery takes seconds to import).

Example:
    >>> from hf_verifix.integrations import SAPCallback
    >>> SAPCallback(on_epochs=[1]).output_subdir
    'sap_correction'
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import LOG_PREFIX, SAPCallback

__all__ = ["LOG_PREFIX", "SAPCallback"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'hf_verifix.integrations' has no attribute {name!r}")
