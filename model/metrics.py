"""Run folder output on rank 0: one greppable log line format, metrics.jsonl, and the PNG of the curves."""
from __future__ import annotations

import json
import time
from pathlib import Path

from shardkit.files import atomic_write, full_disk_as_error


class RunLog:
    """runs/<name>/metrics.jsonl (one JSON object per log step and per eval) plus printed lines `[kind] k=v ...`."""

    def __init__(self, run_dir: Path, enabled: bool, echo=print):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled, self.echo = enabled, echo
        self.t0 = time.time()

    def write(self, kind: str, **values) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "time": round(time.time() - self.t0, 3), **values}
        line = (json.dumps(record) + "\n").encode()
        with full_disk_as_error(self.path.parent, len(line), doing=f"appending to {self.path.name}"), \
                open(self.path, "ab", buffering=0) as f:  # unbuffered: nothing left to flush after a failure
            end = f.seek(0, 2)
            try:
                view = memoryview(line)
                while view:
                    view = view[f.write(view):]
            except OSError:
                f.truncate(end)  # no half line: metrics.jsonl stays one JSON object per line
                raise
        self.echo(f"[{kind}] " + " ".join(f"{k}={_fmt(v)}" for k, v in values.items()))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: Path, png_path: Path) -> Path | None:
    """Train loss by step and val top-1/top-5 error by epoch, side by side."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    if not train and not evals:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    ax1.set_xlabel("step")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    for key, label in (("top1_err", "val top-1 error"), ("top5_err", "val top-5 error")):
        ax2.plot([r["epoch"] for r in evals], [r[key] for r in evals], marker="o", label=label)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("error")
    ax2.set_ylim(0, 1)
    ax2.legend()
    fig.tight_layout()
    with atomic_write(png_path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return Path(png_path)
