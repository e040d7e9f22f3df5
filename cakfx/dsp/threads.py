"""Block-parallel torch work on the CPU: Python threads, each running single-threaded torch ops.

Effects split long signals into blocks of frames; each block runs dozens of small torch ops.
With torch's own intra-op threads every op ends at an OpenMP barrier, and on a busy machine
each barrier waits for a descheduled thread (measured: 3.2 s against 0.8 s for 2 minutes of
stereo texture on 2 loaded cores). So on the CPU, ``parallel_map`` sets torch to one thread
and runs the blocks on ``torch.get_num_threads()`` Python threads instead (torch ops release
the GIL). Accelerators run the jobs in order.

While the batch engine runs several files at once (``--jobs``), ``one_thread_per_file`` makes
each file's blocks run on the file's own thread, in order, with idle block threads taking the next
ones (torch on one thread throughout): a file does not wait on block threads other files hold, and
a batch's last files, fewer than the cores, still use them all.
"""

from __future__ import annotations

import os
import threading
from collections import deque
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
        if workers < 2:
            for job in jobs:
                fn(job)
            return
        if _per_file:
            _caller_runs(fn, jobs, workers)
            return
        futures = [_block_pool(workers).submit(fn, job) for job in jobs]
        try:
            for future in futures:
                future.result()  # re-raises a worker's exception
        finally:
            for future in futures:
                future.cancel()
            wait(futures)  # nothing of this call runs on after it returns


def _caller_runs(fn: Callable[[Any], None], jobs: list, workers: int) -> None:
    """While files run in parallel: the calling (file) thread takes the jobs in order itself and
    idle block threads take the next ones when they are free. A batch's files then keep every core
    busy when fewer files than cores are left (its last files), without the file threads waiting
    on block threads the other files hold."""
    pending = deque(jobs)

    def drain() -> None:
        try:
            while True:
                try:
                    job = pending.popleft()  # atomic: each job runs once
                except IndexError:
                    return
                fn(job)
        except BaseException:
            pending.clear()  # an error (or Ctrl-C) drops the jobs not started yet
            raise

    helpers = [_block_pool(workers).submit(drain) for _ in range(workers - 1)]
    try:
        drain()
    finally:
        for helper in helpers:
            helper.cancel()  # not started: nothing left for it
        wait(helpers)  # nothing of this call runs on after it returns
    for helper in helpers:
        if not helper.cancelled():
            helper.result()  # re-raises a helper's exception


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
