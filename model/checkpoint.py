"""Checkpoints: plain dicts of tensors and builtins from the unwrapped model, written atomically, read with
weights_only=True (no pickled code is ever loaded). A kill during a save leaves the previous checkpoint as it
was (the next save removes the dead writer's temporary file); a full disk raises DiskFull, one line.

A run's checkpoint files (model.train writes them; model.run.save_state builds the dict):

    runs/<name>/last.pt          every epoch and on SIGTERM/SIGINT; model, optimizer, position, config, each
                                 rank's RNG and loader state (the previous last.pt stays until the new one is
                                 complete on disk: temporary name, fsync, rename)
    runs/<name>/best.pt          a copy of last.pt at the finished epoch with the lowest val top-1 error
    runs/<name>/epoch-NNN.pt     a copy after every --keep-every N finished epochs
    runs/<name>/model.pt         weights only, with the `inference` metadata, at the end of the run
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from common.errors import DataError
from common.files import atomic_write, full_disk_as_error, partial_path, remove_stale_partials

LAST, BEST, WEIGHTS = "last.pt", "best.pt", "model.pt"


class CheckpointError(DataError):
    """A checkpoint is missing or does not fit the model asked for."""


class _Writes:
    """A file that remembers the OSError of a failed write: torch.save replaces it by a RuntimeError."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def _nbytes(state) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_nbytes(v) for v in state)
    return 0


def save_checkpoint(path: Path, state: dict) -> None:
    path = Path(path)
    remove_stale_partials(path.parent)  # what a save killed with -9 left behind
    with full_disk_as_error(path.parent, lambda: _nbytes(state), doing=f"writing {path.name}"):
        with atomic_write(path) as f:
            out = _Writes(f)
            try:
                torch.save(state, out)
            except RuntimeError:
                if out.error is not None:
                    raise out.error from None
                raise


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


def require_arch(ckpt: dict, path: Path, *, variant: str, num_classes: int) -> None:
    """Refuse a checkpoint made for another architecture or class count, saying which."""
    arch = ckpt.get("arch") or {}
    want = {"variant": variant, "num_classes": num_classes}
    if arch != want:
        raise CheckpointError(f"{path}: made for {arch or 'an unknown model'}, but this run builds {want}")


def save_checkpoints(run_dir: Path, state: dict, *, best: bool = False, snapshot: int | None = None) -> None:
    """last.pt; a copy as best.pt when `best`; a copy as epoch-NNN.pt when `snapshot` is an epoch number."""
    run_dir = Path(run_dir)
    save_checkpoint(run_dir / LAST, state)
    if best:
        _copy(run_dir / LAST, run_dir / BEST)
    if snapshot is not None:
        _copy(run_dir / LAST, run_dir / f"epoch-{snapshot:03d}.pt")


def save_weights(run_dir: Path, model: dict, arch: dict, inference: dict) -> Path:
    """model.pt: what inference needs and nothing else (no optimizer, no RNG, no loader state)."""
    path = Path(run_dir) / WEIGHTS
    save_checkpoint(path, {"model": model, "arch": arch, "inference": inference})
    return path


def _copy(src: Path, dst: Path) -> None:
    """dst becomes what src is now. A hard link under a temporary name, renamed onto dst: no bytes are
    written, and since every save replaces last.pt by a rename (a new file), dst keeps this content.
    Where the file system has no hard links, a copy."""
    tmp = partial_path(dst)
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        tmp.unlink(missing_ok=True)
        with open(src, "rb") as f, atomic_write(dst) as out:
            shutil.copyfileobj(f, out)
