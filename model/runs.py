"""Run folders: one run per runs/<name>/, never overwritten by accident; checkpoints that survive a crash.

    runs/<name>/config.json      the config, provenance, and a history of what each resume changed
    runs/<name>/last.pt          every epoch and on SIGTERM/SIGINT (atomic: the previous one stays until the
                                 new one is complete on disk)
    runs/<name>/best.pt          the epoch with the lowest val top-1 error so far
    runs/<name>/epoch-NNN.pt     every --keep-every N epochs
    runs/<name>/model.pt         weights only (model, arch, classes), for inference (python -m model.evaluate)

Starting a run where one already is is refused, naming the ways on: --resume, --overwrite, another --name.
On --resume the saved config is compared with the new one: changes to the architecture or the data are
refused, the rest (epochs, lr, schedule, ...) are accepted and recorded in config.json's history.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from model.checkpoint import CheckpointError, save_checkpoint
from shardkit.errors import ConfigError
from shardkit.files import atomic_write, write_json
from shardkit.format import read_json

LAST, BEST, WEIGHTS, CONFIG = "last.pt", "best.pt", "model.pt", "config.json"
RUN_FILES = (CONFIG, "metrics.jsonl", "summary.json", "curves.png", "*.pt", "events.out.tfevents.*")
# a resume may not change what the model is or which samples each step sees (the loader's saved position)
FIXED = ("shards", "variant", "dropout", "backend", "batch_size", "seed", "limit_train", "update", "synthetic")
IGNORED = ("resume", "overwrite", "name", "runs")  # how this process was asked to run, not what the run is


def holds_run(run_dir: Path) -> bool:
    return any(any(Path(run_dir).glob(pattern)) for pattern in RUN_FILES)


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start over an existing run unless asked; --overwrite removes the old run's files."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; choose one")
    if holds_run(run_dir) and not resume:
        if not overwrite:
            raise ConfigError(f"{run_dir} already holds a run; continue it with --resume, start it again with "
                              f"--overwrite (its files are deleted), or choose another --name")
        for pattern in RUN_FILES:
            for path in run_dir.glob(pattern):
                path.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


def resume_path(resume: str, run_dir: Path) -> Path:
    """--resume's argument -> a checkpoint file: '' means RUN_DIR/last.pt, a folder its last.pt, a file itself."""
    path = Path(resume) if resume else Path(run_dir)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise CheckpointError(f"--resume {resume or ''}: no checkpoint at {path}; give a run folder or a .pt file, "
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


def check_resume_config(saved: dict, new: dict, checkpoint: Path, echo=print) -> dict:
    """Print the differences; raise ConfigError for those a resume cannot take; return the accepted ones."""
    refused, accepted = config_changes(saved, new)
    for key, (old, now) in {**accepted, **refused}.items():
        echo(f"resume: --{key.replace('_', '-')} {old} -> {now}" + (" (refused)" if key in refused else ""))
    if refused:
        what = ", ".join(f"--{k.replace('_', '-')} {old} (now {now})" for k, (old, now) in refused.items())
        raise ConfigError(f"{checkpoint}: this run was made with {what}; a resume cannot change the model or the "
                          f"data: use the saved values, or start a new run with another --name")
    return accepted


def write_config(run_dir: Path, config: dict, provenance: dict, *, step: int = 0, changes: dict | None = None) -> None:
    """config.json: the current config and provenance, and one history entry per start or resume."""
    path = Path(run_dir) / CONFIG
    history = read_json(path, "run config").get("history", []) if path.is_file() else []
    history.append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": step, "changes": changes or {},
                    "provenance": provenance})
    write_json(path, {"config": config, "provenance": provenance, "history": history})


def save_checkpoints(run_dir: Path, state: dict, *, epoch: int, top1_err: float | None, best: float | None,
                     keep_every: int | None, complete_epoch: bool = True) -> float | None:
    """last.pt always; best.pt when top1_err beats `best`; epoch-NNN.pt every keep_every epochs.
    Returns the best top-1 error so far."""
    run_dir = Path(run_dir)
    save_checkpoint(run_dir / LAST, state)
    if complete_epoch and top1_err is not None and (best is None or top1_err < best):
        _copy(run_dir / LAST, run_dir / BEST)
        best = top1_err
    if complete_epoch and keep_every and epoch % keep_every == 0:
        _copy(run_dir / LAST, run_dir / f"epoch-{epoch:03d}.pt")
    return best


def save_weights(run_dir: Path, model_state: dict, arch: dict, classes: list[str]) -> Path:
    """model.pt: what inference needs and nothing else (no optimizer, no RNG, no loader state)."""
    path = Path(run_dir) / WEIGHTS
    save_checkpoint(path, {"model": model_state, "arch": arch, "classes": list(classes)})
    return path


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as f, atomic_write(dst) as out:
        shutil.copyfileobj(f, out)


def _plain(v):
    return list(v) if isinstance(v, tuple) else v
