"""How many cores a process may use, how many workers to start, how many batches fit in shared memory, and an
ordered parallel map with bounded memory.

`available_cores()` counts the cores of this process's affinity mask (what a container or `taskset` allows),
not the machine's. `default_workers(world_size)` is one rank's share of them: the default of every
`--workers` option, for the offline tools (world_size 1) and the loaders of each rank. Nothing sizes threads
or processes by `os.cpu_count()` (the machine's count, which a container does not lower).

`shared_memory_free()` is what /dev/shm has free (the tmpfs where worker processes hand batches over; containers
often give it 64 MB), and `fit_shared_memory(...)` the workers and prefetch depth whose batches fit in it.

`ordered_map(fn, items, workers)` yields fn(item) in input order. With workers > 1 the items go to worker
processes in chunks, and at most `ahead` chunks per worker are in flight, so memory stays bounded however
many items there are. With workers == 1 it runs in this process (no pickling, no start-up). A process that
holds a CUDA context or DALI's threads passes start_method="forkserver": a fork would copy them mid-lock.
"""
from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """The cores this process may run on (its affinity mask), not all of the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(world_size: int = 1) -> int:
    """One rank's share of the available cores (at least one)."""
    return max(1, available_cores() // world_size)


SHM = "/dev/shm"
SHM_SHARE = 0.5     # of the free shared memory, the most one process's workers may fill (other users, headroom)
IN_HAND = 2         # batches out of the queue but not yet freed: the one being handed over, the one in use


def shared_memory_free(path: str = SHM) -> int | None:
    """Bytes free in the shared-memory file system (os.statvfs), or None where there is none (not Linux)."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def fit_shared_memory(workers: int, prefetch: int, batch_bytes: int, free: int | None,
                      processes: int = 1) -> tuple[int, int]:
    """(workers, prefetch per worker) whose batches in flight, workers * prefetch + IN_HAND of `batch_bytes`
    each, fit in SHM_SHARE of `free` bytes shared by `processes` such loaders (the ranks on this machine).
    Fewer prefetched batches first (down to one per worker), then fewer workers; (0, 0) when not even one
    worker with one batch fits: then load in the process itself, which needs no shared memory. `free` None
    (unknown): as asked."""
    if workers <= 0 or free is None:
        return workers, prefetch
    room = int(SHM_SHARE * free / max(1, processes)) // max(1, batch_bytes) - IN_HAND
    if room < 1:
        return 0, 0
    if workers * prefetch <= room:
        return workers, prefetch
    if workers <= room:
        return workers, max(1, room // workers)
    return room, 1


def _run_chunk(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [fn(x) for x in chunk]


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, *, chunksize: int = 16,
                ahead: int = 4, initializer: Callable[[], None] | None = None,
                start_method: str | None = None) -> Iterator[R]:
    if workers <= 1:
        if initializer:
            initializer()
        yield from map(fn, items)
        return
    it = iter(items)
    chunks = iter(lambda: list(islice(it, chunksize)), [])
    context = multiprocessing.get_context(start_method) if start_method else None
    with ProcessPoolExecutor(workers, mp_context=context, initializer=initializer) as pool:
        window = deque(pool.submit(_run_chunk, fn, c) for c in islice(chunks, workers * ahead))
        try:
            while window:
                done = window.popleft().result()
                nxt = next(chunks, None)
                if nxt is not None:
                    window.append(pool.submit(_run_chunk, fn, nxt))
                yield from done
        finally:
            for f in window:
                f.cancel()
