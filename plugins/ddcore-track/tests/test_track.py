"""ddcore-track writes event files that TensorBoard's own reader parses back."""

from __future__ import annotations

import pytest

from ddcore.cli import main
from ddcore.errors import RecipeError
from ddcore.recipe import parse_recipe
from ddcore.testing import run_recipe, tiny_recipe


def tracked(**track):
    recipe = tiny_recipe(plugins=["ddcore-track"], track=track)
    recipe["run"].update(iterations=4, log_every=1, eval_every=2)
    return recipe


def read_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_event_files_hold_metrics_evaluations_images_and_recipe(tmp_path):
    result = run_recipe(tracked(), tmp_path)
    acc = read_events(result.out_dir / "tensorboard")
    tags = acc.Tags()
    loss = acc.Scalars("distill/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]
    logged = {m["step"]: m["loss"] for m in result.metrics()}
    assert [e.value for e in loss] == pytest.approx([logged[s] for s in (1, 2, 3, 4)])
    assert "distill/loss/moment_matching" in tags["scalars"] and "distill/lr" in tags["scalars"]
    evals = acc.Scalars("eval/synset/mean")
    assert [e.step for e in evals] == [2, 4]
    assert evals[-1].value == pytest.approx(result.results["synset"]["mean"])
    assert [e.step for e in acc.Scalars("eval/baseline_random/mean")] == [2, 4]
    images = acc.Images("synset")
    assert [e.step for e in images] == [2, 4] and images[0].encoded_image_string.startswith(b"\x89PNG")
    text = acc.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert 'name = "moment_matching"' in text and "[track]" in text


def test_no_track_table_writes_nothing(tmp_path):
    result = run_recipe(tiny_recipe(), tmp_path)
    assert not (result.out_dir / "tensorboard").exists()


def test_images_can_be_switched_off_and_the_folder_moved(tmp_path):
    result = run_recipe(tracked(images=False, dir="tb"), tmp_path)
    acc = read_events(result.out_dir / "tb")
    assert "synset" not in acc.Tags()["images"] and acc.Scalars("eval/synset/mean")


def test_track_table_is_checked_by_recipe_check(tmp_path, capsys):
    with pytest.raises(RecipeError, match=r"track\.tensorbord"):
        run_recipe(tracked(tensorbord=True), tmp_path)
    path = tmp_path / "r.toml"
    base = '[[objective]]\nname = "moment_matching"\n[data]\nname = "digits"\n'
    for table, expected in (('[track]\ntensorbord = true\n', "track.tensorbord: unknown key; allowed keys: dir, images"),
                            ('[track]\nimages_per_class = 0\n', "track.images_per_class: expected a positive"),
                            ('[trak]\ntensorboard = true\n', "tables registered by plugins: track")):
        path.write_text(table + base)
        assert main(["recipe", "check", str(path)]) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, err
    path.write_text('[track]\nmlflow = true\n' + base)
    assert main(["recipe", "check", str(path)]) == 0


def test_mlflow_missing_is_a_one_line_recipe_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(RecipeError, match=r"track\.mlflow: MLflow is not installed; pip install 'ddcore-track\[mlflow\]'"):
        run_recipe(tracked(mlflow=True), tmp_path)


def mlflow_run(out_dir):
    import json

    from mlflow.tracking import MlflowClient

    state = json.loads((out_dir / "mlflow_run.json").read_text())
    client = MlflowClient(tracking_uri=state["uri"])
    return client, client.get_run(state["run_id"])


def test_mlflow_offline_store_holds_metrics_evaluations_images_params_and_recipe(tmp_path):
    result = run_recipe(tracked(tensorboard=False, mlflow=True), tmp_path)
    assert not (result.out_dir / "tensorboard").exists() and (result.out_dir / "mlruns").is_dir()
    client, run = mlflow_run(result.out_dir)
    assert run.info.status == "FINISHED" and run.info.run_name == result.out_dir.name
    assert client.get_experiment(run.info.experiment_id).name == "tiny"  # the recipe's name
    loss = client.get_metric_history(run.info.run_id, "distill.loss")
    logged = {m["step"]: m["loss"] for m in result.metrics()}
    history = sorted((m.step, m.value) for m in loss)
    assert [step for step, _ in history] == [1, 2, 3, 4]
    assert [value for _, value in history] == pytest.approx([logged[s] for s in (1, 2, 3, 4)])
    evals = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval.synset.mean"))
    assert "distill.loss.moment_matching" in run.data.metrics
    assert [s for s, _ in evals] == [2, 4] and evals[-1][1] == pytest.approx(result.results["synset"]["mean"])
    assert run.data.params["synset.ipc"] == "2" and run.data.params["objective"].startswith("[")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"recipe.toml", "synset"} <= artifacts
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "synset")]
    assert grids == ["synset/step_0000002.png", "synset/step_0000004.png"]
    recipe = client.download_artifacts(run.info.run_id, "recipe.toml", str(tmp_path))
    assert "[track]" in open(recipe).read()


def test_mlflow_resume_continues_the_same_run(tmp_path):
    recipe = tracked(tensorboard=False, mlflow=True)
    first = run_recipe(recipe, tmp_path)
    _, before = mlflow_run(first.out_dir)
    recipe["run"]["iterations"] = 6
    again = run_recipe(recipe, tmp_path, resume=True)
    client, after = mlflow_run(again.out_dir)
    assert after.info.run_id == before.info.run_id and after.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(after.info.run_id, "distill.loss"))
    assert steps == [1, 2, 3, 4, 5, 6]


def test_the_guide_shows_this_plugin_verbatim():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    guide = (root / "docs" / "writing-plugins.md").read_text()
    section = guide.split("### Worked example: `plugins/ddcore-track`", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    plugin = (root / "plugins" / "ddcore-track" / "src" / "ddcore_track" / "plugin.py").read_text()
    assert len(blocks) == 4
    for code in blocks:
        assert code in plugin, f"docs/writing-plugins.md shows code that is not ddcore_track/plugin.py's:\n{code}"
