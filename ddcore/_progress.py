"""Progress of the work a user waits for: a rich bar in a terminal, plain log lines otherwise.

* :class:`ProgressBar` — the distillation loop (step, loss, ETA).
* :class:`TaskProgress` — a countable job (evaluation models trained, teachers pre-trained, application
  units): ``done/total`` and ETA. Components get one from ``build.progress_task(label, total)``, which is
  silent unless the run shows progress. Under a running distillation bar (periodic evaluation) the task
  joins that bar's display, since rich allows one live display at a time.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Optional

#: The rich ``Progress`` of the distillation bar while it runs (tasks started meanwhile add rows to it).
_live = None

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
            global _live
            _live = self._progress

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
        global _live
        if self._progress is not None:
            if _live is self._progress:
                _live = None
            self._progress.stop()
            self._progress = None


def format_eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class TaskProgress:
    """``done / total`` of a countable job with its ETA.

    In a terminal: a rich bar (a row of the distillation bar's display when one is live). Otherwise: one
    ``log`` line at most every ``interval_s`` seconds, plus one when the job completes. ``advance`` may be
    called from worker threads. Disabled: does nothing.

    :param label: what is being done, e.g. ``"eval ConvNet"``.
    :param unit: what is counted (``"models"``, ``"teachers"``, ...).
    :param rate: also show the throughput (``unit``/s), e.g. for a decode of many images.
    """

    def __init__(self, label: str, total: int, *, enabled: bool = True, log: Callable[[str], None] = print,
                 unit: str = "models", interval_s: float = 30.0, terminal: Optional[bool] = None,
                 rate: bool = False):
        self.label, self.total, self.unit, self.enabled = label, int(total), unit, enabled and total > 0
        self.done = 0
        self._rate = rate
        self._resumed = 0  # done before this process started (not counted in the rate or the ETA)
        self._log, self._interval = log, interval_s
        self._lock = threading.Lock()
        self._t0 = self._last = time.perf_counter()
        self._progress = self._owned = self._task = None
        if not self.enabled:
            return
        if terminal if terminal is not None else sys.stdout.isatty():
            if _live is not None:
                self._progress = _live
            else:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

                columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn(unit)]
                if rate:
                    columns.append(TextColumn("{task.fields[rate]}"))
                self._progress = self._owned = Progress(
                    *columns, TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                )
                self._owned.start()
            # ``loss`` keeps the distillation bar's columns renderable for this row
            self._task = self._progress.add_task(label, total=self.total, completed=0, loss="", rate="")

    def per_second(self) -> float:
        """Throughput of this process so far (units per second)."""
        return (self.done - self._resumed) / max(time.perf_counter() - self._t0, 1e-9)

    def line(self) -> str:
        elapsed = time.perf_counter() - self._t0
        new = self.done - self._resumed
        eta = elapsed / new * (self.total - self.done) if new else float("inf")
        rate = f", {self.per_second():.0f} {self.unit}/s" if self._rate else ""
        return (f"{self.label}: {self.done}/{self.total} {self.unit} "
                f"({format_eta(elapsed)} elapsed{rate}, ETA {format_eta(eta)})")

    def advance(self, n: int = 1, *, count_rate: bool = True) -> None:
        """``n`` more units done; ``count_rate=False`` for work an earlier process did (a resumed job)."""
        if not self.enabled:
            return
        with self._lock:
            self.done = min(self.total, self.done + n)
            if not count_rate:
                self._resumed = self.done
            if self._progress is not None:
                fields = {"rate": f"{self.per_second():.0f}/s"} if self._rate else {}
                self._progress.update(self._task, completed=self.done, **fields)
                return
            now = time.perf_counter()
            if self.done == self.total or now - self._last >= self._interval:
                self._last = now
                self._log(self.line())

    def close(self) -> None:
        if self._progress is not None:
            if self._owned is not None:
                self._owned.stop()
            else:
                self._progress.remove_task(self._task)
            self._progress = self._owned = None

    def __enter__(self) -> "TaskProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
