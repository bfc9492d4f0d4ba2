"""Integrations with the Hugging Face training stack: :class:`SAPCallback` for ``transformers.Trainer``.

Example:
    >>> from hf_verifix.integrations import SAPCallback
    >>> SAPCallback(on_epochs=[1]).output_subdir
    'sap_correction'
"""

from .trainer import LOG_PREFIX, SAPCallback

__all__ = ["LOG_PREFIX", "SAPCallback"]
