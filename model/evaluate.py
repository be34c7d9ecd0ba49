"""Validation: top-1/top-5 error over every val image exactly once, summed over ranks; the paper's 10-crop test.

    python -m model.evaluate --checkpoint runs/alexnet/model.pt --shards shards/ [--ten-crop]
    python -m model.evaluate --weights alexnet-owt-7be5be79.pth --variant torchvision --shards shards/
    torchrun --nproc_per_node=2 -m model.evaluate --checkpoint ... --shards shards/ --device cpu

A weights file from torchvision is fed with torchvision's normalisation (ImageNet mean/std): the shards'
loader normalises with pca.json, and the model is wrapped to turn that into what it was trained with.
10-crop: the 4 corner and the centre 224 windows and their mirrors; the 10 softmax outputs are averaged.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import click
import torch

from model.checkpoint import CheckpointError
from model.distributed import Dist, distributed
from common import cli
from common.device import default_device
from common.errors import DataError
from common.files import write_json
from common.progress import progress_bar
from model.config import Config
from model.inference import Renormalize, load_model, model_options, probabilities
from pipeline import BACKENDS, DEVICES, Loader, make_loader, open_dataset


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Loader, dist: Dist, *, amp: bool = False) -> dict:
    """Errors over the loader's images on all ranks. Batches [B, 3, H, W] give centre-crop logits;
    batches [B, 10, 3, H, W] give the 10-crop average of softmax probabilities."""
    was_training = model.training
    model.eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
    sums = torch.zeros(4, dtype=torch.float64, device=dist.device)  # images, top1 hits, top5 hits, nll
    t0 = time.perf_counter()
    bar = progress_bar(len(loader), "eval", "batch", enabled=dist.main)  # a bar on a terminal, else a line every 30 s
    for images, labels in loader:
        prob = probabilities(model, images, autocast)
        top5 = prob.topk(min(5, prob.shape[-1]), dim=-1).indices
        hit = top5 == labels[:, None]
        sums += torch.stack([torch.tensor(float(len(labels)), device=sums.device), hit[:, 0].sum().double(),
                             hit.any(1).sum().double(),
                             -prob.gather(1, labels[:, None]).clamp_min(1e-12).log().sum().double()])
        bar.update()
    bar.close()
    n, top1, top5, nll = dist.all_sum(sums.tolist())
    model.train(was_training)
    if n == 0:
        raise DataError("evaluation saw no images: the val split (or --limit) holds none")
    return {"images": int(n), "top1_err": 1 - top1 / n, "top5_err": 1 - top5 / n, "loss": nll / n,
            "seconds": round(time.perf_counter() - t0, 3)}


@click.command(context_settings=cli.CONTEXT)
@model_options
@click.option("--shards", default=cli.default(Config, "shards"), show_default=True, metavar="DIR|URL")
@click.option("--backend", type=click.Choice(BACKENDS), default=cli.default(Config, "backend"), show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default=default_device(), show_default="cuda if available")
@click.option("--batch-size", default=cli.default(Config, "batch_size"), show_default=True,
              help="Global batch size (split over ranks).")
@click.option("--ten-crop/--centre-crop", default=False, help="The paper's 10-crop test, or the centre crop.")
@click.option("--limit", type=click.IntRange(1), help="Evaluate only the first N val images.")
@click.option("--workers", type=click.IntRange(0), help="Loader threads/processes per rank.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the result here.")
def main(checkpoint, weights, variant, lrn, shards, backend, device, batch_size, ten_crop, limit, workers, json_path):
    """Evaluate a saved model (a checkpoint, or a weights file such as torchvision's) on the val shards."""
    model, meta = load_model(checkpoint=checkpoint, weights=weights, variant=variant, lrn=lrn)
    data = open_dataset(shards)
    outputs = model.classifier[-1].out_features
    if outputs != len(data.classes):
        raise CheckpointError(f"{checkpoint or weights}: {outputs} classes, but {shards} has {len(data.classes)}")
    stats = data.stats
    if meta["mean"] is not None and (meta["mean"], meta["std"]) != (stats["mean"], stats["std"]):
        # The loader normalises with the shards' statistics; the model wants its own (torchvision's
        # ImageNet mean/std for its weights).
        model = Renormalize(model, stats["mean"], stats["std"], meta["mean"], meta["std"])
    with distributed(device) as dist:
        model = model.to(dist.device)
        if dist.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # fixed shapes (the last batch aside): pick algorithms once
        loader = make_loader(data, "val", max(1, batch_size // dist.world_size), backend=backend,
                             device=dist.device, rank=dist.rank, world_size=dist.world_size, ten_crop=ten_crop,
                             workers=dist.workers if workers is None else workers, limit=limit)
        result = evaluate(model, loader, dist, amp=dist.device.type == "cuda")
        result.update({"checkpoint": str(checkpoint or weights), "variant": meta["variant"],
                       "ten_crop": ten_crop, "backend": backend})
        if dist.main:
            click.echo(f"evaluate: {result['images']} images, {'10-crop' if ten_crop else 'centre crop'}: "
                       f"top-1 error {result['top1_err']:.4f}, top-5 error {result['top5_err']:.4f}, "
                       f"{result['images'] / result['seconds']:.0f} images/s")
            if json_path:
                write_json(json_path, result)


if __name__ == "__main__":
    cli.run(main)
