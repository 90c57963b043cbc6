"""Speed of one DM step and one IDM step: ddcore (batched over classes) vs a naive per-class loop.

The naive implementations mirror the official code's structure (VICO-UoE/DatasetCondensation main_DM.py and
uitrbn/IDM IDM_cifar10.py): a Python loop over classes, one DSA call, one real forward and one synthetic forward
per class; for IDM also one backward and one SGD(momentum 0.5) step per class. Ours: one forward per batch for
all classes (``ctx.outputs``), per-class reductions by ``index_add``, and for IDM the closed-form
``class_sequential_sgd`` (prepare -> one backward -> step). Both sides use the same ConvNet weights, the same
real/synthetic tensors (random normalised CIFAR-sized images: timing does not depend on pixel values), the same
DSA component and the same device. The IDM queue training after each step (identical in both) is timed apart.

    python bench/bench_dm_idm.py                       # CPU, 2 threads, CIFAR-10 shapes, real batch 256, IPC 10
    python bench/bench_dm_idm.py --device cuda --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ddcore.config import ComponentRef
from ddcore.context import StepContext
from ddcore.testing import make_build_context, tiny_dataset
from ddcore.types import RealBatch, SynBatch
from ddcore_dm.objective import DistributionMatching, DistributionMatchingConfig
from ddcore_idm.class_aware_ce import ClassAwareCE, ClassAwareCEConfig
from ddcore_idm.class_sequential import ClassSequentialSGD, ClassSequentialSGDConfig
from ddcore_idm.partition import partition_expand


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeats):
    fn()  # warm-up
    _sync(device)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def _time_pair(naive, ours, device, repeats):
    """Median seconds of each, measured alternately (naive, ours, naive, ...) so machine load hits both alike."""
    naive()
    ours()
    _sync(device)
    t_naive, t_ours = [], []
    for _ in range(repeats):
        for fn, out in ((naive, t_naive), (ours, t_ours)):
            t = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - t)
    return statistics.median(t_naive), statistics.median(t_ours)


class _Pixels:
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def class_index(self, p):
        return self.labels if p is self.images else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch-real", type=int, default=256)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-dsa", action="store_true", help="skip the siamese augmentation in both")
    ap.add_argument("--no-queue", action="store_true", help="do not time the IDM queue training")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    k, n_real, ipc = args.classes, args.batch_real, args.ipc

    data = tiny_dataset(num_classes=k, per_class=max(n_real, 4 * ipc), shape=(3, 32, 32), device=args.device)
    build = make_build_context(data=data)
    dsa = None if args.no_dsa else build.make_component(
        "augmentation", ComponentRef("dsa", {"strategy": "color_crop_cutout_flip_scale_rotate"}), key="augment")
    build.augmentations = [dsa] if dsa else []
    net = build.make_backbone("ConvNet", seed_key="bench").train().requires_grad_(False)
    g = torch.Generator(device=device).manual_seed(0)
    real = build.train.sample_per_class(n_real, g)
    labels = torch.arange(k, device=device).repeat_interleave(ipc)
    syn0 = torch.randn(k * ipc, 3, 32, 32, generator=g, device=device)
    acc = torch.tensor(40.0, device=device)

    def aug_pair(real_x, real_g, syn_x, syn_g, step, num_groups):
        if dsa is None:
            return real_x, syn_x
        p = dsa.sample(num_groups, build.generator("augment", step), device)
        return dsa.apply(real_x, p, real_g), dsa.apply(syn_x, p, syn_g)

    # ---------------- DM ----------------
    dm_term = DistributionMatching(DistributionMatchingConfig(), build)
    syn_ours = syn0.clone().requires_grad_(True)
    opt_ours = torch.optim.SGD([syn_ours], lr=1.0, momentum=0.5)

    def dm_ours():
        r, s = aug_pair(real.images, real.labels, syn_ours, labels, 0, k)
        ctx = StepContext(step=0, build=build, real=RealBatch(r, real.labels, real.indices, n_real), real_raw=real,
                          syn=SynBatch(s, labels), syn_raw=SynBatch(syn_ours, labels), nets=[net], sampler_info={},
                          aug_params=[])
        loss = dm_term(ctx)
        opt_ours.zero_grad()
        loss.backward()
        opt_ours.step()

    syn_naive = syn0.clone().requires_grad_(True)
    opt_naive = torch.optim.SGD([syn_naive], lr=1.0, momentum=0.5)

    def dm_naive():
        loss = torch.zeros((), device=device)
        for c in range(k):
            r = real.images[c * n_real:(c + 1) * n_real]
            s = syn_naive[c * ipc:(c + 1) * ipc]
            zr = torch.zeros(len(r), dtype=torch.int64, device=device)
            zs = torch.zeros(len(s), dtype=torch.int64, device=device)
            r, s = aug_pair(r, zr, s, zs, c, 1)
            out_r = net.embed(r).detach()
            out_s = net.embed(s)
            loss = loss + ((out_r.mean(0) - out_s.mean(0)) ** 2).sum()
        opt_naive.zero_grad()
        loss.backward()
        opt_naive.step()

    t_dm_naive, t_dm_ours = _time_pair(dm_naive, dm_ours, device, args.repeats)

    # ---------------- IDM (matching phase: partition, DSA, DM + class-aware CE, class-sequential update) -------
    ce_term = ClassAwareCE(ClassAwareCEConfig(), build)
    syn_i = syn0.clone().requires_grad_(True)
    opt_i = ClassSequentialSGD(ClassSequentialSGDConfig(), build, param_groups=[{"params": [syn_i]}],
                               parameterization=_Pixels(syn_i, labels))

    def idm_ours():
        opt_i.prepare()
        x = partition_expand(syn_i, 2)
        y = labels.repeat_interleave(4)
        r, s = aug_pair(real.images, real.labels, x, y, 0, k)
        ctx = StepContext(step=0, build=build, real=RealBatch(r, real.labels, real.indices, n_real), real_raw=real,
                          syn=SynBatch(s, y), syn_raw=SynBatch(syn_i, labels), nets=[net],
                          sampler_info={"net_accuracy": [acc]}, aug_params=[])
        loss = dm_term(ctx) + 0.5 * ce_term(ctx)
        opt_i.zero_grad()
        loss.backward()
        opt_i.step()

    syn_in = syn0.clone().requires_grad_(True)
    opt_in = torch.optim.SGD([syn_in], lr=0.2, momentum=0.5)

    def idm_naive():
        for c in range(k):
            r = real.images[c * n_real:(c + 1) * n_real]
            s = partition_expand(syn_in[c * ipc:(c + 1) * ipc], 2)
            zr = torch.zeros(len(r), dtype=torch.int64, device=device)
            zs = torch.zeros(len(s), dtype=torch.int64, device=device)
            r, s = aug_pair(r, zr, s, zs, c, 1)
            out_r = net.embed(r).detach()
            out_s = net.forward_all(s)
            loss_c = ((out_r.mean(0) - out_s.embedding.mean(0)) ** 2).sum()
            loss_c = loss_c + 0.5 * acc * F.cross_entropy(out_s.logits, torch.full((len(s),), c, device=device))
            opt_in.zero_grad()
            loss_c.backward()
            opt_in.step()

    t_idm_naive, t_idm_ours = _time_pair(idm_naive, idm_ours, device, args.repeats)

    # Queue training after each IDM step (identical code path in both implementations): 2 nets x 10 SGD steps.
    qnet = build.make_backbone("ConvNet", seed_key="bench-queue").train()
    qopt = torch.optim.SGD(qnet.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def queue_train():
        for s in range(2 * 10):
            b = build.train.sample_uniform(256, build.generator("q", s))
            loss = F.cross_entropy(qnet(b.images), b.labels)
            qopt.zero_grad()
            loss.backward()
            qopt.step()

    t_queue = None if args.no_queue else _time(queue_train, device, 1)

    print(f"device={device} threads={torch.get_num_threads()} classes={k} batch_real={n_real} ipc={ipc} "
          f"dsa={'on' if dsa else 'off'} repeats={args.repeats} (median seconds per step)")
    print(f"DM  step: naive per-class loop {t_dm_naive:.3f} s | ours {t_dm_ours:.3f} s | "
          f"speed-up {t_dm_naive / t_dm_ours:.2f}x")
    print(f"IDM step (matching + update): naive {t_idm_naive:.3f} s | ours {t_idm_ours:.3f} s | "
          f"speed-up {t_idm_naive / t_idm_ours:.2f}x")
    if t_queue is not None:
        print(f"IDM queue training per step (same in both, 2 nets x 10 steps x 256): {t_queue:.3f} s -> full IDM "
              f"step speed-up {(t_idm_naive + t_queue) / (t_idm_ours + t_queue):.2f}x")


if __name__ == "__main__":
    main()
