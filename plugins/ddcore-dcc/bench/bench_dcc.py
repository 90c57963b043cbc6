"""Per-class real gradients for class-wise matching: batched implementations vs the official per-class loop.

Times ``class_grads(net, x, y, C, method=...)`` (first order, real side) and the whole class-wise loss
(real + second-order synthetic side + backward to the images) for each method, interleaved, on the DC ConvNet.

    python plugins/ddcore-dcc/bench/bench_dcc.py --classes 10 --per-class 64 --width 128 --reps 3

Prints one line per method: median seconds, and max abs difference to the loop's gradients.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ddcore.models.convnet import ConvNet
from ddcore_dcc.gradients import METHODS, class_grads
from ddcore_dcc.objective import class_wise_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=64)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    net = ConvNet(channels=3, height=args.size, width=args.size, num_classes=args.classes, net_width=args.width).to(dev)
    c, n = args.classes, args.per_class
    x = torch.randn(c * n, 3, args.size, args.size, device=dev)
    y = torch.arange(c, device=dev).repeat_interleave(n)
    syn = torch.randn(c * args.ipc, 3, args.size, args.size, device=dev)
    syn_y = torch.arange(c, device=dev).repeat_interleave(args.ipc)
    methods = args.methods.split(",")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    ref = class_grads(net, x, y, c, method="loop")
    times: dict[str, list[float]] = {m: [] for m in methods}
    full: dict[str, list[float]] = {m: [] for m in methods}
    err: dict[str, float] = {}
    for m in methods:  # warm-up (torch.func's first call is slow)
        g = class_grads(net, x, y, c, method=m)
        err[m] = max(float((a - b).abs().max()) for a, b in zip(g, ref))
    for _ in range(args.reps):
        for m in methods:
            sync()
            t = time.perf_counter()
            class_grads(net, x, y, c, method=m)
            sync()
            times[m].append(time.perf_counter() - t)
            s = syn.clone().requires_grad_(True)
            sync()
            t = time.perf_counter()
            class_wise_loss(net, x, y, s, syn_y, c, method=m).backward()
            sync()
            full[m].append(time.perf_counter() - t)
    print(f"ConvNet width {args.width}, {c} classes x {n} real, ipc {args.ipc}, {args.size}px, {args.device}, "
          f"{args.threads} threads, median of {args.reps}")
    for m in methods:
        print(f"{m:>17}: real grads {statistics.median(times[m]):7.3f} s | class-wise loss + backward "
              f"{statistics.median(full[m]):7.3f} s | max |diff| vs loop {err[m]:.2e}")


if __name__ == "__main__":
    main()
