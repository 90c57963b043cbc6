"""Steps per second of the core engine with the built-in objective on CIFAR-10-shaped data.

    python bench/bench_engine.py [--device cpu|cuda] [--batch-real 256] [--steps 5] [--ipc 10]

Data: ``$DDCORE_DATA/cifar10-jpeg`` when present, otherwise scikit-learn's digits resized to 32 px and
replicated to 3 channels (same tensor shapes: 10 classes x 3 x 32 x 32). The step is the engine's own
``Run.step`` (random_init ConvNet-3 width 128, siamese DSA, moment_matching, SGD), timed after one warm-up step;
the number is comparable across commits on the same machine, which is what it is for.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from ddcore.engine import Run
from ddcore.recipe import parse_recipe


def recipe(batch_real: int, ipc: int, device: str) -> dict:
    root = os.environ.get("DDCORE_DATA")
    if root and (Path(root) / "cifar10-jpeg").is_dir():
        data = {"name": "npz", "path": "cifar10-jpeg"}
    else:
        data = {"name": "digits", "resize": 32, "channels": 3}
    return {
        "name": "bench-engine", "device": device, "data": data,
        "real": {"batch": batch_real},
        "backbone": {"name": "ConvNet"},
        "synset": {"name": "pixels", "ipc": ipc},
        "sampler": "random_init",
        "augment": [{"name": "dsa"}],
        "objective": [{"name": "moment_matching", "moments": 1}],
        "optimizer": {"name": "sgd", "lr": 1.0, "momentum": 0.5},
        "run": {"iterations": 1_000_000, "progress": False},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-real", type=int, default=256)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    run = Run(parse_recipe(recipe(args.batch_real, args.ipc, args.device)), out_dir=None, progress=False).build()
    sync = torch.cuda.synchronize if run.device.type == "cuda" else (lambda: None)
    run.step(0)
    sync()
    times = []
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        run.step(step)
        sync()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(f"device={run.device} threads={torch.get_num_threads()} data={run.build_ctx.info.name} "
          f"batch_real={args.batch_real}/class ipc={args.ipc}")
    print(f"engine step (moment_matching + DSA, ConvNet-3 w128): {median * 1000:.1f} ms median, "
          f"{1 / median:.3f} steps/s over {args.steps} steps")


if __name__ == "__main__":
    main()
