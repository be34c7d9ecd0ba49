"""The plan, data, sections and report of tools/gpu_check.py: the GPU path proven in one short run.

Sections, in order (each writes into its own part of the report, which is saved after every section, so a
section that fails or runs out of time leaves a report that says so):
  correctness  measure.loader_checks: DALI on the GPU vs on the CPU vs the reference loader
  loader       measure.loader_speed: the DALI train pipeline per decoder setting, the reference loader,
               plain decoding on all cores; GPU memory per loader; which decoder DALI used (measure.decoders)
  train        measure.model_checks: AlexNet (bf16 on GPU) on random tensors vs on DALI batches
  ddp          measure.model_checks: two gloo ranks on one device; a one-rank NCCL DDP smoke test
  model_train  measure.model_checks: `python -m model.train` itself on the check's shards (the user's path)
Time: each section ends by the budget's end less what the sections after it reserve (Plan.reserve), so a
slow section (or the compile trials) cannot leave the later ones nothing. A SIGTERM (an outer time limit)
stops the running section; the report keeps what finished and says what was stopped.
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
from common.parallel import available_cores, shared_memory_free
from measure.loader_checks import correctness, write_position_shards
from measure.loader_speed import loader_section
from measure.model_checks import ddp_section, train_run_section, train_section
from shardkit import convert, stats
from shardkit.demo_data import make_demo
from shardkit.format import MANIFEST, PCA, index_path, load_manifest, shard_name, split_shards

SECTIONS = ("correctness", "loader", "train", "ddp", "model_train")


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
    run_batch: int          # model_train: python -m model.train's global batch (the paper's 128)
    run_steps: int
    run_log_every: int
    run_limit_val: int | None
    reserve: dict           # section -> seconds kept for it by the sections before it


FULL = Plan(10, 100, 20, 100, 25, 256, 100, 10.0, 256, 50, 10, "inductor", 120.0, 128, 36,
            128, 300, 50, None, {"ddp": 75.0, "model_train": 100.0})
QUICK = Plan(4, 16, 4, 16, 4, 32, 6, 3.0, 2, 1, 0, "eager", 0.0, 2, 1,  # eager: dynamo's path, no C++ build
             2, 2, 1, 8, {"ddp": 20.0, "model_train": 20.0})


class OutOfTime(Exception):
    pass


class Stopped(Exception):
    """A signal (SIGTERM from an outer time limit) ended the check: the report keeps what finished."""


class Deadline:
    def __init__(self, seconds: float, end: float | None = None):
        self.end = time.monotonic() + seconds if end is None else end

    def before(self, seconds: float) -> Deadline:
        """A deadline `seconds` earlier than this one: what a section may use when later ones reserve time."""
        return Deadline(0, self.end - seconds)

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
           "cpu": platform.processor() or platform.machine(), "start_method": multiprocessing.get_start_method(),
           "shm_free_mb": None if shared_memory_free() is None else round(shared_memory_free() / 1e6)}
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


def section_runners(data: dict, device, workers: int, plan: Plan, out: Path) -> dict:
    """section name -> run(result dict, deadline), each section with its data and its share of the plan."""
    return {
        "correctness": lambda r, d: correctness(data["position"], data["position_jpegs"], data["demo"], device,
                                                workers, 2 if device.type == "cuda" else 0, r, d),
        "loader": lambda r, d: loader_section(data["repeated"], device, workers, plan.loader_batch,
                                              plan.loader_batches, plan.loader_seconds, r, d),
        "train": lambda r, d: train_section(data["repeated"], device, workers, plan.train_batch, plan.train_steps,
                                            plan.train_warmup, plan.compile_backend, plan.compile_reserve, r, d),
        "ddp": lambda r, d: ddp_section(data["repeated"], device, plan.ddp_batch, plan.ddp_steps, plan.train_warmup,
                                        out / "ddp", r, d),
        "model_train": lambda r, d: train_run_section(data["repeated"], device, workers, plan.run_batch,
                                                      plan.run_steps, plan.run_log_every, plan.run_limit_val,
                                                      out / "model_train", r, d),
    }


def section_deadline(deadline: Deadline, name: str, only: tuple[str, ...], plan: Plan) -> Deadline:
    """The budget's end less the time the sections after `name` (those asked for) reserve."""
    later = SECTIONS[SECTIONS.index(name) + 1:]
    return deadline.before(sum(plan.reserve.get(s, 0.0) for s in later if s in only))


