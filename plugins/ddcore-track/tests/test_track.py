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


def test_unknown_track_key_is_a_recipe_error(tmp_path, capsys):
    with pytest.raises(RecipeError, match=r"track\.tensorbord"):
        run_recipe(tracked(tensorbord=True), tmp_path)
    path = tmp_path / "r.toml"
    path.write_text('plugins = []\n[track]\ntensorboard = true\n[[objective]]\nname = "moment_matching"\n'
                    '[data]\nname = "digits"\n')
    assert main(["recipe", "check", str(path)]) == 2
    assert "ddcore-track" in capsys.readouterr().err
    with pytest.raises(RecipeError, match="expected a table"):
        parse_recipe({**tiny_recipe(plugins=["ddcore-track"]), "track": 3})


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
