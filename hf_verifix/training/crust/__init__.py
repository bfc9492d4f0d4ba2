"""CRUST for the 🤗 ``Trainer``: every epoch, train on per-class gradient coresets mixed up with their clusters.

Mirzasoleiman, Cao & Leskovec (2020), "Coresets for Robust Training of Neural Networks against Noisy Labels",
sec. 4 and Algorithm 1. At the start of every epoch τ, :class:`CrustTrainer`

1. computes the gradient proxies of every training sample under its (noisy) label, in eval mode and without
   gradients (:func:`~hf_verifix.selection.coreset.gradient_proxies`: softmax(z) - onehot(y), eq. 9, or its
   outer product with the final nn.Linear's input, that layer's exact gradient);
2. splits the samples into classes U_c (by their labels, or by the model's predictions as Algorithm 1 line 4
   writes it) and picks k·n_c medoids S_c in each by facility location (eq. 10, exact lazy greedy); k = round
   (``fraction`` × n) and n_c = |U_c| / n, the class shares rounded by largest remainder so they sum to k;
3. assigns every sample to its most similar medoid: the clusters V_j (line 8), whose sizes are the weights r_j of
   eq. 8;
4. draws R_j, ``members_per_medoid`` members of V_j \\ {j} uniformly without replacement (line 9), and mixes each
   with its medoid, x̂ = λ x_i + (1 - λ) x_j and ŷ = λ y_i + (1 - λ) y_j with λ ~ Beta(α, α) (eq. 11), each mixed
   sample weighted r = |V_j| / max(1, m), m = ``members_per_medoid`` (line 11 writes |V_j| / |R_j|; with a fixed m
   every medoid has the same number of items, so the epoch's length never changes). A cluster with fewer than m
   other members fills its m slots with the medoid itself, unmixed (member = medoid, λ = 0), so its items' weights
   still sum to |V_j|; m = 0 trains on the medoids alone, weighted |V_j|;
5. trains the epoch on those mixed samples only: the Trainer's sampler visits each once in a seeded random order,
   and the loss of a batch is the r-weighted mean of the mixed cross-entropies λ CE(z, y_i) + (1 - λ) CE(z, y_j)
   (line 15, eq. 8).

The package: :mod:`.config` (:class:`CrustConfig`), :mod:`.data` (the epoch's items, :class:`CrustEpoch`, their
draws, order and collation) and :mod:`.trainer` (:class:`CrustTrainer`, whose per-epoch selection runs from the
training methods' shared :class:`~hf_verifix.training._common.EpochCallback`).

Example:
    >>> from hf_verifix.training.crust import CrustConfig
    >>> CrustConfig(fraction=0.3, members_per_medoid=2).mixup_alpha
    1.0
"""

from .config import CrustConfig
from .data import CrustEpoch
from .trainer import CrustTrainer

__all__ = ["CrustConfig", "CrustEpoch", "CrustTrainer"]
