"""A trained model ready for inference, from this project's checkpoint or a plain state-dict file (such as
torchvision's published AlexNet weights), with what it needs around it: labels and input normalisation.

    model, meta = load_model(checkpoint="runs/alexnet/model.pt")
    model, meta = load_model(weights="alexnet-owt-7be5be79.pth", variant="torchvision")
    x = prepare(torch.stack([load_image("cat.jpg")]), meta)   # [N, 3, 224, 224], the val preprocessing

Used by model.predict, model.export and model.evaluate. Everything is read with weights_only=True.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import click
import torch
from torch import nn

from model.alexnet import LRNS, VARIANTS, build_model
from model.checkpoint import CheckpointError, load_checkpoint
from common.errors import ConfigError

# torchvision's ImageNet normalisation (its weights' transforms), on [0, 1] pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZE, CROP = 256, 224  # the val preprocessing: shorter side 256, centre 256, centre 224


class Renormalize(nn.Module):
    """Feeds a model trained on (x - mean_to) / std_to with inputs normalised by (mean_from, std_from)."""

    def __init__(self, model: nn.Module, mean_from, std_from, mean_to, std_to):
        super().__init__()
        self.model = model
        f = lambda v: torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1)  # noqa: E731
        # x_to = (x_from * std_from + mean_from - mean_to) / std_to, as one multiply-add
        self.register_buffer("scale", f(std_from) / f(std_to), persistent=False)
        self.register_buffer("shift", (f(mean_from) - f(mean_to)) / f(std_to), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.scale + self.shift)


def model_options(command):
    """The click options that choose the model to load, shared by model.evaluate, model.predict, model.export:
    --checkpoint, or --weights with --variant and --lrn (load_model's arguments of the same names)."""
    options = [
        click.option("--checkpoint", type=click.Path(path_type=Path),
                     help="This project's checkpoint (runs/NAME/model.pt, last.pt, best.pt)."),
        click.option("--weights", type=click.Path(path_type=Path), help="A plain state dict (e.g. torchvision's)."),
        click.option("--variant", type=click.Choice(VARIANTS), default="torchvision", show_default=True,
                     help="With --weights: the architecture of the file."),
        click.option("--lrn", type=click.Choice(LRNS), default="paper", show_default=True,
                     help="With --weights --variant paper.")]
    for option in reversed(options):  # click lists options in the order the decorators are written
        command = option(command)
    return command


def load_model(*, checkpoint: Path | str | None = None, weights: Path | str | None = None,
               variant: str = "torchvision", lrn: str = "paper", num_classes: int | None = None
               ) -> tuple[nn.Module, dict]:
    """(model in eval mode on the CPU, meta). meta: variant, lrn, classes (wnids, or None when unknown),
    class_names (optional), mean, std (the normalisation the model was trained with; None when unknown)."""
    if (checkpoint is None) == (weights is None):
        raise ConfigError("give either a checkpoint (--checkpoint) or a weights file (--weights), not both")
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        if "model" not in ckpt:
            raise CheckpointError(f"{checkpoint}: no 'model' state dict in it; for a plain state dict use --weights")
        # Checkpoints written before the metadata was added: nn.LocalResponseNorm (Caffe's convention) and
        # the shards' own statistics, which the caller then supplies.
        meta = ckpt.get("inference") or {"variant": (ckpt.get("arch") or {}).get("variant", "paper"),
                                         "lrn": "caffe", "classes": None, "mean": None, "std": None}
        state = ckpt["model"]
        source = checkpoint
    else:
        if variant not in VARIANTS:
            raise ConfigError(f"unknown model variant {variant!r}; use one of {VARIANTS}")
        state = load_checkpoint(weights)
        if isinstance(state.get("model"), dict):  # this project's checkpoint given as --weights
            state = state["model"]
        meta = {"variant": variant, "lrn": lrn, "classes": None, "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD)}
        source = weights
    classes = num_classes or _classes_in(state, source)
    model = build_model(meta["variant"], classes, lrn=meta.get("lrn", "paper"))
    mismatch = _state_mismatch(model.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"{source}: does not fit --variant {meta['variant']} ({mismatch}); check --variant")
    model.load_state_dict(state, strict=True)
    return model.eval(), meta


def _state_mismatch(want: dict, got: dict) -> str:
    """'' when the keys and shapes agree, else the first differences in words."""
    missing, extra = [k for k in want if k not in got], [k for k in got if k not in want]
    shapes = [f"{k} {tuple(got[k].shape)} != {tuple(v.shape)}" for k, v in want.items()
              if k in got and tuple(got[k].shape) != tuple(v.shape)]
    parts = [f"{what}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
             for what, items in (("missing", missing), ("unexpected", extra), ("shapes", shapes)) if items]
    return "; ".join(parts)


def _classes_in(state: dict, source) -> int:
    """The class count from the last layer's bias (fc8 in both variants)."""
    biases = [v for k, v in state.items() if k.startswith("classifier.") and k.endswith(".bias")]
    if not biases:
        raise CheckpointError(f"{source}: no classifier.*.bias in it; not an AlexNet state dict")
    return int(biases[-1].shape[0])


def load_image(path: Path | str) -> torch.Tensor:
    """uint8 [3, 256, 256]: any file Pillow or OpenCV reads, made exactly as a shard image is (the shorter
    side to 256 antialiased, the centre 256; shardkit/imaging.py), without the shard's JPEG encoding."""
    from pipeline import shard_pixels

    return torch.from_numpy(shard_pixels(path, SIZE)).permute(2, 0, 1)


def prepare(images: torch.Tensor, meta: dict, *, ten_crop: bool = False) -> torch.Tensor:
    """uint8 [N, 3, 256, 256] -> normalised [N, 3, 224, 224] (centre) or [N, 10, 3, 224, 224] (10-crop)."""
    from pipeline.augment import normalize
    from pipeline.augment import ten_crop as ten_windows

    off = (SIZE - CROP) // 2
    crops = ten_windows(images, CROP) if ten_crop else images[..., off:off + CROP, off:off + CROP]
    return normalize(crops, torch.tensor(meta["mean"]), torch.tensor(meta["std"]))


@torch.no_grad()
def probabilities(model: nn.Module, x: torch.Tensor, autocast=nullcontext()) -> torch.Tensor:
    """Softmax over classes, in float32; 10-crop inputs [N, 10, 3, H, W] average the 10 softmax outputs (the
    paper's test). On CUDA the input goes channels_last, the layout the model is kept in there."""
    crops = x.dim() == 5
    flat = x.flatten(0, 1) if crops else x
    if flat.is_cuda:
        flat = flat.contiguous(memory_format=torch.channels_last)
    with autocast:
        prob = torch.softmax(model(flat).float(), -1)
    return prob.view(x.shape[0], x.shape[1], -1).mean(1) if crops else prob
