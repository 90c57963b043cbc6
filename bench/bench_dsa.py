"""Time DSA's ``apply`` (and ``random``) on a CIFAR-sized batch ``[2560, 3, 32, 32]`` on CPU.

Run: ``python bench/bench_dsa.py [--reps 20] [--threads N]``. Prints milliseconds per call (median of reps)
for a few parameter layouts: 10 groups of 256 (per-class siamese, as DM with 10 classes), 2560 groups,
mode "all", each dispatch path, forward+backward, and the per-call ``random``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ddcore.augment import dsa


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(2560, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    classes = torch.arange(2560) // 256
    per_sample = torch.arange(2560)
    single, every = dsa.DSAConfig(), dsa.DSAConfig(mode="all")
    strategy = single.strategy
    g = torch.Generator().manual_seed(1)
    p10 = dsa.sample_params(strategy, 10, g, "cpu", single)
    p2560 = dsa.sample_params(strategy, 2560, g, "cpu", single)
    p10_all = dsa.sample_params(strategy, 10, g, "cpu", every)
    xg = x.clone().requires_grad_(True)

    def fwd_bwd():
        dsa.apply(xg, p10, classes).square().sum().backward()

    rows = [
        ("apply 10 groups (gather)", lambda: dsa.apply(x, p10, classes, dispatch="gather")),
        ("apply 10 groups (mask)", lambda: dsa.apply(x, p10, classes, dispatch="mask")),
        ("apply 2560 groups (gather)", lambda: dsa.apply(x, p2560, per_sample, dispatch="gather")),
        ("apply 10 groups, mode all", lambda: dsa.apply(x, p10_all, classes)),
        ("apply 10 groups fwd+bwd", fwd_bwd),
        ("sample_params 10 groups", lambda: dsa.sample_params(strategy, 10, g, "cpu", single)),
        ("random (per call family)", lambda: dsa.random(x, g, strategy, single)),
    ]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, x {tuple(x.shape)}, reps {args.reps}")
    for name, fn in rows:
        print(f"{name:32s} {timed(fn, args.reps):8.2f} ms")
    for fam in dsa.FAMILIES:
        cfg = dsa.DSAConfig(strategy=fam, mode="all")
        p = dsa.sample_params(fam, 10, g, "cpu", cfg)
        print(f"  family {fam:8s} (all samples)   {timed(lambda: dsa.apply(x, p, classes), args.reps):8.2f} ms")


if __name__ == "__main__":
    main()
