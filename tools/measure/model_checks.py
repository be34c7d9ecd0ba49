"""The model sections of tools/gpu_check.py: AlexNet training speed on random tensors vs real DALI batches,
DDP (two gloo ranks on one device, weights identical after; one NCCL rank with the channels_last model), and
`python -m model.train` itself on the check's shards, its figures read from its own logs.
Every timed loop goes through common.timing.
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as td
import torch.multiprocessing as mp

from common.files import write_json
from common.parallel import default_workers
from common.timing import Clock, endless, synchronizer
from model.alexnet import build_model
from model.metrics import read_metrics
from model.optim import train_step
from model.train import weights_digest
from pipeline import make_loader, open_dataset


def _model(classes: int, device: torch.device, channels_last: bool, compile_backend: str | None):
    torch.manual_seed(0)
    model = build_model("paper", classes, "kaiming").to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9, weight_decay=5e-4)
    net = torch.compile(model, backend=compile_backend) if compile_backend else model
    return model, net, opt


def time_steps(net, opt, batches, device: torch.device, warmup: int, steps: int, autocast,
               channels_last: bool) -> dict:
    """images/s and per-step split (time blocked on the input vs the rest) over `steps` after `warmup`: host
    time in next() (data_wait) and, on CUDA, the stream's time at the hand-over (data_wait_gpu; None on CPU)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    clock = Clock(steps, warmup=warmup, device=device)
    for _ in clock:
        x, y = clock.wait_for(batches)
        train_step(net, opt, x.contiguous(memory_format=fmt), y, autocast)
        clock.count(len(x))
    t = clock.result
    return {"images_per_s": t.per_s, "step_ms": t.step_ms, "data_wait": t.wait_fraction,
            "data_wait_ms_per_step": 1000 * t.wait / t.steps, "data_wait_gpu": t.gpu_wait_fraction,
            "steps": t.steps}


