"""One conversion or PCA split over several machines: `--part K/N` does part K of N, `--merge N` joins them.

    part = Part.parse("2/3")             # what --part 2/3 means; K counts from 1 (Slurm: --array=1-N)
    part.owns(i)                         # does work item i belong to part K? (i % N == K - 1: interleaved)
    write_record(path, part, record)     # a finished part says so, with what it was made from
    problems = check_parts(n, expected, where=..., command=..., progress=...)  # what stops a merge, per part

Every part lists the same sources and plans the same work (the listing is sorted and the plan seeded), so
any machine can do any part, and a part's output is byte for byte what one machine would have made of the
same items. A part writes only its own output and, last, its record `part-K-of-N.json` in the tool's state
folder; the merge reads the N records and refuses, naming the part, when one is missing, unfinished, or was
made with other options or from other sources. Records hold what makes the bytes (options, a fingerprint of
the listing, the decoder), never timings, so the merged files do not depend on how the work was split.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click

from common.errors import ConfigError, DataError
from common.files import read_json, write_json

PART = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
FLAGS = ("options", "source")  # record keys whose entries are command-line options (named --like-this)


def part_options(output: str, doing: str):
    """The options a command split over machines shares: --workers, --part K/N, --merge N; `output` is the file a
    part does not write yet and the merge writes (manifest.json, pca.json), `doing` what a part does."""
    def decorate(command):
        for option in reversed([
                click.option("--workers", type=click.IntRange(1), help="Worker processes [default: all cores]."),
                click.option("--part", metavar="K/N", help=f"{doing} only part K of N (one machine of N); no {output} yet."),
                click.option("--merge", type=click.IntRange(1), metavar="N", help=f"Write {output} from N finished parts.")]):
            command = option(command)
        return command
    return decorate


@dataclass(frozen=True)
class Part:
    k: int   # 1..n
    n: int

    @classmethod
    def parse(cls, text: str, option: str = "--part") -> Part:
        m = PART.match(text or "")
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise ConfigError(f"{option} {text}: expected K/N with 1 <= K <= N (part K of N), e.g. {option} 2/8; "
                              "under a Slurm array (--array=1-N): "
                              f"{option} $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
        return cls(int(m.group(1)), int(m.group(2)))

    def owns(self, i: int) -> bool:
        """Work item i (counted over the whole job) belongs to this part: every N-th one, from K - 1."""
        return i % self.n == self.k - 1

    @property
    def name(self) -> str:
        return f"{self.k}/{self.n}"

    def record_name(self) -> str:
        return f"part-{self.k}-of-{self.n}.json"


def fingerprint(lines) -> str:
    """SHA-256 of text lines (a listing, say): equal lines, equal fingerprint."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def write_record(path: Path, part: Part, record: dict) -> Path:
    """The record that says part K of N is finished (written last, atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"part": part.k, "of": part.n, **record})
    return path


def read_record(path: Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return read_json(path, "part record")
    except DataError:  # damaged: as if the part had not finished
        return None


def differences(made: dict, expected: dict, flag: str = "--") -> str:
    """'--size 128 (this merge: 256), ...' for the keys whose values differ (flag '': 'opencv 4.9 (...)')."""
    keys = sorted(set(made) | set(expected))
    return ", ".join(f"{flag}{k.replace('_', '-') if flag else k} {made.get(k)} (this merge: {expected.get(k)})"
                     for k in keys if made.get(k) != expected.get(k))


def check_parts(n: int, expected: dict, *, where: Callable[[Part], Path], command: str,
                progress: Callable[[Part], tuple[int, int]]) -> list[str]:
    """What stops a merge of n parts, one phrase per bad part (empty: all N are there and match).

    expected: {"options": {...}, "sources": fingerprint, ...} as this merge computes them; every key of it
    must be equal in each part's record, found at where(part). progress(part) -> (items done, items of the
    part), for a part that left no record: missing (none done) or unfinished."""
    problems = []
    for k in range(1, n + 1):
        part = Part(k, n)
        record = read_record(where(part))
        rerun = f"run `{command} --part {part.name}`"
        if record is None:
            done, total = progress(part)
            state = f"unfinished ({done} of {total} done)" if done else "missing"
            problems.append(f"part {part.name} {state}: {rerun}" + (" (it keeps what is done)" if done else ""))
            continue
        for key, want in expected.items():
            got = record.get(key)
            if got == want:
                continue
            if isinstance(want, dict) and isinstance(got, dict):
                what = f"was made with {differences(got, want, '--' if key in FLAGS else '')}"
            elif key == "sources":
                what = f"was made from other sources (listing fingerprint {str(got)[:12]}, this merge's {want[:12]})"
            else:
                what = f"was made with {key} {got} (this merge: {want})"
            problems.append(f"part {part.name} {what}: make it again with this merge's options and sources, "
                            f"{rerun}")
            break
    return problems


def refuse(where: Path, n: int, problems: list[str]) -> DataError:
    """The one-line error of a merge that cannot go on; nothing is written."""
    return DataError(f"{where}: cannot merge {n} parts, nothing written: " + "; ".join(problems))
