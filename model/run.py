"""A training run's folder: one run per runs/<name>/, never overwritten by accident, and its resumable state.

    runs/<name>/config.json     the config and provenance, and a history entry per start and resume (open_run)
    runs/<name>/metrics.jsonl   one JSON line per log step and eval (model.metrics.RunLog), TensorBoard events
    runs/<name>/last.pt ...     checkpoints: last.pt, best.pt, epoch-NNN.pt, model.pt (model/checkpoint.py)
    runs/<name>/curves.png      redrawn after every eval (Run.plot)
    runs/<name>/summary.json    the final figures (finish)

Starting a run where one already is is refused, naming the ways on: --resume, --overwrite, another --name.
--resume [PATH] continues from PATH (a run folder: its last.pt; or a .pt file), alone from this run's last.pt.
The checkpoint's config is compared with the new one and the differences printed: changes to the
architecture or the data are refused, the rest (epochs, lr, schedule, ...) accepted and recorded in
config.json's history; metrics.jsonl loses the records written after the checkpoint's step, so curves never
go back. `Run` holds what stays fixed while a run trains, so the loop's functions take one argument for it;
`RunState` is where it stands (epoch, step, val errors), saved in every checkpoint.
"""
from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import click
import torch

from model.checkpoint import LAST, CheckpointError, require_arch, load_checkpoint, save_checkpoints, save_weights
from model.config import Config, plain
from model.distributed import Dist
from model.metrics import CURVES, METRICS, RunLog, keep_metrics_until, plot_curves
from pipeline import Dataset, Loader
from common.errors import ConfigError
from common.files import read_json, write_json

from common.progress import echo

CONFIG = "config.json"
RUN_FILES = (CONFIG, METRICS, "summary.json", CURVES, "*.pt", "events.out.tfevents.*", ".*.partial")
# a resume may not change what the model is or which samples each step sees (the loader's saved position)
FIXED = ("shards", "variant", "lrn", "dropout", "backend", "batch_size", "seed", "limit_train", "update",
         "synthetic")
IGNORED = ("resume", "overwrite", "name", "runs")  # how this process was asked to run, not what the run is


@dataclass(frozen=True)
class RunFolder:
    """runs/<name>/ once open_run has checked it (and on --resume the checkpoint) and written config.json."""
    dir: Path
    log: RunLog
    provenance: dict
    resume_from: Path | None = None     # --resume: the checkpoint to continue from (load_state)


@dataclass(frozen=True)
class Run:
    cfg: Config
    dist: Dist
    folder: RunFolder
    data: Dataset                       # the shards folder, read once (pipeline.open_dataset)
    arch: dict                          # {"variant", "num_classes"}: what a checkpoint must match
    model: torch.nn.Module              # the plain model: checkpoints and evaluation
    net: torch.nn.Module                # what trains: the model, wrapped in DDP and/or torch.compile
    opt: torch.optim.Optimizer
    train_loader: Loader
    val_loader: Loader
    autocast: AbstractContextManager    # bf16 on CUDA with --amp, else a no-op
    inference: dict                     # what a checkpoint carries for inference (model.checkpoint.inference_meta)

    @property
    def dir(self) -> Path:
        return self.folder.dir

    @property
    def log(self) -> RunLog:
        return self.folder.log

    @property
    def on_gpu(self) -> bool:
        return self.dist.device.type == "cuda"

    def echo(self, line: str) -> None:
        """A line on rank 0, printed above the progress bar."""
        if self.dist.main:
            echo(line)

    def plot(self) -> None:
        if self.dist.main:
            plot_curves(self.dir / METRICS, self.dir / CURVES, title=self.cfg.name,
                        num_classes=self.arch["num_classes"])


@dataclass
class RunState:
    """Where a run stands: epochs finished, steps taken, the val top-1 error after each finished epoch."""
    epoch: int = 0
    step: int = 0
    val_errors: list[float] = field(default_factory=list)


