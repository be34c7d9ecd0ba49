"""What a loader needs to know about one split (ShardSpec, made by pipeline.dataset), and how it splits across ranks.

Both backends split samples across ranks the way DALI's readers do: rank r of w gets the contiguous range
[n*r//w, n*(r+1)//w) of the split (in stored order for val), so the ranks are disjoint and cover the split.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import DataError
from shardkit.format import read_index

CROP = 224            # the paper's training window
MAX_OFFSET = 32       # 256 - 224: window offsets are uniform over 0..32 in x and in y
ALPHA_STD = 0.1       # lighting: alpha ~ N(0, 0.1) per eigenvector and image
TEN_CROP_ANCHORS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.5, 0.5))  # corners + centre (x, y)
SPLITS = ("train", "val")


@dataclass(frozen=True)
class SampleIndex:
    """Where every sample of a split lies in its tar, from the split's .idx files (read once).

    `members` is a torch tensor in shared memory: DataLoader workers receive a handle to it, not a copy (41 MB
    at ImageNet's 1.28 M train samples, once per rank rather than once per worker); `rows()` is a numpy view."""
    members: torch.Tensor  # int64 [n, 4]: .jpg offset, .jpg size, .cls offset, .cls size of sample i in its tar
    starts: np.ndarray     # int64 [shards + 1]: the first sample of each tar (samples are numbered tar by tar)

    def rows(self) -> np.ndarray:
        return self.members.numpy()


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
    index: SampleIndex
    index_files: tuple[Path, ...]  # local .idx per tar (a cached copy when the tars are remote), for DALI

    @property
    def samples(self) -> int:
        return sum(self.counts)

    def key(self, shard: int, position: int) -> str:
        """The key of sample `position` of tar `shard`, for messages (read from its .idx: keys are not kept)."""
        return read_index(self.index_files[shard])[position][0]


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
