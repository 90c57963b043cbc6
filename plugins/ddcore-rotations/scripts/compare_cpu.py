"""Tiny CPU comparison at equal storage: KRR-ST pixels vs +PCA parameterization vs +rotations & approximation.

Runs recipes/boost_ssdd_cifar10.toml three times (the Table 3 rows, selected by --set exactly as its header says)
on a CIFAR-10 subset with small networks, a short distillation and a short evaluation, and prints one JSON line
per row (linear-probe accuracy on the subset's test split, storage in image equivalents, wall time) plus the
same-storage random baseline.

    DDCORE_DATA=/work/shared/datasets python plugins/ddcore-rotations/scripts/compare_cpu.py OUT_DIR [--quick]
    python plugins/ddcore-rotations/scripts/compare_cpu.py OUT_DIR --digits   # bundled 8x8 digits, minutes

``--digits`` swaps the data for scikit-learn's bundled digits (3-channel, 8x8) and scales every size down
(budget N = 20 images, U = 40, V = 16, teacher width 2) so the whole comparison runs in a few CPU minutes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from ddcore.testing import run_recipe

ROOT = Path(__file__).resolve().parents[3]
RECIPE = ROOT / "recipes" / "boost_ssdd_cifar10.toml"

SMALL = [  # the KRR-ST CPU check's data, teacher, pool and evaluation (plugins/ddcore-krr/README.md)
    "device=cpu",
    "data.train_per_class=100", "data.test_per_class=200",
    "real.batch=256",
    "backbone.channels=[16, 32, 64]",
    "synset.budget=10",                      # N = 10 images = 30,720 floats
    # U = V = 32 instead of the 2N = 20 rule: the rule gives m = 338 images (1,352 pairs), too slow for this CPU
    # check; 32/32 gives m = 50 (200 pairs) in the same floats.
    "synset.num_bases_x=32", "synset.num_bases_y=32",
    "synset.pca_images=0",
    "synset.approx_epochs=1000",
    "synset.teacher.base_width=8", "synset.teacher.epochs=40", "synset.teacher.batch_size=128",
    "synset.teacher.projector=[128, 128]", "synset.teacher.warmup_epochs=0", "synset.teacher.feature_batch=500",
    "sampler.num_models=3", "sampler.max_steps=300",
    "objective[0].real_augment=none",
    "optimizer.lr=0.003",
    "run.iterations=300", "run.log_every=50", "run.checkpoint_every=0", "run.progress=false",
    "eval.num_runs=3", "eval.pretrain_epochs=300", "eval.pretrain_batch_size=50",
    "eval.baselines=[\"random\"]",
    "eval.targets[0].iterations=300", "eval.targets[0].batch_size=256",
]
DIGITS = [
    "device=cpu", 'data={name="digits", channels=3}', "real.batch=128",
    "backbone.channels=[16, 32]",
    "synset.budget=20", "synset.num_bases_x=0", "synset.num_bases_y=0",  # paper rule: U = min(40, 48), V = 16
    "synset.approx_epochs=1000",
    "synset.teacher.base_width=2", "synset.teacher.epochs=5", "synset.teacher.batch_size=64",
    "synset.teacher.projector=[64, 64]", "synset.teacher.warmup_epochs=1",
    "sampler.num_models=4", "sampler.max_steps=50",
    "objective[0].real_augment=none",
    "run.iterations=200", "run.log_every=50", "run.checkpoint_every=0", "run.progress=false",
    "eval.num_runs=3", "eval.pretrain_epochs=100", "eval.pretrain_batch_size=256",
    'eval.baselines=["random"]', "eval.targets[0].iterations=500",
]
DIGITS_TEACHER = "{base_width=2, epochs=5, batch_size=64, projector=[64, 64], warmup_epochs=1}"
TEACHER = "{base_width=8, epochs=40, batch_size=128, projector=[128, 128], warmup_epochs=0, feature_batch=500}"
ROWS = {
    "krr_st_pixels": [f'synset={{name="krr_pixels", num=10, teacher={TEACHER}}}'],
    "+parameterization": ["synset.views=[]"],
    "+aug_and_approx": [],
}


def main() -> None:
    out = Path(sys.argv[1])
    quick = "--quick" in sys.argv
    torch.set_num_threads(2)
    digits = "--digits" in sys.argv
    small = list(DIGITS if digits else SMALL)
    rows = dict(ROWS)
    if digits:  # krr_pixels pairs at the same floats: round(20 * 192 / (192 + 16)) = 18
        rows["krr_st_pixels"] = [f'synset={{name="krr_pixels", num=18, teacher={DIGITS_TEACHER}}}']
    if quick:
        small += ["run.iterations=4", "eval.num_runs=1", "eval.pretrain_epochs=2", "eval.targets[0].iterations=20",
                  "synset.teacher.epochs=1"]
    for row, extra in rows.items():
        t0 = time.perf_counter()
        overrides = small + extra
        if row == "krr_st_pixels":  # the krr_pixels table replaces [synset]: drop the pca-only overrides
            overrides = [o for o in overrides if not o.startswith("synset.")] + extra
            if quick:
                overrides = [o.replace("epochs=40", "epochs=1") for o in overrides]
        res = run_recipe(RECIPE, out, overrides, out_name=row)
        param = res.run.parameterization
        line = {
            "row": row,
            "accuracy": res.results["synset"]["mean"], "std": res.results["synset"]["std"],
            "random_same_storage": res.results["baselines"]["random"]["mean"],
            "image_equivalents": param.storage_floats() / res.run.build_ctx.info.floats_per_image,
            "pairs": len(res.synset),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
