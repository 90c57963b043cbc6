"""Reproduction features: the [paper] table, per-IPC settings (by_ipc), repeated experiments, ``ddcore report``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ddcore.cli import main
from ddcore.errors import RecipeError
from ddcore.plugins import get_host
from ddcore.recipe import load_recipe, parse_recipe, validate
from ddcore._repeats import pool_results, repeat_seed
from ddcore.testing import tiny_recipe

ROOT = Path(__file__).resolve().parent.parent
PAPER = {"source": "A paper", "table": "Table 1", "ipc": {"2": {"mean": 90.0, "std": 0.5}}}


def parsed(recipe, overrides=()):
    r = parse_recipe(recipe, list(overrides), file="r.toml")
    validate(r, get_host().registry)
    return r


def error_of(recipe, overrides=()):
    with pytest.raises(RecipeError) as info:
        parsed(recipe, overrides)
    return str(info.value)


# -- [paper] ---------------------------------------------------------------------------------------------


def test_paper_value_follows_ipc():
    r = parsed(tiny_recipe(paper=PAPER))
    assert r.ipc == 2 and r.paper_value().mean == 90.0 and r.paper_value().std == 0.5
    assert parsed(tiny_recipe(paper=PAPER), ["synset.ipc=3"]).paper_value() is None


@pytest.mark.parametrize("paper, key, fragment", [
    ({**PAPER, "year": 2023}, "paper.year", "unknown key; allowed keys: source, table, ipc, note"),
    ({"ipc": PAPER["ipc"]}, "paper.source", "missing required key"),
    ({**PAPER, "ipc": {"ten": {"mean": 1.0, "std": 0.1}}}, "paper.ipc.ten", "positive integer"),
    ({**PAPER, "ipc": {"2": {"mean": math.nan, "std": 0.1}}}, "paper.ipc.2.mean", "finite number"),
    ({**PAPER, "ipc": {"2": {"mean": 1.0, "std": math.inf}}}, "paper.ipc.2.std", "finite number"),
    ({**PAPER, "ipc": {"2": {"mean": 1.0, "sd": 0.1}}}, "paper.ipc.2", "{mean = float, std = float}"),
    ({**PAPER, "source": 3}, "paper.source", "expected str"),
])
def test_paper_errors_name_the_key(paper, key, fragment):
    msg = error_of(tiny_recipe(paper=paper))
    assert msg.startswith(f"r.toml: {key}: ") and fragment in msg


def test_recipe_check_reports_a_bad_paper_table(tmp_path, capsys):
    path = tmp_path / "r.toml"
    path.write_text((ROOT / "recipes" / "mnist_dm.toml").read_text().replace("mean = 97.5", "mean = nan"))
    assert main(["recipe", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "paper.ipc.10.mean: expected a finite number" in err


# -- by_ipc ----------------------------------------------------------------------------------------------


BY_IPC = {"3": {"run.iterations": 7, "eval.num_models": 3}, "5": {"real.batch": 9}}


def test_by_ipc_applies_at_its_ipc_only():
    base = parsed(tiny_recipe(by_ipc=BY_IPC))
    assert base.run.iterations == 4 and base.real.batch == 32
    three = parsed(tiny_recipe(by_ipc=BY_IPC), ["synset.ipc=3"])
    assert three.run.iterations == 7 and three.raw["eval"]["num_models"] == 3
    assert "by_ipc" not in three.raw  # consumed: the resolved recipe holds the applied values
    assert parsed(tiny_recipe(by_ipc=BY_IPC), ["synset.ipc=5"]).real.batch == 9


def test_set_wins_over_by_ipc():
    r = parsed(tiny_recipe(by_ipc=BY_IPC), ["synset.ipc=3", "run.iterations=11"])
    assert r.run.iterations == 11 and r.raw["eval"]["num_models"] == 3


@pytest.mark.parametrize("by_ipc, key, fragment", [
    ({"x": {"run.iterations": 1}}, "by_ipc.x", "positive integer"),
    ({"3": 5}, "by_ipc.3", "key.path"),
    ({"3": {"synset.ipc": 4}}, "by_ipc.3.'synset.ipc'", "cannot set synset.ipc"),
    ({"3": {"run.iteratons": 4}}, "run.iteratons", "unknown key"),
])
def test_by_ipc_errors(by_ipc, key, fragment):
    msg = error_of(tiny_recipe(by_ipc=by_ipc), ["synset.ipc=3"])
    assert key in msg and fragment in msg


@pytest.mark.parametrize("name", ["mnist_dc", "mnist_dsa", "mnist_dcc", "mnist_dsac"])
def test_gradient_matching_recipes_follow_ipc(name):
    """run.iterations = 1000 networks x K_i of the recipe's own loops table, at every IPC the table has."""
    from ddcore_dcc.sampler import LOOP_TABLES

    path = ROOT / "recipes" / f"{name}.toml"
    table = LOOP_TABLES[load_recipe(path).sampler.options["loops"]]
    for ipc, (k_i, _) in table.items():
        r = load_recipe(path, [f"synset.ipc={ipc}"])
        assert r.run.iterations == 1000 * k_i, (name, ipc)
        validate(r, get_host().registry)


