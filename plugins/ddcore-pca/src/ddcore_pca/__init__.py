"""ddcore-pca: PCA-basis parameterization of synthetic images and target representations (Boost-SSDD §3.2).

Modules: :mod:`ddcore_pca.pca` (streamed PCA, resize maps), :mod:`ddcore_pca.storage` (budget rule),
:mod:`ddcore_pca.parameterization` (the ``pca`` parameterization), :mod:`ddcore_pca.teacher` (ddcore-krr adapter).
"""
