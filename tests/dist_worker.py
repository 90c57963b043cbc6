"""Worker for tests/test_distributed.py, launched by ``torch.distributed.run`` (2 gloo processes on CPU).

``python -m torch.distributed.run --nproc_per_node 2 tests/dist_worker.py RECIPE.toml OUT_ROOT MODE...``
runs the recipe once per MODE (``[run] distributed``) into ``OUT_ROOT/MODE`` inside one process group, so the
test pays the start-up of the process group once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ddcore.distributed import shutdown
from ddcore.engine import Run


def main() -> None:
    recipe, out_root, *modes = sys.argv[1:]
    for mode in modes:
        run = Run.from_file(recipe, [f"run.distributed={mode}"], out_dir=Path(out_root) / mode, device="cpu",
                            progress=False, log=lambda *_: None)
        run.execute()
        assert run.dist.world_size == 2 and run.dist.mode == mode, (run.dist.world_size, run.dist.mode)
        train = run.build_ctx.train
        mapping = getattr(train, "_mapping", None)
        (Path(out_root) / f"store-rank{run.dist.rank}.json").write_text(json.dumps(
            {"placement": train.placement, "file": str(mapping.path) if mapping is not None else None}))
    shutdown()


if __name__ == "__main__":
    main()