def run_section(run, section: dict, deadline: Deadline) -> None:
    """One section into `section`: its status (ok, failed, out of time, error with the traceback, stopped),
    seconds. Stopped (a signal) is recorded, then raised on: no later section runs."""
    t0 = time.monotonic()
    section["window_s"] = round(deadline.left())
    try:
        run(section, deadline)
        section["status"] = "failed" if section.get("ok") is False else "ok"
    except OutOfTime as e:
        section["status"] = f"out of time: {e}"
    except Stopped as e:
        section["status"] = f"stopped by {e}"
        raise
    except Exception as e:  # a section's failure is its report's content; the next sections still run
        section["status"] = "error"
        section["error"] = f"{type(e).__name__}: {e}"
        section["traceback"] = traceback.format_exc(limit=8).splitlines()[-12:]
    finally:
        section["seconds"] = round(time.monotonic() - t0, 1)


def run_sections(out: Path, device, quick: bool, budget: float, workers: int, only: tuple[str, ...]) -> dict:
    """Every section in `only`, in order, within `budget` seconds; the report is rewritten after each, and
    once more when a signal (Stopped) ends the check early."""
    plan = QUICK if quick else FULL
    deadline = Deadline(budget)
    report = new_report(device, quick, budget, workers, plan)
    t_start = time.monotonic()

    def save():
        report["elapsed_s"] = round(time.monotonic() - t_start, 1)
        write_text(out / "gpu_report.json", json.dumps(report, indent=1, default=_plain) + "\n")
        write_text(out / "gpu_report.md", markdown(report))

    save()
    try:
        # --quick's few dozen images convert faster in this process than in a pool that has to start first
        data = build_data(out / ("data-quick" if quick else "data"), plan, 1 if quick else workers)
        report["data"] = {k: str(v) for k, v in data.items() if k != "position_jpegs"}
        report["data"]["train_images_timed_set"] = load_manifest(data["repeated"])["splits"]["train"]["samples"]
        run_all(section_runners(data, device, workers, plan, out), report, device, plan, deadline, only, save)
    except (Stopped, OutOfTime) as e:
        report["stopped"] = str(e)
        for name in SECTIONS:
            if report[name]["status"] in ("not run", "running (did not finish)"):
                report[name]["status"] = f"not run: stopped by {e}" if name in only else "skipped (--sections)"
    report["ok"] = "stopped" not in report and all(report[s]["status"] == "ok" for s in only)
    save()
    return report


def run_all(runners: dict, report: dict, device, plan: Plan, deadline: Deadline, only: tuple[str, ...], save) -> None:
    import torch
    for name in SECTIONS:
        window = section_deadline(deadline, name, only, plan)
        if name not in only:
            report[name] = {"status": "skipped (--sections)"}
        elif window.left() <= 0:
            report[name] = {"status": "out of time (not started)"}
        else:
            report[name] = {"status": "running (did not finish)"}
            save()
            run_section(runners[name], report[name], window)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        save()


def _plain(v):
    """numpy scalars (the checks' bools and floats) as JSON's own types; anything else as text."""
    return v.item() if hasattr(v, "item") and getattr(v, "ndim", None) == 0 else str(v)