def test_mnist_recipes_carry_the_papers_values():
    expected = {"mnist_random": (64.9, 95.1, 97.9), "mnist_dm": (89.7, 97.5, 98.6), "mnist_dc": (91.7, 97.4, 98.8),
                "mnist_dsa": (88.7, 97.8, 99.2)}
    for name, values in expected.items():
        for ipc, value in zip((1, 10, 50), values):
            r = load_recipe(ROOT / "recipes" / f"{name}.toml", [f"synset.ipc={ipc}"])
            assert r.paper_value().mean == value
            assert r.run.repeats == 5 and r.raw["eval"]["num_models"] == 20 and r.raw["eval"]["epochs"] == 1000


# -- repeats ---------------------------------------------------------------------------------------------


def test_pool_results_pools_every_model():
    def result(values):
        return {"synset": {"mean": sum(values) / len(values), "per_model": {"ConvNet": {"values": values}}},
                "baselines": {"random": {"mean": 50.0, "per_model": {"ConvNet": {"values": [50.0]}}}}}

    pooled = pool_results([result([1.0, 3.0]), result([5.0, 7.0])])
    assert pooled["synset"]["mean"] == 4.0 and pooled["synset"]["num_models"] == 4
    assert pooled["synset"]["std"] == pytest.approx(math.sqrt(5.0))
    assert pooled["synset"]["set_means"] == [2.0, 6.0] and pooled["baselines"]["random"]["num_models"] == 2


def test_repeat_seeds_are_distinct_and_set_zero_is_the_recipe_seed():
    seeds = [repeat_seed(7, k) for k in range(5)]
    assert seeds[0] == 7 and len(set(seeds)) == 5


def _write(tmp_path, recipe) -> Path:
    import tomli_w

    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(recipe))
    return path


