"""Shards made for a benchmark when none are given: photo-like JPEGs at typical ImageNet sizes
(shardkit.demo_data.make_sources), converted as make_shards does.

    shards = photo_shards(tmp, images=600, shard_size=100)    # tmp/src, tmp/shards (train only)
"""
from __future__ import annotations

from pathlib import Path

from shardkit.convert import Options, convert
from shardkit.demo_data import make_sources


def photo_shards(root: Path, images: int, shard_size: int) -> Path:
    make_sources(root / "src", images)
    convert(Options(src=str(root / "src"), out=str(root / "shards"), splits=("train",), shard_size=shard_size))
    return root / "shards"
