"""Progress of the jobs a user waits for: log lines off a terminal, rows of the live bar in one."""

from __future__ import annotations

import threading

from ddcore.engine import Run
from ddcore._progress import ProgressBar, TaskProgress, format_eta
from ddcore.recipe import parse_recipe
from ddcore.testing import tiny_recipe


def test_plain_task_logs_periodically_and_at_the_end():
    lines = []
    task = TaskProgress("eval", 4, log=lines.append, interval_s=3600, terminal=False)
    task.advance()
    task.advance(2)
    assert lines == []  # within the interval
    task.advance()
    assert len(lines) == 1 and lines[0].startswith("eval: 4/4 models (") and "ETA 0m00s" in lines[0]
    every = []
    task = TaskProgress("pool", 3, log=every.append, interval_s=0, unit="networks", terminal=False)
    for _ in range(3):
        task.advance()
    assert [line.split(" (")[0] for line in every] == ["pool: 1/3 networks", "pool: 2/3 networks", "pool: 3/3 networks"]


def test_disabled_task_is_silent_and_threads_count_exactly():
    lines = []
    TaskProgress("x", 2, enabled=False, log=lines.append, interval_s=0, terminal=False).advance(2)
    assert lines == []
    task = TaskProgress("t", 400, log=lines.append, interval_s=3600, terminal=False)
    workers = [threading.Thread(target=lambda: [task.advance() for _ in range(100)]) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert task.done == 400 and len(lines) == 1


def test_terminal_task_joins_the_live_distillation_bar():
    bar = ProgressBar(10, 0, enabled=True, label="distill")
    if bar._progress is None:  # stdout is not a terminal: force the rich display for this test
        bar.close()
        from rich.progress import Progress

        import ddcore._progress as progress_module

        live = Progress()
        progress_module._live = live
    else:
        live = bar._progress
    try:
        task = TaskProgress("eval", 2, terminal=True)
        assert task._progress is live and task._owned is None
        task.advance(2)
        assert live.tasks[-1].completed == 2
        task.close()
        assert all(t.description != "eval" for t in live.tasks)
    finally:
        bar.close()
        import ddcore._progress as progress_module

        progress_module._live = None


def test_format_eta():
    assert format_eta(75) == "1m15s" and format_eta(3 * 3600 + 120) == "3h02m" and format_eta(float("inf")) == "?"


def test_a_run_logs_evaluation_progress(tmp_path):
    lines = []
    recipe = tiny_recipe()
    recipe["eval"]["num_models"] = 2
    epochs = recipe["eval"]["epochs"] + 1  # the reference protocol trains epochs + 1
    run = Run(parse_recipe(recipe), out_dir=tmp_path / "run", device="cpu", progress=True, log=lines.append)
    run.execute()
    # counted in epochs, so a long network moves the line; it ends at every network's every epoch
    done = [line for line in lines if line.startswith(f"eval (2 networks): {2 * epochs}/{2 * epochs} epochs")]
    assert len(done) == 2, lines  # the synthetic set, then the random baseline
    quiet = []
    run = Run(parse_recipe(recipe), out_dir=tmp_path / "quiet", device="cpu", progress=False, log=quiet.append)
    run.execute()
    assert not [line for line in quiet if line.startswith("eval (")]
