"""How many cores a process may use, how many workers to start, and an ordered parallel map with bounded memory.

`available_cores()` counts the cores of this process's affinity mask (what a container or `taskset` allows),
not the machine's. `default_workers(world_size)` is one rank's share of them: the default of every
`--workers` option, for the offline tools (world_size 1) and the loaders of each rank.

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
