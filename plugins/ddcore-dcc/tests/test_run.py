"""End-to-end runs through the engine: the shipped recipes, warm-up switching, DSAC + covariance, the CPU check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddcore.errors import RecipeError
from ddcore.hotpath import can_compile
from ddcore.plugins import get_host
from ddcore.recipe import load_recipe, validate
from ddcore.testing import require_datasets, run_recipe, tiny_recipe

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


@pytest.mark.parametrize("name", ["dc", "dsa", "dcc", "dsac", "dsac_cov"])
def test_shipped_recipes_validate(name):
    recipe = load_recipe(RECIPES / f"{name}.toml")
    host = get_host()
    host.require(recipe.plugins, file=recipe.file)
    configs = validate(recipe, host.registry)
    assert recipe.sampler.name == "inner_loop"
    assert recipe.synset.options["ipc"] == 10 and recipe.data.options["path"] == "cifar10-jpeg"
    assert recipe.run.iterations == 1000 * 10  # K_o x K_i at ipc 10
    matching = configs["objective[0]"].matching
    assert matching == ("class_collective" if name.startswith(("dcc", "dsac")) else "class_wise")
    assert bool(recipe.augment) == (name in ("dsa", "dsac", "dsac_cov"))


def _digits(**objective):
    recipe = tiny_recipe(
        sampler={"name": "inner_loop", "updates_per_net": 3, "train_epochs": 1},
        objective=[{"name": "gradient_match", **objective}],
        optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.5},
        run={"iterations": 9, "log_every": 1, "checkpoint_every": 0, "progress": False},
    )
    recipe["plugins"] = ["ddcore-dcc"]
    recipe["real"] = {"batch": 8}
    recipe["backbone"] = {"name": "ConvNet", "width": 8, "depth": 2}
    del recipe["eval"]
    return recipe


@pytest.mark.parametrize("boundary, expected", [
    ("code", [0, 0, 1, 1, 1, 1, 1, 1, 1]),   # class-wise while outer < 1 and inner < 2
    ("paper", [0, 0, 0, 0, 0, 0, 1, 1, 1]),  # class-wise while outer <= 1 and inner <= 2 (K_i = 3)
])
def test_engine_run_switches_from_class_wise_to_collective_at_the_boundary(tmp_path, boundary, expected):
    res = run_recipe(_digits(matching="class_collective", warmup_outer=1, warmup_inner=2, warmup_boundary=boundary),
                     tmp_path)
    metrics = res.metrics()
    assert [m["step"] for m in metrics] == list(range(1, 10))
    assert [int(m["gradient_match/collective"]) for m in metrics] == expected
    assert all(m["loss"] > 0 for m in metrics)


def test_dsac_with_iid_covariance_on_the_same_inner_loop_network(tmp_path):
    recipe = _digits(matching="class_collective", warmup_outer=0)
    recipe["plugins"] = ["ddcore-dcc", "ddcore-iid"]
    recipe["objective"].append({"name": "covariance_matching", "weight": 0.01})
    recipe["augment"] = [{"name": "dsa"}]
    recipe["run"]["iterations"] = 4
    res = run_recipe(recipe, tmp_path)
    last = res.metrics()[-1]
    assert last["loss/covariance_matching"] > 0 and last["loss/gradient_match"] > 0
    assert last["loss"] == pytest.approx(last["loss/gradient_match"] + 0.01 * last["loss/covariance_matching"], rel=1e-4)


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    recipe = _digits(matching="class_collective", warmup_outer=1, warmup_inner=1)
    recipe["run"].update(iterations=5, checkpoint_every=2)
    full = run_recipe(recipe, tmp_path, out_name="full")
    recipe["run"]["iterations"] = 2
    run_recipe(recipe, tmp_path, out_name="part")
    resumed = run_recipe(recipe, tmp_path, ["run.iterations=5"], out_name="part", resume=True)
    assert (full.synset.images - resumed.synset.images).abs().max().item() < 1e-5


CPU_CHECK = [
    "data.classes=4", "data.train_per_class=300", "data.test_per_class=100",
    "backbone.width=32", "real.batch=32", "synset.ipc=1",
    "objective[0].warmup_outer=1",  # the first network (10 updates) is the class-wise warm-up
    "optimizer.lr=1.0", "run.iterations=20", "run.log_every=10", "run.eval_every=0", "run.checkpoint_every=0",
    "run.progress=false", "eval.num_models=4", "eval.epochs=150",
]


def test_tiny_dsac_on_cifar10_beats_the_random_real_subset(tmp_path):
    require_datasets("cifar10-jpeg")
    res = run_recipe(RECIPES / "dsac.toml", tmp_path, CPU_CHECK)
    synset, random = res.results["synset"]["mean"], res.results["baselines"]["random"]["mean"]
    assert res.results["budget_images"] == 4
    assert synset > random + 2.0, (synset, random)


def test_gradient_matching_refuses_compile_on_and_stays_eager_on_auto(tmp_path):
    """Gradient matching differentiates the network's gradients: torch.compile'd code has no double backward."""
    recipe = _digits(matching="class_wise")
    recipe["run"]["compile"] = "on"
    with pytest.raises(RecipeError, match=r"run\.compile: 'on' cannot run objective 'gradient_match'"):
        run_recipe(recipe, tmp_path, out_name="on")
    recipe["run"].update(compile="auto", iterations=2)
    res = run_recipe(recipe, tmp_path, out_name="auto")
    assert not res.run.hot_path.compile and res.run.hot_path.channels_last
    # ... while the real side's once-differentiated passes run compiled where the CPU can compile
    assert res.run.hot_path.compile_first_order is can_compile(torch.device("cpu"))
    assert res.run.build_ctx.hot_path is res.run.hot_path  # what the components prepare their nets with
