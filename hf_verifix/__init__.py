"""hf_verifix: repair image classifiers trained on noisy labels by Scaled Activation Projection (SAP / Verifix).

Example:
    >>> from hf_verifix import CorrectionConfig, ProjectionCorrector
    >>> CorrectionConfig().alpha
    30000.0
"""

from .config import CorrectionConfig
from .corrector import AlphaSearchResult, ProjectionCorrector
from .errors import ConfigError, DataError, LayerError, NumericalError, VerifixError
from .integrations import SAPCallback
from .metrics import Accuracy
from .selection import get_selector, list_selectors, register_selector

__version__ = "0.1.0"

__all__ = [
    "Accuracy",
    "AlphaSearchResult",
    "ConfigError",
    "CorrectionConfig",
    "DataError",
    "LayerError",
    "NumericalError",
    "ProjectionCorrector",
    "SAPCallback",
    "VerifixError",
    "get_selector",
    "list_selectors",
    "register_selector",
]
