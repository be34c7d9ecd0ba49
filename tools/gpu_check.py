"""The GPU path proven in one short run: correctness, loader speed, training speed, DDP.

    python tools/gpu_check.py                          # on one GPU, within --budget seconds (default 480)
    python tools/gpu_check.py --device cpu --quick     # the same sections on the CPU, in well under a minute
    PYTHON=python3 make gpu-check                      # the same from the repository root, no install step

Writes DIR/gpu_report.json and DIR/gpu_report.md (default DIR gpu_check/) after every section, so a section
that fails or runs out of time leaves a report that says so. Sections, in order:
  correctness  DALI on the GPU vs DALI on the CPU vs the reference loader on position-coded images: crop
               offsets, flips, labels, pixels; val exactly once over 2 ranks; 10-crop; mid-epoch resume
  loader       the DALI train pipeline per decoder setting (hw_decoder_load, window vs full decode), the
               reference loader, plain decoding on all cores; GPU memory per loader
  train        AlexNet (bf16 on GPU) on random tensors vs on DALI batches; channels_last and compile on/off
  ddp          two gloo ranks on the one device (weights identical after); a one-rank NCCL DDP smoke test
Its data is built under DIR/data (or DIR/data-quick) from the demo generator, once; the train shards are
repeated by hard links so that timed windows span many batches.
Needs torch, numpy, pillow, opencv, click, tqdm, DALI and this repository on PYTHONPATH; no network.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import click

from shardkit import cli
from shardkit.errors import ConfigError
from shardkit.files import atomic_write
from shardkit.format import MANIFEST, PCA, index_path, load_manifest, shard_name, split_shards

SECTIONS = ("correctness", "loader", "train", "ddp")


@dataclass(frozen=True)
class Plan:
    """How big each part of the check is; `quick` shrinks everything to CPU-test size."""
    classes: int
    train_per_class: int
    val_per_class: int
    shard_size: int
    repeat: int            # copies (hard links) of the train shards in the timed set
    loader_batch: int
    loader_batches: int
    loader_seconds: float
    train_batch: int
    train_steps: int
    train_warmup: int
    compile_backend: str
    compile_reserve: float  # seconds a compiled variant needs; skipped with less left
    ddp_batch: int
    ddp_steps: int


FULL = Plan(10, 100, 20, 100, 25, 256, 100, 10.0, 256, 50, 10, "inductor", 150.0, 128, 36)
QUICK = Plan(4, 16, 4, 16, 4, 32, 6, 3.0, 2, 1, 0, "eager", 0.0, 2, 1)  # eager: dynamo's path, no C++ build


class OutOfTime(Exception):
    pass


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() < 0:
            raise OutOfTime(f"the budget ran out after {what}")


def write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def provenance(device) -> dict:
    import numpy
    import torch

    from model.run import versions
    out = {**versions(), "device": str(device), "numpy": numpy.__version__, "cpu_cores": _cores(),
           "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", driver=_driver())
    return out


def _driver() -> str | None:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _cores() -> int:
    from shardkit.parallel import default_workers
    return default_workers()


def build_data(root: Path, plan: Plan, workers: int) -> dict:
    """demo shards + pca.json, the repeated train set, position-coded shards; made once, then kept."""
    from pipeline.check import write_position_shards
    from shardkit import convert, stats
    from shardkit.demo_data import make_demo
    demo, big, pos = root / "demo", root / "repeated", root / "position"
    if not (demo / PCA).is_file():
        src = root / "demo-src"
        shutil.rmtree(src, ignore_errors=True)
        make_demo(src, classes=plan.classes, train_per_class=plan.train_per_class, val_per_class=plan.val_per_class,
                  seed=0, odd_files=False)
        convert.convert(convert.Options(src=str(src), out=str(demo), shard_size=plan.shard_size, workers=workers))
        stats.compute(stats.Options(shards=str(demo), workers=workers))
        shutil.rmtree(src)
    if not (big / MANIFEST).is_file():
        repeat_shards(demo, big, plan.repeat)
    shutil.rmtree(pos, ignore_errors=True)  # cheap, and its JPEG bytes are needed in memory anyway
    jpegs = write_position_shards(pos)
    return {"demo": demo, "repeated": big, "position": pos, "position_jpegs": jpegs}


def repeat_shards(src: Path, out: Path, repeat: int) -> None:
    """A shards folder whose train split is `repeat` copies (hard links) of src's train shards."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(src)
    splits = {}
    for split, copies in (("train", repeat), ("val", 1)):
        tars, counts = split_shards(src, split, manifest)
        names = []
        for _ in range(copies):
            for tar in tars:
                name = shard_name(split, len(names))
                for a, b in ((tar, out / name), (index_path(tar), index_path(out / name))):
                    b.unlink(missing_ok=True)
                    try:
                        os.link(a, b)
                    except OSError:  # another file system: copy
                        shutil.copyfile(a, b)
                names.append(name)
        splits[split] = {"shards": names, "shard_samples": counts * copies, "samples": sum(counts) * copies,
                         "skipped": []}
    shutil.copyfile(src / PCA, out / PCA)
    write_text(out / MANIFEST, json.dumps({"size": manifest["size"], "classes": manifest["classes"],
                                           "splits": splits, "repeated_from": str(src), "repeat": repeat}, indent=1))


