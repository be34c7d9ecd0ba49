"""A shards folder read once, into one value that the loaders, training, evaluation and inference share.

    data = open_dataset("shards")            # manifest.json now; pca.json and each split when first asked
    data.classes, data.class_names           # wnids in label order, and their words (None if unknown)
    data.stats                               # pca.json: mean, std, cov, eigval, eigvec ([0, 1] scale)
    data.split("train")                      # a ShardSpec: tars, counts, every sample's place in its tar
    make_loader(data, "train", 128, ...)     # no second read of anything

Each split's `.idx` files are read once, on the first `split()` call, into arrays of (offset, size) per
sample, and checked (counts against the manifest, tars long enough for their indexes, a .jpg and a .cls in
every sample); later calls and every loader built from the value reuse them. At ImageNet's size that is
1,281,167 train entries: tools/bench_startup.py measures what this saves.

A folder whose splits were made by two format versions of make_shards (docs/FORMAT.md, "Format version") is
refused when it is opened (shardkit.format.load_manifest), with the command that re-makes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.errors import ConfigError, DataError
from pipeline.spec import CROP, SPLITS, SampleIndex, ShardSpec
from shardkit.format import PCA, index_path, load_manifest, load_pca, read_member_table, split_shards


@dataclass(frozen=True)
class Dataset:
    root: Path
    manifest: dict
    pca_path: Path
    _cache: dict = field(default_factory=dict, repr=False, compare=False)  # "stats" and read splits

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    @property
    def classes(self) -> tuple[str, ...]:
        """The wnids in label order: what a model's output layer must match."""
        return tuple(self.manifest["classes"])

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """Readable class names in label order (the manifest's `class_names`), or None when it has none."""
        names = self.manifest.get("class_names")
        if isinstance(names, dict):  # an older manifest's {wnid: words}
            names = [names.get(c) for c in self.classes] if all(c in names for c in self.classes) else None
        return tuple(names) if names else None

    @property
    def stats(self) -> dict:
        """pca.json (mean, std, cov, eigval, eigvec on the [0, 1] scale), checked for shape; read when first asked."""
        if "stats" not in self._cache:
            self._cache["stats"] = load_pca(self.pca_path)
        return self._cache["stats"]

    def split(self, name: str) -> ShardSpec:
        """What a loader of split `name` needs, read (every .idx of the split) and checked on the first call."""
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; use one of {SPLITS}")
        if name not in self._cache:
            self._cache[name] = self._read_split(name)
        return self._cache[name]

    def _read_split(self, name: str) -> ShardSpec:
        tars, counts = split_shards(self.root, name, self.manifest)
        if self.size < CROP:
            raise DataError(f"{self.root}: shards are {self.size}px, smaller than the {CROP}px crop")
        stats = self.stats
        return ShardSpec(self.root, name, tuple(tars), tuple(counts), self.classes, self.size,
                         np.asarray(stats["mean"], np.float64), np.asarray(stats["std"], np.float64),
                         np.asarray(stats["eigval"], np.float64), np.asarray(stats["eigvec"], np.float64),
                         sample_index(tars, counts))


def open_dataset(shards: str | Path | Dataset, pca: str | Path | None = None) -> Dataset:
    """The shards folder's manifest, checked; `pca` replaces SHARDS/pca.json. A Dataset is returned as it is."""
    if isinstance(shards, Dataset):
        return shards
    root = Path(shards)
    return Dataset(root, load_manifest(root), Path(pca) if pca else root / PCA)


def sample_index(tars: list[Path], counts: list[int]) -> SampleIndex:
    """Every sample's .jpg and .cls (offset, size), from the split's .idx files, each read once and checked
    here, so that a truncated or mismatched shard fails with its name before any worker starts."""
    rows, starts = [], [0]
    for tar, count in zip(tars, counts):
        try:
            rows.append(read_member_table(index_path(tar)))
        except KeyError as e:
            raise DataError(f"{tar}: sample {e.args[0]} lacks a .jpg or .cls member") from None
        if len(rows[-1]) != count:
            raise DataError(f"{index_path(tar)}: {len(rows[-1])} samples, the manifest says {count}")
        r = rows[-1]
        end = int(np.maximum(r[:, 0] + r[:, 1], r[:, 2] + r[:, 3]).max(initial=0))  # the last byte it reads
        if tar.stat().st_size < end:
            raise DataError(f"{tar}: truncated ({tar.stat().st_size} bytes, its index needs {end}); "
                            "re-make it with tools/make_shards.py")
        starts.append(starts[-1] + count)
    members = torch.from_numpy(np.concatenate(rows) if rows else np.zeros((0, 4), np.int64))
    return SampleIndex(members.share_memory_(), np.asarray(starts, np.int64))
