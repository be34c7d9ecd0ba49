"""The whole pipeline on the built-in demo data, end to end (what `make demo` runs).

    python tools/demo.py [--out demo] [--epochs 8] [--lr 0.005]

1. tools/make_demo_data.py   an ImageNet-layout tree of 10 synthetic classes     -> demo/imagenet
2. tools/make_shards.py      256x256 WebDataset shards                           -> demo/shards
3. tools/compute_pca.py      RGB statistics and PCA                              -> demo/shards/pca.json
4. tools/bench_loader.py     loader images/s: DALI, reference, decode-only       -> demo/bench.json
5. torchrun (2 CPU processes, gloo) python -m model.train                       -> demo/runs/demo/
6. python -m model.evaluate  centre crop and the paper's 10-crop test            -> demo/eval_*.json
7. python -m pipeline.preview  one augmented batch                               -> demo/preview.png
Every step keeps what an earlier run finished and says so. A table of the figures closes the run.
The demo trains with Kaiming init and a step schedule (see README for why); model.train's defaults stay
the paper's.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click

from common import cli

REPO = Path(__file__).resolve().parents[1]


def step(title: str, cmd: list[str], env: dict | None = None) -> None:
    click.echo(click.style(f"\n== {title}", bold=True) + f"\n$ {' '.join(cmd)}")
    r = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})})
    if r.returncode:
        raise click.ClickException(f"step '{title}' failed (exit {r.returncode}): {' '.join(cmd)}")


@click.command(context_settings=cli.CONTEXT)
@click.option("--out", default="demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--epochs", default=8, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=0.005, show_default=True, help="Kaiming init diverges at 0.02 here, learns at 0.005.")
@click.option("--batch-size", default=32, show_default=True, help="Global batch (16 per process).")
def main(out, epochs, lr, batch_size):
    """Run the demo end to end and print a table of what it measured."""
    py = sys.executable
    t0 = time.perf_counter()
    src, shards, runs = out / "imagenet", out / "shards", out / "runs"
    step("demo data", [py, "tools/make_demo_data.py", "--out", str(src)])
    step("shards", [py, "tools/make_shards.py", "--src", str(src), "--out", str(shards), "--shard-size", "100"])
    step("RGB statistics and PCA", [py, "tools/compute_pca.py", "--shards", str(shards)])
    step("loader benchmark", [py, "tools/bench_loader.py", "--shards", str(shards), "--batch-size", "64",
                              "--batches", "24", "--json", str(out / "bench.json")])
    run = runs / "demo"
    train(py, shards, runs, run, epochs, lr, batch_size)
    for kind, flag in (("centre", "--centre-crop"), ("ten_crop", "--ten-crop")):
        step(f"evaluate ({kind})", [py, "-m", "model.evaluate", "--checkpoint", str(run / "model.pt"),
                                    "--shards", str(shards), "--device", "cpu", "--backend", "dali",
                                    "--batch-size", "50", flag, "--json", str(out / f"eval_{kind}.json")])
    step("preview", [py, "-m", "pipeline.preview", "--shards", str(shards), "--out", str(out / "preview.png")])
    print_table(out, shards, run)
    click.echo(f"\ndemo: done in {time.perf_counter() - t0:.0f} s; curves {run / 'curves.png'}, "
               f"preview {out / 'preview.png'}")


def train(py: str, shards: Path, runs: Path, run: Path, epochs: int, lr: float, batch_size: int) -> None:
    """AlexNet on 2 CPU processes; a finished demo run is kept, an unfinished one continued, never restarted."""
    summary_path = run / "summary.json"
    if (run / "model.pt").is_file() and json.loads(summary_path.read_text()).get("epochs") == epochs:
        click.echo(f"\n== training: {summary_path} shows {epochs} finished epochs, kept (remove {run} to train again)")
        return
    cmd = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "model.train",
           "--shards", str(shards), "--runs", str(runs), "--name", "demo", "--device", "cpu",
           "--backend", "dali", "--epochs", str(epochs), "--batch-size", str(batch_size), "--init", "kaiming",
           "--lr", str(lr), "--schedule", "step", "--milestones", str(max(1, epochs - 2)), "--log-every", "5",
           "--no-ten-crop-eval"]
    # checkpoint.pt: what demos made before last.pt existed
    previous = next((p for p in (run / "last.pt", run / "checkpoint.pt") if p.is_file()), None)
    resume = ["--resume", str(previous)] if previous else ["--overwrite"]
    step("training AlexNet on 2 CPU processes (gloo)", cmd + resume, env={"OMP_NUM_THREADS": "1"})


def print_table(out: Path, shards: Path, run: Path) -> None:
    manifest = json.loads((shards / "manifest.json").read_text())
    bench = {r["backend"]: r["images_per_s"] for r in json.loads((out / "bench.json").read_text())["results"]}
    train = json.loads((run / "summary.json").read_text())
    centre = json.loads((out / "eval_centre.json").read_text())
    ten = json.loads((out / "eval_ten_crop.json").read_text())
    chance = 1 - 1 / len(manifest["classes"])
    conversion = shards / ".make_shards" / "conversion.json"  # how the conversion went (not in the manifest)
    rate = json.loads(conversion.read_text()).get("images_per_s", 0) if conversion.is_file() else 0
    rows = [("images converted per second (make_shards)", f"{rate:.0f}"),
            *[(f"loader images/s: {k}", f"{v:.0f}") for k, v in bench.items()],
            ("training images/s (AlexNet, 2 CPU processes)", f"{train.get('train_images_per_s', 0):.1f}"),
            ("training data-wait fraction", f"{train.get('data_wait', 0):.3f}"),
            (f"val top-1 / top-5 error, centre crop (chance {chance:.2f})",
             f"{centre['top1_err']:.3f} / {centre['top5_err']:.3f}"),
            ("val top-1 / top-5 error, 10-crop", f"{ten['top1_err']:.3f} / {ten['top5_err']:.3f}"),
            ("val images", str(centre["images"]))]
    click.echo("\n| demo | value |\n|---|---|")
    for k, v in rows:
        click.echo(f"| {k} | {v} |")


if __name__ == "__main__":
    cli.run(main)
