"""Noise-robust training methods from the seed papers, for the Hugging Face ``Trainer``.

Each method lives in its own module: :mod:`hf_verifix.training.bootstrapping` (M-DYR-H and the BMM-guided mixup
variants, Arazo et al. 2019) and :mod:`hf_verifix.training.crust` (CRUST coresets, Mirzasoleiman et al. 2020).

Example:
    >>> from hf_verifix.training import BootstrappingConfig, CrustConfig
    >>> BootstrappingConfig().bootstrap, CrustConfig().fraction
    ('hard', 0.5)
"""

from .bootstrapping import BootstrappingConfig, BootstrappingTrainer
from .crust import CrustConfig, CrustEpoch, CrustTrainer

__all__ = ["BootstrappingConfig", "BootstrappingTrainer", "CrustConfig", "CrustEpoch", "CrustTrainer"]
