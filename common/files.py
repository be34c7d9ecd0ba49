"""Atomic file writes, the one way every stage writes a file that another stage or a re-run reads.

    with atomic_write(path) as f:      # a temporary sibling, opened for writing
        f.write(data)                  # on success: flushed, fsync'ed, renamed onto path
    write_json(path, obj)
    obj = read_json(path, "what it is")  # DataError naming the file when it is missing or not JSON

A crash or an exception leaves the previous file (if any) untouched and no temporary file behind: readers
see either the old complete file or the new complete one, never a part. A kill -9 can leave a temporary
`.NAME.HOST-PID.partial`; remove_stale_partials() clears those of dead processes of this host (never another
machine's: several may write into one shared folder, e.g. the parts of a conversion), and the writers call it
first.
A full disk (ENOSPC) becomes DiskFull, one line naming the folder, its free space and what is still needed.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

from common.errors import DataError

PARTIAL = re.compile(r"^\..+\.([^.]*)-(\d+)\.partial$")  # .NAME.HOST-PID.partial
HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())


class DiskFull(DataError):
    """No space left on the device that holds `folder` (nothing under a final name was half-written)."""

    def __init__(self, message: str, folder: Path, needed: int | None = None):
        super().__init__(message)
        self.folder, self.needed = Path(folder), needed


def partial_path(path: Path) -> Path:
    """The temporary sibling of `path` (hidden, per host and process, so concurrent writers do not collide)."""
    return path.with_name(f".{path.name}.{HOST}-{os.getpid()}.partial")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_partials(folder: Path) -> int:
    """Delete the temporary files that killed writers of this host left in `folder` (never a live process's, nor
    another host's, whose processes cannot be seen from here); return how many."""
    n = 0
    for p in Path(folder).glob(".*.partial"):
        m = PARTIAL.match(p.name)
        if m and m.group(1) == HOST and int(m.group(2)) != os.getpid() and not _alive(int(m.group(2))):
            p.unlink(missing_ok=True)
            n += 1
    return n


def _mb(n: float) -> str:
    if n < 1e6:
        return f"{n / 1e3:,.1f} kB"
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


def disk_full(folder: Path, needed: int | None = None, doing: str = "") -> DiskFull:
    """The one-line error for a full disk: folder, free space, roughly what is still needed, the fix."""
    folder = Path(folder)
    try:
        free = _mb(shutil.disk_usage(folder).free)
    except OSError:
        free = "unknown"
    need = f", about {_mb(needed)} still needed" if needed else ""
    what = f" {doing}" if doing else ""
    return DiskFull(f"{folder}: disk full{what} ({free} free{need}); nothing half-written was kept: free some "
                    "space (or choose another folder) and run the same command again", folder, needed)


@contextmanager
def full_disk_as_error(folder: Path, needed: int | Callable[[], int | None] | None = None,
                       doing: str = "") -> Iterator[None]:
    """Turn OSError(ENOSPC) raised inside into DiskFull naming `folder`, and add this estimate to a DiskFull
    that has none; `needed` may be a function, asked only when the disk is full (e.g. from the progress)."""
    try:
        yield
    except (OSError, DiskFull) as e:
        if isinstance(e, OSError) and e.errno != errno.ENOSPC or \
                isinstance(e, DiskFull) and (e.needed is not None or needed is None):
            raise
        raise disk_full(folder, needed() if callable(needed) else needed, doing) from None


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    path = Path(path)
    tmp = partial_path(path)
    try:
        with full_disk_as_error(path.parent, doing=f"writing {path.name}"):
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


def read_json(path: str | Path, what: str) -> dict:
    """A JSON file another stage wrote; DataError naming the file (and `what` it should be) if it is missing or
    not valid JSON. `path` may be anything with is_file() and read_text() (a remote file, say)."""
    path = Path(path) if isinstance(path, str) else path
    if not path.is_file():
        raise DataError(f"{path}: not found ({what})")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
