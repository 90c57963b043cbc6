"""Why the vectorised ensemble is not faster on a CPU: one 3x3 conv layer of M members, three ways.

The ensemble evaluator (ddcore.evaluation.ensemble) turns M members' convolutions into one batched convolution
(``vmap`` lowers per-member weights to a grouped convolution). This script times the forward + backward of one
ConvNet-3 middle layer (128 -> 128 channels, 16x16, batch 100 per member) for M = 10 members:

* ``sequential``: M separate ``conv2d`` calls (what sequential evaluation does);
* ``grouped``: one ``conv2d(groups=M)`` on the members' channels stacked (NCHW);
* ``grouped_channels_last``: the same in channels_last memory format;
* ``vmap``: ``torch.func.vmap`` over per-member weights and inputs (what the ensemble runs).

    python bench/bench_conv_ensemble.py [--device cpu|cuda] [--members 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.func import vmap


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)
    m, b, c, h = args.members, args.batch, 128, 16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, b, c, h, h, generator=g).to(device)
    w = torch.randn(m, c, c, 3, 3, generator=g).to(device).requires_grad_(True)

    def sequential():
        loss = sum(F.conv2d(x[i], w[i], padding=1).square().mean() for i in range(m))
        loss.backward()

    def grouped(channels_last: bool = False):
        xi = x.permute(1, 0, 2, 3, 4).reshape(b, m * c, h, h)
        if channels_last:
            xi = xi.contiguous(memory_format=torch.channels_last)
        F.conv2d(xi, w.reshape(m * c, c, 3, 3), padding=1, groups=m).square().mean().backward()

    def vmapped():
        vmap(lambda a, k: F.conv2d(a, k, padding=1))(x, w).square().mean().backward()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    variants = {"sequential": sequential, "grouped": grouped,
                "grouped_channels_last": lambda: grouped(True), "vmap": vmapped}
    print(f"device={device} members={m} batch/member={b} layer={c}->{c} 3x3 at {h}x{h} "
          f"threads={torch.get_num_threads()}")
    times = {}
    for name, fn in variants.items():
        fn()  # warm-up
        sync()
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            fn()
        sync()
        times[name] = (time.perf_counter() - t0) / args.repeats
    for name, t in times.items():
        print(f"{name:22s} {t * 1000:9.1f} ms   {times['sequential'] / t:5.2f}x vs sequential")


if __name__ == "__main__":
    main()
