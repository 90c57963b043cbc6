"""Tests of the evaluation protocol (train from scratch), the vectorised ensemble and the baseline sets.

Everything runs on tiny fake data (4 classes of 16x16 RGB images built around one random prototype per class,
so the classes are perfectly separable) and a narrow ConvNet, on the CPU.
"""

from __future__ import annotations

import shutil
import time
import types

import pytest
import torch

from ddcore.baselines import BASELINE_KINDS, embed_split, herding_select, per_class_budget, select
from ddcore.config import ComponentRef
from ddcore.context import BuildContext
from ddcore.data.store import ClassIndexedData
from ddcore.errors import RecipeError
from ddcore.evaluation._concurrent import run_concurrently, split_threads
from ddcore.evaluation.ensemble import can_vectorize, ensemble_accuracy, train_ensemble
from ddcore.evaluation.train import (
    balanced_subset_indices,
    classification_loss,
    epoch_learning_rates,
    evaluate_accuracy,
    train_classifier,
)
from ddcore.hotpath import HotPath, can_compile
from ddcore.plugins import PluginHost
from ddcore.types import DatasetInfo, SynBatch

NUM_CLASSES = 4
ARCH = "ConvNetW32"  # DC ConvNet-3 with 32 channels: instance norm, no running statistics
INFO = DatasetInfo("fake", NUM_CLASSES, 3, 16, 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def fake_split(per_class, seed: int, noise: int = 30) -> ClassIndexedData:
    """Class prototypes (fixed) plus per-image uniform noise; ``per_class`` int or list of counts."""
    counts = [per_class] * NUM_CLASSES if isinstance(per_class, int) else list(per_class)
    labels = torch.repeat_interleave(torch.arange(NUM_CLASSES), torch.tensor(counts))
    protos = torch.randint(40, 216, (NUM_CLASSES, *INFO.image_shape), generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)
    jitter = torch.randint(-noise, noise + 1, (labels.numel(), *INFO.image_shape), generator=g)
    perm = torch.randperm(labels.numel(), generator=g)  # the store sorts by class itself
    images = (protos[labels] + jitter).clamp(0, 255).to(torch.uint8)
    return ClassIndexedData(images[perm], labels[perm], INFO)


@pytest.fixture(scope="module")
def host():
    return PluginHost(autoload=False)


def make_build(host, *, train=None, test=None, augment: bool = True, seed: int = 0) -> BuildContext:
    train = train if train is not None else fake_split(12, seed=1)
    test = test if test is not None else fake_split(10, seed=2)
    build = BuildContext(
        recipe=types.SimpleNamespace(backbone=ComponentRef(ARCH)), registry=host.registry, info=INFO,
        device=torch.device("cpu"), seed=seed, train=train, test_loader=lambda: test, cache_dir="unused",
    )
    if augment:
        build.augmentations = [build.make_component("augmentation", "dsa")]
    return build


def evaluator(build, **options):
    return build.make_component("evaluator", ComponentRef("train_from_scratch", options), key="eval")


def real_synset(build, per_class: int = 2) -> SynBatch:
    return select("random", build, per_class * NUM_CLASSES, build.generator("syn"))


def params_of(net):
    return [p.detach().clone() for p in net.parameters()]


# -- schedule ------------------------------------------------------------------------------------------


def test_lr_schedule_decays_after_epoch_half_plus_one():
    rates = epoch_learning_rates(1000, 0.01)
    assert len(rates) == 1001  # range(Epoch + 1)
    assert rates[:502] == [0.01] * 502  # epochs 0..501 (decay happens after epoch 501 is trained)
    assert rates[502:] == pytest.approx([0.001] * 499)
    assert epoch_learning_rates(4, 0.1)[:4] == [0.1] * 4 and epoch_learning_rates(4, 0.1)[4] == pytest.approx(0.01)
    assert epoch_learning_rates(4, 0.1, decay_at_half=False) == [0.1] * 5
    assert epoch_learning_rates(0, 0.1) == [0.1]


def test_optimizer_recreated_with_fresh_momentum_at_decay(host):
    build = make_build(host, augment=False)
    syn = real_synset(build)
    net = build.make_backbone(ARCH, seed_key="sched")
    seen = []

    def record(ep, opt):
        has_momentum = any("momentum_buffer" in s and s["momentum_buffer"] is not None for s in opt.state.values())
        seen.append((ep, id(opt), opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"], has_momentum))

    train_classifier(net, syn.images, syn.labels, epochs=4, lr=0.1, batch_size=4,
                     generator=torch.Generator().manual_seed(0), on_epoch_start=record)
    assert [s[2] for s in seen] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.01])
    assert all(s[3] == 0.9 for s in seen)
    assert [s[4] for s in seen] == [False, True, True, True, False]  # momentum reset at the decay
    assert len({s[1] for s in seen[:4]}) == 1 and seen[4][1] != seen[0][1]


# -- training ------------------------------------------------------------------------------------------


def test_training_on_separable_set_reaches_high_accuracy(host):
    build = make_build(host, augment=False)
    net = build.make_backbone(ARCH, seed_key="sep")
    syn = real_synset(build, per_class=5)
    assert evaluate_accuracy(net, build.test) < 0.9  # untrained: not already solved
    train_classifier(net, syn.images, syn.labels, epochs=12, batch_size=10, generator=torch.Generator().manual_seed(0))
    assert evaluate_accuracy(net, build.test) >= 0.95
    assert evaluate_accuracy(net, build.test, batch_size=7, limit=8) >= 0.95  # subset path


def test_hard_and_soft_labels_train_identically(host):
    build = make_build(host, augment=False)
    syn = real_synset(build)
    soft = torch.nn.functional.one_hot(syn.labels, NUM_CLASSES).float()
    trained = []
    for labels, loss in ((syn.labels, "ce"), (soft, "soft_ce"), (soft, "ce")):
        net = build.make_backbone(ARCH, seed_key="labels")
        train_classifier(net, syn.images, labels, epochs=3, batch_size=4, loss=loss,
                         generator=torch.Generator().manual_seed(5))
        trained.append(params_of(net))
    for other in trained[1:]:
        for a, b in zip(trained[0], other):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_classification_loss_kinds():
    logits = torch.randn(2, 5, NUM_CLASSES)
    hard = torch.randint(0, NUM_CLASSES, (2, 5))
    soft = torch.softmax(torch.randn(2, 5, NUM_CLASSES), -1)
    ce = classification_loss(logits, hard, "ce")
    assert ce.shape == (2,)
    torch.testing.assert_close(ce[1], torch.nn.functional.cross_entropy(logits[1], hard[1]))
    torch.testing.assert_close(classification_loss(logits, soft, "soft_ce")[0],
                               torch.nn.functional.cross_entropy(logits[0], soft[0]))
    onehot = torch.nn.functional.one_hot(hard, NUM_CLASSES).float()
    torch.testing.assert_close(classification_loss(logits, hard, "mse")[0],
                               torch.nn.functional.mse_loss(logits[0], onehot[0]))
    with pytest.raises(ValueError, match="soft labels"):
        classification_loss(logits, hard, "soft_ce")
    with pytest.raises(ValueError, match="unknown loss"):
        classification_loss(logits, hard, "hinge")


def test_mse_training_learns(host):
    build = make_build(host, augment=False)
    net = build.make_backbone(ARCH, seed_key="mse")
    syn = real_synset(build, per_class=5)
    train_classifier(net, syn.images, syn.labels, epochs=15, batch_size=10, loss="mse", lr=0.05,
                     generator=torch.Generator().manual_seed(0))
    assert evaluate_accuracy(net, build.test) >= 0.9


def test_training_is_deterministic_by_seed(host):
    build = make_build(host)
    syn = real_synset(build)

    def run(seed_key, gen_seed):
        net = build.make_backbone(ARCH, seed_key=seed_key)
        g = build.generator("t", gen_seed)
        train_classifier(net, syn.images, syn.labels, epochs=2, batch_size=4, generator=g,
                         augment=lambda x: build.augment_random(x, g))
        return params_of(net)

    a, b, c = run(0, 0), run(0, 0), run(0, 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))  # another shuffling/augmentation stream
    ev = evaluator(build, models=[ARCH], num_models=2, epochs=2)
    assert ev.evaluate(syn, seed=3) == ev.evaluate(syn, seed=3)