def test_repeats_distils_sets_pools_and_resumes(tmp_path, capsys):
    recipe = _write(tmp_path, tiny_recipe(paper=PAPER))
    out = tmp_path / "rep"
    assert main(["run", str(recipe), "--out", str(out), "--repeats", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "paper (A paper, Table 1; ipc 2): 90.00 ± 0.50 | ours:" in printed
    record = json.loads((out / "eval.json").read_text())
    assert record["repeats"] == 2 and [s["dir"] for s in record["sets"]] == ["set-0", "set-1"]
    seeds = [s["seed"] for s in record["sets"]]
    assert seeds[0] == 0 and seeds[1] != 0
    assert [load_recipe(out / f"set-{k}" / "recipe.toml").seed for k in range(2)] == seeds
    values = [v for s in record["sets"] for v in s["result"]["synset"]["per_model"]["ConvNet"]["values"]]
    assert record["pooled"]["synset"]["values"] == values and record["pooled"]["synset"]["num_models"] == 2
    assert record["pooled"]["baselines"]["random"]["num_models"] == 2 and record["paper"]["mean"] == 90.0
    # the two sets are different sets: their synthetic images differ
    a, b = ((out / f"set-{k}" / "synset.safetensors").read_bytes() for k in range(2))
    assert a != b
    before = (out / "set-0" / "synset.safetensors").stat().st_mtime_ns
    # resuming with one more set runs only the new one
    assert main(["run", str(recipe), "--out", str(out), "--repeats", "3", "--resume", "--no-progress"]) == 0
    assert "set 1/3 already finished" in capsys.readouterr().out
    assert (out / "set-0" / "synset.safetensors").stat().st_mtime_ns == before
    record = json.loads((out / "eval.json").read_text())
    assert len(record["sets"]) == 3 and record["pooled"]["synset"]["num_models"] == 3
    assert load_recipe(out / "recipe.toml").run.repeats == 3


def test_repeats_refuses_a_non_empty_out(tmp_path, capsys):
    recipe = _write(tmp_path, tiny_recipe())
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["run", str(recipe), "--out", str(out), "--repeats", "2"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


def test_single_run_eval_json_carries_the_paper(tmp_path, capsys):
    recipe = _write(tmp_path, tiny_recipe(paper=PAPER))
    assert main(["run", str(recipe), "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    assert "difference" in capsys.readouterr().out
    final = json.loads((tmp_path / "one" / "eval.json").read_text())[-1]
    assert final["paper"] == {"mean": 90.0, "std": 0.5, "source": "A paper", "table": "Table 1", "ipc": 2}
    assert final["wall_s"] > 0 and final["eval_s"] > 0


# -- report ----------------------------------------------------------------------------------------------


def test_report_table_save_and_check(tmp_path, capsys):
    recipe = _write(tmp_path, tiny_recipe(paper=PAPER, run={**tiny_recipe()["run"], "eval_every": 2}))
    out = tmp_path / "rep"
    assert main(["run", str(recipe), "--out", str(out), "--repeats", "2", "--no-progress",
                 "--set", "run.iterations=4"]) == 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    table = capsys.readouterr().out
    record = json.loads((out / "eval.json").read_text())
    ours = record["pooled"]["synset"]
    row = next(line for line in table.splitlines() if line.startswith("| tiny |"))
    assert f"{ours['mean']:.2f} ± {ours['std']:.2f}" in row and "90.00 ± 0.50" in row
    assert f"{ours['mean'] - 90.0:+.2f}" in row and "2 × 1" in row and "| 2 |" in row
    assert row.endswith(", fp32 |")  # the arithmetic "auto" resolved to (moment matching is not bf16_safe)
    assert "Accuracy against distillation step" in table and "2: " in table and "4: " in table
    # result files, then a report generated from them; --check says whether it is current
    results = tmp_path / "results"
    doc = tmp_path / "doc.md"
    plot = tmp_path / "curves.png"
    assert main(["report", str(out), "--save", str(results)]) == 0
    saved = sorted(results.glob("*.json"))
    assert [p.name for p in saved] == ["tiny-ipc2-2x1.json"]
    assert main(["report", *map(str, saved), "--out", str(doc), "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "curves.png" in doc.read_text()
    capsys.readouterr()
    check = ["report", *map(str, saved), "--out", str(doc), "--plot", str(plot), "--check"]
    assert main(check) == 0
    doc.write_text(doc.read_text().replace("90.00", "91.00"))
    assert main(check) == 1
    assert "stale" in capsys.readouterr().err


def test_saved_results_never_overwrite_another_run(tmp_path, capsys):
    recipe = _write(tmp_path, tiny_recipe(paper=PAPER))
    results = tmp_path / "results"
    for out, extra in (("a", []), ("b", ["--set", "eval.epochs=3", "--set", "objective[0].weight=2.0"]), ("c", [])):
        assert main(["run", str(recipe), "--out", str(tmp_path / out), "--no-progress", *extra]) == 0
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--save", str(results)]) == 0
    names = sorted(p.name for p in results.glob("*.json"))
    # every deviation is in the name, the listed ones and any other --set
    assert names == ["tiny-ipc2-1x1-eval.epochs-3-objective_0_.weight-2.0.json", "tiny-ipc2-1x1.json"]
    first = (results / "tiny-ipc2-1x1.json").read_text()
    assert main(["report", str(tmp_path / "a"), "--save", str(results)]) == 0  # the same run may refresh its file
    capsys.readouterr()
    # run c has the same name but is another run (another command): refused, the file keeps run a's numbers
    assert main(["report", str(tmp_path / "c"), "--save", str(results)]) == 2
    err = capsys.readouterr().err
    assert "already holds another run's result" in err and len(err.strip().splitlines()) == 1
    assert (results / "tiny-ipc2-1x1.json").read_text() == first


def test_a_bf16_row_says_so_and_never_shares_a_file_with_fp32(tmp_path, capsys):
    from ddcore._report import render_markdown, result_name, summarize_run

    recipe = _write(tmp_path, tiny_recipe(paper=PAPER))
    assert main(["run", str(recipe), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    fp32 = summarize_run(tmp_path / "a")
    bf16 = {**fp32, "precision": "bf16"}  # as a run whose "auto" resolved to bf16 records it
    assert fp32["precision"] == "fp32" and result_name(fp32) == "tiny-ipc2-1x1.json"
    assert result_name(bf16) == "tiny-ipc2-1x1-bf16.json"
    rows = [line for line in render_markdown([fp32, bf16]).splitlines() if line.startswith("| tiny |")]
    assert rows[0].endswith(", fp32 |") and rows[1].endswith(", bf16 |")
    # result files written before the precision was recorded: the recipe's value, named by its deviation
    old = {k: v for k, v in fp32.items() if k != "precision"}
    assert render_markdown([old]).count(", fp32 |") == 1
    explicit = {**old, "deviations": {"run.precision": ["bf16", None]}}
    assert ", bf16 |" in render_markdown([explicit]) and result_name(explicit).endswith("-run.precision-bf16.json")


def test_a_single_network_shows_no_spread(tmp_path, capsys):
    from ddcore._report import render_markdown, summarize_run

    recipe = _write(tmp_path, tiny_recipe(paper=PAPER, run={**tiny_recipe()["run"], "eval_every": 2}))
    assert main(["run", str(recipe), "--out", str(tmp_path / "a"), "--no-progress", "--set", "run.iterations=4"]) == 0
    one = summarize_run(tmp_path / "a")
    assert one["ours"]["num_models"] == 1 and one["ours"]["std"] == 0.0
    doc = render_markdown([one])
    row = next(line for line in doc.splitlines() if line.startswith("| tiny |"))
    # the std of one network is 0 by construction and must not read as a precise result
    assert f"{one['ours']['mean']:.2f} (1 net, no ±)" in row and "± 0.00" not in row and "90.00 ± 0.50" in row
    curve = next(line for line in doc.splitlines() if line.startswith("**tiny"))
    assert "(1 net, no ±)" in curve and "± 0.00" not in curve
    two = {**one, "ours": {**one["ours"], "num_models": 2}}
    assert f"{one['ours']['mean']:.2f} ± 0.00" in render_markdown([two])


def _with_curve(result, precision, values, step=4, **changes):
    curve = [{"step": step, "mean": sum(values) / len(values), "std": float(np.std(values)),
              "num_models": len(values), "values": values}]
    return {**result, "precision": precision, "curve": curve, **changes}


def test_bf16_and_fp32_runs_of_one_setting_are_paired_by_step(tmp_path):
    from ddcore._report import precision_pairs, render_markdown, summarize_run

    recipe = _write(tmp_path, tiny_recipe(paper=PAPER))
    assert main(["run", str(recipe), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    base = summarize_run(tmp_path / "a")
    fp32 = _with_curve(base, "fp32", [50.0, 52.0])
    near = _with_curve(base, "bf16", [50.5, 52.5], iterations=8)  # a longer run, evaluated at step 4 too
    far = _with_curve(base, "bf16", [40.0, 41.0], dataset="other")  # another setting: not paired with fp32
    pairs = precision_pairs([fp32, near, far])
    assert len(pairs) == 1
    p = pairs[0]
    assert p["step"] == 4 and p["nets"] == 2 and p["difference"] == pytest.approx(0.5)
    assert p["paired_mean"] == pytest.approx(0.5) and p["paired_std"] == pytest.approx(0.0)
    assert p["spread"] == pytest.approx(1.0) and p["inside"]
    worse = _with_curve(base, "bf16", [47.0, 49.0])
    assert not precision_pairs([fp32, worse])[0]["inside"]
    # old result files hold no per-network values: the means still compare, the paired column stays empty
    bare = {**worse, "curve": [{k: v for k, v in worse["curve"][0].items() if k != "values"}]}
    assert precision_pairs([fp32, bare])[0]["paired_mean"] is None
    doc = render_markdown([fp32, near, worse])
    assert "## bf16 against fp32, same seeds" in doc
    assert "| +0.50 | 0.50 ± 0.00 | 1.00 | yes |" in doc and "| -3.00 | -3.00 ± 0.00 | 1.00 | **no** |" in doc


def test_runs_of_two_recipes_pair_network_by_network_when_seed_and_protocol_agree(tmp_path):
    from ddcore._report import method_pairs, render_markdown, summarize_run

    runs = {}
    for name, extra in (("base", {}), ("plus", {"eval": {**tiny_recipe()["eval"], "test_batch_size": 100}}),
                        ("other_eval", {"eval": {**tiny_recipe()["eval"], "epochs": 3}})):
        recipe = tiny_recipe(name=name, **extra)
        recipe["eval"]["num_models"] = 2
        recipe["objective"] = [{"name": "moment_matching", "weight": 2.0 if name == "plus" else 1.0}]
        out = tmp_path / name
        assert main(["run", str(_write(tmp_path, recipe)), "--out", str(out), "--no-progress"]) == 0
        runs[name] = summarize_run(out)
    base, plus, other = runs["base"], runs["plus"], runs["other_eval"]
    # how the networks are run (the test batch size) is not the protocol; their epochs are
    assert base["seed"] == 0 and base["evaluation"] == plus["evaluation"] != other["evaluation"]
    assert base["evaluation"]["backbone"]["width"] == 16  # defaults filled in: the network is part of it
    pairs = method_pairs([plus, other, base])
    assert [(p["a"], p["b"], p["step"], p["nets"]) for p in pairs] == [("base", "plus", 4, 2)]
    p = pairs[0]
    diffs = [y - x for x, y in zip(base["curve"][-1]["values"], plus["curve"][-1]["values"])]
    assert p["difference"] == pytest.approx(plus["ours"]["mean"] - base["ours"]["mean"])
    assert p["paired_mean"] == pytest.approx(float(np.mean(diffs))) and p["wins"] == sum(d > 0 for d in diffs)
    # another seed, another arithmetic, or a result file from before the protocol was recorded: no pair
    assert method_pairs([base, {**plus, "seed": 1}]) == []
    assert method_pairs([base, {**plus, "precision": "bf16"}]) == []
    assert method_pairs([base, {k: v for k, v in plus.items() if k != "evaluation"}]) == []
    assert method_pairs([base, {**base}]) == []  # one recipe against itself is the precision table's business
    doc = render_markdown([base, plus])
    assert "## Methods against each other, same seeds" in doc
    assert f"| base | plus | {base['ours']['mean']:.2f} ± {base['ours']['std']:.2f} |" in doc


def test_report_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{}")
    assert main(["report", str(tmp_path / "bad.json")]) == 2
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not a ddcore result file" in err[0] and "no such run directory" in err[1]


@pytest.mark.parametrize("name", ["idm", "idm_iid"])
def test_idm_recipes_follow_ipc(name):
    """command.txt's per-IPC values come with --set synset.ipc=N alone."""
    path = ROOT / "recipes" / f"{name}.toml"
    one = load_recipe(path, ["synset.ipc=1"])
    assert one.real.batch == 5000 and one.sampler.options["net_generate_interval"] == 5
    fifty = load_recipe(path, ["synset.ipc=50"])
    assert fifty.objective[1].weight == 0.1 and fifty.sampler.options["eval_interval"] == 500
    ten = load_recipe(path)
    assert ten.real.batch == 256 and ten.objective[1].weight == 0.5


def test_eval_of_a_repeated_run_points_to_its_sets(tmp_path, capsys):
    (tmp_path / "rep" / "set-0").mkdir(parents=True)
    (tmp_path / "rep" / "recipe.toml").write_text("")
    assert main(["eval", str(tmp_path / "rep")]) == 2
    assert "evaluate one of its sets" in capsys.readouterr().err


def test_reproduction_doc_is_current(monkeypatch, capsys):
    """docs/reproduction.md is generated from docs/results/*.json by `ddcore report`."""
    monkeypatch.chdir(ROOT)
    code = main(["report", "--check"])
    assert code == 0, capsys.readouterr().err
    from ddcore._report import result_name

    for path in (ROOT / "docs" / "results").glob("*.json"):  # named as --save names them: none can shadow another
        assert path.name == result_name(json.loads(path.read_text())), path


def test_repeated_run_folder_is_held(tmp_path, capsys):
    """A second process cannot run into a repeated run's folder while the first holds it."""
    import os

    from ddcore.artifacts import LOCK_NAME

    recipe = _write(tmp_path, tiny_recipe())
    out = tmp_path / "rep"
    out.mkdir()
    (out / "recipe.toml").write_text(recipe.read_text())
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": __import__("socket").gethostname(),
                                             "since": "now"}))
    assert main(["run", str(recipe), "--out", str(out), "--repeats", "2", "--resume"]) == 2
    assert "in use by another ddcore process" in capsys.readouterr().err
    assert not (out / "set-0").exists()


def test_periodic_evaluation_leaves_the_distillation_unchanged(tmp_path):
    """Why runs that differ in eval_every still pair (``_PAIRING_FREE``): evaluating draws from its own streams."""
    import torch

    from ddcore.testing import run_recipe

    run = {**tiny_recipe()["run"], "iterations": 4}
    quiet = run_recipe(tiny_recipe(run={**run, "eval_every": 0}), tmp_path, out_name="quiet")
    chatty = run_recipe(tiny_recipe(run={**run, "eval_every": 1, "log_every": 1}), tmp_path, out_name="chatty")
    assert len(json.loads((chatty.out_dir / "eval.json").read_text())) == 4
    assert torch.equal(quiet.synset.images, chatty.synset.images)
