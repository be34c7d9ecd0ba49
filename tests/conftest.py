"""Shared fixtures: a small seeded demo tree, its shards and pca.json, a writer of hand-made shards, and a reader
of shards that goes through tarfile alone (not the index), to hold the writers to the tar format."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Iterator

import click
import numpy as np
import pytest
from PIL import Image

from common.errors import DataError
from common.files import write_json
from shardkit import convert as make_shards, sources, stats as compute_pca
from shardkit.demo_data import make_demo
from shardkit.format import MANIFEST, PCA, write_split

REPO = Path(__file__).resolve().parents[1]


def invoke(command, args: list[str]):
    """Run a click command the way its `__main__` does (through common.cli.run: `error:` lines, exit 2),
    in-process; returns click's Result (exit_code, output)."""
    from click.testing import CliRunner

    from common import cli

    return CliRunner().invoke(click.Command("cli", callback=lambda: cli.run(command, args)), [])


def interrupted_convert(src, out: Path, monkeypatch, *, at: int = 25, **kw) -> None:
    """A conversion that "dies" (KeyboardInterrupt) while adding its `at`-th sample, as a kill would leave it."""
    real_add = make_shards.ShardWriter.add_packed
    calls = {"n": 0}

    def dying_add(self, sample):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return real_add(self, sample)

    monkeypatch.setattr(make_shards.ShardWriter, "add_packed", dying_add)
    with pytest.raises(KeyboardInterrupt):
        convert(src, out, **kw)
    monkeypatch.setattr(make_shards.ShardWriter, "add_packed", real_add)


def convert(src: Path, out: Path, **kw) -> dict:
    """make_shards.run with test-friendly defaults; returns the manifest."""
    opts = dict(src=src and str(src), out=str(out), shard_size=25, workers=1)
    opts.update(kw)
    return make_shards.convert(make_shards.Options(**opts))


def small_shards(root: Path, *, classes: int, train_per_class: int, val_per_class: int, shard_size: int,
                 seed: int) -> Path:
    """A demo tree without odd files under root/src, its shards and pca.json under root/shards."""
    make_demo(root / "src", classes=classes, train_per_class=train_per_class, val_per_class=val_per_class, seed=seed,
              odd_files=False)
    convert(root / "src", root / "shards", shard_size=shard_size, workers=1)
    compute_pca.compute(compute_pca.Options(shards=str(root / "shards"), workers=1))
    return root / "shards"


def kill_9_when(proc, path: Path, what: str, timeout: float = 120) -> None:
    """SIGKILL `proc` as soon as `path` appears (it must still be running then: `what` says which process)."""
    import signal
    import time

    deadline = time.time() + timeout
    while not path.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, f"{what} finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="session")
def demo_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "imagenet"
    make_demo(root, classes=4, train_per_class=14, val_per_class=5, seed=0)
    return root


@pytest.fixture(scope="session")
def demo_shards(demo_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_shards")
    convert(demo_tree, out, shard_size=20)
    compute_pca.compute(compute_pca.Options(shards=str(out), workers=1))
    return out


def jpeg(arr: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def write_shards(out: Path, splits: dict[str, list[tuple[np.ndarray, int]]], classes: int, *,
                 shard_size: int = 16, pca: dict | None = None) -> Path:
    """Hand-made shards: {split: [(image HxWx3 uint8, label)]}, with a manifest and a pca.json."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"size": 256, "classes": [f"n{i:08d}" for i in range(classes)], "splits": {}}
    for split, samples in splits.items():
        ready = [(f"{split}_{i:06d}", jpeg(img), label) for i, (img, label) in enumerate(samples)]
        manifest["splits"][split] = write_split(out, split, ready, shard_size)
    write_json(out / MANIFEST, manifest)
    write_json(out / PCA, pca or flat_pca())
    return out


def flat_pca(eigval=(1e-8, 1e-8, 1e-8), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)) -> dict:
    """A pca.json with chosen eigenvalues (tiny by default: lighting off in effect) and a rotated basis."""
    q, _ = np.linalg.qr(np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [2.0, 0.1, -1.0]]))
    return {"mean": list(mean), "std": list(std), "cov": (q @ np.diag(eigval) @ q.T).tolist(),
            "eigval": list(eigval), "eigvec": q.tolist(), "images": 1, "pixels": 1}


def read_manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def iter_shard(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {ext: bytes}) for each sample of a WebDataset tar, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: shard not found")
    key, members = None, {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                base = info.name.rsplit("/", 1)[-1]
                if base.startswith(".") or "." not in base:
                    continue
                k, ext = base.split(".", 1)
                if k != key and key is not None:
                    yield key, members
                    members = {}
                key = k
                members[ext] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable tar ({type(e).__name__}: {e})") from None
    if key is not None:
        yield key, members


def demo_val_wnids(src: Path) -> dict[str, str]:
    """{val stem: wnid} of a demo tree, from its LOC_val_solution.csv or its val class folders."""
    src = Path(src)
    csv = src / "LOC_val_solution.csv"
    if csv.is_file():
        rows = csv.read_text().splitlines()[1:]
        return {r.split(",")[0]: r.split(",")[1].split()[0] for r in rows if r.strip()}
    val_dir = sources.split_dir(src, "val")
    return {f.stem: f.parent.name for f in val_dir.rglob("*") if f.is_file() and sources.WNID.match(f.parent.name)}
