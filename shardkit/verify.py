"""Does a shards folder still hold what make_shards wrote? Sizes and SHA-256 against the manifest, and with
`decode` every sample decoded and its label checked. The library behind tools/verify_shards.py.

    report = verify(Path("shards"), decode=True, workers=8)
    for p in report.problems: print(p.line())

make_shards records, per shard, `shard_bytes`, `shard_sha256`, `shard_index_bytes`, `shard_index_sha256` in
manifest.json (docs/FORMAT.md). Hashing reads each file once in large blocks, one shard per worker process,
so it runs at about disk speed. The fix for any bad shard is the same: make_shards --verify re-makes exactly
the shards whose bytes changed. The loaders use `sample_problem`, `bad_sample_error` and `find_bad_sample` to name
the shard and the sample that failed to decode.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image

from common.errors import DataError
from shardkit.format import MANIFEST, file_sha256, index_path, load_manifest, read_index, read_samples
from shardkit.storage import RemotePath, is_remote, location
from common.parallel import default_workers, ordered_map
from common.progress import progress_bar

VERIFY_CMD = "python tools/verify_shards.py --shards {dir} --decode"


@dataclass(frozen=True)
class Problem:
    shard: str              # path of the tar (or of the manifest for a problem of the listing)
    what: str
    sample: str | None = None

    def line(self) -> str:
        return f"{self.shard}: " + (f"sample {self.sample}: " if self.sample else "") + self.what


@dataclass
class Report:
    shards_dir: Path
    shards: int = 0
    bytes: int = 0
    samples: int = 0          # decoded (with decode)
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def bad_shards(self) -> list[str]:
        return sorted({p.shard for p in self.problems})

    def fix(self, manifest: dict | None = None) -> str:
        return remake_hint(self.shards_dir, manifest)


def remake_hint(shards_dir: Path, manifest: dict | None = None) -> str:
    """The make_shards command that repairs a shards folder: the source and the options recorded in the
    manifest (those that differ from the defaults), so the re-run plans the same shards, and --verify."""
    from shardkit.convert import Options  # the defaults, written once

    manifest = manifest or {}
    entries = list(manifest.get("splits", {}).values())
    first = entries[0] if entries else {}
    # a split converted from an official archive names it (the devkit is not recorded: add --devkit if used)
    archives = {split: e["source"] for split, e in manifest.get("splits", {}).items()
                if str(e.get("source", "")).endswith(".tar")}
    trees = {e.get("source") for split, e in manifest.get("splits", {}).items() if split not in archives}
    where = [f"--src {next(iter(trees)) or 'SRC'}"] if trees or not archives else []
    where += [f"--{split}-archive {tar}" for split, tar in sorted(archives.items())]
    if is_remote(shards_dir):  # made on a local disk, then uploaded: repair there, upload again
        cmd = f"python tools/make_shards.py {' '.join(where)} --out shards/"
        upload = f"; then upload the repaired shards: python tools/stage_shards.py --shards shards/ --out {shards_dir}"
    else:
        cmd, upload = f"python tools/make_shards.py {' '.join(where)} --out {shards_dir}", ""
    recorded = {"size": manifest.get("size"), "quality": manifest.get("quality"),
                "shard_size": first.get("shard_size"),
                "seed": next((e["seed"] for e in entries if e.get("seed") is not None), None)}
    for name, value in recorded.items():
        if value is not None and value != getattr(Options, name):
            cmd += f" --{name.replace('_', '-')} {value}"
    return cmd + " --verify" + upload


def sample_problem(jpg: bytes | None, cls: bytes | None, *, size: int | None = None,
                 classes: int | None = None) -> str | None:
    """What is wrong with one sample, or None: its .jpg must decode (Pillow, as the reference loader does) to
    an RGB size x size image and its .cls must be a decimal label below `classes`."""
    if jpg is None:
        return "no .jpg member"
    try:
        with Image.open(io.BytesIO(jpg)) as im:
            im.load()  # decodes every scan: a truncated or garbled JPEG fails here
            shape = im.size
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...) for bad bytes
        return f".jpg does not decode ({type(e).__name__}: {e})"
    if size is not None and shape != (size, size):
        return f".jpg is {shape[0]}x{shape[1]}, the manifest says {size}x{size}"
    if cls is None:
        return "no .cls member"
    text = cls.decode("ascii", "replace").strip()
    if not text.isdigit():
        return f".cls is {cls[:16]!r}, not a decimal label"
    if classes is not None and int(text) >= classes:
        return f".cls is {text}, but the manifest has {classes} classes"
    return None


def bad_samples(tar: Path, *, size: int | None = None, classes: int | None = None,
                first: bool = False) -> list[tuple[str, str]]:
    """[(key, what is wrong)] for the samples of one shard, read by offset through its index."""
    entries = read_index(index_path(tar))
    jpgs = [(k, *m["jpg"]) if "jpg" in m else (k, 0, 0) for k, m in entries]
    clss = [(k, *m["cls"]) if "cls" in m else (k, 0, 0) for k, m in entries]
    out = []
    for (key, members), (_, jpg), (_, cls) in zip(entries, read_samples(tar, jpgs), read_samples(tar, clss)):
        what = sample_problem(jpg if "jpg" in members else None, cls if "cls" in members else None,
                            size=size, classes=classes)
        if what:
            out.append((key, what))
            if first:
                break
    return out


def bad_sample_error(tar: Path | str, key: str, what: str) -> DataError:
    """The loaders' error for a sample that does not decode: the shard, the sample and the fix."""
    shards_dir = location(tar).parent
    try:
        hint = remake_hint(shards_dir, load_manifest(shards_dir))
    except DataError:
        hint = remake_hint(shards_dir)
    return DataError(f"{tar}: sample {key}: {what}; find every bad shard with: "
                     f"{VERIFY_CMD.format(dir=shards_dir)}, then re-make them with: {hint}")