def train_section(shards: Path, device: torch.device, workers: int, batch_size: int, steps: int, warmup: int,
                  compile_backend: str, compile_reserve: float, result: dict, deadline) -> None:
    """Model alone on random tensors vs the same model on DALI batches; channels_last and compile on and off.
    Like with like: each real-data row is divided by the synthetic row of the same net (layout, compile)."""
    gpu = device.type == "cuda"
    torch.backends.cudnn.benchmark = gpu  # every shape is fixed
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if gpu else nullcontext()
    classes = len(open_dataset(shards).classes)
    result.update({"batch_size": batch_size, "amp": "bf16" if gpu else "off (CPU)", "cudnn_benchmark": gpu,
                   "compile_backend": compile_backend, "steps": steps, "warmup": warmup})
    rows = result.setdefault("results", [])
    x = torch.randn(batch_size, 3, 224, 224, device=device)
    y = torch.randint(0, classes, (batch_size,), device=device)
    loader = make_loader(shards, "train", batch_size, backend="dali", device=device, workers=workers)
    real = endless(loader)
    for channels_last in (True, False):
        _, net, opt = _model(classes, device, channels_last, None)
        # DALI's batches are channels_last already: the other layout only measures the model
        for source in ("synthetic", "dali") if channels_last else ("synthetic",):
            rows.append(_row(net, opt, source, channels_last, False, x, y, real, device, warmup, steps, autocast))
            deadline.stop_if_over(f"train {source}, channels_last={channels_last}")
    result.update(vs_synthetic_of(rows, compiled=False))  # model.train's default: channels_last, eager
    if deadline.left() < compile_reserve:
        result["compile"] = f"skipped: {deadline.left():.0f} s left, under the {compile_reserve:.0f} s a compile needs"
        return
    _, net, opt = _model(classes, device, True, compile_backend)
    try:
        for source in ("synthetic", "dali"):
            rows.append(_row(net, opt, source, True, True, x, y, real, device, warmup, steps, autocast))
            deadline.stop_if_over(f"train {source}, compiled")
        result["compiled"] = vs_synthetic_of(rows, compiled=True)
    except RuntimeError as e:  # e.g. no Triton for inductor: the eager figures above stand, the report says why
        result["compile"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def vs_synthetic_of(rows: list[dict], compiled: bool) -> dict:
    """The real-data row over the synthetic row of the same net (channels_last, `compiled`): images/s ratio,
    data-wait (host, and GPU time at the hand-over), ms per step."""
    pair = {r["input"]: r for r in rows if r["channels_last"] and r["compile"] == compiled}
    syn, dali = pair["synthetic"], pair["dali"]
    return {"synthetic_images_per_s": syn["images_per_s"], "real_images_per_s": dali["images_per_s"],
            "vs_synthetic": dali["images_per_s"] / syn["images_per_s"], "data_wait": dali["data_wait"],
            "data_wait_gpu": dali["data_wait_gpu"],
            "step_ms": {"synthetic": syn["step_ms"], "dali": dali["step_ms"],
                        "dali_data_wait": dali["data_wait_ms_per_step"]}}


def _row(net, opt, source, channels_last, compiled, x, y, real, device, warmup, steps, autocast) -> dict:
    batches = endless([(x, y)]) if source == "synthetic" else real
    row = {"input": source, "channels_last": channels_last, "compile": compiled}
    row.update(time_steps(net, opt, batches, device, warmup, steps, autocast, channels_last))
    return row


def _stderr_to(path: Path):
    """Send this process's fd 2 (C++ warnings included) to a file."""
    f = open(path, "w")
    os.dup2(f.fileno(), 2)
    return f


def _ddp_rank(rank: int, shards: str, device_type: str, batch_size: int, steps: int, warmup: int,
              workdir: str) -> None:
    """One of two ranks on the one device (gloo); rank 0 then runs the one-rank DDP smoke test."""
    from torch.nn.parallel import DistributedDataParallel

    work = Path(workdir)
    log = _stderr_to(work / f"stderr-{rank}.txt")
    gpu = device_type == "cuda"
    device = torch.device("cuda", 0) if gpu else torch.device("cpu")
    if gpu:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if gpu else nullcontext()
    classes = len(open_dataset(shards).classes)
    out: dict = {"rank": rank}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # NCCL refuses two ranks on one GPU; gloo runs collectives on CUDA tensors too
        td.init_process_group("gloo", init_method=f"file://{work / 'rendezvous'}", rank=rank, world_size=2)
        try:
            model, _, opt = _model(classes, device, gpu, None)
            net = DistributedDataParallel(model, device_ids=[0] if gpu else None)
            loader = make_loader(shards, "train", batch_size, backend="dali", device=device, rank=rank,
                                 world_size=2, workers=default_workers(world_size=2))
            timed = time_steps(net, opt, endless(loader), device, warmup, steps, autocast, gpu)
            out.update(images_per_s=timed["images_per_s"] * 2, step_ms=timed["step_ms"], steps=steps,
                       data_wait=timed["data_wait"], digest=weights_digest(model))
        finally:
            td.destroy_process_group()
        if rank == 0:
            out["smoke"] = _one_rank_smoke(classes, device, batch_size, work, autocast)
        out["warnings"] = sorted({str(w.message).splitlines()[0] for w in caught})
    log.flush()
    write_json(work / f"rank-{rank}.json", out)


def _one_rank_smoke(classes: int, device: torch.device, batch_size: int, work: Path, autocast) -> dict:
    """DDP over NCCL (gloo on CPU) with the channels_last model: gradients keep the parameters' strides."""
    from torch.nn.parallel import DistributedDataParallel
    gpu = device.type == "cuda"
    backend = "nccl" if gpu else "gloo"
    td.init_process_group(backend, init_method=f"file://{work / 'rendezvous-smoke'}", rank=0, world_size=1)
    try:
        model, _, opt = _model(classes, device, True, None)
        net = DistributedDataParallel(model, device_ids=[0] if gpu else None)
        x = torch.randn(batch_size, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, classes, (batch_size,), device=device)
        for _ in range(2 if gpu else 1):
            train_step(net, opt, x, y, autocast)
        synchronizer(device)()
        mismatched = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.stride() != p.stride()]
    finally:
        td.destroy_process_group()
    return {"backend": backend, "steps": 2 if gpu else 1, "grad_stride_mismatches": mismatched}


def ddp_section(shards: Path, device: torch.device, batch_size: int, steps: int, warmup: int, workdir: Path,
                result: dict, deadline) -> None:
    """Two gloo ranks on one device for `steps` steps (weights identical after); one-rank DDP smoke test."""
    workdir.mkdir(parents=True, exist_ok=True)
    for f in workdir.iterdir():
        f.unlink()
    ctx = mp.start_processes(_ddp_rank, args=(str(shards), device.type, batch_size, steps, warmup, str(workdir)),
                             nprocs=2, join=False, start_method="spawn")
    try:
        while not ctx.join(timeout=1):
            deadline.stop_if_over("DDP ranks")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    ranks = [json.loads((workdir / f"rank-{r}.json").read_text()) for r in range(2)]
    stderr = "\n".join((workdir / f"stderr-{r}.txt").read_text() for r in range(2))
    stride_lines = sorted({ln.strip() for ln in stderr.splitlines() if "stride" in ln.lower()} |
                          {w for r in ranks for w in r["warnings"] if "stride" in w.lower()})
    smoke = ranks[0]["smoke"]
    smoke["stride_warnings"] = stride_lines
    smoke["ok"] = not stride_lines and not smoke["grad_stride_mismatches"]
    result.update({"backend": "gloo", "world_size": 2, "batch_size_per_rank": batch_size, "steps": steps,
                   "ranks_weights_equal": ranks[0]["digest"] == ranks[1]["digest"],
                   "images_per_s": min(r["images_per_s"] for r in ranks),
                   "step_ms": max(r["step_ms"] for r in ranks),
                   "data_wait": max(r["data_wait"] for r in ranks), "one_rank_smoke": smoke,
                   "warnings": sorted({w for r in ranks for w in r["warnings"]})[:10]})
    result["ok"] = result["ranks_weights_equal"] and smoke["ok"]


