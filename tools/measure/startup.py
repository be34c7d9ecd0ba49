"""What a training run's start-up reads from the shards folder, at ImageNet's size, without ImageNet.

A synthetic shards folder holds the real manifest.json, pca.json and .idx files of 1,281,167 train and 50,000
val samples (ImageNet-like keys, 1,000 per shard) and sparse tars of the sizes those indexes need, so no image
bytes take disk space. Two ways to start are timed on it, each the calls model.train makes before its first
step (classes, statistics, class names, the train and val loaders) and at its end (the 10-crop val loader):
  per consumer   every call given the folder, so each reads what it needs itself (how the code worked before
                 pipeline.open_dataset): the manifest 3 times more, every val .idx twice
  read once      one pipeline.Dataset handed to every call: each file read once
Bytes read come from /proc/self/io (rchar): everything this process read, indexes included.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from common.files import write_json
from common.timing import best_of, time_calls
from pipeline import make_loader, open_dataset
from shardkit.format import BLOCK, INDEX_VERSION, MANIFEST, PCA, index_path, shard_name

JPEG_BYTES = 26_000   # a 256x256 shard JPEG at quality 90 is about this size


def write_synthetic(root: Path, train: int = 1_281_167, val: int = 50_000, shard_size: int = 1000,
                    classes: int = 1000) -> int:
    """The folder described above; returns the bytes of its .idx files."""
    root.mkdir(parents=True, exist_ok=True)
    wnids = [f"n{10000000 + c:08d}" for c in range(classes)]
    splits, idx_bytes = {}, 0
    for split, n in (("train", train), ("val", val)):
        names, counts = [], []
        for first in range(0, n, shard_size):
            count = min(shard_size, n - first)
            keys = [f"{wnids[i % classes]}_{i}" if split == "train" else f"ILSVRC2012_val_{i + 1:08d}"
                    for i in range(first, first + count)]
            idx_bytes += _write_shard(root / shard_name(split, len(names)), keys)
            names.append(shard_name(split, len(names)))
            counts.append(count)
        splits[split] = {"shards": names, "shard_samples": counts, "samples": n, "skipped": []}
    write_json(root / PCA, {"mean": [0.48, 0.45, 0.40], "std": [0.23, 0.22, 0.22], "cov": np.eye(3).tolist(),
                            "eigval": [0.2, 0.02, 0.005], "eigvec": np.eye(3).tolist(), "images": train, "pixels": 1})
    write_json(root / MANIFEST, {"size": 256, "classes": wnids, "splits": splits})
    return idx_bytes


def _write_shard(tar: Path, keys: list[str]) -> int:
    """A sparse tar of the right length and its real index: per sample a header, the JPEG, a header, the label."""
    lines, pos = [], 0
    for key in keys:
        jpg = pos + BLOCK
        cls = jpg + JPEG_BYTES + (-JPEG_BYTES % BLOCK) + BLOCK
        lines.append(f"jpg {jpg} {JPEG_BYTES} {key}.jpg cls {cls} 3 {key}.cls")
        pos = cls + BLOCK
    text = f"{INDEX_VERSION} {len(keys)}\n" + "\n".join(lines) + "\n"
    index_path(tar).write_text(text)
    with open(tar, "wb") as f:
        f.truncate(pos + 2 * BLOCK)
    return len(text)


def bytes_read() -> int:
    """rchar of /proc/self/io: bytes this process has read so far (0 where /proc is missing)."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
    except (OSError, StopIteration):
        return 0


def start(root: Path, shared: bool, batch: int = 128) -> None:
    """What model.train asks of the data before its first step and for its final 10-crop test; `shared`: one
    Dataset handed to every call, else each call given the folder."""
    data = open_dataset(root)
    ask = (lambda: data) if shared else (lambda: open_dataset(root))
    ask().classes, ask().stats, ask().class_names  # noqa: B018  (the run's inference metadata)
    for split, ten_crop in (("train", False), ("val", False), ("val", True)):
        make_loader(data if shared else root, split, batch // 4 if ten_crop else batch, backend="torch",
                    device="cpu", ten_crop=ten_crop, workers=0)


def measure(root: Path, rounds: int) -> list[dict]:
    """Seconds (best of `rounds`, interleaved) and bytes read, per consumer vs read once."""
    ways = {"per consumer (before)": False, "read once (pipeline.Dataset)": True}
    read = {}

    def timed(name):
        def run():
            before = bytes_read()
            t = time_calls(lambda: start(root, ways[name]))
            read[name] = bytes_read() - before
            return t
        return run

    best = best_of([timed(name) for name in ways], rounds)
    return [{"way": name, "seconds": t.seconds, "bytes_read": read[name]} for name, t in zip(ways, best)]


def index_bytes(root: Path) -> int:
    return sum(os.path.getsize(p) for p in root.glob("*.idx"))
