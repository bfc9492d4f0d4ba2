"""Noise-robust training methods from the seed papers, for the Hugging Face ``Trainer``.

Each method lives in its own package: :mod:`hf_verifix.training.bootstrapping` (M-DYR-H and the BMM-guided mixup
variants, Arazo et al. 2019) and :mod:`hf_verifix.training.crust` (CRUST coresets, Mirzasoleiman et al. 2020), each
split into config, losses or data, and trainer; both trainers run their per-epoch work from one shared callback
(:class:`~hf_verifix.training._common.EpochCallback`).

Example:
    >>> from hf_verifix.training import BootstrappingConfig, CrustConfig
    >>> BootstrappingConfig().bootstrap, CrustConfig().fraction
    ('hard', 0.5)
"""

from .bootstrapping import BootstrappingConfig, BootstrappingTrainer
from .crust import CrustConfig, CrustEpoch, CrustTrainer

__all__ = ["BootstrappingConfig", "BootstrappingTrainer", "CrustConfig", "CrustEpoch", "CrustTrainer"]
