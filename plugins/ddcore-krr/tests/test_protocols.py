"""The official evaluation protocols as switches: labelled Table 1 baselines (CE + DSA), test_kd.py's KD (AdamW,
epochs, DSA, train-mode teacher and scoring), kd_sgd, the cross-architecture targets, the LinearLR floor."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddcore.builtin.optimizers import OptimizerConfig, schedule_factor
from ddcore.config import ComponentRef
from ddcore.types import SynBatch

from ddcore_krr.teacher import current_teacher
from ddcore_krr.transfer import SSLTransfer, SSLTransferConfig, TransferTarget


def _budget(build, param):
    return round(param.storage_floats() / build.info.floats_per_image)


def test_labelled_baselines_are_class_balanced_labelled_real_images(krr_build):
    build, param, _, _ = krr_build
    teacher = current_teacher(build)
    train = build.train.take(torch.arange(len(build.train)))
    picks = {}
    for kind in ("random_labelled", "kmeans_labelled"):
        base = param.baseline(kind, _budget(build, param), build.generator("baseline", kind))
        assert base.targets is None and base.labels is not None and len(base) == len(param.images)  # m images
        assert torch.bincount(base.labels, minlength=3).tolist() == [2, 2, 2]  # m = 6 over 3 classes
        hits = (base.images.flatten(1)[:, None, :] == train.images.flatten(1)[None]).all(-1)
        rows = hits.float().argmax(1)
        assert bool(hits.any(1).all()) and torch.equal(train.labels[rows], base.labels)  # real images, true labels
        picks[kind] = rows
    # kmeans_labelled: per class, the member nearest each of its cluster centres in teacher space
    feats = teacher.table(build.train)
    for c in range(3):
        rows = picks["kmeans_labelled"][train.labels[picks["kmeans_labelled"]] == c]
        assert rows.numel() == 2 and rows.unique().numel() == 2
    assert not torch.equal(picks["random_labelled"], picks["kmeans_labelled"])
    assert feats.shape[0] == len(build.train)


def test_labelled_sets_are_pretrained_with_cross_entropy_and_dsa(krr_build):
    build, param, _, _ = krr_build
    base = param.baseline("random_labelled", _budget(build, param), build.generator("baseline", "x"))
    target = TransferTarget(name="source", protocol="linear", iterations=3)
    weights = {}
    for augment in ("dsa", "none"):
        ev = SSLTransfer(SSLTransferConfig(num_runs=1, labelled_pretrain_epochs=3, labelled_pretrain_batch_size=4,
                                           labelled_pretrain_augment=augment, targets=[target]), build)
        result = ev.evaluate(base, seed=0)
        assert result["pretraining"] == "cross-entropy + DSA on labels" and "ConvNetKRR" not in result["teacher_mse"]
        net = build.make_backbone(None, num_classes=build.info.num_classes, seed_key=("t", 0))
        loss = ev.pretrain_labelled(net, base, build.generator("t"))
        assert loss > 0 and net.classifier.out_features == build.info.num_classes
        weights[augment] = [p.detach().clone() for p in net.parameters()]
    # DSA changes what the network sees (same seeds otherwise)
    assert any(not torch.equal(a, b) for a, b in zip(weights["dsa"], weights["none"]))
    # pretrained with cross-entropy: the loss falls on the labels
    ev = SSLTransfer(SSLTransferConfig(labelled_pretrain_epochs=60, labelled_pretrain_augment="none",
                                       labelled_pretrain_batch_size=6), build)
    net = build.make_backbone(None, num_classes=build.info.num_classes, seed_key=("t", 1))
    with torch.no_grad():
        before = float(nn.functional.cross_entropy(net.eval()(base.images), base.labels))
    ev.pretrain_labelled(net, base, build.generator("t", 1))
    with torch.no_grad():
        after = float(nn.functional.cross_entropy(net.eval()(base.images), base.labels))
    assert after < 0.5 * before


def test_kd_defaults_are_test_kd_and_kd_sgd_keeps_the_finetune_protocol(krr_build):
    build, _, _, _ = krr_build
    ev = SSLTransfer(SSLTransferConfig(), build)
    kd = ev._hparams(TransferTarget(protocol="kd"), 1000)
    assert (kd.optimizer, kd.lr, kd.weight_decay, kd.epochs, kd.batch, kd.augment) == ("adamw", 1e-4, 0.0, 1000, 512,
                                                                                        "dsa")
    assert kd.iterations == 1000 * 2 and (kd.teacher_mode, kd.test_mode) == ("train", "train")
    old = ev._hparams(TransferTarget(protocol="kd_sgd"), 1000)
    assert (old.optimizer, old.lr, old.weight_decay, old.iterations, old.batch, old.augment) == (
        "sgd", 0.01, 5e-4, 10000, 256, "crop_flip")
    assert (old.teacher_mode, old.test_mode) == ("eval", "eval")
    # every field is one --set away
    custom = ev._hparams(TransferTarget(protocol="kd", optimizer="sgd", epochs=0, iterations=7, augment="crop_flip",
                                        teacher_mode="eval", test_mode="eval"), 1000)
    assert (custom.optimizer, custom.iterations, custom.augment, custom.teacher_mode, custom.test_mode) == (
        "sgd", 7, "crop_flip", "eval", "eval")
    assert isinstance(SSLTransfer._optimizer([nn.Parameter(torch.zeros(1))], kd), torch.optim.AdamW)
    assert isinstance(SSLTransfer._optimizer([nn.Parameter(torch.zeros(1))], old), torch.optim.SGD)


class _Recorder(nn.Module):
    """Records the inputs and the train/eval mode of every forward; logits from a fixed linear map."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.seen: list[tuple[bool, torch.Tensor]] = []
        self.lin = nn.Linear(dim, classes)

    def forward(self, x):
        self.seen.append((self.training, x.detach().clone()))
        return self.lin(x.flatten(1))


