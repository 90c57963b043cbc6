"""Run independent CPU jobs (training evaluation networks) side by side, each on its share of the cores.

Why not the vectorised ensemble on a CPU: a member's training step is compute-bound convolutions, and oneDNN's
dense kernels beat every batched form of them (grouped, ``vmap``: ``bench/bench_conv_ensemble.py``). What a CPU
loses on these small steps is parallel efficiency: one net's batch of ~100 small images does not keep several
intra-op threads busy (every op forks and joins the whole team). Running ``W`` members at once, each with
``threads // W`` intra-op threads, keeps every core on its own dense kernels with fewer joins
(``bench/bench_eval.py``: faster than one-after-another on the same cores).

Each job must be independent of the others (its own network, generator and augmentation draws); the
results then do not depend on scheduling. With one intra-op thread per worker, a member's arithmetic is
exactly that of sequential training under ``torch.set_num_threads(1)``.

Works for any architecture, BatchNorm nets included (nothing is stacked). The GIL is released inside the
kernels, so Python threads suffice; the intra-op thread count is process-wide in PyTorch, which is why the
pool sets it in every worker and :func:`run_concurrently` restores the caller's count afterwards.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import torch

__all__ = ["run_concurrently", "split_threads"]

T = TypeVar("T")


def split_threads(jobs: int, threads: int, max_workers: int = 0) -> tuple[int, int]:
    """``(workers, intra-op threads per worker)`` for ``jobs`` jobs on ``threads`` threads.

    As many workers as there are jobs and threads (capped by ``max_workers`` when > 0), the threads shared
    out evenly (at least one each).
    """
    if jobs < 1 or threads < 1:
        raise ValueError(f"need jobs >= 1 and threads >= 1, got jobs={jobs}, threads={threads}")
    workers = min(jobs, threads)
    if max_workers > 0:
        workers = min(workers, max_workers)
    return workers, max(1, threads // workers)


def run_concurrently(jobs: Sequence[Callable[[], T]], *, workers: int, threads_per_worker: int = 1) -> list[T]:
    """Results of ``jobs`` (in order), run by ``workers`` threads with ``threads_per_worker`` intra-op threads.

    ``workers <= 1`` runs them one after another in the calling thread without touching the thread count.
    The first failing job's exception is re-raised here once the running jobs finish; jobs not started yet
    are cancelled.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    if threads_per_worker < 1:
        raise ValueError(f"threads_per_worker must be >= 1, got {threads_per_worker}")
    caller_threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ddcore-jobs",
                              initializer=torch.set_num_threads, initargs=(threads_per_worker,))
    try:
        futures = [pool.submit(job) for job in jobs]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(caller_threads)