# -- vectorised ensemble -------------------------------------------------------------------------------


def test_ensemble_members_equal_sequential_training(host):
    build = make_build(host)  # with DSA: every member has its own augmentation draws
    syn = real_synset(build, per_class=3)  # 12 images, batches of 5: a partial last batch
    kwargs = dict(epochs=4, lr=0.05, batch_size=5)

    def nets_and_streams():
        nets = [build.make_backbone(ARCH, seed_key=("ens", i)) for i in range(3)]
        gens = [build.generator("ens", i) for i in range(3)]
        return nets, gens, [(lambda x, g=g: build.augment_random(x, g)) for g in gens]

    seq_nets, gens, augs = nets_and_streams()
    assert can_vectorize(seq_nets)
    inits = [params_of(n) for n in seq_nets]
    seq_epochs, ens_epochs = [], []  # the progress callbacks: after every one of the epochs + 1 epochs
    for net, g, aug in zip(seq_nets, gens, augs):
        train_classifier(net, syn.images, syn.labels, generator=g, augment=aug, on_epoch_end=seq_epochs.append,
                         **kwargs)
    assert seq_epochs == list(range(5)) * 3
    ens_nets, gens, augs = nets_and_streams()
    assert all(torch.equal(a, b) for i, n in enumerate(ens_nets) for a, b in zip(inits[i], params_of(n)))
    ens = train_ensemble(ens_nets, syn.images, syn.labels, generators=gens, augments=augs,
                         on_epoch_end=ens_epochs.append, **kwargs)
    assert ens_epochs == list(range(5))
    for seq, vec, init in zip(seq_nets, ens_nets, inits):
        moved = max(float((a - b).abs().max()) for a, b in zip(params_of(seq), init))
        assert moved > 1e-3  # the nets did train
        for a, b in zip(params_of(seq), params_of(vec)):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    seq_acc = torch.tensor([evaluate_accuracy(n, build.test) for n in seq_nets], dtype=torch.float64)
    torch.testing.assert_close(ensemble_accuracy(ens, build.test), seq_acc)


