"""Run folder output on rank 0: one greppable log line format, metrics.jsonl, TensorBoard event files and
curves.png.

    log = RunLog(run_dir, enabled=dist.main, epochs=cfg.epochs, device=dist.device)
    log.write("train", step=120, epoch=1.5, lr=0.01, loss=4.2, images_per_s=900.0, data_wait=0.02)
    plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png", title="alexnet", num_classes=1000)
    tensorboard --logdir runs          # every run folder is one TensorBoard run

Epoch convention (train and eval alike): `epoch` is the number of epochs completed at that record, as a
float; a train record half way through the second epoch has epoch=1.5, the eval after it epoch=2.0. So all
curves share one epoch axis. Each record also carries `time` (s since this process started logging),
`eta_s` (from this session's progress when the run's epoch count is known) and, on CUDA,
`peak_gpu_mem_gb` (torch.cuda.max_memory_allocated since the start).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from common.files import atomic_write, full_disk_as_error

METRICS = "metrics.jsonl"
CURVES = "curves.png"
NOT_SCALARS = {"step", "epoch", "time", "images"}  # axes and counts, not curves for TensorBoard


class RunLog:
    """runs/<name>/metrics.jsonl (one JSON object per log step and per eval), TensorBoard events in the same
    folder, and printed lines `[kind] k=v ...`."""

    def __init__(self, run_dir: Path, enabled: bool, echo=print, *, epochs: int | None = None,
                 device: torch.device | None = None, tensorboard: bool = True, start_step: int = 0):
        self.dir = Path(run_dir)
        self.path = self.dir / METRICS
        self.enabled, self.echo, self.epochs = enabled, echo, epochs
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self.device = device
        self.t0 = time.time()
        self._first: tuple[float, float] | None = None  # (time, epoch) of this session's first record
        self.tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            # purge_step: after a resume, TensorBoard hides the events an earlier process wrote past that step
            self.tb = SummaryWriter(log_dir=str(self.dir), purge_step=start_step or None)

    def write(self, kind: str, **values) -> dict | None:
        if not self.enabled:
            return None
        now = time.time()
        record = {"kind": kind, "time": round(now - self.t0, 3), **values}
        epoch = values.get("epoch")
        if epoch is not None:
            if self._first is None:
                self._first = (now, float(epoch))
            t_first, e_first = self._first
            if self.epochs and epoch > e_first:
                record["eta_s"] = round((self.epochs - epoch) * (now - t_first) / (epoch - e_first), 1)
        if self.cuda:
            record["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        self._append((json.dumps(record) + "\n").encode())
        if self.tb is not None and "step" in values:
            for k, v in record.items():
                if k not in NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{kind}/{k}", v, global_step=values["step"])
            self.tb.flush()
        self.echo(f"[{kind}] " + " ".join(f"{k}={_fmt(k, v)}" for k, v in record.items() if k not in ("kind", "time")))
        return record

    def _append(self, line: bytes) -> None:
        """One whole line or none: on a full disk the file is cut back and DiskFull names the folder."""
        with full_disk_as_error(self.dir, len(line), doing=f"appending to {self.path.name}"), \
                open(self.path, "ab", buffering=0) as f:  # unbuffered: nothing left to flush after a failure
            end = f.seek(0, 2)
            try:
                view = memoryview(line)
                while view:
                    view = view[f.write(view):]
            except OSError:
                f.truncate(end)  # metrics.jsonl stays one JSON object per line
                raise

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(key: str, v) -> str:
    if key.endswith("_s") and key not in ("images_per_s",) and isinstance(v, (int, float)):
        return _duration(v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def keep_metrics_until(path: Path, step: int) -> int:
    """Drop records written after `step` (by a process that died before its next checkpoint), so a resumed
    run does not log those steps twice; returns how many were dropped."""
    records = read_metrics(path)
    kept = [r for r in records if r.get("step", 0) <= step]
    if len(kept) != len(records):
        with atomic_write(path) as f:
            f.write("".join(json.dumps(r) + "\n" for r in kept).encode())
    return len(records) - len(kept)


def plot_curves(metrics_path: Path, png_path: Path, *, title: str = "", num_classes: int | None = None) -> Path | None:
    """Loss (train and val) and val errors on one epoch axis, an lr panel, the chance line, the final
    10-crop result, the run name in the title."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    ten = [r for r in records if r["kind"] == "eval_ten_crop"]
    if not train and not evals:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_err, ax_lr) = plt.subplots(3, 1, figsize=(8, 9), sharex=True,
                                                  gridspec_kw={"height_ratios": [3, 3, 1.4]})
    _loss_panel(ax_loss, train, evals, num_classes)
    _error_panel(ax_err, train, evals, ten[-1] if ten else None, num_classes)
    _lr_panel(ax_lr, train)
    last = evals[-1] if evals else None
    heading = title or Path(metrics_path).parent.name
    if last:
        heading += f"  (epoch {last['epoch']:g}: val top-1 {last['top1_err']:.3f}, top-5 {last['top5_err']:.3f})"
    fig.suptitle(heading)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.06, top=0.94, hspace=0.08)  # fixed: tight_layout costs more than the drawing
    with atomic_write(png_path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return Path(png_path)


def _loss_panel(ax, train: list[dict], evals: list[dict], num_classes: int | None) -> None:
    ax.plot([r["epoch"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    if any("loss" in r for r in evals):
        ax.plot([r["epoch"] for r in evals if "loss" in r], [r["loss"] for r in evals if "loss" in r],
                marker="o", label="val loss")
    if num_classes:
        ax.axhline(math.log(num_classes), color="grey", ls=":", label=f"chance (ln {num_classes})")
    ax.set_ylabel("cross-entropy")
    ax.legend(loc="upper right")


def _error_panel(ax, train: list[dict], evals: list[dict], ten: dict | None, num_classes: int | None) -> None:
    for key, label, colour in (("top1_err", "val top-1 error", "C0"), ("top5_err", "val top-5 error", "C1")):
        ax.plot([r["epoch"] for r in evals], [r[key] for r in evals], marker="o", color=colour, label=label)
    if num_classes:
        ax.axhline(1 - 1 / num_classes, color="C0", ls=":", label=f"chance top-1 ({1 - 1 / num_classes:.3f})")
        ax.axhline(max(0.0, 1 - 5 / num_classes), color="C1", ls=":",
                   label=f"chance top-5 ({max(0.0, 1 - 5 / num_classes):.3f})")
    if ten:
        x = max([r["epoch"] for r in evals + train] or [0])
        for key, colour, name in (("top1_err", "C0", "top-1"), ("top5_err", "C1", "top-5")):
            ax.plot([x], [ten[key]], marker="*", ms=14, color=colour, ls="none",
                    label=f"10-crop {name}: {ten[key]:.3f}")
    ax.set_ylabel("error")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right", fontsize=8)


def _lr_panel(ax, train: list[dict]) -> None:
    lr = [r for r in train if "lr" in r]
    # a record's lr is held over the steps up to it
    ax.step([r["epoch"] for r in lr], [r["lr"] for r in lr], where="pre", color="C2")
    if lr and min(r["lr"] for r in lr) > 0:
        ax.set_yscale("log")
    ax.set_ylabel("learning rate")
    ax.set_xlabel("epoch")
