"""recipes/mix_idm_dcc_iid.toml — terms of three plugin packages in one method — runs end to end at tiny scale."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ddcore.testing import run_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "mix_idm_dcc_iid.toml"
TINY = [
    'data={name = "digits"}',  # offline: scikit-learn's bundled digits instead of CIFAR-10
    "real.batch=8", "synset.ipc=2", "backbone.width=16", "backbone.depth=2",
    "sampler.updates_per_net=2", "sampler.train_epochs=1", "sampler.batch_train=16",
    # a 1-step warm-up so the run takes both the class-wise (warm-up) and the class-collective branch
    "objective[0].warmup_outer=1", "objective[0].warmup_inner=1",
    "run.iterations=3", "run.log_every=1", "run.checkpoint_every=0",
    "eval.num_models=1", "eval.epochs=1",
]


def test_mix_recipe_runs_end_to_end(tmp_path):
    result = run_recipe(RECIPE, tmp_path, TINY)
    metrics = result.metrics()
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert math.isfinite(m["loss/gradient_match"]) and math.isfinite(m["loss/covariance_matching"])
    assert [m["gradient_match/collective"] for m in metrics] == [0.0, 1.0, 1.0]
    # IDM's partition expansion: 2 stored images per class decode into 8 training images
    assert result.synset.images.shape[0] == 2 * 10
    assert result.run.build_ctx.expand(result.synset).images.shape[0] == 8 * 10
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    dists = {p["distribution"] for p in manifest["plugins"]}
    assert {"ddcore-idm", "ddcore-dcc", "ddcore-iid"} <= dists
    assert result.results is not None and "random" in result.results["baselines"]
    assert math.isfinite(result.results["synset"]["mean"])


def test_idm_queue_sampler_with_dcc_collective_term_and_iid_covariance(tmp_path):
    """The issue's example mix: IDM's model queue hands its (unfrozen) networks to DCC's class-collective gradient
    matching and IID's covariance term; the queue keeps training on real data between steps."""
    overrides = [o for o in TINY if not o.startswith("sampler.")] + [
        'sampler={name = "model_queue", frozen = false, initial_nets = 2, net_generate_interval = 2, '
        'fetch_net_num = 1, model_train_steps = 1, trained_bs = 16}',
        "objective[0].warmup_outer=0",  # collective from the first step (code boundary: 0 disables the warm-up)
    ]
    result = run_recipe(RECIPE, tmp_path, overrides)
    metrics = result.metrics()
    assert [m["gradient_match/collective"] for m in metrics] == [1.0, 1.0, 1.0]
    assert all(math.isfinite(m["loss/gradient_match"]) and m["loss/gradient_match"] > 0 for m in metrics)
    queue = result.run.sampler
    assert len(queue.queue) == 4  # 2 initial + pushes at steps 0 and 2
    assert all(p.requires_grad for m in queue.queue for p in m.net.parameters())  # frozen = false
    assert sum(int(m.seen) for m in queue.queue) == 3 * 16  # one 16-image SGD step of one net per step