def test_evaluator_vectorised_equals_sequential(host):
    build = make_build(host)
    syn = real_synset(build)
    vec = evaluator(build, models=[ARCH], num_models=3, epochs=3, batch_size=4, parallel="vmap")
    seq = evaluator(build, models=[ARCH], num_models=3, epochs=3, batch_size=4, parallel="off")
    chunked = evaluator(build, models=[ARCH], num_models=3, epochs=3, batch_size=4, max_parallel=2, parallel="vmap")
    threads = evaluator(build, models=[ARCH], num_models=3, epochs=3, batch_size=4, parallel="threads")
    a, b, c, d = (ev.evaluate(syn, seed=7) for ev in (vec, seq, chunked, threads))
    one_image = 100.0 / len(build.test) + 1e-9
    for other in (b, c, d):
        assert other["per_model"][ARCH]["values"] == pytest.approx(a["per_model"][ARCH]["values"], abs=one_image)


def test_compiled_members_equal_eager_sequential(host, monkeypatch):
    """compile (the CPU default): the same networks as eager sequential training, up to kernel rounding."""
    build = make_build(host)
    syn = real_synset(build)
    compiled = evaluator(build, models=[ARCH], num_models=2, epochs=3, batch_size=4)
    eager = evaluator(build, models=[ARCH], num_models=2, epochs=3, batch_size=4, compile="off", parallel="off")
    assert compiled.hot_path == HotPath(channels_last=True, compile=True, strict=False, scope="eval")
    assert compiled._parallel == eager._parallel == "off" and not eager.hot_path.compile
    a, b = compiled.evaluate(syn, seed=3), eager.evaluate(syn, seed=3)
    one_image = 100.0 / len(build.test) + 1e-9
    assert a["per_model"][ARCH]["values"] == pytest.approx(b["per_model"][ARCH]["values"], abs=one_image)
    # 'auto' yields to an explicit parallel mode, and to a machine without a C++ compiler
    assert not evaluator(build, parallel="threads").hot_path.compile
    monkeypatch.setattr("ddcore.hotpath.can_compile", lambda device: False)
    no_cxx = evaluator(build)
    assert not no_cxx.hot_path.compile and no_cxx._parallel == "threads"
    with pytest.raises(RecipeError, match=r"eval\.compile: 'on' trains the networks one after another.*'vmap'"):
        evaluator(build, compile="on", parallel="vmap")


