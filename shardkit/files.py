"""Atomic file writes, the one way every stage writes a file that another stage or a re-run reads.

    with atomic_write(path) as f:      # a temporary sibling, opened for writing
        f.write(data)                  # on success: flushed, fsync'ed, renamed onto path
    write_json(path, obj)

A crash or an exception leaves the previous file (if any) untouched and no temporary file behind: readers
see either the old complete file or the new complete one, never a part.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def partial_path(path: Path) -> Path:
    """The temporary sibling of `path` (hidden, per process, so concurrent writers do not collide)."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    path = Path(path)
    tmp = partial_path(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, obj) -> None:
    with atomic_write(path, "w") as f:
        f.write(json.dumps(obj, indent=1) + "\n")
