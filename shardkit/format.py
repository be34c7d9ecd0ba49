"""The on-disk contract of docs/FORMAT.md, in one place: shard tars with their DALI index, manifest.json,
pca.json. The writers (tools/make_shards.py, tools/compute_pca.py) and the readers (pipeline/) both import it.

Writers are deterministic (fixed tar headers, so the same samples give byte-identical tars) and atomic
(common.files). Readers raise DataError with a message that names the file, what is wrong and the fix.
Only the standard library and numpy are used here, so every stage can import it.
"""
from __future__ import annotations

import hashlib
import tarfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from common.errors import DataError
from common.files import atomic_write, read_json
from shardkit.storage import is_remote, location, open_ranged, open_stream

MANIFEST = "manifest.json"
PCA = "pca.json"
INDEX_VERSION = "v1.2"  # the format of DALI's wds2idx, read by fn.readers.webdataset
BLOCK, RECORD = 512, 10240  # tar block and record sizes
ENCODING = "utf-8"  # of member names, in the PAX headers and in the index
# The version of the bytes make_shards writes for the same sources and options (docs/FORMAT.md, "manifest.json"):
# 1 = listing order (before the canonical order); 2 = the canonical order (split, label, key). Recorded in the
# manifest and in each of its splits; readers refuse a folder whose splits were made by different versions.
FORMAT_VERSION = 2


def key_problem(key: str) -> str | None:
    """Why `key` cannot be a sample key, or None. A key is one token of the space-separated index (no
    whitespace, Unicode's included, since str.split() splits there too), ends at its first dot in webdataset's
    member names (no dot), is a file name (no slash) and is printable text that encodes (no control
    characters, no undecodable file-name bytes). shardkit.sources.sample_key makes file names into such keys."""
    if not key:
        return "empty"
    bad = sorted({c for c in key if c in "./" or c.isspace() or not c.isprintable()})
    if bad:
        return "holds " + " ".join(repr(c) for c in bad)
    return None


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def index_path(tar_path: Path) -> Path:
    return tar_path.with_suffix(".idx")


@dataclass(frozen=True)
class PackedSample:
    """One sample as tar bytes (headers, payloads, padding) and its index line, relative to the blob start."""
    blob: bytes
    entries: tuple[tuple[str, int, int, str], ...]  # (ext, data offset in blob, size, member name)


def pack_sample(key: str, members: dict[str, bytes]) -> PackedSample:
    """Tar-encode one sample with fixed headers (mtime 0, mode 0444, no owner), so equal input gives equal bytes.

    Done in the converting worker, so the process that writes the shard only concatenates.
    """
    problem = key_problem(key)
    if problem:  # a bug upstream: sources.sample_key cleans every file name
        raise ValueError(f"bad sample key {key!r} ({problem}): keys are printable, with no whitespace, dot or slash")
    parts, entries, pos = [], [], 0
    for ext, payload in members.items():
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size, info.mtime, info.mode = len(payload), 0, 0o444
        header = info.tobuf(tarfile.PAX_FORMAT, ENCODING, "strict")
        padding = b"\0" * (-len(payload) % BLOCK)
        entries.append((ext, pos + len(header), len(payload), info.name))
        parts += [header, payload, padding]
        pos += len(header) + len(payload) + len(padding)
    return PackedSample(b"".join(parts), tuple(entries))


class ShardWriter:
    """One WebDataset tar plus its DALI index, written under temporary names and renamed by `commit()`.

    The index lists, per sample, `ext offset size name` for each member (DALI's wds2idx format v1.2).
    Size and SHA-256 of both files are computed from the bytes as they are written (`checksums` after commit),
    so recording them costs no second read.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._files = ExitStack()
        self._file = self._files.enter_context(atomic_write(self.path))
        self._sha = hashlib.sha256()
        self._offset = 0
        self._index: list[str] = []
        self.samples = 0
        self.checksums: dict | None = None  # {"bytes", "sha256", "index_bytes", "index_sha256"} after commit

    def add(self, key: str, members: dict[str, bytes]) -> None:
        self.add_packed(pack_sample(key, members))

    def add_packed(self, sample: PackedSample) -> None:
        line = " ".join(f"{ext} {self._offset + off} {size} {name}" for ext, off, size, name in sample.entries)
        if len(line.split()) != 4 * len(sample.entries):  # never write an index that read_index (or DALI) rejects
            raise ValueError(f"{self.path}: sample {sample.entries[0][3]!r} would break its index line {line!r}")
        self._write(sample.blob)
        self._index.append(line)
        self.samples += 1

    @property
    def bytes_written(self) -> int:
        return self._offset

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._sha.update(data)
        self._offset += len(data)

    def commit(self) -> int:
        """Finish the tar, move its index and then the tar into place; return the tar's size in bytes."""
        end = 2 * BLOCK  # end-of-archive: two zero blocks, then padding to a whole record (as tarfile does)
        end += -(self._offset + end) % RECORD
        self._write(b"\0" * end)
        index = (f"{INDEX_VERSION} {len(self._index)}\n" + "".join(line + "\n" for line in self._index)).encode(ENCODING)
        with atomic_write(index_path(self.path)) as f:
            f.write(index)
        self._files.close()  # flush, fsync, rename the tar
        self.checksums = {"bytes": self._offset, "sha256": self._sha.hexdigest(),
                          "index_bytes": len(index), "index_sha256": hashlib.sha256(index).hexdigest()}
        return self._offset

    def abort(self) -> None:
        """Drop the unfinished tar (its temporary file is removed; nothing under the final name changes)."""
        self._files.__exit__(DataError, DataError("aborted"), None)


