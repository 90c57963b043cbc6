"""ddcore-dm: Distribution Matching (Zhao & Bilen, WACV 2023) as a ddcore objective term.

Registers the objective ``dm``: per class, the squared distance between the mean embedding of the real batch
and the mean embedding of the synthetic images, summed over classes. The rest of DM (a fresh random network per
step, siamese DSA, real init, SGD lr 1 momentum 0.5) is core components configured by ``recipes/dm.toml``.
"""

from ddcore_dm.objective import DistributionMatching, DistributionMatchingConfig, mean_matching_loss

__all__ = ["DistributionMatching", "DistributionMatchingConfig", "mean_matching_loss"]
