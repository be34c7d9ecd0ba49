"""The plan, data, sections and report of tools/gpu_check.py: the GPU path proven in one short run.

Sections, in order (each writes into its own part of the report, which is saved after every section, so a
section that fails or runs out of time leaves a report that says so):
  correctness  measure.loader_checks: DALI on the GPU vs on the CPU vs the reference loader
  loader       measure.loader_speed: the DALI train pipeline per decoder setting, the reference loader,
               plain decoding on all cores; GPU memory per loader
  train        measure.model_checks: AlexNet (bf16 on GPU) on random tensors vs on DALI batches
  ddp          measure.model_checks: two gloo ranks on one device; a one-rank NCCL DDP smoke test
Its data is built under DIR/data (or DIR/data-quick) from the demo generator, once; the train shards are
repeated by hard links so that timed windows span many batches.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from common.files import atomic_write
from common.parallel import available_cores
from measure.loader_checks import correctness, write_position_shards
from measure.loader_speed import loader_section
from measure.model_checks import ddp_section, train_section
from shardkit import convert, stats
from shardkit.demo_data import make_demo
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

    def stop_if_over(self, what: str) -> None:
        if self.left() < 0:
            raise OutOfTime(f"the budget ran out after {what}")


def write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def provenance(device) -> dict:
    import numpy
    import torch

    from model.run import versions
    out = {**versions(), "device": str(device), "numpy": numpy.__version__, "cpu_cores": available_cores(),
           "cpu": platform.processor() or platform.machine(), "start_method": multiprocessing.get_start_method()}
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


def build_data(root: Path, plan: Plan, workers: int) -> dict:
    """demo shards + pca.json, the repeated train set, position-coded shards; made once, then kept."""
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


def new_report(device, quick: bool, budget: float, workers: int, plan: Plan) -> dict:
    return {"tool": "gpu_check", "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "quick": quick, "budget_s": budget, "workers": workers, "plan": asdict(plan),
            "provenance": provenance(device), **{s: {"status": "not run"} for s in SECTIONS}}


def section_runners(data: dict, device, workers: int, plan: Plan, out: Path, deadline: Deadline) -> dict:
    """section name -> run(result dict), each section with its data and its share of the plan."""
    return {
        "correctness": lambda r: correctness(data["position"], data["position_jpegs"], data["demo"], device, workers,
                                             2 if device.type == "cuda" else 0, r, deadline),
        "loader": lambda r: loader_section(data["repeated"], device, workers, plan.loader_batch, plan.loader_batches,
                                           plan.loader_seconds, r, deadline),
        "train": lambda r: train_section(data["repeated"], device, workers, plan.train_batch, plan.train_steps,
                                         plan.train_warmup, plan.compile_backend, plan.compile_reserve, r, deadline),
        "ddp": lambda r: ddp_section(data["repeated"], device, plan.ddp_batch, plan.ddp_steps, plan.train_warmup,
                                     out / "ddp", r, deadline),
    }


def run_section(run, section: dict) -> None:
    """One section into `section`: its status (ok, failed, out of time, error with the traceback), seconds."""
    t0 = time.monotonic()
    try:
        run(section)
        section["status"] = "failed" if section.get("ok") is False else "ok"
    except OutOfTime as e:
        section["status"] = f"out of time: {e}"
    except Exception as e:  # a section's failure is its report's content; the next sections still run
        section["status"] = "error"
        section["error"] = f"{type(e).__name__}: {e}"
        section["traceback"] = traceback.format_exc(limit=8).splitlines()[-12:]
    section["seconds"] = round(time.monotonic() - t0, 1)


def run_sections(out: Path, device, quick: bool, budget: float, workers: int, only: tuple[str, ...]) -> dict:
    """Every section in `only`, in order, within `budget` seconds; the report is rewritten after each."""
    import torch
    plan = QUICK if quick else FULL
    deadline = Deadline(budget)
    report = new_report(device, quick, budget, workers, plan)
    t_start = time.monotonic()

    def save():
        report["elapsed_s"] = round(time.monotonic() - t_start, 1)
        write_text(out / "gpu_report.json", json.dumps(report, indent=1, default=_plain) + "\n")
        write_text(out / "gpu_report.md", markdown(report))

    save()
    data = build_data(out / ("data-quick" if quick else "data"), plan, workers)
    report["data"] = {k: str(v) for k, v in data.items() if k != "position_jpegs"}
    report["data"]["train_images_timed_set"] = load_manifest(data["repeated"])["splits"]["train"]["samples"]
    runners = section_runners(data, device, workers, plan, out, deadline)
    for name in SECTIONS:
        if name not in only:
            report[name] = {"status": "skipped (--sections)"}
        elif deadline.left() <= 0:
            report[name] = {"status": "out of time (not started)"}
        else:
            report[name] = {"status": "running (did not finish)"}
            save()
            run_section(runners[name], report[name])
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


