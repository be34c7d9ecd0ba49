"""Ordered parallel map with bounded memory, shared by the offline tools.

`ordered_map(fn, items, workers)` yields fn(item) in input order. With workers > 1 the items go to worker
processes in chunks, and at most `ahead` chunks per worker are in flight, so memory stays bounded however
many items there are. With workers == 1 it runs in this process (no pickling, no start-up).
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _run_chunk(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [fn(x) for x in chunk]


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, *, chunksize: int = 16,
                ahead: int = 4, initializer: Callable[[], None] | None = None) -> Iterator[R]:
    if workers <= 1:
        if initializer:
            initializer()
        yield from map(fn, items)
        return
    it = iter(items)
    chunks = iter(lambda: list(islice(it, chunksize)), [])
    with ProcessPoolExecutor(workers, initializer=initializer) as pool:
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