def versions() -> dict:
    """The software a result was measured with: torch, CUDA, DALI, Python, and this repository's git commit."""
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
    return {"torch": str(torch.__version__), "dali": dali, "cuda": torch.version.cuda, "git_commit": commit,
            "python": platform.python_version()}


def provenance(dist: Dist) -> dict:
    device = torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else platform.processor() or "cpu"
    return {**versions(), "device": device, "world_size": dist.world_size}


def open_run(cfg: Config, dist: Dist, arch: dict) -> RunFolder:
    """The run folder, checked (and on --resume the checkpoint) before anything in it changes; then
    config.json, the printed config, the log."""
    run_dir = Path(cfg.runs) / cfg.name
    resume, step, changes = None, 0, {}
    if cfg.resume is not None:
        if cfg.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; choose one")
        resume = resume_path(cfg.resume, run_dir, dist)
        ckpt = load_checkpoint(resume)
        require_arch(ckpt, resume, **arch)
        if "optimizer" not in ckpt or "config" not in ckpt:
            raise CheckpointError(f"{resume}: weights only (no optimizer, position or config); resume from a run's "
                                  f"last.pt, best.pt or epoch-NNN.pt")
        changes = resume_changes(ckpt["config"], plain(cfg), resume, echo=echo if dist.main else _quiet)
        step = ckpt["step"]
    prov = provenance(dist)
    if dist.main:
        prepare_run_dir(run_dir, resume=resume is not None, overwrite=cfg.overwrite)
        click.echo(f"config: {json.dumps(plain(cfg))}\nprovenance: {json.dumps(prov)}")
        write_config(run_dir, plain(cfg), prov, step=step, changes=changes, resumed_from=resume)
        if resume and (dropped := keep_metrics_until(run_dir / METRICS, step)):
            echo(f"resume: {dropped} records after step {step} dropped from {run_dir / METRICS}")
    log = RunLog(run_dir, dist.main, echo=echo, epochs=cfg.epochs, device=dist.device, start_step=step)
    return RunFolder(run_dir, log, prov, resume)


def _quiet(line: str) -> None:
    pass


def holds_run(run_dir: Path) -> bool:
    return any(any(Path(run_dir).glob(pattern)) for pattern in RUN_FILES)


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start over an existing run unless asked; --overwrite removes the old run's files (only those)."""
    run_dir = Path(run_dir)
    if holds_run(run_dir) and not resume:
        if not overwrite:
            raise ConfigError(f"{run_dir} already holds a run; continue it with --resume, start it again with "
                              f"--overwrite (its files are deleted), or choose another --name")
        for pattern in RUN_FILES:
            for path in run_dir.glob(pattern):
                path.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


def resume_path(resume: str, run_dir: Path, dist: Dist | None = None) -> Path:
    """--resume's argument -> a checkpoint file: '' means RUN_DIR/last.pt, a folder its last.pt, a file itself.
    Every rank reads it: on several nodes the run folder must be on a file system they all see."""
    path = Path(resume) if resume else Path(run_dir)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        shared = f" (rank {dist.rank} of {dist.world_size} does not see it: every node reads the checkpoint, so " \
                 f"--runs must be on a file system all nodes share)" if dist is not None and dist.world_size > 1 else ""
        raise CheckpointError(f"--resume {resume}: no checkpoint at {path}{shared}; give a run folder or a .pt file, "
                              f"or start without --resume")
    return path


def config_changes(saved: dict, new: dict) -> tuple[dict, dict]:
    """(refused, accepted) differences {key: [saved, new]} between a checkpoint's config and this run's."""
    refused, accepted = {}, {}
    for key in sorted(set(saved) | set(new)):
        if key in IGNORED or _plain(saved.get(key)) == _plain(new.get(key)):
            continue
        (refused if key in FIXED else accepted)[key] = [saved.get(key), new.get(key)]
    return refused, accepted


