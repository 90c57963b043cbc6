"""Profile one distillation step (``Run.step``; DM unless ``--method``) with ``torch.profiler`` per hot-path switch.

    python bench/profile_step.py [--device cpu|cuda] [--batch-real 256] [--steps 2] [--top 12]

Variants: the default step (fp32; on a CPU ``channels_last`` and ``real_chunk`` default to on), ``nchw``
(``channels_last = "off"``), ``no_chunk`` (``real_chunk = 0``: all real images in one forward), ``[run] precision =
"bf16"`` (autocast of the objective terms' forward passes), ``channels_last = "on"``, and ``precision = "tf32"``
(CUDA matmul/cuDNN TF32; a no-op on CPU). For each it prints the
profiled wall time per step and the top operators by self time, and writes everything to
``bench/results/profile_<device>.txt``. Real data are uint8 on the device and normalised by one fused ``addcmul`` in
every variant (``ClassIndexedData.normalize``), which shows up as ``aten::addcmul`` in the table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_all import build_run, methods, load_recipe_dict, sync  # noqa: E402

VARIANTS = {"default": {}, "nchw": {"channels_last": "off"}, "no_chunk": {"real_chunk": 0},
            "bf16": {"precision": "bf16"}, "channels_last": {"channels_last": "on"},
            "tf32": {"precision": "tf32"}, "eager": {"compile": "off"}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--method", default="dm", help="a run_all method key (dm, idm, idm_iid, dsa, dcc)")
    args = p.parse_args()
    device = torch.device(args.device)
    method = next(m for m in methods() if m.key == args.method)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    report = []
    for name in args.variants.split(","):
        run = build_run(load_recipe_dict(method, args.batch_real, False, VARIANTS[name]), device, scope=name)
        run.step(0)  # warm-up
        sync(device)
        with profile(activities=activities) as prof:
            t0 = time.perf_counter()
            for i in range(1, args.steps + 1):
                run.step(i)
            sync(device)
            per_step = (time.perf_counter() - t0) / args.steps
        table = prof.key_averages().table(sort_by=sort, row_limit=args.top)
        text = (f"== {args.method} {name}: {per_step:.3f} s/step (profiled, batch_real {args.batch_real}/class, "
                f"{device})\n{table}\n")
        print(text)
        report.append(text)
    stem = "profile" if args.method == "dm" else f"profile_{args.method}"
    out = HERE / "results" / f"{stem}_{device.type}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(report))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
