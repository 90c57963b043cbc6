"""The shipped KRR-ST / Boost-SSDD recipes state the official protocol: Table 1's fine-tuning first, the labelled
baselines, the linear probe as an extra, the code's LinearLR floor, the outer lr and its alternative."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddcore.plugins import get_host
from ddcore.recipe import load_recipe, validate

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


@pytest.mark.parametrize("name", ["krr_st", "krr_st_cifar10"])
def test_krr_recipes_run_table_1s_protocol(name):
    recipe = load_recipe(RECIPES / f"{name}.toml")
    host = get_host()
    host.require(recipe.plugins, file=recipe.file)
    configs = validate(recipe, host.registry)
    ev = configs["eval"]
    assert ev.targets[0].protocol == "finetune"  # the headline is the paper's fine-tuning
    assert [t.protocol for t in ev.targets].count("linear") == 1 and ev.targets[-1].protocol == "linear"
    assert ev.targets[-1].name.endswith("-linear")  # labelled as the extra it is
    assert recipe.baselines[:2] == ("random_labelled", "kmeans_labelled") and {"random", "kmeans"} <= set(
        recipe.baselines)
    assert (ev.labelled_pretrain_epochs, ev.labelled_pretrain_augment) == (1000, "dsa")
    opt = configs["optimizer"]
    assert (opt.lr, opt.schedule, opt.end_factor) == (1e-3, "linear", 1e-3)
    text = (RECIPES / f"{name}.toml").read_text()
    assert "--set optimizer.lr=1e-4" in text  # the README's value is one --set away
    assert configs["sampler"].init_steps_range == "paper"


def test_paper_recipe_normalises_its_cifar10_target_as_the_code_does():
    recipe = load_recipe(RECIPES / "krr_st.toml")
    configs = validate(recipe, get_host().registry)
    cifar10 = next(t for t in configs["eval"].targets if t.name == "cifar10")
    assert tuple(cifar10.data.options["std"]) == (0.2470, 0.2435, 0.2616)


@pytest.mark.parametrize("name", ["boost_ssdd", "boost_ssdd_cifar10"])
def test_boost_recipes_list_their_assumptions(name):
    text = (RECIPES / f"{name}.toml").read_text()
    header = text[:text.index("\nname = ")]
    assert "ASSUMPTIONS" in header
    for item in ("m (synthetic images)", "approximation networks", "linear probe: 5000 iterations"):
        assert item in header
    recipe = load_recipe(RECIPES / f"{name}.toml")
    configs = validate(recipe, get_host().registry)
    assert configs["eval"].targets[0].iterations == 5000 and configs["synset"].approx_epochs == 3000