def _f(v, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _pct(v) -> str:
    return _f(v, "{:.1%}")


def markdown(r: dict) -> str:
    p = r["provenance"]
    lines = [f"# gpu_check report ({'quick' if r['quick'] else 'full'})", "",
             f"Device {p.get('gpu') or p['device']} (driver {p.get('driver') or '-'}, CUDA {p.get('cuda') or '-'}), "
             f"{p['cpu_cores']} CPU cores, /dev/shm {_f(p.get('shm_free_mb'))} MB free; torch {p['torch']}, "
             f"DALI {p['dali']}, Python {p['python']}; commit {p.get('git_commit') or '-'}; "
             f"budget {r['budget_s']:.0f} s, elapsed {r.get('elapsed_s', 0):.0f} s.", ""]
    if r.get("stopped"):
        lines += [f"**Stopped early by {r['stopped']}**; the sections below that say ok finished.", ""]
    lines += ["| section | status | seconds | window s |", "|---|---|---|---|"]
    lines += [f"| {s} | {r[s]['status']} | {_f(r[s].get('seconds'), '{:.1f}')} | {_f(r[s].get('window_s'))} |"
              for s in SECTIONS]
    for part in (_md_correctness, _md_loader, _md_train, _md_ddp, _md_model_train):
        lines += part(r)
    for s in SECTIONS:
        if r[s].get("error"):
            lines += ["", f"{s}: {r[s]['error']}"]
    return "\n".join(lines) + "\n"


def _md_correctness(r: dict) -> list[str]:
    c = r["correctness"]
    if not c.get("checks"):
        return []
    lines = ["", f"## correctness: ok = {c.get('ok')}", "", "| check | ok | details |", "|---|---|---|"]
    for name, v in c["checks"].items():
        details = ", ".join(f"{k}={_f(x, '{:.4g}')}" for k, x in v.items() if k != "ok")
        lines.append(f"| {name} | {v['ok']} | {details} |")
    return lines


def _md_loader(r: dict) -> list[str]:
    ld = r["loader"]
    lines = []
    if ld.get("decoder_backends"):
        lines += ["", "## decoder: who decoded the images (nvImageCodec's log)", "",
                  "| hw_decoder_load | window decode | verdict |", "|---|---|---|"]
        lines += [f"| {_f(c['hw_decoder_load'], '{}')} | {c['roi']} | {c['verdict']} |" for c in ld["decoder_backends"]]
        lines += [f"- {n}" for n in ld.get("decoder_notes", [])]
    if ld.get("results"):
        lines += ["", "## loader", "", "| backend | decoder | hw_decoder_load | batch | images/s | GPU MB | workers |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {x['backend']} | {x['decoder']} | {_f(x['hw_decoder_load'], '{}')} | {x['batch_size']} | "
                  f"{_f(x['images_per_s'])} | {_f(x['gpu_mem_mb'])} | {_workers(x.get('worker_plan'))} |"
                  for x in ld["results"]]
        same = [m for m, v in (ld.get("hw_load_spread") or {}).items() if v["same_for_every_load"]]
        if same:
            lines += ["", f"The same images/s for every hw_decoder_load ({', '.join(sorted(same))}): the hardware "
                      "decoder's share changed nothing."]
    return lines


def _workers(plan: dict | None) -> str:
    if not plan:
        return "-"
    return f"{plan['workers']} x {plan['prefetch_factor']} batches ahead (asked {plan['asked'][0]} x " \
           f"{plan['asked'][1]}; {plan['batch_mb']} MB each, /dev/shm {_f(plan['shm_free_mb'])} MB free)"


def _md_train(r: dict) -> list[str]:
    t = r["train"]
    if not t.get("results"):
        return []
    lines = ["", f"## train (batch {t['batch_size']}, amp {t['amp']}, compile backend {t['compile_backend']})", "",
             "| input | channels_last | compile | images/s | ms/step | data wait (host) | loader GPU time |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {x['input']} | {x['channels_last']} | {x['compile']} | {_f(x['images_per_s'])} | "
              f"{_f(x['step_ms'], '{:.1f}')} | {_pct(x['data_wait'])} | {_pct(x.get('data_wait_gpu'))} |"
              for x in t["results"]]
    for label, v in (("eager", t), ("compiled", t.get("compiled") or {})):
        if "vs_synthetic" in v:
            lines += ["", f"{label}: real / synthetic (same net) = {v['vs_synthetic']:.3f}, data wait "
                      f"{_pct(v['data_wait'])} (host), {_pct(v.get('data_wait_gpu'))} (loader GPU time)"]
    if isinstance(t.get("compile"), str):
        lines += ["", f"compile: {t['compile']}"]
    return lines


def _md_ddp(r: dict) -> list[str]:
    d = r["ddp"]
    if "ranks_weights_equal" not in d:
        return []
    return ["", "## ddp", "", f"2 gloo ranks on one device, {d['steps']} steps: weights equal = "
            f"{d['ranks_weights_equal']}, {_f(d['images_per_s'])} images/s; one-rank "
            f"{d['one_rank_smoke']['backend']} smoke with channels_last: ok = {d['one_rank_smoke']['ok']} "
            f"(stride warnings: {len(d['one_rank_smoke']['stride_warnings'])})"]


def _md_model_train(r: dict) -> list[str]:
    m = r["model_train"]
    if "command" not in m:
        return []
    steady = m.get("steady") or {}
    lines = ["", "## model_train: the user's command", "", f"`{m['command']}`: exit {_f(m.get('returncode'), '{}')}, "
             f"{_f(m.get('steps'), '{}')} steps", "", "| figure | whole run | after the first log interval |",
             "|---|---|---|",
             f"| images/s | {_f(m.get('train_images_per_s'))} | {_f(steady.get('images_per_s'))} |",
             f"| data wait (host) | {_pct(m.get('data_wait'))} | {_pct(steady.get('data_wait'))} |",
             f"| loader GPU time | {_pct(m.get('data_wait_gpu'))} | {_pct(steady.get('data_wait_gpu'))} |",
             f"| vs model alone ({_f(m.get('synthetic_images_per_s'))} images/s, same wrapping) | "
             f"{_f(m.get('vs_synthetic'), '{:.3f}')} | {_f(steady.get('vs_synthetic'), '{:.3f}')} |",
             f"| peak GPU memory (GB) | {_f(m.get('peak_gpu_mem_gb'), '{:.2f}')} | |"]
    return lines + [f"    {ln}" for ln in m.get("log_tail", [])]
