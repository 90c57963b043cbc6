"""KRR-ST CPU check: distilled set vs same-storage random subset vs the initial set, plus reference points.

Builds ``recipes/krr_st_cifar10.toml`` with the README's CPU-check overrides (``CPU_CHECK_OVERRIDES`` of
``tests/test_end_to_end.py``) plus any ``key=value`` arguments, then prints, one line each:

* the teacher's own linear probe and an untrained backbone's linear probe (reference points);
* for the initial set, the same-storage random subset with teacher targets, and the distilled set (after
  ``run.iterations`` outer steps): the linear probe after MSE pre-training (``NR`` runs, env, default 3; same
  network seeds for every set), the last pre-training loss, and ``teacher_mse`` (held-out MSE to the teacher).

    DDCORE_DATA=/path/to/shared/datasets NR=5 python plugins/ddcore-krr/scripts/cpu_check.py \\
        run.iterations=1000 synset.teacher.epochs=40 sampler.max_steps=300

``EPOCHS`` (env, comma-separated, default 300) lists the pre-training epochs to score.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import attrs
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from test_end_to_end import CPU_CHECK_OVERRIDES, RECIPE  # noqa: E402

from ddcore.engine import Run  # noqa: E402


class _TeacherEmbed(torch.nn.Module):
    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher.features(x)


def main() -> None:
    extra = [a for a in sys.argv[1:] if "=" in a]
    runs = int(os.environ.get("NR", "3"))
    epochs_list = [int(e) for e in os.environ.get("EPOCHS", "300").split(",")]
    t0 = time.time()
    overrides = CPU_CHECK_OVERRIDES + ["run.eval_at_end=false"] + extra
    run = Run.from_file(RECIPE, overrides, out_dir=None, device="cpu", progress=False, log=lambda *a: None).build()
    print(f"build {time.time() - t0:.1f} s", flush=True)
    ev, param, b = run.evaluator, run.parameterization, run.build_ctx
    teacher = param.teacher
    print("teacher linear probe", ev.linear_probe(_TeacherEmbed(teacher), 0, b.generator("probe")), flush=True)
    net = b.make_backbone(None, num_classes=teacher.dim, seed_key=("cpu-check", 0))
    print("untrained backbone linear probe", ev.linear_probe(net, 0, b.generator("probe")), flush=True)

    def score(syn, tag: str) -> None:
        for epochs in epochs_list:
            ev.config = attrs.evolve(ev.config, pretrain_epochs=epochs)
            accs, mses = [], []
            for r in range(runs):
                net = b.make_backbone(None, num_classes=teacher.dim, seed_key=("cpu-check", r))
                loss = ev.pretrain(net, syn, b.generator("pretrain", r))
                accs.append(ev.linear_probe(net, 0, b.generator("probe", r)))
                mses.append(ev.teacher_mse(net))
            t = torch.tensor(accs)
            print(f"{tag}: pretrain {epochs} epochs, probe {[round(a, 2) for a in accs]} mean {t.mean():.2f} "
                  f"std {t.std(unbiased=False):.2f}, last pretrain loss {loss:.4f}, "
                  f"held-out teacher MSE {sum(mses) / runs:.5f}", flush=True)

    syn0 = param.materialize().detach()
    score(syn0, "initial set")
    # the engine's own same-budget baseline (same budget and generator as `ddcore run` evaluates)
    random_subset = param.baseline("random", run.budget_images(), b.generator("baseline", "random"))
    score(random_subset.detach(), "random subset")
    t1 = time.time()
    run.execute()
    print(f"distillation {time.time() - t1:.1f} s", flush=True)
    score(param.materialize().detach(), "KRR-ST")


if __name__ == "__main__":
    main()
