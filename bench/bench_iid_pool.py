"""IID's pool (DC ResNet18, instance norm, CIFAR-10 shape), eager against compiled, interleaved.

    python bench/bench_iid_pool.py [--mode train|features] [--batch 256] [--rounds 3] [--steps 2] [--threads 0]

``--mode train``: ``ddcore_iid.pool.train_member`` trains through ``HotPath.first_order(net)``, compiled code where
the run compiles first-order passes (a CPU under ``compile = "auto"``). This times one SGD step (forward, CE,
backward, update) of two identically initialised members, one eager and one through the compiled forward.
``--mode features``: what class centralization does with a frozen member at every distillation step, the 512-d
features of ``--batch`` synthetic images (IPC 10: 100) and their gradient w.r.t. the images, eager against the
member prepared as the step prepares its own networks (``HotPath.prepare_net``: compiled, channels_last).
Each side takes one warm-up step (compilation); then ``--rounds`` rounds of ``--steps`` steps per side alternate,
and it prints the median s/step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ddcore.hotpath import HotPath
from ddcore.models.resnet import ResNetConfig, build_resnet
from ddcore.types import DatasetInfo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("train", "features"), default="train")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = DatasetInfo("cifar10-shape", 10, 3, 32, 32, (0.5,) * 3, (0.25,) * 3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    sides = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        torch.manual_seed(0)
        net = build_resnet(ResNetConfig(), info=info, num_classes=10)
        if args.mode == "train":
            forward = HotPath(compile_first_order=compiled, scope="bench-iid-pool").first_order(net)
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            sides[name] = (forward, opt)
        else:
            net.eval().requires_grad_(False)
            hot_path = HotPath(channels_last=compiled, compile=compiled, scope="bench-iid-members")
            sides[name] = (hot_path.prepare_net(net), hot_path.prepare_images(x))

    def step(name: str) -> float:
        if args.mode == "features":
            net, images = sides[name]
            images = images.detach().requires_grad_(True)
            features = net.forward_all(images).embedding
            (grad,) = torch.autograd.grad(features.square().sum(), images)  # a scalar of the features, as the loss
            return float(grad.abs().sum())
        forward, opt = sides[name]
        loss = F.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    for name in sides:
        print(f"{name}: warm-up value {step(name):.4f}", flush=True)
    times: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.rounds):
        for name in sides:
            t0 = time.perf_counter()
            values = [step(name) for _ in range(args.steps)]
            times[name].append((time.perf_counter() - t0) / args.steps)
            print(f"round {r + 1} {name}: {times[name][-1]:.2f} s/step, last value {values[-1]:.4f}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"median s/step ({args.mode}) at batch {args.batch}: eager {med['eager']:.2f}, compiled "
          f"{med['compiled']:.2f} ({med['eager'] / med['compiled']:.2f}x), {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
