"""Wall time of each `ddcore new-plugin --kind KIND` package's generated tests (issue #16 asks for < 10 s on 2 cores).

    python bench/bench_scaffold.py [KIND ...]

Generates each package in a temporary folder, makes it discoverable without installing it
(``ddcore.testing.local_install``) and runs its tests in a fresh ``python -m pytest`` process; prints one line per
kind: the wall time of the whole process (interpreter and torch start-up included) and pytest's own time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ddcore._scaffold import KINDS, create_plugin
from ddcore.testing import local_install


def main(kinds: list[str]) -> None:
    print(f"cpu threads: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            root = create_plugin(f"bench_{kind}", tmp, kind)
            site = Path(tmp) / f"site-{kind}"
            with local_install(root, site):
                pass
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(root / "src")])}
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=root,
                                 env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            m = re.search(r"(\d+) passed.* in ([\d.]+)s", res.stdout)
            status = f"{m.group(1)} passed, pytest {float(m.group(2)):.1f} s" if m and res.returncode == 0 else \
                f"FAILED (rc {res.returncode})"
            print(f"{kind:17s} wall {wall:5.1f} s  {status}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(KINDS))
