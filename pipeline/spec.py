"""What a loader needs to know about a shards folder, read once and checked: tars, counts, classes, statistics.

Both backends split samples across ranks the way DALI's readers do: rank r of w gets the contiguous range
[n*r//w, n*(r+1)//w) of the split (in stored order for val), so the ranks are disjoint and cover the split.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shardkit.errors import ConfigError, DataError
from shardkit.format import PCA, index_path, load_manifest, load_pca, read_index, split_shards

CROP = 224            # the paper's training window
MAX_OFFSET = 32       # 256 - 224: window offsets are uniform over 0..32 in x and in y
ALPHA_STD = 0.1       # lighting: alpha ~ N(0, 0.1) per eigenvector and image
TEN_CROP_ANCHORS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.5, 0.5))  # corners + centre (x, y)
SPLITS = ("train", "val")


@dataclass(frozen=True)
class ShardSpec:
    shards_dir: Path
    split: str
    tars: tuple[Path, ...]
    counts: tuple[int, ...]
    classes: tuple[str, ...]
    size: int
    mean: np.ndarray    # [3] on [0, 1]
    std: np.ndarray     # [3]
    eigval: np.ndarray  # [3]
    eigvec: np.ndarray  # [3, 3], column j = eigenvector j

    @property
    def samples(self) -> int:
        return sum(self.counts)


def read_spec(shards_dir: Path | str, split: str, pca_path: Path | str | None = None) -> ShardSpec:
    """Manifest, shard files and pca.json, with errors that name the file and the command that makes it."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {SPLITS}")
    shards_dir = Path(shards_dir)
    manifest = load_manifest(shards_dir)
    tars, counts = split_shards(shards_dir, split, manifest)
    for tar, count in zip(tars, counts):
        check_shard(tar, count)
    if manifest["size"] < CROP:
        raise DataError(f"{shards_dir}: shards are {manifest['size']}px, smaller than the {CROP}px crop")
    stats = load_pca(Path(pca_path) if pca_path else shards_dir / PCA)
    return ShardSpec(shards_dir, split, tuple(tars), tuple(counts), tuple(manifest["classes"]), manifest["size"],
                     np.asarray(stats["mean"], np.float64), np.asarray(stats["std"], np.float64),
                     np.asarray(stats["eigval"], np.float64), np.asarray(stats["eigvec"], np.float64))


def check_shard(tar: Path, count: int) -> None:
    """Cheap structural check, so a truncated or mismatched shard fails here with its name, not in a worker."""
    samples = read_index(index_path(tar))
    if len(samples) != count:
        raise DataError(f"{index_path(tar)}: {len(samples)} samples, the manifest says {count}")
    end = max(off + size for _, members in samples for off, size in members.values()) if samples else 0
    if tar.stat().st_size < end:
        raise DataError(f"{tar}: truncated ({tar.stat().st_size} bytes, its index needs {end}); "
                        "re-make it with tools/make_shards.py")
    for key, members in samples:
        if "jpg" not in members or "cls" not in members:
            raise DataError(f"{tar}: sample {key} lacks a .jpg or .cls member")


def rank_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[begin, end) of rank's contiguous share of n samples (DALI's sharding formula)."""
    return n * rank // world_size, n * (rank + 1) // world_size


def train_batches(n: int, batch_size: int, world_size: int, limit: int | None = None) -> int:
    """Batches per train epoch on every rank: the same on all ranks (DDP needs that), remainder dropped."""
    n = min(n, limit) if limit else n
    batches = n // (batch_size * world_size)
    if batches < 1:
        raise DataError(f"{n} train samples are fewer than one global batch ({batch_size} x {world_size} ranks)")
    return batches


def epoch_plan(spec: ShardSpec, batch_size: int, rank: int, world_size: int,
               limit: int | None = None) -> tuple[tuple[int, int], int, int]:
    """(this rank's [begin, end) of the split, batches per epoch, size of the last batch), for both backends.

    train: every rank the same batch count, remainder dropped; val: the rank's share exactly, last batch short.
    """
    if spec.split == "train":
        return rank_range(spec.samples, rank, world_size), train_batches(spec.samples, batch_size, world_size,
                                                                         limit), batch_size
    share = val_share(spec.samples, rank, world_size, limit)
    n = share[1] - share[0]
    batches = -(-n // batch_size)
    return share, batches, n - batch_size * (batches - 1)


def val_share(n: int, rank: int, world_size: int, limit: int | None = None) -> tuple[int, int]:
    """[begin, end) of the val samples this rank evaluates; with limit, the first `limit` of the split overall."""
    begin, end = rank_range(n, rank, world_size)
    if limit is not None and limit < n:
        lb, le = rank_range(limit, rank, world_size)
        end = begin + (le - lb)
    return begin, end
