"""The ssl_transfer evaluator: every protocol runs, foreign targets are conformed, results have the engine's shape;
the baselines of krr_pixels keep the budget."""

from __future__ import annotations

import pytest
import torch

from ddcore.config import ComponentRef
from ddcore.errors import UserError
from ddcore.types import SynBatch

from ddcore_krr.teacher import current_teacher
from ddcore_krr.transfer import SSLTransfer, SSLTransferConfig, TransferTarget, batch_schedule


def test_all_protocols_run_on_source_and_a_gray_target(krr_build):
    build, param, _, _ = krr_build
    digits = ComponentRef("digits", {})  # 8x8 gray, 10 classes: replicated to the source's 3 channels
    config = SSLTransferConfig(
        models=[ComponentRef("backbone"), ComponentRef("ConvNetKRR", {"channels": [4]})], num_runs=2,
        pretrain_epochs=2, pretrain_batch_size=4,
        targets=[
            TransferTarget(name="source", protocol="linear", iterations=5),
            TransferTarget(name="digits", protocol="finetune", data=digits, iterations=3, train_limit=50,
                           test_limit=40),
            TransferTarget(name="digits-kd", protocol="kd", data=digits, iterations=3, kd_teacher_iterations=2,
                           kd_teacher="ConvNetW32", train_limit=50, test_limit=40),
        ],
    )
    evaluator = SSLTransfer(config, build)
    with torch.no_grad():
        syn = param.materialize().detach()
    result = evaluator.evaluate(syn, seed=0)
    assert set(result["per_model"]) == {f"{m}/{t}" for m in ("ConvNetKRR", "ConvNetKRR#1")
                                        for t in ("source", "digits", "digits-kd")}
    for entry in result["per_model"].values():
        assert all(0.0 <= v <= 100.0 for v in entry["values"])
    assert result["num_models"] == 4  # 2 models x 2 runs on the headline (first) target
    train, test = evaluator.splits(1)
    assert len(train) == 50 and len(test) == 40 and train.store.info.channels == 3
    # deterministic for a fixed seed
    again = evaluator.evaluate(syn, seed=0)
    assert again["per_model"]["ConvNetKRR/source"]["values"] == result["per_model"]["ConvNetKRR/source"]["values"]


def test_evaluator_refuses_sets_without_targets_or_labels(krr_build):
    build, _, _, _ = krr_build
    evaluator = SSLTransfer(SSLTransferConfig(pretrain_epochs=1), build)
    with pytest.raises(UserError, match="neither target representations"):
        evaluator.evaluate(SynBatch(images=torch.zeros(2, 3, 8, 8), labels=None), seed=0)
    # soft labels are not class labels either
    with pytest.raises(UserError, match="nor class labels"):
        evaluator.evaluate(SynBatch(images=torch.zeros(2, 3, 8, 8), labels=torch.zeros(2, 3)), seed=0)


def test_baselines_keep_the_pair_budget_and_use_teacher_targets(krr_build):
    build, param, _, _ = krr_build
    teacher = current_teacher(build)
    budget = round(param.storage_floats() / build.info.floats_per_image)
    for kind in ("random", "kmeans"):
        base = param.baseline(kind, budget, build.generator("baseline", kind))
        assert len(base) == len(param.images) and base.labels is None
        torch.testing.assert_close(base.targets, teacher.features(base.images))
        # real training images (distinct)
        flat = build.train.take(torch.arange(len(build.train))).images.flatten(1)
        hits = (base.images.flatten(1)[:, None, :] == flat[None]).all(-1)
        assert bool(hits.any(1).all()) and hits.float().argmax(1).unique().numel() == len(base)


def test_batch_schedule_covers_every_row_once_per_epoch():
    g = torch.Generator().manual_seed(0)
    sched = batch_schedule(10, 5, 4, g)
    assert sched.shape == (4, 5)
    assert sorted(sched[:2].flatten().tolist()) == list(range(10))
