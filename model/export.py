"""Export a trained model for serving: ONNX (onnxruntime, TensorRT, ...) or a torch.export program.

    python -m model.export --checkpoint runs/alexnet/model.pt --format onnx --out alexnet.onnx
    python -m model.export --checkpoint runs/alexnet/model.pt --format torch-export --out alexnet.pt2
    python -m model.export --weights alexnet-owt-7be5be79.pth --variant torchvision --format onnx --out tv.onnx

Input: `images` [batch, 3, 224, 224] float32, normalised (x / 255 - mean) / std; output: `logits`
[batch, classes]; the batch size is dynamic. The file carries what inference needs as JSON under the key
`alexnet`: variant, classes (and class_names), mean, std (ONNX metadata_props; torch.export extra file
`alexnet.json`). The result is checked against the eager model on a random batch before it is kept.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from model.inference import CROP, load_model, model_options
from common import cli
from common.errors import ConfigError, DataError
from common.files import atomic_write

FORMATS = ("onnx", "torch-export")
META_KEY = "alexnet"


def _example(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, CROP, CROP, generator=torch.Generator().manual_seed(0))


def export_program(model: torch.nn.Module) -> torch.export.ExportedProgram:
    model = model.eval().requires_grad_(False)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():  # inference graph: no autograd-only paths (model/lrn.py)
        return torch.export.export(model, (_example(),), dynamic_shapes=({0: batch},))


class ExportError(DataError):
    """An exported file whose outputs differ from the eager model's."""


def export(model: torch.nn.Module, meta: dict, fmt: str, out: Path) -> Path:
    """Write `out` atomically in `fmt`; returns it."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {FORMATS}")
    out = Path(out)
    program = export_program(model)
    info = json.dumps({k: meta.get(k) for k in ("variant", "lrn", "classes", "class_names", "mean", "std")})
    with atomic_write(out) as f:
        if fmt == "torch-export":
            torch.export.save(program, f, extra_files={f"{META_KEY}.json": info})
        else:
            import onnx

            onnx_program = torch.onnx.export(program, dynamo=True, input_names=["images"], output_names=["logits"],
                                             verbose=False)
            proto = onnx_program.model_proto
            proto.metadata_props.add(key=META_KEY, value=info)
            onnx.save(proto, f)
    return out


def run_exported(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """Logits of the exported file on x (onnxruntime for ONNX)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    with torch.no_grad():
        return torch.export.load(str(path)).module()(x)


def read_meta(path: Path, fmt: str) -> dict:
    """The inference metadata stored in an exported file."""
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[META_KEY])
    extra = {f"{META_KEY}.json": ""}
    torch.export.load(str(path), extra_files=extra)
    return json.loads(extra[f"{META_KEY}.json"])


def compare_with_eager(model: torch.nn.Module, path: Path, fmt: str, atol: float = 1e-4) -> float:
    """Largest |exported - eager| logit on a random batch of 3 (another size than the traced one)."""
    x = _example(3)
    with torch.no_grad():
        want = model.eval()(x)
    diff = (run_exported(path, fmt, x) - want).abs().max().item()
    if not diff <= atol:
        raise ExportError(f"{path}: exported logits differ from eager ones by {diff:.3g} (> {atol}); "
                          "the file was removed")
    return diff


@click.command(context_settings=cli.CONTEXT)
@model_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("--out", required=True, type=click.Path(path_type=Path))
def main(checkpoint, weights, variant, lrn, fmt, out):
    """Export a trained AlexNet to ONNX or a torch.export program, checked against the eager model."""
    model, meta = load_model(checkpoint=checkpoint, weights=weights, variant=variant, lrn=lrn)
    export(model, meta, fmt, out)
    try:
        diff = compare_with_eager(model, out, fmt)
    except ExportError:
        out.unlink()  # a file that does not reproduce the model is not kept
        raise
    click.echo(f"export: {out} ({fmt}, {out.stat().st_size / 2**20:.1f} MiB, {meta['variant']}); "
               f"max |exported - eager| logit on 3 images: {diff:.2e}")


if __name__ == "__main__":
    cli.run(main)