def test_epoch_plan_and_augmentations_reach_the_batches(krr_build):
    build, _, _, _ = krr_build
    ev = SSLTransfer(SSLTransferConfig(), build)
    images = torch.randn(5, 3, 8, 8)
    for augment in ("none", "dsa", "crop_flip"):
        hp = ev._hparams(TransferTarget(protocol="kd", epochs=3, batch_size=2, augment=augment), 5)
        model = _Recorder(3 * 8 * 8, 2)
        rows_seen = []

        def images_of(rows):
            rows_seen.append(rows.clone())
            return images[rows]

        ev._train_classifier(model, hp, images_of, lambda rows, x: torch.zeros(len(rows), dtype=torch.int64), 5,
                             torch.Generator().manual_seed(0), torch.zeros(3))
        assert hp.iterations == 9 and len(rows_seen) == 9  # 3 epochs x ceil(5 / 2) batches, last one smaller
        for ep in range(3):  # every row once per epoch
            assert sorted(torch.cat(rows_seen[3 * ep:3 * ep + 3]).tolist()) == list(range(5))
        changed = [not torch.equal(x, images[r]) for (_, x), r in zip(model.seen, rows_seen)]
        assert any(changed) == (augment != "none")


def test_kd_teacher_and_scoring_modes_follow_the_options(krr_build, monkeypatch):
    build, param, _, _ = krr_build
    syn = param.materialize().detach()
    digits = ComponentRef("digits", {})
    for mode in ("train", "eval"):
        target = TransferTarget(name="kd", protocol="kd", data=digits, epochs=1, kd_teacher_iterations=1,
                                kd_teacher="ConvNetKRR", train_limit=30, test_limit=20, teacher_mode=mode,
                                test_mode=mode)
        ev = SSLTransfer(SSLTransferConfig(num_runs=1, pretrain_epochs=1, targets=[target]), build)
        cached = ev.kd_teacher(0)
        stats_before = {k: v.clone() for k, v in cached.state_dict().items()}
        modes: list[bool] = []
        cached.register_forward_hook(lambda m, i, o: modes.append(m.training))  # deep copies keep the hook
        scored: list[str] = []
        original = SSLTransfer.accuracy
        monkeypatch.setattr(ev, "accuracy", lambda model, split, m="eval": scored.append(m) or original(ev, model,
                                                                                                         split, m))
        result = ev.evaluate(syn, seed=0)
        assert 0.0 <= result["mean"] <= 100.0
        assert modes and set(modes) == {mode == "train"}
        assert scored == [mode]
        # the evaluator's T_ψ is untouched (train mode updates the BN statistics of a per-run copy only)
        assert all(torch.equal(v, stats_before[k]) for k, v in cached.state_dict().items())


@pytest.mark.parametrize("name,dim", [("ResNet10KRR", 512), ("MobileNetV2KRR", 1280)])
@pytest.mark.parametrize("size", [32, 64])
def test_official_cross_architecture_targets_fit_32_and_64_px(krr_build, name, dim, size):
    import attrs

    build, _, _, _ = krr_build
    build.info = attrs.evolve(build.info, height=size, width=size)
    net = build.make_backbone(ComponentRef(name, {}), num_classes=7, seed_key=("arch", name))
    out = net.forward_all(torch.randn(2, 3, size, size))
    assert out.embedding.shape == (2, dim) and out.logits.shape == (2, 7)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and net.has_running_stats and not any(isinstance(m, nn.GroupNorm) for m in net.modules())
    # the small-image plans keep spatial resolution: total stride 8 (ResNet10: 8 from 34 px with the padding-2 stem)
    assert out.feature_map.shape[-1] == (size // 8 if name.startswith("Mobile") else (size + 2) // 8 + 1)


def test_linear_schedule_floor_matches_linearlr_end_factor():
    plain = OptimizerConfig(schedule="linear")
    floor = OptimizerConfig(schedule="linear", end_factor=1e-3)
    assert schedule_factor(plain, 1000, 1000) == 0.0
    assert schedule_factor(floor, 1000, 1000) == pytest.approx(1e-3)
    sched = torch.optim.lr_scheduler.LinearLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0),
                                              start_factor=1.0, end_factor=1e-3, total_iters=1000)
    for step in range(1000):
        assert schedule_factor(floor, step, 1000) == pytest.approx(sched.get_last_lr()[0], rel=1e-6)
        sched.optimizer.step()
        sched.step()
