"""A training run's folder and its resumable state.

    runs/<name>/config.json     the config and provenance, written at the start (open_run)
    runs/<name>/metrics.jsonl   one JSON line per log step and eval (model.metrics.RunLog)
    runs/<name>/checkpoint.pt   model, optimizer, position, and every rank's RNG and loader state (save_state)
    runs/<name>/summary.json    the final figures (finish)

`Run` holds what stays fixed while a run trains, so the loop's functions take one argument for it.
"""
from __future__ import annotations

import json
import platform
import subprocess
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import torch
from tqdm import tqdm

from model.checkpoint import check_arch, load_checkpoint, save_checkpoint
from model.config import Config, plain
from model.distributed import Dist
from model.metrics import RunLog
from pipeline import Loader
from shardkit.files import write_json


@dataclass(frozen=True)
class Run:
    cfg: Config
    dist: Dist
    dir: Path
    log: RunLog
    provenance: dict
    arch: dict                          # {"variant", "num_classes"}: what a checkpoint must match
    model: torch.nn.Module              # the plain model: checkpoints and evaluation
    net: torch.nn.Module                # what trains: the model, wrapped in DDP and/or torch.compile
    opt: torch.optim.Optimizer
    train_loader: Loader
    val_loader: Loader
    autocast: AbstractContextManager    # bf16 on CUDA with --amp, else a no-op
    inference: dict                     # what a checkpoint carries for inference (model.checkpoint.inference_meta)

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoint.pt"

    @property
    def on_gpu(self) -> bool:
        return self.dist.device.type == "cuda"

    def echo(self, line: str) -> None:
        """A line on rank 0, printed above the progress bar."""
        if self.dist.main:
            tqdm.write(line)


@dataclass
class Progress:
    """Where a run stands: epochs finished, steps taken, the val top-1 error after each finished epoch."""
    epoch: int = 0
    step: int = 0
    val_errors: list[float] = field(default_factory=list)


def provenance(dist: Dist) -> dict:
    try:
        import nvidia.dali
        dali = nvidia.dali.__version__
    except ImportError:
        dali = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    device = torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else platform.processor() or "cpu"
    return {"torch": str(torch.__version__), "dali": dali, "cuda": torch.version.cuda, "device": device,
            "world_size": dist.world_size, "git_commit": commit, "python": platform.python_version()}


def open_run(cfg: Config, dist: Dist) -> tuple[Path, RunLog, dict]:
    """The run folder, with config.json written and the config printed (rank 0); its log; the provenance."""
    run_dir = Path(cfg.runs) / cfg.name
    prov = provenance(dist)
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        click.echo(f"config: {json.dumps(asdict(cfg))}\nprovenance: {json.dumps(prov)}")
        write_json(run_dir / "config.json", {"config": asdict(cfg), "provenance": prov})
    return run_dir, RunLog(run_dir, dist.main, echo=tqdm.write), prov


def save_state(run: Run, *, epoch: int, step: int, val_errors: list[float]) -> None:
    """checkpoint.pt at this position. Every rank calls it (each one's RNG and loader state is gathered);
    rank 0 writes."""
    ranks = run.dist.all_gather({"rng_cpu": torch.get_rng_state(),
                                 "rng_cuda": torch.cuda.get_rng_state(run.dist.device) if run.on_gpu else None,
                                 "loader": run.train_loader.state_dict()})
    if run.dist.main:
        save_checkpoint(run.checkpoint_path, {
            "model": run.model.state_dict(), "optimizer": run.opt.state_dict(), "epoch": epoch, "step": step,
            "val_errors": val_errors, "config": plain(run.cfg), "arch": run.arch, "ranks": ranks,
            "world_size": run.dist.world_size, "provenance": run.provenance, "inference": run.inference})


def load_state(run: Run) -> Progress:
    """Restore model, optimizer, RNG and loader position from checkpoint.pt. From another world size the
    train loader restarts the checkpoint's epoch and the RNG keeps this run's seed."""
    path, dist = run.checkpoint_path, run.dist
    ckpt = load_checkpoint(path)
    check_arch(ckpt, path, **run.arch)
    run.model.load_state_dict(ckpt["model"])
    run.opt.load_state_dict(ckpt["optimizer"])
    progress = Progress(ckpt["epoch"], ckpt["step"], list(ckpt["val_errors"]))
    if ckpt["world_size"] == dist.world_size:
        mine = ckpt["ranks"][dist.rank]
        torch.set_rng_state(mine["rng_cpu"])
        if run.on_gpu and mine["rng_cuda"] is not None:
            torch.cuda.set_rng_state(mine["rng_cuda"], dist.device)
        run.train_loader.load_state_dict(mine["loader"])
    else:
        run.echo(f"note: checkpoint from {ckpt['world_size']} ranks, now {dist.world_size}: "
                 "the loaders restart the epoch and the RNG is reseeded")
        run.train_loader.load_state_dict({"epoch": progress.epoch, "batch": 0})
    run.echo(f"resumed {path} at epoch {progress.epoch}, step {progress.step}")
    return progress


def finish(dist: Dist, run_dir: Path, summary: dict) -> None:
    """summary.json and the final `summary: k=v ...` line (rank 0)."""
    if dist.main:
        write_json(run_dir / "summary.json", summary)
        click.echo("summary: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in summary.items()))
