"""Round trip: a run's set trained through ``ddcore.load_synset`` in a plain PyTorch loop vs the evaluator.

Trains ``--models`` ConvNets (the run's evaluation architecture) both ways on the same set, with the same
schedule (SGD lr 0.01, momentum 0.9, weight decay 5e-4, ``--epochs`` + 1 epochs, lr x0.1 after epoch
epochs // 2 + 1, batch 256) and no train-time augmentation (the plain loop has none), then tests on the
whole test split. The plain loop uses only torch: a DataLoader over the dataset ``load_synset`` returns, its
own initialisation seeds and shuffling. Prints both means ± std and their difference.

    DDCORE_DATA=/work/shared/datasets python bench/roundtrip_load_synset.py RUN_DIR --models 5 --epochs 300
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader

import ddcore
from ddcore.engine import Run, load_synset_into
from ddcore.recipe import load_recipe
from ddcore.synset_io import build_parameterization


def evaluator_accuracies(run_dir: str, models: int, epochs: int, arch: str) -> list[float]:
    overrides = [f'eval={{name = "train_from_scratch", models = ["{arch}"], num_models = {models}, epochs = {epochs}, '
                 f'augment = false, compile = "off", baselines = []}}']
    run = Run(load_recipe(f"{run_dir}/recipe.toml", overrides), out_dir=None, device="cpu", progress=False,
              log=lambda *_: None).build()
    load_synset_into(run, f"{run_dir}/synset.safetensors")
    return run.evaluate(step=-1)["synset"]["per_model"][arch]["values"]


def plain_accuracies(run_dir: str, models: int, epochs: int, arch: str) -> list[float]:
    data = ddcore.load_synset(run_dir)
    build, _ = build_parameterization(load_recipe(f"{run_dir}/recipe.toml"))
    test = build.test
    accs = []
    for seed in range(models):
        torch.manual_seed(1000 + seed)
        net = build.make_backbone(arch)  # the user's model: same architecture, own initialisation
        lr = 0.01
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        loader = DataLoader(data, batch_size=256, shuffle=True)
        for epoch in range(epochs + 1):
            for x, y in loader:
                loss = torch.nn.functional.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if epoch == epochs // 2 + 1:
                opt = torch.optim.SGD(net.parameters(), lr=lr * 0.1, momentum=0.9, weight_decay=5e-4)
        net.eval()
        correct = 0
        with torch.no_grad():
            for batch in test.iterate(1024):
                correct += int((net(batch.images).argmax(-1) == batch.labels).sum())
        accs.append(100.0 * correct / len(test))
    return accs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--arch", default="ConvNet")
    args = parser.parse_args()
    t0 = time.perf_counter()
    ev = evaluator_accuracies(args.run_dir, args.models, args.epochs, args.arch)
    t1 = time.perf_counter()
    plain = plain_accuracies(args.run_dir, args.models, args.epochs, args.arch)
    t2 = time.perf_counter()
    me, se = statistics.mean(ev), statistics.pstdev(ev)
    mp, sp = statistics.mean(plain), statistics.pstdev(plain)
    print(f"evaluator (train_from_scratch): {me:.2f} ± {se:.2f}  {[round(v, 2) for v in ev]}  ({t1 - t0:.0f} s)")
    print(f"plain loop over load_synset:    {mp:.2f} ± {sp:.2f}  {[round(v, 2) for v in plain]}  ({t2 - t1:.0f} s)")
    print(f"difference {mp - me:+.2f} points; evaluator spread (std) {se:.2f}, range "
          f"{min(ev):.2f}..{max(ev):.2f}; plain mean inside the evaluator's range: {min(ev) <= mp <= max(ev)}")


if __name__ == "__main__":
    main()
