"""End to end through the engine: the shipped offline recipe, shrunk to a CPU budget, on a CIFAR-10 subset.

``CPU_CHECK_OVERRIDES`` is the README's CPU check (KRR-ST vs the same-budget random subset with teacher targets,
linear probe on the source test split); at that budget the two are tied (README numbers), so this test does *not*
assert an ordering: it runs a shorter version of the same recipe and checks the pipeline end to end.
Needs $DDCORE_DATA (the shared npz datasets). The tiny teacher is cached under $DDCORE_CACHE when set (a temporary
folder otherwise), with the same settings as the CPU check, so both reuse one teacher.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ddcore.testing import require_datasets, run_recipe

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "krr_st_cifar10.toml"

#: The CPU check of the README: every override that shrinks recipes/krr_st_cifar10.toml.
CPU_CHECK_OVERRIDES = [
    "device=\"cpu\"",
    "data.train_per_class=100", "data.test_per_class=200",
    "real.batch=256",
    "backbone.channels=[16, 32, 64]",
    "synset.num=50",
    "synset.teacher.base_width=8", "synset.teacher.epochs=4", "synset.teacher.batch_size=128",
    "synset.teacher.projector=[128, 128]", "synset.teacher.warmup_epochs=0", "synset.teacher.feature_batch=500",
    "sampler.num_models=3", "sampler.max_steps=30",
    "objective[0].real_augment=\"none\"",
    "optimizer.lr=0.003",
    "run.iterations=100", "run.log_every=10", "run.eval_every=0", "run.checkpoint_every=0", "run.progress=false",
    "eval.num_runs=2", "eval.pretrain_epochs=40", "eval.pretrain_batch_size=25", "eval.baselines=[\"random\"]",
    "eval.targets=[{name = \"cifar10\", protocol = \"linear\", iterations = 300, batch_size = 256}]",
]
#: This test: the CPU check with fewer steps and a cheaper evaluation (same data and teacher).
CPU_OVERRIDES = CPU_CHECK_OVERRIDES + [
    "data.test_per_class=50", "run.iterations=20", "eval.num_runs=1", "eval.pretrain_epochs=5",
    "eval.baselines=[\"random\", \"kmeans\"]",
    "eval.targets=[{name = \"cifar10\", protocol = \"linear\", iterations = 50, batch_size = 256}]",
]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    require_datasets("cifar10-jpeg")
    old = os.environ.get("DDCORE_CACHE")
    os.environ["DDCORE_CACHE"] = old or str(tmp_path_factory.mktemp("ddcore-cache"))
    try:
        yield run_recipe(RECIPE, tmp_path_factory.mktemp("krr-e2e"), CPU_OVERRIDES)
    finally:
        if old is None:
            os.environ.pop("DDCORE_CACHE", None)
        else:
            os.environ["DDCORE_CACHE"] = old


def test_synset_and_both_baselines_are_evaluated(cpu_run):
    results = cpu_run.results
    for entry in (results["synset"], results["baselines"]["random"], results["baselines"]["kmeans"]):
        values = entry["per_model"]["ConvNetKRR/cifar10"]["values"]
        assert len(values) == 1 and 10.0 < values[0] <= 100.0  # above chance (10 classes)


def test_run_artifacts_and_synthetic_set(cpu_run):
    syn = cpu_run.synset
    assert syn.images.shape == (50, 3, 32, 32) and syn.targets.shape == (50, 64) and syn.labels is None
    assert (cpu_run.out_dir / "synset.safetensors").exists() and (cpu_run.out_dir / "eval.json").exists()
    metrics = cpu_run.metrics()
    assert [m["step"] for m in metrics] == [10, 20]
    assert all(m["loss/krr"] > 0 for m in metrics)
    assert cpu_run.results["budget_images"] == round(50 * (3 * 32 * 32 + 64) / (3 * 32 * 32))
    # the distillation moved both X_s and Y_s away from their initial values (a real image and its teacher features)
    param = cpu_run.run.parameterization
    init_images, init_targets = param.initial_pairs()
    assert (syn.images - init_images).abs().max() > 1e-3 and (syn.targets - init_targets).abs().max() > 1e-3


def test_teacher_mse_is_the_held_out_regression_error(cpu_run):
    """The evaluator's ``teacher_mse``: 0 for the teacher itself, mean(features²) for a net that outputs zeros."""
    import torch

    evaluator, build = cpu_run.run.evaluator, cpu_run.run.build_ctx
    teacher = cpu_run.run.parameterization.teacher
    assert evaluator.teacher_mse(teacher.net) == pytest.approx(0.0, abs=1e-12)

    class Zeros(torch.nn.Module):
        def forward(self, x):
            return x.new_zeros(x.shape[0], teacher.dim)

    test = build.test.take(torch.arange(len(build.test)))
    want = teacher.features(test.images).pow(2).mean().item()  # the CPU run scores every test image (< 2000)
    assert evaluator.teacher_mse(Zeros()) == pytest.approx(want, rel=1e-5)
    for entry in (cpu_run.results["synset"], cpu_run.results["baselines"]["random"]):
        assert entry["teacher_mse"]["ConvNetKRR"] > 0.0  # reported for every evaluated set (5 epochs: not converged)
