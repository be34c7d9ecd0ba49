"""Shared fixtures: a small seeded demo tree, its shards and pca.json, and a writer of hand-made shards."""
from __future__ import annotations

import io
import json
from pathlib import Path

import click
import numpy as np
import pytest
from PIL import Image

from shardkit import convert as make_shards, stats as compute_pca
from shardkit.demo_data import make_demo
from shardkit.files import write_json
from shardkit.format import MANIFEST, PCA, ShardWriter, shard_name

REPO = Path(__file__).resolve().parents[1]


def invoke(command, args: list[str]):
    """Run a click command the way its `__main__` does (through shardkit.cli.run: `error:` lines, exit 2),
    in-process; returns click's Result (exit_code, output)."""
    from click.testing import CliRunner

    from shardkit import cli

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
        names, counts = [], []
        for s in range(0, len(samples), shard_size):
            w = ShardWriter(out / shard_name(split, len(names)))
            for i, (img, label) in enumerate(samples[s:s + shard_size], start=s):
                w.add(f"{split}_{i:06d}", {"jpg": jpeg(img), "cls": str(label).encode()})
            w.commit()
            names.append(shard_name(split, len(names)))
            counts.append(w.samples)
        manifest["splits"][split] = {"shards": names, "shard_samples": counts, "samples": len(samples), "skipped": []}
    write_json(out / MANIFEST, manifest)
    write_json(out / PCA, pca or flat_pca())
    return out


def flat_pca(eigval=(1e-8, 1e-8, 1e-8), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)) -> dict:
    """A pca.json with chosen eigenvalues (tiny by default: lighting off in effect) and a rotated basis."""
    q, _ = np.linalg.qr(np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [2.0, 0.1, -1.0]]))
    return {"mean": list(mean), "std": list(std), "cov": (q @ np.diag(eigval) @ q.T).tolist(),
            "eigval": list(eigval), "eigvec": q.tolist(), "images": 1, "pixels": 1}


def denormalize(x, pca: dict) -> np.ndarray:
    """Normalized [..., 3, H, W] tensor -> pixel values on the 0..255 scale (float)."""
    x = np.asarray(x.cpu(), np.float64)
    std = np.asarray(pca["std"]).reshape(3, 1, 1)
    mean = np.asarray(pca["mean"]).reshape(3, 1, 1)
    return (x * std + mean) * 255.0


def read_manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())
