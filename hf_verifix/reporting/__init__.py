"""What a correction shows: the Markdown report with its figures, and the model card.

Both are rendered from a :class:`~hf_verifix.results.CorrectionResult` (or its JSON summary) and never touch a
corrector.

Example:
    >>> from hf_verifix.reporting import CardInfo
    >>> CardInfo("demo").model_name
    'demo'
"""

from .model_card import CardInfo, render_model_card, write_model_card
from .report import write_correction_report

__all__ = ["CardInfo", "render_model_card", "write_correction_report", "write_model_card"]