def write_split(out: Path, split: str, samples: list[tuple[str, bytes, int]], shard_size: int) -> dict:
    """Ready (key, JPEG bytes, label) samples as a split's shards in `out`, `shard_size` to a tar; returns the
    split's manifest entry. For checks and tests that need shards of known images (make_shards converts sources)."""
    names, counts = [], []
    for s in range(0, len(samples), shard_size):
        w = ShardWriter(Path(out) / shard_name(split, len(names)))
        for key, jpg, label in samples[s:s + shard_size]:
            w.add(key, {"jpg": jpg, "cls": str(label).encode()})
        w.commit()
        names.append(shard_name(split, len(names)))
        counts.append(w.samples)
    return {"shards": names, "shard_samples": counts, "samples": len(samples), "skipped": []}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in large blocks (hashing runs at about disk speed; remote: 8 MiB GETs)."""
    with open_stream(location(path)) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_manifest(shards_dir: Path) -> dict:
    """manifest.json of a shards folder (local or remote), checked for the fields every stage relies on."""
    path = location(shards_dir) / MANIFEST
    if not path.is_file():
        make = f"python tools/make_shards.py --src SRC --out {shards_dir}"
        if is_remote(shards_dir):  # shards are made on a local disk, then uploaded (docs/cluster.md)
            make = f"python tools/make_shards.py --src SRC --out shards/, then python tools/stage_shards.py " \
                   f"--shards shards/ --out {shards_dir}"
        raise DataError(f"{path}: not found; make shards first: {make}")
    manifest = read_json(path, "shard manifest")
    for field in ("size", "classes", "splits"):
        if field not in manifest:
            raise DataError(f"{path}: field {field!r} missing; re-run tools/make_shards.py")
    check_format(manifest, path)
    return manifest


def split_formats(manifest: dict) -> dict[str, int]:
    """The format version each split was made by: its own `format`, else the manifest's (absent: 1, the
    manifests written before versions were recorded per split)."""
    top = manifest.get("format", 1)
    return {split: entry.get("format", top) for split, entry in manifest.get("splits", {}).items()}


def check_format(manifest: dict, path: Path) -> None:
    """Refuse shards of two format versions in one folder (their bytes follow different orders, so checksums
    published for one version do not match the other), and versions newer than this code knows."""
    versions = {"manifest": manifest.get("format", 1), **split_formats(manifest)}
    newer = {v for v in versions.values() if not isinstance(v, int) or v > FORMAT_VERSION}
    if newer:
        raise DataError(f"{path}: made by a newer make_shards (format {sorted(map(str, newer))[0]}; this code reads "
                        f"up to {FORMAT_VERSION}); update this project, or re-make the shards with this version")
    if len(set(versions.values())) > 1:
        made = ", ".join(f"{name} by format {v}" for name, v in versions.items())
        raise DataError(f"{path}: mixes shards of two format versions ({made}); re-make every split with one "
                        f"version: python tools/make_shards.py --src SRC --out {path.parent} (all splits at once)")


def split_shards(shards_dir: Path, split: str, manifest: dict | None = None) -> tuple[list[Path], list[int]]:
    """The tar paths of a split and their sample counts, checking that each tar and its index exist."""
    shards_dir = location(shards_dir)
    manifest = manifest or load_manifest(shards_dir)
    entry = manifest["splits"].get(split)
    if not entry or not entry.get("shards"):
        have = ", ".join(sorted(manifest["splits"])) or "none"
        raise DataError(f"{shards_dir / MANIFEST}: no {split!r} shards (splits present: {have}); "
                        f"make them with: python tools/make_shards.py --splits {split} --out {shards_dir}")
    paths = [shards_dir / name for name in entry["shards"]]
    twice = sorted({name for name in entry["shards"] if entry["shards"].count(name) > 1})
    if twice:  # its samples would be read twice an epoch
        raise DataError(f"{shards_dir / MANIFEST}: lists {', '.join(twice)} more than once in {split!r}; "
                        f"re-run tools/make_shards.py --out {shards_dir} to rewrite the manifest")
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: listed in {shards_dir / MANIFEST} but missing")
        if not index_path(p).is_file():
            raise DataError(f"{index_path(p)}: index of {p.name} missing; re-run tools/make_shards.py")
    counts = entry.get("shard_samples") or [read_index_count(index_path(p)) for p in paths]
    return paths, [int(c) for c in counts]


def read_index(idx: Path) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """[(key, {ext: (offset, size)})] from a DALI index, for random access into its tar."""
    try:
        text = location(idx).read_text(ENCODING)
    except (OSError, ValueError) as e:
        raise DataError(f"{idx}: not a DALI webdataset index ({e})") from None
    return parse_index(text, idx)


def parse_index(text: str, idx) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """The entries of a DALI index's text; `idx` (where it came from) names it in errors."""
    try:
        lines = text.splitlines()
        version, count = lines[0].split()
        if version != INDEX_VERSION:
            raise ValueError(f"version {version}, expected {INDEX_VERSION}")
        samples = []
        for line in lines[1:]:
            f = line.split()
            members = {f[i]: (int(f[i + 1]), int(f[i + 2])) for i in range(0, len(f), 4)}
            samples.append((f[3].split(".", 1)[0], members))
        if len(samples) != int(count):
            raise ValueError(f"header says {count} samples, found {len(samples)}")
        return samples
    except (ValueError, IndexError) as e:
        raise DataError(f"{idx}: not a DALI webdataset index ({e})") from None


