"""Block-parallel torch work on the CPU: Python threads, each running single-threaded torch ops.

Effects split long signals into blocks of frames; each block runs dozens of small torch ops.
With torch's own intra-op threads every op ends at an OpenMP barrier, and on a busy machine
each barrier waits for a descheduled thread (measured: 3.2 s against 0.8 s for 2 minutes of
stereo texture on 2 loaded cores). So on the CPU, ``parallel_map`` sets torch to one thread
and runs the blocks on ``torch.get_num_threads()`` Python threads instead (torch ops release
the GIL). Accelerators run the jobs in order.

While the batch engine runs several files at once (``--jobs``), ``one_thread_per_file`` makes
each file's work serial (torch on one thread, blocks in order on the file's own thread), so
files x threads never exceeds the cores it was given.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

import torch

_lock = threading.Lock()
_users = 0
_saved = 1
_per_file = 0  # > 0 while files run in parallel: no block threads inside a file


@contextmanager
def serial_torch_ops():
    """Run torch ops single-threaded for a while; yields the thread count that was set.

    Nested and concurrent users (batch ``--jobs``) share one saved setting.
    """
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _users += 1
        workers = _saved
    try:
        yield workers
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                torch.set_num_threads(_saved)


@contextmanager
def one_thread_per_file():
    """While held, torch runs on one thread and ``parallel_map`` runs its jobs in order: for
    callers that already run one file per core (batch ``--jobs``)."""
    global _per_file
    with serial_torch_ops():
        with _lock:
            _per_file += 1
        try:
            yield
        finally:
            with _lock:
                _per_file -= 1


def parallel_map(fn: Callable[[Any], None], jobs: Iterable, device: torch.device | str = "cpu") -> None:
    """``fn(job)`` for every job: on the CPU on Python threads with single-threaded torch ops.

    Exceptions propagate; on an error or Ctrl-C the jobs not started yet are dropped.
    """
    jobs = list(jobs)
    if torch.device(device).type != "cpu" or len(jobs) < 2:
        for job in jobs:
            fn(job)
        return
    with serial_torch_ops() as workers:
        if workers < 2 or _per_file:
            for job in jobs:
                fn(job)
            return
        futures = [_block_pool(workers).submit(fn, job) for job in jobs]
        try:
            for future in futures:
                future.result()  # re-raises a worker's exception
        finally:
            for future in futures:
                future.cancel()
            wait(futures)  # nothing of this call runs on after it returns


_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (process id, threads, pool)


def _block_pool(workers: int) -> ThreadPoolExecutor:
    """One pool of block threads for the process, kept between calls: starting threads for every
    file cost about 2 ms each, as much as a short file's model. A forked child gets its own."""
    global _pool
    with _lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != workers:
            # a replaced pool is dropped, not shut down (a concurrent caller may still be submitting
            # to it); once collected its idle threads end
            _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="cakfx-block"))
        return _pool[2]
