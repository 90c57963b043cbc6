"""KRR-ST CPU check: the distilled set against same-budget baselines, with paired network seeds.

Builds ``recipes/krr_st_cifar10.toml`` with the README's CPU-check overrides (``CPU_CHECK_OVERRIDES`` of
``tests/test_end_to_end.py``) plus any ``key=value`` arguments, then prints one line per (set, protocol):
the accuracy of ``NR`` runs (env, default 3) — every set is scored with the same ``NR`` network seeds, so rows
are paired — the last pre-training loss and ``teacher_mse`` (held-out MSE to the teacher; sets with targets only).

    DDCORE_DATA=/path/to/shared/datasets NR=5 python plugins/ddcore-krr/scripts/cpu_check.py \\
        run.iterations=1000 synset.teacher.epochs=100 sampler.max_steps=300

Environment:

* ``SETS`` (comma-separated, default ``initial,random,krr``): ``initial`` (the set before distillation),
  ``krr`` (after ``run.iterations`` outer steps), and any ``[eval] baselines`` kind of krr_pixels (``random``,
  ``kmeans`` with teacher targets; ``random_labelled``, ``kmeans_labelled`` = the paper's Table 1 rows,
  pre-trained with cross-entropy + DSA). Baselines are the engine's (same budget and generator as ``ddcore run``).
* ``PROTOCOLS`` (default ``linear``): ``linear`` = ``ITERS`` (300) iterations of linear probe (batch 256);
  ``finetune`` = ``ITERS`` iterations of full fine-tuning (batch 256, the finetune protocol's SGD and crop + flip).
  Both on the subset's own train split, scored on its test split; ``BATCH`` (default 256) sets their batch size.
* ``EPOCHS`` (default 300): pre-training epochs (MSE for target sets, cross-entropy + DSA for labelled ones).
* ``REFS=1`` also prints the teacher's and an untrained backbone's linear probe (reference points).
* ``SAVE_SYN=file.safetensors`` stores the distilled set; ``LOAD_SYN=file.safetensors`` scores a stored one as
  ``krr`` instead of distilling (e.g. the same set under another protocol, on a CPU too busy to distil twice).
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
from ddcore_krr.transfer import TransferTarget  # noqa: E402


class _TeacherEmbed(torch.nn.Module):
    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher.features(x)


def main() -> None:
    extra = [a for a in sys.argv[1:] if "=" in a]
    runs = int(os.environ.get("NR", "3"))
    epochs = int(os.environ.get("EPOCHS", "300"))
    iters = int(os.environ.get("ITERS", "300"))
    batch = int(os.environ.get("BATCH", "256"))
    sets = os.environ.get("SETS", "initial,random,krr").split(",")
    protocols = os.environ.get("PROTOCOLS", "linear").split(",")
    t0 = time.time()
    overrides = CPU_CHECK_OVERRIDES + ["run.eval_at_end=false"] + extra
    run = Run.from_file(RECIPE, overrides, out_dir=None, device="cpu", progress=False, log=lambda *a: None).build()
    print(f"build {time.time() - t0:.1f} s; overrides {extra}", flush=True)
    ev, param, b = run.evaluator, run.parameterization, run.build_ctx
    targets = [TransferTarget(name=p, protocol=p, iterations=iters, batch_size=batch) for p in protocols]
    ev.config = attrs.evolve(ev.config, targets=targets, pretrain_epochs=epochs, labelled_pretrain_epochs=epochs)
    teacher = param.teacher
    if os.environ.get("REFS") == "1":
        print("teacher linear probe", ev.linear_probe(_TeacherEmbed(teacher), 0, b.generator("probe")), flush=True)
        net = b.make_backbone(None, num_classes=teacher.dim, seed_key=("cpu-check", 0))
        print("untrained backbone linear probe", ev.linear_probe(net, 0, b.generator("probe")), flush=True)

    def score(syn, tag: str) -> None:
        labelled = syn.targets is None
        accs: dict[str, list[float]] = {p: [] for p in protocols}
        mses = []
        for r in range(runs):
            outputs = b.info.num_classes if labelled else teacher.dim
            net = b.make_backbone(None, num_classes=outputs, seed_key=("cpu-check", r))
            pretrain = ev.pretrain_labelled if labelled else ev.pretrain
            loss = pretrain(net, syn, b.generator("pretrain", r))
            for i, p in enumerate(protocols):
                probe = ev.linear_probe if p == "linear" else ev.finetune
                accs[p].append(probe(net, i, b.generator("probe", r)))
            if not labelled:
                mses.append(ev.teacher_mse(net))
        for p, values in accs.items():
            t = torch.tensor(values)
            mse = f"{sum(mses) / runs:.5f}" if mses else "-"
            print(f"{tag} ({len(syn)} images): {p} after {epochs} pre-training epochs {[round(a, 2) for a in values]} "
                  f"mean {t.mean():.2f} std {t.std(unbiased=False):.2f}, last pretrain loss {loss:.4f}, "
                  f"held-out teacher MSE {mse}", flush=True)

    if "initial" in sets:
        score(param.materialize().detach(), "initial set")
    for kind in sets:
        if kind in ("initial", "krr"):
            continue
        base = param.baseline(kind, run.budget_images(), b.generator("baseline", kind))
        score(base.detach(), f"baseline {kind}")
    if "krr" in sets:
        from safetensors.torch import load_file, save_file

        from ddcore.types import SynBatch

        if os.environ.get("LOAD_SYN"):
            stored = load_file(os.environ["LOAD_SYN"])
            syn = SynBatch(images=stored["images"], labels=None, targets=stored["targets"])
            print(f"loaded {os.environ['LOAD_SYN']}", flush=True)
        else:
            t1 = time.time()
            run.execute()
            print(f"distillation {time.time() - t1:.1f} s", flush=True)
            syn = param.materialize().detach()
            if os.environ.get("SAVE_SYN"):
                save_file({"images": syn.images.contiguous(), "targets": syn.targets.contiguous()},
                          os.environ["SAVE_SYN"])
        score(syn, "KRR-ST")


if __name__ == "__main__":
    main()
