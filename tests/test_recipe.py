"""Recipe structuring, overrides and the one-line errors that name the key path."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from ddcore.cli import main
from ddcore.errors import RecipeError
from ddcore.plugins import get_host
from ddcore.recipe import apply_override, parse_recipe, validate
from ddcore.testing import tiny_recipe


def check(recipe, overrides=()):
    parsed = parse_recipe(recipe, list(overrides), file="r.toml")
    validate(parsed, get_host().registry)
    return parsed


def error_of(recipe, overrides=()):
    with pytest.raises(RecipeError) as info:
        check(recipe, overrides)
    return str(info.value)


def test_tiny_recipe_is_valid():
    parsed = check(tiny_recipe())
    assert parsed.synset.name == "pixels" and parsed.objective[0].weight == 1.0


def test_unknown_top_level_key():
    msg = error_of(tiny_recipe(iteratons=3))
    assert msg.startswith("r.toml: iteratons: unknown key") and "run" in msg


def test_unknown_component_option_names_key_path():
    r = tiny_recipe(objective=[{"name": "moment_matching", "momentz": 1}])
    assert error_of(r).startswith("r.toml: objective[0].momentz: unknown key; allowed keys: features, moments")


def test_wrong_type_names_key_path():
    msg = error_of(tiny_recipe(), ["synset.ipc=\"ten\""])
    assert msg.startswith("r.toml: synset.ipc: expected int, got str")


def test_wrong_weight_type():
    r = tiny_recipe(objective=[{"name": "moment_matching", "weight": "0.o1"}])
    assert error_of(r) == "r.toml: objective[0].weight: expected float, got str '0.o1'"


def test_value_outside_choices():
    msg = error_of(tiny_recipe(real={"sampling": "everything"}))
    assert msg.startswith("r.toml: real.sampling: expected one of 'per_class', 'uniform', 'none'")


def test_unknown_component_lists_available():
    msg = error_of(tiny_recipe(sampler="queue_of_doom"))
    assert msg.startswith("r.toml: sampler.name: unknown sampler 'queue_of_doom'; available:")
    assert "random_init" in msg


def test_missing_objective():
    r = tiny_recipe()
    del r["objective"]
    assert "objective" in error_of(r)


def test_overrides_nested_and_indexed():
    parsed = check(tiny_recipe(), ["synset.ipc=3", "objective[0].weight=0.5", "backbone.width=8", "data.name=digits"])
    assert parsed.synset.options["ipc"] == 3
    assert parsed.objective[0].weight == 0.5
    assert parsed.backbone.options["width"] == 8


def test_override_promotes_string_component_to_table():
    parsed = check(tiny_recipe(), ["sampler.every=3"])
    assert parsed.sampler.name == "random_init" and parsed.sampler.options == {"every": 3}


def test_override_errors():
    with pytest.raises(RecipeError, match="key.path=value"):
        apply_override({}, "no-equals-sign")
    with pytest.raises(RecipeError, match="out of range"):
        apply_override({"objective": []}, "objective[2].weight=1")


@given(st.integers(min_value=-10**9, max_value=10**9))
def test_override_values_parse_as_toml(value):
    data: dict = {}
    apply_override(data, f"run.iterations={value}")
    assert data["run"]["iterations"] == value


@given(st.text(alphabet="abcdefghij-_/", min_size=1, max_size=12))
def test_bare_words_are_strings(word):
    data: dict = {}
    apply_override(data, f"data.path={word}")
    assert isinstance(data["data"]["path"], (str, int, float))


def test_cli_recipe_check_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text('[data]\nname = "digits"\n[[objective]]\nname = "moment_matching"\n')
    assert main(["recipe", "check", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\nname = "digits"\n[[objective]]\nname = "moment_matching"\nweight = "high"\n')
    assert main(["recipe", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ddcore: error: {bad}: objective[0].weight: expected float, got str 'high'"]


def test_cli_invalid_toml_and_missing_file(tmp_path, capsys):
    broken = tmp_path / "broken.toml"
    broken.write_text("[data\n")
    assert main(["recipe", "check", str(broken)]) == 2
    assert main(["recipe", "check", str(tmp_path / "absent.toml")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "invalid TOML" in lines[0] and "cannot read recipe" in lines[1]


def test_cli_missing_plugin_fails_fast(tmp_path, capsys):
    r = tmp_path / "needs.toml"
    r.write_text('plugins = ["ddcore-not-installed"]\n[data]\nname = "digits"\n[[objective]]\nname = "moment_matching"\n')
    assert main(["run", str(r), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ddcore-not-installed" in err and "not installed" in err
    assert not (tmp_path / "out").exists()
