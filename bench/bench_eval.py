"""Benchmark: train N evaluation ConvNets one after another, as one vectorised torch.func ensemble, and side by side
on CPU threads (``ddcore.evaluation._concurrent``: each worker on its share of the intra-op threads).

CIFAR-shaped fake data (10 classes, 3x32x32, random pixels: only the speed matters here), the DC evaluation
protocol (SGD, batch 256, DSA in random mode on every batch), ``--epochs`` epochs (+1, as the protocol), then
one test pass over ``--test`` images. Both paths use the same nets and generators, so they do the same work;
the script also prints the largest per-member weight difference of each path to sequential.

    python bench/bench_eval.py                       # CPU, 10 ConvNets, ipc 10, 2(+1) epochs, 500 test
    python bench/bench_eval.py --device cuda --epochs 50 --ipc 50
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import types

import torch

from ddcore.config import ComponentRef
from ddcore.context import BuildContext
from ddcore.data.store import ClassIndexedData
from ddcore.evaluation._concurrent import run_concurrently, split_threads
from ddcore.evaluation.ensemble import ensemble_accuracy, train_ensemble
from ddcore.evaluation.train import evaluate_accuracy, train_classifier
from ddcore.hotpath import HotPath
from ddcore.plugins import PluginHost
from ddcore.types import DatasetInfo


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="ConvNet")
    p.add_argument("--num-models", type=int, default=10)
    p.add_argument("--ipc", type=int, default=10, help="synthetic images per class (10 classes)")
    p.add_argument("--epochs", type=int, default=2, help="Epoch of the protocol (epochs + 1 are trained)")
    p.add_argument("--test", type=int, default=500, help="test images")
    p.add_argument("--no-augment", action="store_true", help="train without DSA")
    p.add_argument("--paths", default="vmap,threads,compiled",
                   help="paths timed against sequential: vmap, threads, compiled (sequential, torch.compile'd "
                        "channels_last nets: the evaluator's compile option)")
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds of all paths, interleaved; medians are reported (a shared machine is noisy)")
    args = p.parse_args()

    device = torch.device(args.device)
    info = DatasetInfo("cifar-shaped", 10, 3, 32, 32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    g = torch.Generator().manual_seed(0)
    test_labels = torch.arange(args.test) % 10
    test = ClassIndexedData(torch.randint(0, 256, (args.test, 3, 32, 32), generator=g, dtype=torch.uint8),
                            test_labels, info, device)
    host = PluginHost(autoload=False)
    build = BuildContext(recipe=types.SimpleNamespace(backbone=ComponentRef(args.arch)), registry=host.registry,
                         info=info, device=device, seed=0, train=test, test_loader=lambda: test, cache_dir=".")
    if not args.no_augment:
        build.augmentations = [build.make_component("augmentation", "dsa")]
    images = torch.randn(10 * args.ipc, 3, 32, 32, generator=g).to(device)
    labels = torch.arange(10).repeat_interleave(args.ipc).to(device)
    kwargs = dict(epochs=args.epochs, batch_size=256)

    def setup():
        nets = [build.make_backbone(args.arch, seed_key=i) for i in range(args.num_models)]
        gens = [build.generator("bench", i) for i in range(args.num_models)]
        augs = None if args.no_augment else [(lambda x, g=g: build.augment_random(x, g)) for g in gens]
        return nets, gens, augs

    # warm-up (kernel selection, allocator) on a separate pair of nets
    nets, gens, augs = setup()
    train_classifier(nets[0], images, labels, generator=gens[0], augment=augs and augs[0], epochs=0)
    train_ensemble(nets[:2], images, labels, generators=gens[:2], augments=augs and augs[:2], epochs=0)
    hot = HotPath(channels_last=device.type == "cpu", compile=True, scope="eval")
    t0 = time.perf_counter()
    train_classifier(hot.prepare_net(nets[2]), images, labels, generator=gens[2], augment=augs and augs[2], epochs=0)
    evaluate_accuracy(nets[2], test)
    compile_s = time.perf_counter() - t0

    paths = [x for x in args.paths.split(",") if x]
    for path in paths:
        if path not in ("vmap", "threads", "compiled"):
            p.error(f"--paths: unknown path {path!r}; allowed: vmap, threads, compiled")
    workers, per_worker = split_threads(args.num_models, torch.get_num_threads())
    threads_before = torch.get_num_threads()

    def timed(fn):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        sync(device)
        return out, time.perf_counter() - t0, time.process_time() - c0

    def sequential():
        nets, gens, augs = setup()
        for i, net in enumerate(nets):
            train_classifier(net, images, labels, generator=gens[i], augment=augs and augs[i], **kwargs)
        return nets, [evaluate_accuracy(net, test) for net in nets]

    def vectorised():
        nets, gens, augs = setup()
        ens = train_ensemble(nets, images, labels, generators=gens, augments=augs, **kwargs)
        return nets, ensemble_accuracy(ens, test).tolist()

    def threaded():
        nets, gens, augs = setup()

        def train_and_test(i: int) -> float:
            train_classifier(nets[i], images, labels, generator=gens[i], augment=augs and augs[i], **kwargs)
            return evaluate_accuracy(nets[i], test)

        jobs = [functools.partial(train_and_test, i) for i in range(len(nets))]
        return nets, run_concurrently(jobs, workers=workers, threads_per_worker=per_worker)

    def compiled():
        nets, gens, augs = setup()
        for i, net in enumerate(nets):
            train_classifier(hot.prepare_net(net), images, labels, generator=gens[i], augment=augs and augs[i],
                             **kwargs)
        return nets, [evaluate_accuracy(net, test) for net in nets]

    fns = {"sequential": sequential, "vmap": vectorised, "threads": threaded, "compiled": compiled}
    names = ["sequential"] + paths
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    checks: dict[str, tuple[float, float]] = {}
    for _ in range(max(1, args.repeats)):
        results = {}
        for name in names:
            results[name], t, c = timed(fns[name])
            wall[name].append(t)
            cpu[name].append(c)
        seq_nets, seq_acc = results["sequential"]
        for name in paths:
            nets, acc = results[name]
            with torch.no_grad():
                diff = max(float((a - b).abs().max()) for s, e in zip(seq_nets, nets)
                           for a, b in zip(s.parameters(), e.parameters()))
            acc_diff = max(abs(a - b) for a, b in zip(seq_acc, acc))
            old = checks.get(name, (0.0, 0.0))
            checks[name] = (max(old[0], diff), max(old[1], acc_diff))
    assert torch.get_num_threads() == threads_before

    steps = (args.epochs + 1) * -(-10 * args.ipc // 256)
    print(f"device={device} arch={args.arch} models={args.num_models} ipc={args.ipc} epochs={args.epochs}+1 "
          f"steps/model={steps} test={args.test} augment={not args.no_augment} threads={threads_before} "
          f"(threads path: {workers} workers x {per_worker}) repeats={max(1, args.repeats)}; "
          f"compiled path: {compile_s:.1f} s compilation (warm-up, untimed)")
    med = {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in names}
    for name in names:
        runs = ", ".join(f"{t:.2f}" for t in wall[name])
        print(f"{name + ':':12s}{med[name][0]:8.2f} s wall {med[name][1]:8.2f} s process CPU (median; runs: {runs})")
    t_seq, c_seq = med["sequential"]
    for name in paths:
        diff, acc_diff = checks[name]
        paired = [s / t for s, t in zip(wall["sequential"], wall[name])]
        print(f"speed-up (sequential / {name}): {t_seq / med[name][0]:.2f}x wall, {c_seq / med[name][1]:.2f}x process "
              f"CPU; paired per round: {', '.join(f'{r:.2f}' for r in paired)}; "
              f"max |weight difference| {diff:.2e}, max |accuracy difference| {acc_diff:.4f}")


if __name__ == "__main__":
    main()
