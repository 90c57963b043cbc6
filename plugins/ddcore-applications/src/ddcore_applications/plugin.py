"""Entry point of ddcore-applications: the ``continual`` and ``nas_proxy`` evaluators, and the continual plot."""

from __future__ import annotations

import ddcore
from ddcore_applications.continual import ContinualConfig, ContinualLearning
from ddcore_applications.nas import NasProxy, NasProxyConfig


@ddcore.hookimpl
def ddcore_register_evaluators(registry):
    # tiny configurations for the testing kit's smoke tests (ddcore.testing.contract_tests)
    registry.add("continual", ContinualLearning, config=ContinualConfig,
                 smoke={"options": {"steps": 3, "num_models": 1, "epochs": 1, "batch_size": 8, "baselines": []}})
    registry.add("nas_proxy", NasProxy, config=NasProxyConfig,
                 smoke={"options": {"depth": [1], "width": [4, 8], "act": ["relu"], "norm": ["none"],
                                    "pooling": ["avgpooling"], "epochs": 1, "reference_epochs": 1, "batch_size": 8}})


@ddcore.hookimpl
def ddcore_evaluated(run, step, results):
    """After a continual evaluation, draw every memory's accuracy per step into ``<run>/continual.png``."""
    from ddcore.artifacts import atomic_write_bytes
    from ddcore_applications.plot import continual_figure_png, continual_series

    evaluator = getattr(run, "evaluator", None)
    if run.out_dir is None or not run.dist.is_main or not isinstance(evaluator, ContinualLearning):
        return
    if not evaluator.config.plot:
        return
    series = continual_series(results)
    if series:
        atomic_write_bytes(run.out_dir / "continual.png", continual_figure_png(series))
