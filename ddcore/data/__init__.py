"""Datasets: built-in data sources and the on-device class-indexed store.

* :mod:`ddcore.data.store` — :class:`~ddcore.data.store.ClassIndexedData`, one split on the device with
  vectorised per-class / uniform batch sampling;
* :mod:`ddcore.data.common` — options shared by every built-in source and their post-processing;
* sources: :mod:`~ddcore.data.npz` (``$DDCORE_DATA`` folders), :mod:`~ddcore.data.digits` (scikit-learn, offline),
  :mod:`~ddcore.data.torchvision_source`, :mod:`~ddcore.data.imagefolder`;
* :mod:`ddcore.data.constants` — standard normalisation constants.
"""
