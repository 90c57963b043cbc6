"""ddcore-iid: the IID constraints (Deng et al., CVPR 2024) as ddcore objective terms.

Registers ``covariance_matching`` (local feature covariance of the step network's final block map, real vs
synthetic, per class) and ``class_centralization`` (within-class scatter of the synthetic images in the feature
space of a pretrained instance-norm ResNet18 pool that the plugin trains on first use and caches on disk).
Both work with any family whose sampler provides a step network and whose engine draws per-class real batches.
"""
