"""Reproducible label-noise injection for experiments and benchmarks.

Four standard noise models are provided, all driven by a seeded :class:`torch.Generator` so
that the same inputs and ``seed`` always give the same noisy labels:

* :func:`symmetric_noise` -- exactly ``round(rate * n)`` samples are flipped, each to a
  uniformly chosen *different* class.
* :func:`pair_noise` -- asymmetric class-pair flips: exactly ``round(rate * n_c)`` samples of
  every class ``c`` are flipped to ``mapping[c]`` (default ``(c + 1) % num_classes``).
* :func:`transition_noise` -- every label ``y`` is resampled from row ``y`` of a
  row-stochastic transition matrix.
* :func:`hierarchical_noise` -- exactly ``round(rate * n)`` samples are flipped, each to a
  uniformly chosen different class of its own superclass (e.g. CIFAR-100's 20 coarse groups).

:func:`add_label_noise` applies any of them to a Hugging Face :class:`datasets.Dataset`.

Example:
    >>> from hf_verifix.noise import symmetric_noise
    >>> noisy = symmetric_noise([0, 1, 2, 3] * 25, rate=0.2, seed=0)
    >>> int(noisy.flipped.sum()), noisy.rate
    (20, 0.2)
"""

from .dataset import add_label_noise
from .labels import NOISE_KINDS, LabelsLike, NoisyLabels
from .models import hierarchical_noise, pair_noise, symmetric_noise, transition_noise

__all__ = [
    "NOISE_KINDS",
    "LabelsLike",
    "NoisyLabels",
    "add_label_noise",
    "hierarchical_noise",
    "pair_noise",
    "symmetric_noise",
    "transition_noise",
]