REPO = Path(__file__).resolve().parents[2]  # python -m model.train runs from here


def train_run_command(shards: Path, device: torch.device, workers: int, batch: int, steps: int, log_every: int,
                      limit_val: int | None, runs: Path) -> list[str]:
    """The user's command: the paper's recipe (model/config.py's defaults; bf16 and channels_last on CUDA),
    `steps` steps, the model alone timed first (same wrapping) for vs_synthetic."""
    cmd = [sys.executable, "-m", "model.train", "--shards", str(shards), "--runs", str(runs), "--name", "run",
           "--overwrite", "--device", device.type, "--backend", "dali", "--batch-size", str(batch),
           "--max-steps", str(steps), "--log-every", str(log_every), "--workers", str(workers),
           "--measure-synthetic", str(max(1, min(50, steps // 2))), "--no-ten-crop-eval"]
    return cmd + (["--limit-val", str(limit_val)] if limit_val else [])


def train_run_section(shards: Path, device: torch.device, workers: int, batch: int, steps: int, log_every: int,
                      limit_val: int | None, workdir: Path, result: dict, deadline) -> None:
    """`python -m model.train` on the check's shards for `steps` steps; images/s, data-wait (host and GPU) and
    peak memory from its own metrics.jsonl and summary.json. Its output is in workdir/train.log."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = train_run_command(shards, device, workers, batch, steps, log_every, limit_val, workdir / "runs")
    result["command"] = " ".join(["python"] + cmd[1:])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(workdir / "train.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                deadline.stop_if_over("python -m model.train")
                time.sleep(0.5)
        finally:
            end_child(proc)
    result["returncode"] = proc.returncode
    result.update(train_run_figures(workdir / "runs" / "run"))
    result["ok"] = proc.returncode == 0 and result.get("steps") == steps
    if not result["ok"]:
        result["log_tail"] = (workdir / "train.log").read_text(errors="replace").splitlines()[-15:]


def end_child(proc: subprocess.Popen) -> None:
    """A child still running (the check was stopped or ran out of time) gets SIGTERM, which model.train answers
    with a checkpoint and a clean exit; after 15 s (an outer limit may not wait much longer), SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def train_run_figures(run_dir: Path) -> dict:
    """From the run's own files: summary.json's totals, and the steady state (the train records after the
    first, whose interval holds the start-up): median images/s, mean data-wait; peak GPU memory (CUDA)."""
    out: dict = {}
    if (run_dir / "summary.json").is_file():
        summary = json.loads((run_dir / "summary.json").read_text())
        keep = ("steps", "train_images_per_s", "data_wait", "data_wait_gpu", "synthetic_images_per_s",
                "vs_synthetic", "val_top1_err")
        out.update({k: summary[k] for k in keep if k in summary})
    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    steady = train[1:] or train
    if steady:
        rate = statistics.median(r["images_per_s"] for r in steady)
        out["steady"] = {"records": len(steady), "images_per_s": rate,
                         "data_wait": statistics.mean(r["data_wait"] for r in steady)}
        if all("data_wait_gpu" in r for r in steady):
            out["steady"]["data_wait_gpu"] = statistics.mean(r["data_wait_gpu"] for r in steady)
        if out.get("synthetic_images_per_s"):
            out["steady"]["vs_synthetic"] = rate / out["synthetic_images_per_s"]
    synthetic = [r for r in records if r["kind"] == "synthetic"]
    if synthetic:
        out["synthetic_wrapping"] = {k: synthetic[-1].get(k) for k in ("ddp", "compiled")}
    peaks = [r["peak_gpu_mem_gb"] for r in records if "peak_gpu_mem_gb" in r]
    out["peak_gpu_mem_gb"] = max(peaks) if peaks else None
    return out