def resume_changes(saved: dict, new: dict, checkpoint: Path, echo=print) -> dict:
    """Print the differences; raise ConfigError for those a resume cannot take; return the accepted ones."""
    refused, accepted = config_changes(saved, new)
    for key, (old, now) in {**accepted, **refused}.items():
        echo(f"resume: --{key.replace('_', '-')} {old} -> {now}" + (" (refused)" if key in refused else ""))
    if refused:
        what = ", ".join(f"--{k.replace('_', '-')} {old} (now {now})" for k, (old, now) in refused.items())
        raise ConfigError(f"{checkpoint}: this run was made with {what}; a resume cannot change the model or the "
                          f"data: use the saved values, or start a new run with another --name")
    return accepted


def write_config(run_dir: Path, config: dict, provenance: dict, *, step: int = 0, changes: dict | None = None,
                 resumed_from: Path | None = None) -> None:
    """config.json: the current config and provenance, and one history entry per start or resume."""
    path = Path(run_dir) / CONFIG
    history = read_json(path, "run config").get("history", []) if path.is_file() else []
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": step, "changes": changes or {},
             "provenance": provenance}
    if resumed_from is not None:
        entry["resumed_from"] = str(resumed_from)
    write_json(path, {"config": config, "provenance": provenance, "history": history + [entry]})


def save_state(run: Run, state: RunState, *, finished: bool) -> None:
    """last.pt at this position; after a `finished` epoch also best.pt (lowest val top-1 so far) and the
    --keep-every snapshot. Every rank calls it (each one's RNG and loader state is gathered); rank 0 writes."""
    ranks = run.dist.all_gather({"rng_cpu": torch.get_rng_state(),
                                 "rng_cuda": torch.cuda.get_rng_state(run.dist.device) if run.on_gpu else None,
                                 "loader": run.train_loader.state_dict()})
    if not run.dist.main:
        return
    errors, every = state.val_errors, run.cfg.keep_every
    save_checkpoints(run.dir, {
        "model": run.model.state_dict(), "optimizer": run.opt.state_dict(), "epoch": state.epoch,
        "step": state.step, "val_errors": errors, "config": plain(run.cfg), "arch": run.arch, "ranks": ranks,
        "world_size": run.dist.world_size, "provenance": run.folder.provenance, "inference": run.inference},
        best=finished and errors[-1] < min(errors[:-1], default=math.inf),
        snapshot=state.epoch if finished and every and state.epoch % every == 0 else None)


def load_state(run: Run) -> RunState:
    """Restore model, optimizer, RNG and loader position from the checkpoint of --resume. From another world
    size the train loader restarts the checkpoint's epoch and the RNG keeps this run's seed."""
    path, dist = run.folder.resume_from, run.dist
    ckpt = load_checkpoint(path)
    run.model.load_state_dict(ckpt["model"])
    run.opt.load_state_dict(ckpt["optimizer"])
    state = RunState(ckpt["epoch"], ckpt["step"], list(ckpt["val_errors"]))
    if ckpt["world_size"] == dist.world_size:
        mine = ckpt["ranks"][dist.rank]
        torch.set_rng_state(mine["rng_cpu"])
        if run.on_gpu and mine["rng_cuda"] is not None:
            torch.cuda.set_rng_state(mine["rng_cuda"], dist.device)
        run.train_loader.load_state_dict(mine["loader"])
    else:
        run.echo(f"note: checkpoint from {ckpt['world_size']} ranks, now {dist.world_size}: "
                 "the loaders restart the epoch and the RNG is reseeded")
        run.train_loader.load_state_dict({"epoch": state.epoch, "batch": 0})
    run.echo(f"resumed {path} at epoch {state.epoch}, step {state.step}")
    return state


def save_model(run: Run) -> None:
    """model.pt: the weights at the end of the run and what inference needs to use them (rank 0)."""
    if run.dist.main:
        run.echo(f"weights for inference: {save_weights(run.dir, run.model.state_dict(), run.arch, run.inference)}")


def finish(log: RunLog, summary: dict) -> None:
    """summary.json, the final `summary: k=v ...` line, the TensorBoard file closed (rank 0)."""
    if log.enabled:
        write_json(log.dir / "summary.json", summary)
        click.echo("summary: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in summary.items()))
    log.close()


def _plain(v):
    return list(v) if isinstance(v, tuple) else v
