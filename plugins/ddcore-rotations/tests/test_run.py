"""End to end through the engine: KRR pool + KRR loss + pca_augmented on the bundled digits, tiny scale."""

from __future__ import annotations

import copy

import pytest
import torch

from ddcore.testing import HookRecorder, run_recipe

TINY = {
    "name": "tiny-boost", "seed": 0, "device": "cpu", "plugins": ["ddcore-krr", "ddcore-pca", "ddcore-rotations"],
    "data": {"name": "digits", "channels": 3},
    "real": {"sampling": "uniform", "batch": 64},
    "backbone": {"name": "ConvNetKRR", "channels": [8, 16]},
    "synset": {"name": "pca_augmented", "budget": 20, "scale": 2, "approx_epochs": 50,
               "teacher": {"base_width": 2, "epochs": 1, "batch_size": 64, "train_limit": 128,
                           "projector": [32, 32]}},
    "sampler": {"name": "model_pool", "num_models": 2, "max_steps": 5},
    "objective": [{"name": "krr", "real_augment": "none"}],
    "optimizer": {"name": "adamw", "lr": 1e-3, "schedule": "linear"},
    "run": {"iterations": 3, "log_every": 1, "checkpoint_every": 2, "progress": False},
    "eval": {"name": "ssl_transfer", "num_runs": 1, "pretrain_epochs": 2,
             "targets": [{"name": "source", "protocol": "linear", "iterations": 10}], "baselines": ["random"]},
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DDCORE_CACHE", str(tmp_path / "cache"))


def test_boost_run_finalizes_before_the_final_evaluation_and_stays_within_budget(tmp_path):
    rec = HookRecorder()
    res = run_recipe(TINY, tmp_path, extra_plugins=[rec])
    param = res.run.parameterization
    assert bool(param.finalized)
    assert set(param.approx_mse) == {"same", "bias", "approx"}
    # 3-channel 8x8 digits: d_b = 48, d_y = 16; U = min(40, 48), V = min(40, 16); Q: 3*(16*4+4+4*16+16)
    assert param.plan.m == (20 * 192 - 40 * 48 - 16 * 16 - 444) // 56
    assert param.storage_floats() <= 20 * 192
    assert res.results["budget_images"] == 20
    m = param.plan.m
    assert res.synset.images.shape[0] == 4 * m and res.synset.targets.shape == (4 * m, 16)
    # the evaluated/saved targets of the views are the approximated ones
    c, b = param.coef_y.detach(), param.basis_y.detach()
    torch.testing.assert_close(res.synset.targets[m:2 * m], (c + param.approx(c)[0]) @ b, atol=1e-5, rtol=1e-5)
    assert "random" in res.results["baselines"]
    assert torch.isfinite(torch.tensor(res.metrics()[-1]["loss"]))


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    """Checkpoints hold every tensor of the set (C_a^y, Q_a, the finalized flag): resume = uninterrupted run.

    (Constant lr: a linear schedule is defined over run.iterations, which the interrupted run changes.)
    """
    recipe = copy.deepcopy(TINY)
    recipe["optimizer"] = dict(TINY["optimizer"], schedule="constant")
    straight = run_recipe(recipe, tmp_path, out_name="straight").synset
    first = copy.deepcopy(recipe)
    first["run"] = dict(TINY["run"], iterations=2, eval_at_end=False)
    run_recipe(first, tmp_path, out_name="resumed")
    resumed = run_recipe(recipe, tmp_path, ["run.iterations=3"], out_name="resumed", resume=True).synset
    torch.testing.assert_close(resumed.images, straight.images)
    torch.testing.assert_close(resumed.targets, straight.targets)
