"""load_synset / ddcore export: the set a user gets is the one the evaluator trains on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import ddcore
from ddcore.cli import main
from ddcore.testing import run_recipe, tiny_recipe

README = Path(__file__).resolve().parents[1] / "README.md"


class RecordingEvaluator(ddcore.Evaluator):
    """Keeps every set it is asked to evaluate (the engine hands it the expanded synthetic set first)."""

    seen: list = []

    def evaluate(self, synset, *, seed):
        RecordingEvaluator.seen.append(synset.detach().to("cpu"))
        return {"metric": "accuracy", "mean": 0.0, "std": 0.0, "num_models": 1, "per_model": {}}


class RecorderPlugin:
    @ddcore.hookimpl
    def ddcore_register_evaluators(self, registry):
        registry.add("recording", RecordingEvaluator, config=ddcore.NoConfig)


@pytest.fixture(scope="module")
def idm_run(tmp_path_factory):
    """A tiny run whose set has an expansion (IDM partition, factor 2: each image becomes 4)."""
    RecordingEvaluator.seen = []
    recipe = tiny_recipe(plugins=["ddcore-idm"], augment=[{"name": "partition", "factor": 2}],
                         eval={"name": "recording"})
    result = run_recipe(recipe, tmp_path_factory.mktemp("idm"), extra_plugins=[RecorderPlugin()])
    return result, RecordingEvaluator.seen[0]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    return run_recipe(tiny_recipe(), tmp_path_factory.mktemp("plain"))


def test_load_synset_is_what_the_evaluator_trains_on(idm_run):
    result, evaluated = idm_run
    data = ddcore.load_synset(result.out_dir)
    assert data.expanded and data.normalized and data.hard_labels
    assert len(data) == 4 * len(result.synset) == len(evaluated)
    assert torch.equal(data.images, evaluated.images)
    assert torch.equal(data.labels, evaluated.labels)
    image, label = data[5]
    assert torch.equal(image, evaluated.images[5]) and int(label) == int(evaluated.labels[5])
    assert data.info.num_classes == 10 and data.info.mean == result.run.build_ctx.info.mean


def test_load_synset_raw_and_pixels(idm_run):
    result, _ = idm_run
    raw = ddcore.load_synset(result.out_dir, expand=False)
    assert torch.equal(raw.images, result.synset.images)
    pixels = ddcore.load_synset(result.out_dir, expand=False, normalized=False)
    mean = torch.tensor(raw.info.mean).view(1, -1, 1, 1)
    std = torch.tensor(raw.info.std).view(1, -1, 1, 1)
    torch.testing.assert_close(pixels.images, raw.images * std + mean)
    assert not pixels.normalized


def test_imagefolder_export_reads_back_equal(plain_run, tmp_path):
    from torchvision import datasets, transforms

    out = tmp_path / "folder"
    assert main(["export", str(plain_run.out_dir), "--format", "imagefolder", "--out", str(out)]) == 0
    data = ddcore.load_synset(plain_run.out_dir, normalized=False)
    grayscale = data.info.channels == 1
    tf = transforms.Compose([transforms.Grayscale(), transforms.ToTensor()] if grayscale else [transforms.ToTensor()])
    folder = datasets.ImageFolder(str(out), transform=tf)
    assert len(folder) == len(data)
    # files are numbered by position in the set, so sorting by name restores its order
    order = np.argsort([Path(p).name for p, _ in folder.samples])
    images = torch.stack([folder[i][0] for i in order])
    labels = torch.tensor([folder.targets[i] for i in order])
    assert torch.equal(labels, data.labels)
    expected = data.images.clamp(0, 1)
    assert (images - expected).abs().max() <= 0.5 / 255 + 1e-6
    info = json.loads((out / "dataset.json").read_text())
    assert info["class_folders"] == folder.classes and info["mean"] == list(data.info.mean)


@pytest.mark.parametrize("fmt", ["npz", "pt"])
def test_tensor_exports_hold_the_set(plain_run, tmp_path, fmt):
    out = tmp_path / fmt
    assert main(["export", str(plain_run.out_dir), "--format", fmt, "--out", str(out)]) == 0
    data = ddcore.load_synset(plain_run.out_dir)
    if fmt == "npz":
        loaded = np.load(out / "synset.npz")
        images, labels = torch.from_numpy(loaded["images"]), torch.from_numpy(loaded["labels"])
        assert list(loaded["std"]) == pytest.approx(list(data.info.std))
    else:
        loaded = torch.load(out / "synset.pt", weights_only=True)
        images, labels = loaded["images"], loaded["labels"]
        assert loaded["normalized"] is True
    assert torch.equal(images, data.images) and torch.equal(labels, data.labels)


def test_export_never_overwrites_and_needs_a_run(plain_run, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["export", str(plain_run.out_dir), "--format", "npz", "--out", str(out)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "keep" and not (out / "synset.npz").exists()
    assert main(["export", str(tmp_path), "--format", "npz", "--out", str(tmp_path / "x")]) == 2
    assert "not a finished run" in capsys.readouterr().err


def test_readme_train_your_own_model_example_runs(plain_run):
    text = README.read_text()
    block = re.search(r"<!-- train-your-own -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README lost its train-your-own-model example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 10
    assert '"runs/quickstart"' in code and "range(300)" in code
    code = code.replace('"runs/quickstart"', repr(str(plain_run.out_dir))).replace("range(300)", "range(3)")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    net, data = scope["net"], scope["data"]
    assert net(data.images[:4]).shape == (4, data.info.num_classes)
