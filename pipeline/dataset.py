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

The folder may be remote (`open_dataset("s3://bucket/imagenet")`, or https://; shardkit.storage): its listing
is read once, the index files are fetched once, concurrently, into a local cache (checked against the
manifest's SHA-256, and taken from there by later runs), and the loaders read samples by ranged GETs.
Nothing is ever written beside the shards, local or remote: the folder may be read-only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.errors import ConfigError, DataError
from pipeline.spec import CROP, SPLITS, SampleIndex, ShardSpec
from shardkit.format import PCA, index_path, load_manifest, load_pca, read_member_table, split_shards
from shardkit.storage import RemotePath, local_indexes, location


@dataclass(frozen=True)
class Dataset:
    root: Path | RemotePath
    manifest: dict
    pca_path: Path | RemotePath
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
        indexes = index_files(self.root, self.manifest["splits"][name], tars)
        return ShardSpec(self.root, name, tuple(tars), tuple(counts), self.classes, self.size,
                         np.asarray(stats["mean"], np.float64), np.asarray(stats["std"], np.float64),
                         np.asarray(stats["eigval"], np.float64), np.asarray(stats["eigvec"], np.float64),
                         sample_index(tars, counts, indexes), tuple(path for path, _ in indexes))


def open_dataset(shards: str | Path | Dataset, pca: str | Path | None = None) -> Dataset:
    """The shards folder's manifest, checked; `pca` replaces SHARDS/pca.json. A Dataset is returned as it is."""
    if isinstance(shards, Dataset):
        return shards
    root = location(shards)
    if isinstance(root, RemotePath):
        root.list_folder()  # one listing answers every file's size and presence (S3)
    return Dataset(root, load_manifest(root), location(pca) if pca else root / PCA)


def index_files(root, entry: dict, tars: list) -> list[tuple[Path, str | None]]:
    """(a local index file, its text or None to read it there) per tar: the .idx beside a local tar; for a
    remote folder, the local copy of its .idx, fetched once (shardkit.storage.local_indexes)."""
    if not isinstance(root, RemotePath):
        return [(index_path(t), None) for t in tars]
    sums = entry.get("shard_index_sha256") or [None] * len(tars)
    fetched = local_indexes([index_path(t) for t in tars], list(sums) if len(sums) == len(tars) else [None] * len(tars))
    return [(path, data.decode("utf-8")) for path, data in fetched]


def sample_index(tars: list, counts: list[int], indexes: list[tuple[Path, str | None]]) -> SampleIndex:
    """Every sample's .jpg and .cls (offset, size), from the split's .idx files (index_files: each read once,
    a remote one from its cached text), checked here, so that a truncated or mismatched shard fails with its
    name before any worker starts."""
    rows, starts = [], [0]
    for tar, count, (_, text) in zip(tars, counts, indexes):
        try:
            rows.append(read_member_table(index_path(tar), text=text))  # the tar's own index named in messages
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