def test_can_compile_needs_a_cxx_compiler(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    assert can_compile(torch.device("cpu")) == any(shutil.which(n) for n in ("g++", "c++", "clang++"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert not can_compile(torch.device("cpu"))
    assert not can_compile(torch.device("meta"))


# -- concurrent (threaded) training on CPU ------------------------------------------------------------


def test_split_threads_shares_threads_between_workers():
    assert split_threads(10, 2) == (2, 1)
    assert split_threads(5, 16) == (5, 3)
    assert split_threads(3, 8, max_workers=2) == (2, 4)
    assert split_threads(1, 4) == (1, 4)
    with pytest.raises(ValueError, match="jobs >= 1"):
        split_threads(0, 2)


def test_concurrent_members_are_bit_identical_to_single_threaded_sequential(host):
    """Each worker runs on one intra-op thread, so every member's arithmetic is sequential training's at 1 thread,
    whatever the interleaving; the caller's thread count is restored afterwards."""
    build = make_build(host)  # DSA: every member draws its own augmentations
    syn = real_synset(build, per_class=3)
    kwargs = dict(epochs=3, lr=0.05, batch_size=5)

    def members():
        nets = [build.make_backbone(ARCH, seed_key=("thr", i)) for i in range(4)]
        gens = [build.generator("thr", i) for i in range(4)]
        return nets, gens

    def job(net, g):
        return lambda: params_of(train_classifier(net, syn.images, syn.labels, generator=g,
                                                  augment=lambda x: build.augment_random(x, g), **kwargs))

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sequential = [job(n, g)() for n, g in zip(*members())]
    finally:
        torch.set_num_threads(before)
    torch.set_num_threads(3)
    try:
        concurrent = run_concurrently([job(n, g) for n, g in zip(*members())], workers=3, threads_per_worker=1)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert len(concurrent) == 4
    for seq, conc in zip(sequential, concurrent):
        assert all(torch.equal(a, b) for a, b in zip(seq, conc))
    assert not all(torch.equal(a, b) for a, b in zip(concurrent[0], concurrent[1]))  # distinct members


def test_concurrent_failure_is_raised_and_pending_jobs_cancelled():
    started = []

    def job(i):
        def run():
            started.append(i)
            if i == 0:
                raise RuntimeError("member 0 diverged")
            time.sleep(0.05)  # slow enough that the caller cancels the queue long before it drains
            return i
        return run

    with pytest.raises(RuntimeError, match="member 0 diverged"):
        run_concurrently([job(i) for i in range(40)], workers=2)
    assert 0 in started and len(started) < 20  # the jobs queued behind the failure were cancelled, not run
    assert run_concurrently([job(5), job(6)], workers=1) == [5, 6]


def test_batchnorm_nets_train_with_threads(host):
    build = make_build(host, augment=False)
    syn = real_synset(build)
    threads = evaluator(build, models=["ConvNetBN"], num_models=2, epochs=2, parallel="threads").evaluate(syn, seed=0)
    seq = evaluator(build, models=["ConvNetBN"], num_models=2, epochs=2, parallel="off").evaluate(syn, seed=0)
    one_image = 100.0 / len(build.test) + 1e-9
    assert threads["per_model"]["ConvNetBN"]["values"] == pytest.approx(seq["per_model"]["ConvNetBN"]["values"],
                                                                        abs=one_image)


def test_batchnorm_nets_fall_back_to_sequential(host):
    build = make_build(host, augment=False)
    nets = [build.make_backbone("ConvNetBN", seed_key=i) for i in range(2)]
    assert not can_vectorize(nets)
    assert not can_vectorize(nets[:1])
    res = evaluator(build, models=["ConvNetBN"], num_models=2, epochs=1, parallel="vmap").evaluate(
        real_synset(build), seed=0)
    assert res["num_models"] == 2 and len(res["per_model"]["ConvNetBN"]["values"]) == 2


# -- evaluator -----------------------------------------------------------------------------------------


def test_evaluator_result_layout_and_percent(host):
    build = make_build(host)
    syn = real_synset(build, per_class=3)
    res = evaluator(build, models=[ARCH, "ConvNetD1"], num_models=2, epochs=15, batch_size=8,
                    test_limit=9).evaluate(syn, seed=0)
    assert res["metric"] == "accuracy" and res["num_models"] == 4
    assert set(res["per_model"]) == {ARCH, "ConvNetD1"}
    values = [v for arch in res["per_model"].values() for v in arch["values"]]
    assert all(0.0 <= v <= 100.0 for v in values)
    assert all(v * 9 / 100 == pytest.approx(round(v * 9 / 100)) for v in values)  # out of 9 test images
    assert res["mean"] == pytest.approx(sum(values) / 4)
    assert res["per_model"][ARCH]["mean"] > 50.0  # trained (chance is 25 %)


def test_evaluator_soft_labels_and_config_errors(host):
    build = make_build(host, augment=False)
    syn = real_synset(build)
    soft = SynBatch(syn.images, torch.softmax(4 * torch.nn.functional.one_hot(syn.labels, NUM_CLASSES).float(), -1))
    res = evaluator(build, models=[ARCH], num_models=2, epochs=1).evaluate(soft, seed=0)
    assert res["num_models"] == 2
    ev = evaluator(build)
    # baselines are the engine's (recipe.baselines), not an evaluator option
    assert not hasattr(ev.config, "baselines") and ev.config.models == ["ConvNet"] and ev.config.epochs == 1000
    with pytest.raises(RecipeError, match=r"eval\.models\[0\]"):
        evaluator(build, models=["NoSuchNet"])
    with pytest.raises(RecipeError, match="num_models"):
        evaluator(build, num_models=0)


def test_balanced_test_subset():
    counts = [5, 2, 4]
    idx = balanced_subset_indices(counts, 7)
    assert idx.tolist() == [0, 1, 2, 5, 6, 7, 8]  # shares 3/2/2 -> capped 3/2/2, the first of each class
    assert balanced_subset_indices(counts, 0) is None and balanced_subset_indices(counts, 11) is None
    assert balanced_subset_indices(counts, 9).tolist() == [0, 1, 2, 5, 6, 7, 8, 9]  # 3/3/3 capped to 3/2/3


# -- baselines -----------------------------------------------------------------------------------------


def test_per_class_budget():
    assert per_class_budget(10, [5, 5, 5, 5]) == [3, 3, 2, 2]
    assert per_class_budget(10, [1, 5, 5, 5]) == [1, 3, 2, 2]
    assert per_class_budget(2, [5, 5, 5, 5]) == [1, 1, 0, 0]


@pytest.mark.parametrize("kind", BASELINE_KINDS)
def test_baseline_shapes_labels_and_balance(host, kind):
    build = make_build(host, train=fake_split([6, 5, 7, 6], seed=3))
    syn = select(kind, build, 10, build.generator("b"))
    assert syn.images.shape == (10, *INFO.image_shape) and syn.images.dtype == torch.float32
    assert syn.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]  # class-major, even split
    # every image is a real training image of its class
    real = build.train.normalize(build.train.images)
    match = (syn.images[:, None] == real[None]).flatten(2).all(-1)  # [10, N]
    assert (match.sum(1) >= 1).all()
    hits = match.float().argmax(1)
    assert torch.equal(build.train.labels[hits], syn.labels)
    assert hits.unique().numel() == 10  # no image twice
    again = select(kind, build, 10, build.generator("b"))
    assert torch.equal(again.images, syn.images)


def test_unknown_baseline_kind_names_key_and_kinds(host):
    build = make_build(host)
    with pytest.raises(RecipeError, match=r"eval\.baselines.*herding, random"):
        select("kcenter", build, 4, build.generator("b"))


def test_herding_picks_point_nearest_the_mean_first():
    feats = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [4.0, 1.0], [6.0, -1.0]],
                          [[1.0, 1.0], [1.0, 1.0], [9.0, 9.0], [0.0, 0.0]]])
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    picks = herding_select(feats, valid, 3)
    # class 0: mean (5, 0): nearest (4, 1)/(6, -1) tie -> first; then (6,-1) brings the mean to (5, 0)
    assert picks[0].tolist()[:2] == [2, 3]
    # class 1 (3 valid): mean (11/3, 11/3): nearest is (1, 1) (pos 0); the padded slot is never chosen
    assert picks[1, 0].item() == 0 and 3 not in picks[1].tolist()
    assert len(set(picks[1].tolist())) == 3


