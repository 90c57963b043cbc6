"""The continual and nas_proxy evaluators on tiny digits runs, and their building blocks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ddcore.errors import RecipeError
from ddcore.testing import make_build_context, run_recipe, tiny_dataset, tiny_recipe
from ddcore.types import SynBatch
from ddcore_applications.common import class_subset_indices, masked_accuracy, ranks, spearman
from ddcore_applications.continual import ContinualConfig, ContinualLearning, split_steps
from ddcore_applications.nas import NasProxyConfig, search_space
from ddcore_applications.plot import main as plot_main

CONTINUAL = {"name": "continual", "steps": 5, "num_models": 2, "epochs": 2, "test_per_class": 20,
             "baselines": ["random", "herding"]}
NAS = {"name": "nas_proxy", "depth": [1, 2], "width": [8, 16], "act": ["relu"], "norm": ["instancenorm"],
       "pooling": ["avgpooling"], "epochs": 3, "reference_epochs": 1, "reference_per_class": 20, "test_limit": 200,
       "num_models": 2, "baselines": ["random"]}


def test_spearman_matches_the_definition_with_ties():
    assert ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    a, b = [0.1, 0.5, 0.5, 0.9, 0.3], [2.0, 1.0, 3.0, 5.0, 5.0]
    ra, rb = ranks(a), ranks(b)
    assert spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1], [2]) is None


def test_split_steps_is_even_and_covers_every_class():
    assert split_steps([4, 0, 3, 1, 2], 2) == [[4, 0, 3], [1, 2]]
    assert split_steps(list(range(10)), 5) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_masked_accuracy_predicts_among_seen_classes_only():
    data = tiny_dataset(num_classes=4, per_class=5)

    class AlwaysThree(torch.nn.Module):
        def forward(self, x):  # class 3 wins, class 1 second
            logits = torch.zeros(x.shape[0], 4)
            logits[:, 3], logits[:, 1] = 2.0, 1.0
            return logits

    idx = class_subset_indices(data, [0, 1])
    assert torch.equal(data.labels[idx].unique(), torch.tensor([0, 1])) and idx.numel() == 10
    assert masked_accuracy(AlwaysThree(), data, idx) == 0.0
    assert masked_accuracy(AlwaysThree(), data, idx, classes=[0, 1]) == 0.5


def test_memory_is_the_union_of_seen_classes():
    build = make_build_context(data=tiny_dataset(num_classes=4))
    evaluator = ContinualLearning(ContinualConfig(steps=2, class_order="sequential", epochs=0), build)
    syn = SynBatch(torch.arange(8.0).view(8, 1, 1, 1).expand(8, 1, 8, 8).contiguous(),
                   torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    assert evaluator.seen_classes(0) == [0, 1]
    assert evaluator.memory(syn, evaluator.seen_classes(0)).labels.tolist() == [0, 0, 1, 1]
    soft = SynBatch(syn.images, torch.nn.functional.one_hot(syn.labels, 4).float())
    assert len(evaluator.memory(soft, [3])) == 2


@pytest.fixture(scope="module")
def continual_run(tmp_path_factory):
    return run_recipe(tiny_recipe(eval=CONTINUAL), tmp_path_factory.mktemp("continual"))


def test_continual_run_reports_every_step_for_every_memory(continual_run):
    results = continual_run.results
    for result in [results["synset"], *results["baselines"].values()]:
        assert result["application"] == "continual"
        steps = result["steps"]
        assert [len(s["classes"]) for s in steps] == [2, 4, 6, 8, 10]
        assert sorted(steps[-1]["classes"]) == list(range(10))
        assert all(len(s["values"]) == 2 and 0 <= s["mean"] <= 100 for s in steps)
        assert result["mean"] == steps[-1]["mean"]
    # the distilled set has 2 images per class; the same-budget memories hold as many per seen class
    assert [s["memory_images"] for s in results["synset"]["steps"]] == [4, 8, 12, 16, 20]
    assert [s["memory_images"] for s in results["baselines"]["herding"]["steps"]] == [4, 8, 12, 16, 20]
    # one class order for every memory
    assert results["synset"]["class_order"] == results["baselines"]["random"]["class_order"]
    png = (continual_run.out_dir / "continual.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_continual_units_compose_to_evaluate(continual_run):
    run = continual_run.run
    evaluator = run.evaluator
    syn = run.build_ctx.expand(run.parameterization.materialize()).detach()
    whole = evaluator.evaluate(syn, seed=7)
    units = evaluator.units()
    first, second = units[::2], units[1::2]  # as two ranks would get them
    values = dict(zip(first, evaluator.evaluate_units(syn, seed=7, units=first)))
    values.update(zip(second, evaluator.evaluate_units(syn, seed=7, units=second)))
    assert evaluator.summarize(syn, [(u, values[u]) for u in units]) == whole


def test_plot_command_redraws_from_eval_json(continual_run, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    records = json.loads((continual_run.out_dir / "eval.json").read_text())
    (run_dir / "eval.json").write_text(json.dumps({"sets": records}))  # a differently nested eval.json
    assert plot_main([str(run_dir)]) == 0
    assert (run_dir / "continual.png").read_bytes().startswith(b"\x89PNG")
    (run_dir / "eval.json").write_text("[]")
    assert plot_main([str(run_dir)]) == 2


def test_nas_space_defaults_to_the_720_convnets_and_validates():
    assert len(search_space(NasProxyConfig())) == 720
    from ddcore.config import structure

    with pytest.raises(RecipeError, match="eval.norm"):
        structure(NasProxyConfig, {"norm": ["batchnorm", "fancy"]}, key="eval")
    with pytest.raises(RecipeError, match="eval.depths"):
        structure(NasProxyConfig, {"depths": [1]}, key="eval")


def test_nas_proxy_ranks_the_space_and_reuses_reference_trainings(tmp_path):
    result = run_recipe(tiny_recipe(eval=NAS), tmp_path)
    syn, base = result.results["synset"], result.results["baselines"]["random"]
    for r in (syn, base):
        assert r["metric"] == "spearman" and r["num_models"] == 4 and len(r["architectures"]) == 4
        assert r["spearman"] is None or -1 <= r["spearman"] <= 1
        proxies = [a["proxy"] for a in r["architectures"]]
        assert r["picked"]["proxy"] == max(proxies)
        assert r["reference_set"]["images"] == 200
    # the reference networks are trained once and shared by the synthetic and the random proxy
    assert [a["reference"] for a in syn["architectures"]] == [a["reference"] for a in base["architectures"]]
    assert [a["proxy"] for a in syn["architectures"]] != [a["proxy"] for a in base["architectures"]]
    evaluator = result.run.evaluator
    assert len(evaluator._reference_cache) == 4 * 2