def read_member_table(idx: Path, exts: tuple[str, str] = ("jpg", "cls"), text: str | None = None) -> np.ndarray:
    """int64 [samples, 4]: offset and size of each sample's `exts[0]` and `exts[1]` members, from a DALI index
    (`text`: its content when already read, e.g. a remote index from the local cache; `idx` then names it).

    The indexes make_shards writes (two members per sample, in that order) are read as tokens in bulk, about
    4x faster than read_index at ImageNet's size; any other index goes through parse_index. A sample without one
    of the members raises KeyError naming it, for the caller to turn into its own message."""
    if text is None:
        try:
            text = location(idx).read_text(ENCODING)
        except (OSError, ValueError) as e:
            raise DataError(f"{idx}: not a DALI webdataset index ({e})") from None
    tokens = text.split()
    n = int(tokens[1]) if len(tokens) > 1 and tokens[0] == INDEX_VERSION and tokens[1].isdigit() else -1
    body = tokens[2:]
    if n >= 0 and len(body) == 8 * n and body[0::8] == [exts[0]] * n and body[4::8] == [exts[1]] * n:
        try:
            return np.stack([np.array(body[c::8], dtype=np.int64) for c in (1, 2, 5, 6)], axis=1).reshape(n, 4)
        except ValueError:
            pass  # a field that is not a number: parse_index names the problem
    entries = parse_index(text, idx)
    for key, members in entries:
        if exts[0] not in members or exts[1] not in members:
            raise KeyError(key)
    return np.array([(*m[exts[0]], *m[exts[1]]) for _, m in entries], np.int64).reshape(-1, 4)


def read_samples(tar: Path | str, samples: list[tuple[str, int, int]]) -> Iterator[tuple[str, bytes]]:
    """(key, member bytes) for (key, offset, size) entries of a DALI index, read by offset from the tar (one
    ranged GET per member when the tar is remote)."""
    with open_ranged(location(tar)) as f:
        for key, offset, size in samples:
            f.seek(offset)
            yield key, f.read(size)


def read_index_count(idx: Path) -> int:
    """Number of samples in a shard, from the first line of its DALI index."""
    try:
        version, count = location(idx).read_text(ENCODING).split("\n", 1)[0].split()
        if version != INDEX_VERSION:
            raise ValueError(f"version {version}, expected {INDEX_VERSION}")
        return int(count)
    except (OSError, ValueError) as e:
        raise DataError(f"{idx}: not a DALI webdataset index ({e})") from None


def load_pca(path: Path) -> dict:
    """pca.json (docs/FORMAT.md: mean/std/cov/eigval/eigvec on the [0, 1] scale), checked for shape."""
    path = location(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; compute it with: python tools/compute_pca.py --shards {path.parent}")
    stats = read_json(path, "RGB statistics")
    shapes = {"mean": (3,), "std": (3,), "eigval": (3,), "cov": (3, 3), "eigvec": (3, 3)}
    for field, shape in shapes.items():
        value = stats.get(field)
        ok = isinstance(value, list) and len(value) == shape[0] and (
            len(shape) == 1 or all(isinstance(r, list) and len(r) == shape[1] for r in value))
        if not ok:
            raise DataError(f"{path}: field {field!r} missing or not of shape {shape}; re-run tools/compute_pca.py")
    return stats
