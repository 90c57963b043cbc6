"""Hook implementations of ddcore-pca: registers the ``pca`` parameterization."""

import ddcore

from ddcore_krr.smoke import TINY_TEACHER_OPTIONS
from ddcore_pca.parameterization import PCAConfig, PCAParameterization


@ddcore.hookimpl
def ddcore_register_parameterizations(registry):
    registry.add("pca", PCAParameterization, config=PCAConfig,
                 smoke={"options": {"budget": 3, "teacher": TINY_TEACHER_OPTIONS}})
