"""ddcore-idm: Improved Distribution Matching (Zhao et al., CVPR 2023) components for ddcore.

Registers: expansion augmentation ``partition``, init ``mosaic``, sampler ``model_queue``, objective
``class_aware_ce`` and optimizer ``class_sequential_sgd``. The matching term itself is ddcore-dm's ``dm``.
"""
