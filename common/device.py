"""Where loaders deliver and models run unless told otherwise: cuda if torch sees a GPU, else cpu."""
from __future__ import annotations

DEVICES = ("cuda", "cpu")


def default_device() -> str:
    import torch  # here, not at the top: the offline tools import common without torch

    return "cuda" if torch.cuda.is_available() else "cpu"
