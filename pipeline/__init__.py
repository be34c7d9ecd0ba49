"""The input pipeline: `make_loader` is the one entry point the training loop uses.

    from pipeline import make_loader, open_dataset
    data = open_dataset("shards")           # the folder read once: classes, statistics, each split's index
    train = make_loader(data, "train", 128, backend="dali", device="cuda", rank=rank, world_size=world)
    for images, labels in train:   # one epoch: images [B, 3, 224, 224] float32, labels [B] int64, on device
        ...
"""
from __future__ import annotations

from pathlib import Path

import torch

from common.device import DEVICES
from common.errors import ConfigError
from common.parallel import default_workers
from pipeline.dataset import Dataset, open_dataset
from pipeline.loader import Loader
from shardkit.imaging import shard_pixels  # one image made as a shard image is: what inference feeds a model

BACKENDS = ("dali", "torch")
__all__ = ["BACKENDS", "DEVICES", "Dataset", "Loader", "make_loader", "open_dataset", "shard_pixels"]


def make_loader(shards: str | Path | Dataset, split: str, batch_size: int, *, backend: str = "dali",
                device: str | torch.device = "cuda", rank: int = 0, world_size: int = 1, seed: int = 0,
                augment: bool | None = None, ten_crop: bool = False, workers: int | None = None,
                limit: int | None = None, pca: str | Path | None = None) -> Loader:
    """A loader over `split` of a shards folder (docs/FORMAT.md), yielding (images, labels) on `device`.
    `shards` is the folder (local, s3://bucket/prefix or https://host/path) or, to read nothing twice, the
    Dataset that open_dataset made of it. workers defaults to the cores over world_size (one node); training
    on several nodes passes its node's share (model.distributed.Dist.workers).

    images: [B, 3, 224, 224] float32 normalized (or [B, 10, 3, 224, 224] with ten_crop, val only);
    labels: [B] int64. The result follows the pipeline.Loader contract: len(loader) = batches per epoch on
    this rank; iterating it runs one epoch, and the next iteration continues with the next epoch. train:
    reshuffled every epoch, the same batch count on all ranks (remainder dropped); val: every sample exactly
    once across the ranks (last batch may be short).
    augment defaults to True for train (random 224 window, flip, PCA lighting); limit caps the samples per
    epoch (train) or evaluates only the first `limit` samples (val). Loaders have state_dict() and
    load_state_dict() to resume mid-epoch. pca defaults to SHARDS/pca.json.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' asked for, but torch sees no CUDA device; use device='cpu'")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        raise ConfigError(f"unknown device {device}; use 'cuda' or 'cpu'")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in 0..{world_size - 1}")
    if ten_crop and split == "train":
        raise ConfigError("ten_crop is a val-time evaluation; it does not apply to train")
    spec = open_dataset(shards, pca).split(split)
    kwargs = dict(device=device, rank=rank, world_size=world_size, seed=seed,
                  augment=(split == "train") if augment is None else augment, ten_crop=ten_crop,
                  workers=default_workers(world_size) if workers is None else workers, limit=limit)
    if backend == "dali":
        try:
            from pipeline.dali import DaliLoader
        except ImportError as e:
            raise ConfigError(f"backend 'dali' needs NVIDIA DALI ({e}); install it with "
                              "pip install nvidia-dali-cuda130 (or -cuda120), or use backend='torch'") from None
        return DaliLoader(spec, batch_size, **kwargs)
    from pipeline.reference import ReferenceLoader
    return ReferenceLoader(spec, batch_size, **kwargs)