def recorded_checksums(manifest: dict) -> dict[str, dict]:
    """{tar name: {"bytes", "sha256", "index_bytes", "index_sha256"}} for the shards whose checksums were recorded."""
    out = {}
    for entry in manifest.get("splits", {}).values():
        names = entry.get("shards") or []
        cols = {k: entry.get(f"shard_{k}") for k in ("bytes", "sha256", "index_bytes", "index_sha256")}
        if not all(isinstance(v, list) and len(v) == len(names) for v in cols.values()):
            continue  # not recorded (made before checksums), or an edited manifest: nothing to trust
        for i, name in enumerate(names):
            if cols["sha256"][i] and name not in out:
                out[name] = {k: v[i] for k, v in cols.items()}
    return out


def find_bad_sample(tars: list[Path], *, size: int | None = None,
                    classes: int | None = None) -> tuple[Path, str, str] | None:
    """(tar, key, what) of a sample that does not decode, for a loader whose decoder failed without saying
    where (DALI). Shards whose SHA-256 no longer matches the manifest are searched first; if every shard has a
    recorded checksum and matches it, the data is as make_shards wrote it and nothing is decoded (None)."""
    tars = [location(t) for t in tars]
    if not tars:
        return None
    try:
        recorded = recorded_checksums(load_manifest(tars[0].parent))
    except DataError:
        recorded = {}
    changed = [t for t in tars if t.name in recorded and file_sha256(t) != recorded[t.name]["sha256"]]
    unknown = [t for t in tars if t.name not in recorded]
    for tar in changed + unknown:
        for key, what in bad_samples(tar, size=size, classes=classes, first=True):
            return tar, key, what
    return None


def verify_shard(task: tuple[str, dict | None, int | None], *, decode: bool, size: int | None,
                classes: int | None) -> tuple[list[Problem], int, int]:
    """(problems, bytes read, samples decoded) of one shard; runs in a worker process."""
    tar, expect, count = location(task[0]), task[1], task[2]
    idx = index_path(tar)
    problems, nbytes = [], 0
    if not tar.is_file():
        return [Problem(str(tar), "missing")], 0, 0
    if not idx.is_file():
        problems.append(Problem(str(idx), f"missing (the index of {tar.name})"))
    if expect is None:
        problems.append(Problem(str(tar), "no checksum in the manifest (made before checksums were recorded)"))
    else:
        for path, size_key, sha_key in ((tar, "bytes", "sha256"), (idx, "index_bytes", "index_sha256")):
            if not path.is_file():
                continue
            actual = path.stat().st_size
            nbytes += actual
            if actual != expect[size_key]:
                problems.append(Problem(str(path), f"{actual} bytes, the manifest says {expect[size_key]}"))
            elif file_sha256(path) != expect[sha_key]:
                problems.append(Problem(str(path), f"SHA-256 differs from the manifest's ({expect[sha_key][:12]}...)"))
    if not idx.is_file():
        return problems, nbytes, 0
    try:
        entries = read_index(idx)
    except DataError as e:
        return problems + [Problem(str(idx), str(e).split(": ", 1)[-1])], nbytes, 0
    if count is not None and len(entries) != count:
        problems.append(Problem(str(idx), f"{len(entries)} samples, the manifest says {count}"))
    end = max((o + s for _, m in entries for o, s in m.values()), default=0)
    if tar.stat().st_size < end:
        problems.append(Problem(str(tar), f"truncated ({tar.stat().st_size} bytes, its index needs {end})"))
        return problems, nbytes, 0
    if not decode:
        return problems, nbytes, 0
    problems += [Problem(str(tar), what, key) for key, what in bad_samples(tar, size=size, classes=classes)]
    return problems, nbytes, len(entries)


def verify(shards_dir: Path, *, decode: bool = False, workers: int | None = None,
           splits: tuple[str, ...] | None = None, show_progress: bool = True) -> Report:
    """Check every shard the manifest lists (of `splits`, default all); the report lists what is wrong."""
    t0 = time.perf_counter()
    shards_dir = location(shards_dir)
    if isinstance(shards_dir, RemotePath):
        shards_dir.list_folder()  # sizes from one listing, not one request per file
    manifest = load_manifest(shards_dir)
    recorded = recorded_checksums(manifest)
    report = Report(shards_dir)
    tasks, seen = [], set()
    for split, entry in manifest["splits"].items():
        if splits and split not in splits:
            continue
        counts = entry.get("shard_samples") or [None] * len(entry.get("shards", []))
        for name, count in zip(entry.get("shards", []), counts):
            if name in seen:
                report.problems.append(Problem(str(shards_dir / MANIFEST), f"lists {name} twice"))
                continue
            seen.add(name)
            tasks.append((str(shards_dir / name), recorded.get(name), count))
    total = sum(t[1]["bytes"] + t[1]["index_bytes"] for t in tasks if t[1])
    work = partial(verify_shard, decode=decode, size=manifest.get("size"), classes=len(manifest["classes"]))
    with progress_bar(round(total / 1e6), "verify", unit="MB", enabled=show_progress) as bar:
        for problems, nbytes, samples in ordered_map(work, tasks, workers or default_workers(), chunksize=1,
                                                     ahead=2):
            report.problems += problems
            report.bytes += nbytes
            report.samples += samples
            report.shards += 1
            bar.update(nbytes / 1e6)
    report.seconds = time.perf_counter() - t0
    return report
