"""Progress bar with loss and ETA (rich), and plain log lines when stdout is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import Optional

__all__ = ["ProgressBar"]


class ProgressBar:
    def __init__(self, total: int, start: int, *, enabled: bool = True, label: str = "distill"):
        self.total, self.enabled = total, enabled
        self._progress = None
        self._plain = enabled and not sys.stdout.isatty()
        self._t0 = time.perf_counter()
        self._start = start
        if enabled and not self._plain:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            )
            self._progress.start()
            self._task = self._progress.add_task(label, total=total, completed=start, loss="—")

    def update(self, done: int, loss: Optional[float]) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            fields = {"loss": f"{loss:.4g}"} if loss is not None else {}
            self._progress.update(self._task, completed=done, **fields)
        elif loss is not None:
            elapsed = time.perf_counter() - self._t0
            rate = (done - self._start) / max(elapsed, 1e-9)
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            print(f"step {done}/{self.total} loss {loss:.4g} {rate:.2f} it/s ETA {eta:.0f}s", flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
