"""End-to-end IDM / IDM+IID runs through the engine: resume reproduces the uninterrupted run, and a short
CIFAR-10 IDM+IID run beats the same-budget random real subset (needs $DDCORE_DATA/cifar10-jpeg)."""

from __future__ import annotations

from pathlib import Path

import torch

from ddcore.testing import require_datasets, run_recipe, tiny_recipe

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


def _tiny_idm_iid(**run):
    """IDM + IID on the bundled 8x8 digits with tiny networks: every stateful piece (queue, momentum, pool) is in."""
    return tiny_recipe(
        plugins=["ddcore-dm", "ddcore-idm", "ddcore-iid"],
        data={"name": "digits", "classes": 3},
        real={"sampling": "per_class", "batch": 8},
        backbone={"name": "ConvNet", "width": 8, "depth": 2},
        synset={"name": "pixels", "ipc": 2, "init": {"name": "mosaic"}},
        sampler={"name": "model_queue", "net_num": 3, "net_generate_interval": 2, "fetch_net_num": 2,
                 "model_train_steps": 2, "trained_bs": 16, "eval_interval": 3},
        augment=[{"name": "partition", "factor": 2}, {"name": "dsa", "strategy": "color_crop_cutout_scale_rotate"}],
        objective=[
            {"name": "dm", "weight": 1.0},
            {"name": "class_aware_ce", "weight": 0.5},
            {"name": "covariance_matching", "weight": 0.03},
            {"name": "class_centralization", "weight": 0.01,
             "pool": {"size": 2, "epochs": 1, "batch": 64, "arch": {"name": "ConvNet", "width": 8, "depth": 1}}},
        ],
        optimizer={"name": "class_sequential_sgd", "lr": 0.2, "momentum": 0.5},
        run={"iterations": 6, "log_every": 1, "checkpoint_every": 3, "progress": False, "eval_at_end": False, **run},
    )


def test_resume_mid_run_reproduces_the_uninterrupted_run(tmp_path):
    recipe = _tiny_idm_iid()
    full = run_recipe(recipe, tmp_path, out_name="full")
    run_recipe(recipe, tmp_path, ["run.iterations=3"], out_name="split")
    resumed = run_recipe(recipe, tmp_path, out_name="split", resume=True)
    assert resumed.run.start_step == 3
    assert torch.equal(full.synset.images, resumed.synset.images)
    assert [m["loss"] for m in full.metrics()] == [m["loss"] for m in resumed.metrics()]
    # the images moved, and every term was logged
    last = full.metrics()[-1]
    assert {"loss/dm", "loss/class_aware_ce", "loss/covariance_matching", "loss/class_centralization"} <= set(last)


def test_short_cifar10_idm_iid_run_beats_random_real_subset(tmp_path):
    """The CI-sized version of the README check: 4 classes, IPC 2, 20 steps; same eval protocol for both sets."""
    require_datasets("cifar10-jpeg")
    overrides = [
        "device=cpu", "data.classes=4", "data.train_per_class=300", "data.test_per_class=200",
        "real.batch=32", "synset.ipc=2", "backbone.width=32",
        "sampler.trained_bs=64", "sampler.model_train_steps=2", "sampler.net_generate_interval=10",
        "run.iterations=20", "run.log_every=10", "run.checkpoint_every=0", "run.progress=false",
        "objective[3].pool.size=2", "objective[3].pool.epochs=1", "objective[3].pool.batch=128",
        'objective[3].pool.arch={name = "ConvNet", width = 32}',
        "eval.num_models=2", "eval.epochs=100",
    ]
    res = run_recipe(RECIPES / "idm_iid.toml", tmp_path, overrides)
    distilled = res.results["synset"]["mean"]
    random = res.results["baselines"]["random"]["mean"]
    print(f"IDM+IID distilled {distilled:.2f} vs random {random:.2f}")
    assert distilled > random + 2.0
