"""ddcore-rotations: predefined deterministic views with per-view targets and approximation networks (Boost-SSDD §3.3).

Modules: :mod:`ddcore_rotations.views` (rotations, jigsaw, five-crop), :mod:`ddcore_rotations.approx` (Q_a),
:mod:`ddcore_rotations.augmented` (the ``pca_augmented`` parameterization), :mod:`ddcore_rotations.expansion`
(the ``predefined_views`` expansion).
"""
