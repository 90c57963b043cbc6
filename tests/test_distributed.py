"""Distributed execution (ddcore.distributed): 2 gloo processes on CPU reproduce the single-process run.

One ``torch.distributed.run`` launch (tests/dist_worker.py) runs a tiny digits recipe with a separable objective
(moment matching, moments = 1) and siamese DSA in two modes: ``class_sharded`` (no per-step communication) and
``data_parallel`` (gradients all-reduced every step). Both merged synthetic sets must equal the single-process run
with the same seed; the sharded evaluation must report the single-process accuracies.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import tomli_w
from safetensors.torch import load_file

from ddcore.distributed import Distributed, choose_mode, class_shards
from ddcore.errors import RecipeError
from ddcore.testing import run_recipe, tiny_recipe

WORKER = Path(__file__).with_name("dist_worker.py")


def recipe() -> dict:
    return tiny_recipe(
        name="tiny-dist",
        # memory-mapped: both ranks map one store file (one copy per host), built once under a lock
        data={"name": "digits", "store": "mmap"},
        augment=[{"name": "dsa"}],
        objective=[{"name": "moment_matching", "moments": 1}],
        # eager: three processes compiling the same tiny net would triple the test's time for no coverage
        run={"iterations": 4, "log_every": 2, "checkpoint_every": 2, "progress": False, "compile": "off"},
        eval={"name": "train_from_scratch", "models": ["ConvNet"], "num_models": 2, "epochs": 1,
              "baselines": ["random"], "compile": "off"},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_class_blocks_cover_every_class_once():
    assert class_shards(10, 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert sorted(c for b in class_shards(100, 8) for c in b) == list(range(100))


def test_mode_follows_coupling():
    assert choose_mode(["separable", "separable"]) == "class_sharded"
    assert choose_mode(["separable", "shared"]) == "data_parallel"
    assert choose_mode(["shared", "collective"]) == "replicated"
    with pytest.raises(RecipeError, match="class_sharded needs every objective"):
        choose_mode(["shared"], "class_sharded")
    with pytest.raises(RecipeError, match="not exact"):
        choose_mode(["collective"], "data_parallel")


def test_single_process_is_inactive():
    d = Distributed()
    assert not d.active and d.is_main and d.real_classes is None


def test_two_gloo_ranks_match_single_process(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(tomli_w.dumps(recipe()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DDCORE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(WORKER), str(path), str(tmp_path / "dist"),
           "class_sharded", "data_parallel"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    maps = [json.loads((tmp_path / "dist" / f"store-rank{r}.json").read_text()) for r in (0, 1)]
    assert maps[0]["placement"] == maps[1]["placement"] == "mmap"
    assert maps[0]["file"] == maps[1]["file"] and Path(maps[0]["file"]).is_file()
    single = run_recipe(recipe(), tmp_path, out_name="single")
    assert single.run.build_ctx.train._mapping.path == Path(maps[0]["file"])
    want = load_file(str(single.out_dir / "synset.safetensors"))
    want_eval = json.loads((single.out_dir / "eval.json").read_text())[-1]
    for mode in ("class_sharded", "data_parallel"):
        out = tmp_path / "dist" / mode
        got = load_file(str(out / "synset.safetensors"))
        assert set(got) == set(want)
        # not the initial set: the runs did move the images
        assert not torch.equal(got["images"], single.run.build_ctx.train.normalize(
            single.run.build_ctx.train.images[:1]).expand_as(got["images"]))
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6, msg=f"{mode}: {key}")
        got_eval = json.loads((out / "eval.json").read_text())[-1]
        assert got_eval["synset"]["num_models"] == want_eval["synset"]["num_models"] == 2
        for a, b in zip(got_eval["synset"]["per_model"]["ConvNet"]["values"],
                        want_eval["synset"]["per_model"]["ConvNet"]["values"]):
            assert abs(a - b) <= 1.0, (mode, got_eval, want_eval)
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in metrics] == [2, 4]  # rank 0 wrote, once per log step
        want_loss = [m["loss"] for m in single.metrics()]
        assert [m["loss"] for m in metrics] == pytest.approx(want_loss, rel=1e-5)
