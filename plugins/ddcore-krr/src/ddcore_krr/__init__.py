"""ddcore-krr: KRR-ST (Lee et al., ICLR 2024, "Self-supervised dataset distillation for transfer learning").

Public modules (stable names; other plugins may import and subclass them):

- :mod:`ddcore_krr.teacher` — ``TeacherConfig``, ``Teacher``, ``get_teacher``, ``build_teacher``, ``load_teacher_file``;
- :mod:`ddcore_krr.barlow` — Barlow Twins loss, views, LARS, ``train_barlow_twins``;
- :mod:`ddcore_krr.networks` — ``ConvNetKRR`` (backbone) and ``CifarResNet18`` (teacher trunk);
- :mod:`ddcore_krr.parameterization` — ``KRRPixels`` (``krr_pixels``), ``teacher_pairs``;
- :mod:`ddcore_krr.pool` — ``ModelPool`` (``model_pool``);
- :mod:`ddcore_krr.krr` — ``krr_predict``, ``crop_flip``, ``KRRObjective`` (``krr``);
- :mod:`ddcore_krr.transfer` — ``SSLTransfer`` (``ssl_transfer``);
- :mod:`ddcore_krr.kmeans` — device k-means and the medoid coreset.
"""

from ddcore_krr.krr import KRRObjective, KRRObjectiveConfig, crop_flip, krr_predict
from ddcore_krr.networks import ConvNetKRR, ConvNetKRRConfig, CifarResNet18
from ddcore_krr.parameterization import KRRPixels, KRRPixelsConfig, teacher_pairs
from ddcore_krr.pool import ModelPool, ModelPoolConfig
from ddcore_krr.teacher import Teacher, TeacherConfig, build_teacher, get_teacher, load_teacher_file
from ddcore_krr.transfer import SSLTransfer, SSLTransferConfig, TransferTarget

__version__ = "0.1.0"

__all__ = [
    "CifarResNet18", "ConvNetKRR", "ConvNetKRRConfig", "KRRObjective", "KRRObjectiveConfig", "KRRPixels",
    "KRRPixelsConfig", "ModelPool", "ModelPoolConfig", "SSLTransfer", "SSLTransferConfig", "Teacher",
    "TeacherConfig", "TransferTarget", "build_teacher", "crop_flip", "get_teacher", "krr_predict",
    "load_teacher_file", "teacher_pairs",
]
