"""The augmentation maths of docs/FORMAT.md (section 5) in torch, on a batch: lighting, normalization (and its
inverse, for pictures and checks), the 10 test windows.

The DALI pipeline does the same on its side (pipeline/dali.py); tests hold the two together.
    x = uint8 / 255                                  # [0, 1]
    x = x + eigvec @ (alpha * eigval)                # lighting, alpha ~ N(0, 0.1)^3 per image (train)
    x = (x - mean) / std                             # pca.json's mean and std
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.spec import CROP, TEN_CROP_ANCHORS


def lighting_offset(alpha: torch.Tensor, eigval: torch.Tensor, eigvec: torch.Tensor) -> torch.Tensor:
    """[B, 3] RGB offsets on the [0, 1] scale: eigvec @ (alpha * eigval) for each image."""
    return (alpha * eigval) @ eigvec.T


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
              offset: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [B, ..., 3, H, W] -> float32, (x/255 + offset - mean) / std, in one pass over the pixels."""
    shift = mean.expand(images.shape[0], 3) if offset is None else mean - offset  # [B, 3]
    view = (images.shape[0],) + (1,) * (images.dim() - 4) + (3, 1, 1)
    scale = 1.0 / (255.0 * std)
    x = images.to(torch.float32)
    return x.mul_(scale.view(1, *view[1:])).sub_((shift / std).view(view))


def denormalize(x: torch.Tensor, mean, std) -> np.ndarray:
    """Normalized [..., 3, H, W] -> float64 pixel values on the 0..255 scale (lighting left in): the inverse of
    `normalize` without an offset."""
    x = np.asarray(x.detach().float().cpu(), np.float64)
    return (x * np.asarray(std, np.float64).reshape(3, 1, 1) + np.asarray(mean, np.float64).reshape(3, 1, 1)) * 255.0


def ten_crop(images: torch.Tensor, crop: int = CROP) -> torch.Tensor:
    """[B, 3, S, S] -> [B, 10, 3, crop, crop]: 4 corners + centre, then the same five mirrored."""
    size = images.shape[-1]
    windows = []
    for ax, ay in TEN_CROP_ANCHORS:
        x0, y0 = round(ax * (size - crop)), round(ay * (size - crop))
        windows.append(images[..., y0:y0 + crop, x0:x0 + crop])
    windows += [w.flip(-1) for w in windows]
    return torch.stack(windows, dim=1)
