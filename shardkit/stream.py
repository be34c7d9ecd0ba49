"""Sources that can only be read front to back (gzip tars, parquet files): one pass, converted while read.

    spilled = convert_stream(members, spill_file, size=256, quality=90, workers=2, total=n, desc="train")
    # spilled: [(member, Spilled(file, offset, size, reason))], in the order the source holds them

A gzip tar cannot be seeked and a parquet row group must be read whole, so such a source cannot hand the
workers images in the canonical order. Instead each archive is read once, in its own order, while the workers
decode and resize (common.parallel.ordered_map: a bounded window of images in flight, so memory stays
bounded however large the archive); the resized JPEGs (about a fifth of the source's size) are appended to a
spill file beside the shards. Once the split's listing is complete it is put in the canonical order like
any other (shardkit.sources.canonical) and the shards are cut from the spill file
(shardkit.convert.convert_item reads a Spilled item back instead of converting it); then the spill is deleted.
Temporary disk space: about the size of the split's shards.

The listing of a finished pass is saved beside the spill (`<split>.listing.json`, with the files' sizes and
mtimes): a re-run with the same files and options reuses it, so finished shards are kept without reading the
archives again; a re-run after an interruption cuts the remaining shards from the spill if it is whole, and
only reads the archives again when a shard still to write needs a spill that is gone.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from common.errors import DataError
from common.files import read_json, write_json
from common.parallel import ordered_map
from common.progress import progress_bar
from shardkit import imaging


class Member(NamedTuple):
    """One image as a streamed source holds it."""
    shown: str      # where it is, for the manifest's `skipped` and the fingerprints: archive/member name
    name: str       # its file name in the extracted tree (n01440764_10026.JPEG), which gives its key
    wnid: str       # its class, from its name
    data: bytes


@dataclass(frozen=True)
class Spilled:
    """A streamed image, converted: `size` bytes of baseline JPEG at `offset` of `file`, or why not (`reason`)."""
    file: str
    offset: int
    size: int
    reason: str | None = None


def _convert(job: tuple[str, bytes], size: int, quality: int) -> tuple[bytes | None, str | None]:
    return imaging.try_convert(job[1], size, quality)


def convert_stream(members: Iterable[Member], spill: Path, *, size: int, quality: int, workers: int, total: int,
                   desc: str) -> list[tuple[Member, Spilled]]:
    """Convert every member in `workers` processes while `members` is read; append the JPEGs to `spill`.
    The members' bytes are dropped once sent, so only the window in flight is held in memory."""
    spill.parent.mkdir(parents=True, exist_ok=True)
    in_flight: deque[Member] = deque()  # the members sent to the workers, without their bytes

    def jobs() -> Iterator[tuple[str, bytes]]:
        for m in members:
            in_flight.append(m._replace(data=b""))
            yield m.shown, m.data

    done, offset = [], 0
    work = partial(_convert, size=size, quality=quality)
    with open(spill, "wb") as out, progress_bar(total, f"{desc} (streamed)") as bar:
        for jpeg, reason in ordered_map(work, jobs(), workers, initializer=imaging.one_thread):
            member = in_flight.popleft()  # ordered_map answers in input order
            if jpeg is None:
                done.append((member, Spilled(str(spill), 0, 0, reason)))
            else:
                out.write(jpeg)
                done.append((member, Spilled(str(spill), offset, len(jpeg))))
                offset += len(jpeg)
            bar.update()
    return done


def read_spilled(spilled: Spilled) -> bytes:
    with open(spilled.file, "rb") as f:
        f.seek(spilled.offset)
        return f.read(spilled.size)


class Pass:
    """How one streamed split was read, for the summary line."""

    def __init__(self, what: str):
        self.what, self.t0 = what, time.perf_counter()

    def done(self, images: int) -> str:
        return f"{self.what} read in one streaming pass ({images} images converted while read, " \
               f"{time.perf_counter() - self.t0:.1f} s)"


def stamp(files: list[Path], size: int, quality: int) -> list:
    """What a pass's listing depends on: each file's name, size and mtime, and the conversion options."""
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files] + [size, quality]


def save_listing(record: Path, stamp_: list, spilled: list[tuple[Member, Spilled]], skipped: list[dict],
                 ignored: int) -> None:
    """The listing of a finished pass, so that a re-run with the same files need not read them again."""
    rows = [[m.shown, m.name, m.wnid, s.offset, s.size, s.reason] for m, s in spilled]
    write_json(record, {"stamp": stamp_, "spill": spilled[0][1].file if spilled else "", "items": rows,
                        "skipped": skipped, "ignored": ignored})


def load_listing(record: Path, stamp_: list) -> tuple[list[tuple[Member, Spilled]], list[dict], int] | None:
    """The saved listing if it was made from these files with these options, else None. Its Spilled items
    point into a spill file that is deleted once the split's shards are written: `spill_complete` says."""
    try:
        saved = read_json(record, "streamed listing")
    except DataError:
        return None
    if saved.get("stamp") != stamp_:
        return None
    spilled = [(Member(shown, name, wnid, b""), Spilled(saved["spill"], offset, size, reason))
               for shown, name, wnid, offset, size, reason in saved["items"]]
    return spilled, saved["skipped"], saved["ignored"]


def spill_complete(spilled: list[tuple[Member, Spilled]]) -> bool:
    """Whether the spill file still holds every converted image of the listing."""
    if not spilled:
        return True
    path = Path(spilled[0][1].file)
    end = max(s.offset + s.size for _, s in spilled)
    return path.is_file() and path.stat().st_size >= end
