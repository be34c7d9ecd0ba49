"""Copy a shards folder between object storage and a local disk, checked against the manifest's SHA-256: the
library behind tools/stage_shards.py.

    stage("s3://bucket/imagenet", "/local/shards")   # download: DALI without S3, https:// sources, local speed
    stage("shards", "s3://bucket/imagenet")          # upload what make_shards and compute_pca wrote locally

Only what is missing or differs is copied: a local file is kept when its size and SHA-256 are the manifest's,
a remote one when its size is (an object appears whole or not at all, so a killed upload leaves nothing under
the name; tools/verify_shards.py --shards URL hashes every byte). A download goes to a temporary name, is
hashed on the way and renamed only when the hash matches, so a killed run leaves no damaged file, and the
re-run copies only the rest. manifest.json goes last (and a destination's older manifest first goes away),
so a reader never finds a manifest that lists files not yet there; pca.json and mean_image.npy, which have
no recorded hash, are copied when their bytes differ.
"""
from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click

from common.errors import ConfigError, DataError
from common.files import atomic_write, remove_stale_partials
from common.progress import progress_bar
from shardkit.format import MANIFEST, PCA, file_sha256, index_path, load_manifest
from shardkit.storage import RemotePath, location, open_stream
from shardkit.verify import recorded_checksums

EXTRAS = (PCA, "mean_image.npy")  # copied when present and different (no hash is recorded for them)
CHUNK = 4 * 2**20
WORKERS = 8                       # files in flight at once (network-bound, so more than the cores)


@dataclass(frozen=True)
class Copy:
    name: str
    size: int | None
    sha256: str | None


@dataclass
class Staged:
    copied: int = 0
    kept: int = 0
    bytes: int = 0
    seconds: float = 0.0


def plan(manifest: dict, src) -> list[Copy]:
    """Every tar and index the manifest lists, with its recorded size and SHA-256."""
    recorded = recorded_checksums(manifest)
    listed = [name for entry in manifest["splits"].values() for name in entry.get("shards", [])]
    unrecorded = [n for n in listed if n not in recorded]
    if unrecorded:
        raise DataError(f"{src / MANIFEST}: no size and SHA-256 recorded for {unrecorded[0]} (and "
                        f"{len(unrecorded) - 1} more): nothing to check a copy against; record them first with "
                        "make_shards --verify (python tools/verify_shards.py tells)")
    files = []
    for name in dict.fromkeys(listed):
        sums = recorded[name]
        files += [Copy(name, sums["bytes"], sums["sha256"]),
                  Copy(index_path(Path(name)).name, sums["index_bytes"], sums["index_sha256"])]
    return files


def is_current(dest, item: Copy) -> bool:
    """The destination already holds this file: size (and, on a local disk, SHA-256) as recorded."""
    target = dest / item.name
    if not target.is_file() or target.stat().st_size != item.size:
        return False
    return isinstance(target, RemotePath) or file_sha256(target) == item.sha256


def download(src, dest: Path, item: Copy) -> int:
    """One file onto the local disk under a temporary name, hashed on the way, renamed when it matches."""
    digest = hashlib.sha256()
    with open_stream(src / item.name) as f, atomic_write(dest / item.name) as out:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
        if item.sha256 and digest.hexdigest() != item.sha256:
            raise DataError(f"{src / item.name}: SHA-256 differs from the manifest's ({item.sha256[:12]}...): the "
                            f"source is damaged, nothing was kept; check it with: python tools/verify_shards.py "
                            f"--shards {src}")
    return (dest / item.name).stat().st_size


def upload(src: Path, dest: RemotePath, item: Copy) -> int:
    """One local file into object storage (a multipart upload for large ones: the object appears when whole),
    its bytes checked against the manifest first."""
    if item.sha256 and file_sha256(src / item.name) != item.sha256:
        raise DataError(f"{src / item.name}: SHA-256 differs from the manifest's ({item.sha256[:12]}...); find "
                        f"and repair the damaged shards first: python tools/verify_shards.py --shards {src}")
    target = dest / item.name
    target.fs.put_file(str(src / item.name), target.url)
    size = target.stat().st_size
    if item.size is not None and size != item.size:
        raise DataError(f"{target}: {size} bytes after the upload, the manifest says {item.size}; run the same "
                        "command again")
    return size


def copy_file(src, dest, item: Copy) -> int:
    return upload(src, dest, item) if isinstance(dest, RemotePath) else download(src, dest, item)


def stage(src: str, dest: str, *, workers: int = WORKERS) -> Staged:
    """Make `dest` hold what `src` holds (see the module docstring); returns what was done."""
    t0 = time.perf_counter()
    src, dest = location(src), location(dest)
    if isinstance(src, RemotePath) == isinstance(dest, RemotePath):
        raise ConfigError(f"--shards {src} --out {dest}: one of them must be a local folder and the other remote "
                          "(s3:// or, for downloads, https://); a local copy is cp -r, a remote one goes through "
                          "a local disk")
    if isinstance(dest, RemotePath) and dest.scheme != "s3":
        raise ConfigError(f"--out {dest}: uploads go to s3:// (an https:// server is filled by its own means)")
    if isinstance(src, RemotePath):
        src.list_folder()
    manifest = load_manifest(src)
    files = plan(manifest, src)
    if isinstance(dest, RemotePath):
        dest.list_folder()
    else:
        dest.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(dest)  # downloads of a killed run
    report = Staged()
    todo = [f for f in files if not is_current(dest, f)]
    report.kept = len(files) - len(todo)
    if todo:
        drop_manifest(dest, src)
    click.echo(f"stage_shards: {src} -> {dest}: {len(files)} files listed, {report.kept} already there and "
               f"checked, {len(todo)} to copy ({sum(f.size or 0 for f in todo) / 1e6:.1f} MB), {workers} at once")
    copy_all(src, dest, todo, workers, report)
    copy_small(src, dest, report)
    report.seconds = time.perf_counter() - t0
    return report


def copy_all(src, dest, todo: list[Copy], workers: int, report: Staged) -> None:
    with progress_bar(round(sum(f.size or 0 for f in todo) / 1e6), "stage", unit="MB") as bar, \
            ThreadPoolExecutor(max(1, workers)) as pool:
        for size in pool.map(lambda item: copy_file(src, dest, item), todo):
            report.copied += 1
            report.bytes += size
            bar.update(size / 1e6)


def drop_manifest(dest, src) -> None:
    """A destination's manifest goes before its files change, so no reader trusts a half-staged folder."""
    target = dest / MANIFEST
    if target.is_file() and target.read_bytes() != (src / MANIFEST).read_bytes():
        if isinstance(target, RemotePath):
            target.fs.rm_file(target.url)
        else:
            target.unlink()


def copy_small(src, dest, report: Staged) -> None:
    """pca.json and mean_image.npy when present and different, then manifest.json, last."""
    for name in (*EXTRAS, MANIFEST):
        source = src / name
        if name != MANIFEST and not source.is_file():
            continue
        data = source.read_bytes()
        target = dest / name
        if target.is_file() and target.read_bytes() == data:
            report.kept += 1
            continue
        if isinstance(target, RemotePath):
            target.fs.pipe_file(target.url, data)
        else:
            with atomic_write(target) as f:
                f.write(data)
        report.copied += 1
        report.bytes += len(data)
