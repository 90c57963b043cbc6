"""Datasets: built-in data sources, the class-indexed store, and what a new source reuses (public).

* :mod:`ddcore.data.store` — :class:`~ddcore.data.store.ClassIndexedData`, one split with vectorised per-class /
  uniform batch sampling, its pixels on the device, in host memory or memory-mapped;
* :mod:`ddcore.data.placement` — the ``[data] store`` choice and :func:`~ddcore.data.placement.open_split`;
* :mod:`ddcore.data.source` — :class:`~ddcore.data.source.ProcessedSource` and the options every built-in
  source shares (``classes``, ``*_per_class``, ``channels``, ``resize``, ``mean``/``std``), plus dataset path
  lookup (``$DDCORE_DATA``, the recipe's folder);
* :mod:`ddcore.data.transforms` — the uint8 pixel transforms those options imply;
* sources: :mod:`~ddcore.data.npz` (``$DDCORE_DATA`` folders), :mod:`~ddcore.data.digits` (scikit-learn, offline),
  :mod:`~ddcore.data.torchvision_source`, :mod:`~ddcore.data.imagefolder`;
* :mod:`ddcore.data.constants` — standard normalisation constants.
"""

__all__: list[str] = []
