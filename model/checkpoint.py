"""Checkpoints: plain dicts of tensors and builtins from the unwrapped model, written atomically, read with
weights_only=True (no pickled code is ever loaded)."""
from __future__ import annotations

from pathlib import Path

import torch

from shardkit.errors import DataError
from shardkit.files import atomic_write


class CheckpointError(DataError):
    """A checkpoint is missing or does not fit the model asked for."""


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None


def inference_meta(*, variant: str, lrn: str, classes: list[str], class_names: list[str] | None,
                   mean: list[float], std: list[float]) -> dict:
    """What a checkpoint carries for inference: the model to build, its labels and its input normalisation
    ((x / 255 - mean) / std per RGB channel, on [0, 1] pixels)."""
    meta = {"variant": variant, "lrn": lrn, "classes": list(classes), "mean": [float(v) for v in mean],
            "std": [float(v) for v in std]}
    if class_names:
        meta["class_names"] = list(class_names)
    return meta


def check_arch(ckpt: dict, path: Path, *, variant: str, num_classes: int) -> None:
    """Refuse a checkpoint made for another architecture or class count, saying which."""
    arch = ckpt.get("arch") or {}
    want = {"variant": variant, "num_classes": num_classes}
    if arch != want:
        raise CheckpointError(f"{path}: made for {arch or 'an unknown model'}, but this run builds {want}")