def test_herding_matches_bruteforce_greedy():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 9, 5, generator=g, dtype=torch.float64)
    valid = torch.ones(3, 9, dtype=torch.bool)
    valid[2, 6:] = False
    picks = herding_select(feats, valid, 5)
    for c in range(3):
        pool = [j for j in range(9) if valid[c, j]]
        mean = feats[c, pool].mean(0)
        chosen = []
        for t in range(1, 6):
            rest = [j for j in pool if j not in chosen]
            dist = [float((mean - (feats[c, chosen + [j]].sum(0)) / t).norm()) for j in rest]
            chosen.append(rest[dist.index(min(dist))])
        assert picks[c].tolist() == chosen


def test_herding_baseline_starts_at_the_class_mean(host):
    build = make_build(host, train=fake_split([6, 5, 7, 6], seed=4, noise=60))
    syn = select("herding", build, 4, build.generator("b"))  # one image per class: the nearest to the mean
    net = build.make_backbone(seed_key="herding")
    feats = embed_split(net, build.train)
    labels = build.train.labels
    for c in range(NUM_CLASSES):
        cls = torch.nonzero(labels == c).squeeze(1)
        nearest = cls[(feats[cls] - feats[cls].mean(0)).norm(dim=1).argmin()]
        torch.testing.assert_close(syn.images[c], build.train.take(nearest[None]).images[0])