def run_sections(out: Path, device, quick: bool, budget: float, workers: int, only: tuple[str, ...]) -> dict:
    import torch
    plan = QUICK if quick else FULL
    deadline = Deadline(budget)
    report = {"tool": "gpu_check", "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "quick": quick, "budget_s": budget, "workers": workers, "plan": asdict(plan),
              "provenance": provenance(device), **{s: {"status": "not run"} for s in SECTIONS}}
    t_start = time.monotonic()

    def save():
        report["elapsed_s"] = round(time.monotonic() - t_start, 1)
        write_text(out / "gpu_report.json", json.dumps(report, indent=1, default=_plain) + "\n")
        write_text(out / "gpu_report.md", markdown(report))

    save()
    data = build_data(out / ("data-quick" if quick else "data"), plan, workers)
    report["data"] = {k: str(v) for k, v in data.items() if k != "position_jpegs"}
    report["data"]["train_images_timed_set"] = load_manifest(data["repeated"])["splits"]["train"]["samples"]
    from model.check import ddp_section, train_section
    from pipeline.check import correctness, loader_section
    runs = {
        "correctness": lambda r: correctness(data["position"], data["position_jpegs"], data["demo"], device, workers,
                                             2 if device.type == "cuda" else 0, r, deadline),
        "loader": lambda r: loader_section(data["repeated"], device, workers, plan.loader_batch, plan.loader_batches,
                                           plan.loader_seconds, r, deadline),
        "train": lambda r: train_section(data["repeated"], device, workers, plan.train_batch, plan.train_steps,
                                         plan.train_warmup, plan.compile_backend, plan.compile_reserve, r, deadline),
        "ddp": lambda r: ddp_section(data["repeated"], device, plan.ddp_batch, plan.ddp_steps, plan.train_warmup,
                                     out / "ddp", r, deadline),
    }
    for name in SECTIONS:
        if name not in only:
            report[name] = {"status": "skipped (--sections)"}
            continue
        if deadline.left() <= 0:
            report[name] = {"status": "out of time (not started)"}
            continue
        section = report[name] = {"status": "running (did not finish)"}
        save()
        t0 = time.monotonic()
        try:
            runs[name](section)
            section["status"] = "failed" if section.get("ok") is False else "ok"
        except OutOfTime as e:
            section["status"] = f"out of time: {e}"
        except Exception as e:  # a section's failure is its report's content; the next sections still run
            section["status"] = "error"
            section["error"] = f"{type(e).__name__}: {e}"
            section["traceback"] = traceback.format_exc(limit=8).splitlines()[-12:]
        section["seconds"] = round(time.monotonic() - t0, 1)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        save()
    report["ok"] = all(report[s]["status"] == "ok" for s in only)
    save()
    return report


def _plain(v):
    """numpy scalars (the checks' bools and floats) as JSON's own types; anything else as text."""
    return v.item() if hasattr(v, "item") and getattr(v, "ndim", None) == 0 else str(v)


