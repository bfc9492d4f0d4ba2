"""hf_verifix: repair image classifiers trained on noisy labels by Scaled Activation Projection (SAP / Verifix).

Example:
    >>> from hf_verifix import CorrectionConfig, ProjectionCorrector
    >>> CorrectionConfig().alpha
    30000.0
"""

from typing import TYPE_CHECKING, Any

from .config import CorrectionConfig
from .corrector import AlphaSearchResult, ProjectionCorrector
from .errors import ConfigError, DataError, InputTypeError, LayerError, NumericalError, VerifixError
from .integrations import SAPCallback
from .selection import get_selector, list_selectors, register_selector

if TYPE_CHECKING:
    from .metrics import Accuracy

__version__ = "0.1.0"

__all__ = [
    "Accuracy",
    "AlphaSearchResult",
    "ConfigError",
    "CorrectionConfig",
    "DataError",
    "InputTypeError",
    "LayerError",
    "NumericalError",
    "ProjectionCorrector",
    "SAPCallback",
    "VerifixError",
    "get_selector",
    "list_selectors",
    "register_selector",
]


def __getattr__(name: str) -> Any:
    # `Accuracy` is an `evaluate.Metric`; importing `evaluate` takes seconds, so it is only imported when asked for.
    if name == "Accuracy":
        from .metrics import Accuracy

        return Accuracy
    raise AttributeError(f"module 'hf_verifix' has no attribute {name!r}")
