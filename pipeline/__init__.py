"""The input pipeline: `make_loader` is the one entry point the training loop uses.

    from pipeline import make_loader
    train = make_loader("shards", "train", 128, backend="dali", device="cuda", rank=rank, world_size=world)
    for images, labels in train:   # one epoch: images [B, 3, 224, 224] float32, labels [B] int64, on device
        ...
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.loader import Loader
from pipeline.spec import read_spec
from shardkit.errors import ConfigError, DataError
from shardkit.format import PCA, load_manifest, load_pca
from shardkit.parallel import default_workers as cores

BACKENDS = ("dali", "torch")
DEVICES = ("cuda", "cpu")


def dataset_classes(shards: str | Path) -> list[str]:
    """The class list (wnids, label order) of a shards folder: what a model's output layer must match."""
    return list(load_manifest(Path(shards))["classes"])


def dataset_class_names(shards: str | Path) -> list[str] | None:
    """Readable class names in label order (the manifest's `class_names`), or None when it has none."""
    names = load_manifest(Path(shards)).get("class_names")
    return list(names) if names else None


def dataset_statistics(shards: str | Path, pca: str | Path | None = None) -> dict:
    """pca.json of a shards folder (mean, std, eigval, eigvec on the [0, 1] scale), checked for shape."""
    return load_pca(Path(pca) if pca else Path(shards) / PCA)


def load_image(path: str | Path, size: int = 256) -> np.ndarray:
    """[size, size, 3] uint8 RGB from any image file, made exactly as make_shards makes a shard image (the
    shorter side to `size`, antialiased, the centre square), without the shard's JPEG re-encoding."""
    from shardkit.imaging import BadImage, decode_bgr, resize_center_crop

    try:
        bgr = resize_center_crop(decode_bgr(Path(path).read_bytes(), size), size)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    except BadImage as e:
        raise DataError(f"{path}: {e}") from None
    return np.ascontiguousarray(bgr[:, :, ::-1])


def default_device() -> str:
    """Where loaders deliver and models run unless told otherwise: cuda if torch sees a GPU, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_workers(world_size: int = 1) -> int:
    """This rank's share of the cores the process may run on."""
    return max(1, cores() // world_size)


def make_loader(shards: str | Path, split: str, batch_size: int, *, backend: str = "dali",
                device: str | torch.device = "cuda", rank: int = 0, world_size: int = 1, seed: int = 0,
                augment: bool | None = None, ten_crop: bool = False, workers: int | None = None,
                limit: int | None = None, pca: str | Path | None = None) -> Loader:
    """A loader over `split` of a shards folder (docs/FORMAT.md), yielding (images, labels) on `device`.

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
    spec = read_spec(shards, split, pca)
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