def _f(v, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def markdown(r: dict) -> str:
    p = r["provenance"]
    lines = [f"# gpu_check report ({'quick' if r['quick'] else 'full'})", "",
             f"Device {p.get('gpu') or p['device']} (driver {p.get('driver') or '-'}, CUDA {p.get('cuda') or '-'}), "
             f"{p['cpu_cores']} CPU cores; torch {p['torch']}, DALI {p['dali']}, Python {p['python']}; "
             f"commit {p.get('git_commit') or '-'}; budget {r['budget_s']:.0f} s, elapsed {r.get('elapsed_s', 0):.0f} s.",
             "", "| section | status | seconds |", "|---|---|---|"]
    lines += [f"| {s} | {r[s]['status']} | {_f(r[s].get('seconds'), '{:.1f}')} |" for s in SECTIONS]
    c = r["correctness"]
    if c.get("checks"):
        lines += ["", f"## correctness: ok = {c.get('ok')}", "", "| check | ok | details |", "|---|---|---|"]
        for name, v in c["checks"].items():
            details = ", ".join(f"{k}={_f(x, '{:.4g}')}" for k, x in v.items() if k != "ok")
            lines.append(f"| {name} | {v['ok']} | {details} |")
    if r["loader"].get("results"):
        lines += ["", "## loader", "", "| backend | decoder | hw_decoder_load | batch | images/s | GPU MB |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {x['backend']} | {x['decoder']} | {_f(x['hw_decoder_load'], '{}')} | {x['batch_size']} | "
                  f"{_f(x['images_per_s'])} | {_f(x['gpu_mem_mb'])} |" for x in r["loader"]["results"]]
    t = r["train"]
    if t.get("results"):
        lines += ["", f"## train (batch {t['batch_size']}, amp {t['amp']}, compile backend {t['compile_backend']})", "",
                  "| input | channels_last | compile | images/s | ms/step | data wait |", "|---|---|---|---|---|---|"]
        lines += [f"| {x['input']} | {x['channels_last']} | {x['compile']} | {_f(x['images_per_s'])} | "
                  f"{_f(x['step_ms'], '{:.1f}')} | {_f(x['data_wait'], '{:.1%}')} |" for x in t["results"]]
        if "vs_synthetic" in t:
            lines += ["", f"real / synthetic = {t['vs_synthetic']:.3f}, data wait {t['data_wait']:.1%}"]
    d = r["ddp"]
    if "ranks_weights_equal" in d:
        lines += ["", "## ddp", "", f"2 gloo ranks on one device, {d['steps']} steps: weights equal = "
                  f"{d['ranks_weights_equal']}, {_f(d['images_per_s'])} images/s; one-rank "
                  f"{d['one_rank_smoke']['backend']} smoke with channels_last: ok = {d['one_rank_smoke']['ok']} "
                  f"(stride warnings: {len(d['one_rank_smoke']['stride_warnings'])})"]
    for s in SECTIONS:
        if r[s].get("error"):
            lines += ["", f"{s}: {r[s]['error']}"]
    return "\n".join(lines) + "\n"


@click.command(context_settings=cli.CONTEXT)
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default=None, help="[default: cuda if available]")
@click.option("--quick", is_flag=True, help="Small data and few steps: every section in well under a minute on a CPU.")
@click.option("--out", default="gpu_check", show_default=True, type=click.Path(path_type=Path))
@click.option("--budget", default=480.0, show_default=True, type=click.FloatRange(1), help="Seconds for all sections.")
@click.option("--workers", type=click.IntRange(1), help="Loader threads/processes [default: all cores].")
@click.option("--sections", default=",".join(SECTIONS), show_default=True, help="Comma-separated subset to run.")
def main(device, quick, out, budget, workers, sections):
    """Prove the GPU path in one run; report in OUT/gpu_report.{json,md}."""
    import torch
    only = tuple(s.strip() for s in sections.split(",") if s.strip())
    if unknown := [s for s in only if s not in SECTIONS]:
        raise click.BadParameter(f"unknown section(s) {', '.join(unknown)}; use {', '.join(SECTIONS)}", param_hint="--sections")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but torch sees no CUDA device; use --device cpu or a CUDA build of torch")
    dev = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device("cpu")
    out.mkdir(parents=True, exist_ok=True)

    def hard_stop(signum, frame):  # a section stuck in one long call: end it shortly after the budget
        raise OutOfTime("the budget (plus 60 s of grace) ran out inside one call")

    signal.signal(signal.SIGALRM, hard_stop)
    signal.alarm(int(budget) + 60)
    try:
        report = run_sections(out, dev, quick, budget, workers or _cores(), only)
    finally:
        signal.alarm(0)
    for s in SECTIONS:
        click.echo(f"  {s}: {report[s]['status']}" + (f" ({report[s]['error']})" if report[s].get("error") else ""))
    click.echo(f"gpu_check: {'all sections ok' if report['ok'] else 'NOT all sections ok'} on {dev} in "
               f"{report['elapsed_s']:.0f} s; report in {out / 'gpu_report.md'} and {out / 'gpu_report.json'}")
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    cli.run(main)
