"""hf_verifix: repair image classifiers trained on noisy labels by Scaled Activation Projection (SAP / Verifix).

Example:
    >>> from hf_verifix import CorrectionConfig, ProjectionCorrector
    >>> CorrectionConfig().alpha
    30000.0
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__
from .config import CorrectionConfig
from .corrector import ProjectionCorrector
from .errors import ConfigError, DataError, InputTypeError, LayerError, NumericalError, VerifixError
from .models.adapters import record_preprocessing
from .results import AlphaSearchResult, CorrectionResult, Evaluation
from .selection import get_selector, list_selectors, register_selector

if TYPE_CHECKING:
    from .integrations.trainer import SAPCallback
    from .metrics import Accuracy

__all__ = [
    "Accuracy",
    "AlphaSearchResult",
    "ConfigError",
    "CorrectionConfig",
    "CorrectionResult",
    "DataError",
    "Evaluation",
    "InputTypeError",
    "LayerError",
    "NumericalError",
    "ProjectionCorrector",
    "SAPCallback",
    "VerifixError",
    "get_selector",
    "list_selectors",
    "record_preprocessing",
    "register_selector",
]


def __getattr__(name: str) -> Any:
    # Imported when first used: `Accuracy` needs `evaluate` and `SAPCallback` the Trainer machinery (seconds each).
    if name == "Accuracy":
        from .metrics import Accuracy

        return Accuracy
    if name == "SAPCallback":
        from .integrations.trainer import SAPCallback

        return SAPCallback
    raise AttributeError(f"module 'hf_verifix' has no attribute {name!r}")
