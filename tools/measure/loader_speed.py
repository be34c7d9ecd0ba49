"""Loader throughput: images/s of each loader backend, of plain decoding (the ceiling the cores allow), and the
memory they hold. Behind tools/bench_loader.py and the loader section of tools/gpu_check.py.

Every figure comes from common.timing: warm-up batches off the clock, the device synchronized before each
clock read, a timed stretch that may span epochs.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from common.parallel import ordered_map
from common.timing import Clock, Timing, endless
from measure.decoders import decoder_census, decode_only
from pipeline import make_loader, open_dataset
from shardkit.format import read_samples
from shardkit.stats import decode_chunk, plan_chunks


def rss_mb() -> float:
    """Resident memory of this process and all its descendants (Linux /proc), in MB."""
    def children(pid: int) -> list[int]:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(c) for c in f.read().split()]
        except OSError:
            return []

    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        todo += children(pid)
    return total / 1024


def time_loader(loader, device, *, batches: int, warmup: int, seconds: float | None = None,
                on_epoch=None) -> Timing:
    """images/s of `batches` batches after `warmup` (fewer if `seconds` run out first), across epochs."""
    stream = endless(loader, on_epoch)
    clock = Clock(batches, warmup=warmup, seconds=seconds, device=torch.device(device))
    for _ in clock:
        images, _ = next(stream)
        clock.count(len(images))
    return clock.result


def bench_loader(shards: Path, backend: str, device: str, batch_size: int, workers: int, batches: int,
                 seconds: float | None, warmup: int) -> dict:
    """One backend's train pipeline (full augmentation, float32 NCHW on `device`): images/s and memory."""
    loader = make_loader(shards, "train", batch_size, backend=backend, device=device, workers=workers)
    memory = [rss_mb()]
    t = time_loader(loader, device, batches=batches, warmup=warmup, seconds=seconds,
                    on_epoch=lambda: memory.append(rss_mb()))
    memory.append(rss_mb())
    return {"backend": backend, "images_per_s": t.per_s, "batches": t.steps,
            "epochs": loader.epoch + (loader.batch > 0), "rss_mb_first_epoch": memory[1],
            "rss_mb_last": memory[-1], "rss_mb_peak": max(memory)}


def read_only(task) -> int:
    """Read one task's samples by offset (one ranged GET each from object storage) and do nothing else: what
    the storage can serve, the ceiling of a loader reading from it."""
    return sum(1 for _ in read_samples(*task))


def decode_pillow(task) -> int:
    """Read and decode one task's samples with Pillow (the reference loader's decoder), nothing else."""
    from PIL import Image
    for _, jpeg in read_samples(*task):
        Image.open(io.BytesIO(jpeg)).convert("RGB").load()
    return len(task[1])


def decode_rate(tars, fn, workers: int, seconds: float | None = None) -> Timing:
    """Plain decoding of the tars' JPEGs by fn(task) -> images (stats.decode_chunk: OpenCV) on `workers`
    processes: what the cores can do at most. All of them, or until `seconds` have passed. The workers start
    from a fork server: this process may hold a CUDA context or DALI's threads."""
    tasks = plan_chunks(list(tars), None, 0)
    list(ordered_map(fn, tasks[:1], 1))  # warm caches and imports
    done = ordered_map(fn, tasks, workers, chunksize=1, ahead=2, start_method="forkserver" if workers > 1 else None)
    clock = Clock(len(tasks), seconds=seconds)
    for _ in clock:
        clock.count(next(done))
    done.close()
    return clock.result


def decode_dali(tars, device: str, batch_size: int, workers: int, batches: int) -> Timing:
    """DALI's decoder alone (mixed on CUDA, CPU otherwise) on the same JPEGs."""
    pipe = decode_only(tars, device, batch_size, workers, {"device": "mixed" if device == "cuda" else "cpu"}, False)
    clock = Clock(batches, warmup=3, device=torch.device(device))
    for _ in clock:
        pipe.run()
        clock.count(batch_size)
    return clock.result


def free_gpu_memory() -> int:
    """Free device memory after returning DALI's and torch's unused pools (bytes)."""
    from nvidia.dali.backend import ReleaseUnusedMemory
    ReleaseUnusedMemory()
    torch.cuda.empty_cache()
    return torch.cuda.mem_get_info()[0]


def loader_section(shards: Path, device: torch.device, workers: int, batch_size: int, batches: int,
                   seconds: float, result: dict, deadline) -> None:
    """gpu_check: images/s of the DALI train pipeline per decoder setting, the reference loader (workers and
    prefetch fitted to /dev/shm), and plain decoding; GPU memory each loader holds; which decoder DALI used."""
    from pipeline.dali import HW_DECODER_LOAD, ROI_DECODE, DaliLoader
    rows = result.setdefault("results", [])
    gpu = device.type == "cuda"
    spec = open_dataset(shards).split("train")
    result.update({"images": spec.samples, "workers": workers, "batch_size": batch_size,
                   "defaults": {"hw_decoder_load": HW_DECODER_LOAD, "roi_decode": ROI_DECODE}})

    def row(backend, decoder, hw, make, warmup):
        free0 = free_gpu_memory() if gpu else None
        loader = make()
        t = time_loader(loader, device, batches=batches, warmup=warmup, seconds=seconds)
        mem = (free0 - torch.cuda.mem_get_info()[0]) / 2**20 if gpu else None  # while the loader is alive
        rows.append({"backend": backend, "decoder": decoder, "hw_decoder_load": hw, "batch_size": batch_size,
                     "images_per_s": t.per_s, "gpu_mem_mb": mem, "batches": t.steps, "images": t.items,
                     "seconds": t.seconds})
        if getattr(loader, "worker_plan", None):  # the reference loader: what /dev/shm allowed
            rows[-1]["worker_plan"] = loader.worker_plan

    decoder_backends(spec, device, workers, result, deadline)
    for hw in HW_LOADS if gpu else (None,):
        for roi in (True, False):
            opts = {"hw_decoder_load": hw} if hw is not None else {}
            row("dali", ("mixed" if gpu else "cpu") + (" window" if roi else " full+crop"), hw,
                lambda: DaliLoader(spec, batch_size, device=device, rank=0, world_size=1, seed=0, augment=True,
                                   ten_crop=False, workers=workers, limit=None, roi_decode=roi, **opts), 5)
            deadline.stop_if_over(f"DALI hw_decoder_load={hw} roi={roi}")
    result["hw_load_spread"] = hw_load_spread(rows) if gpu else None
    row("reference", f"pillow, {workers} processes", None,
        lambda: make_loader(shards, "train", batch_size, backend="torch", device=device, workers=workers), 3)
    deadline.stop_if_over("reference loader")
    t = decode_rate(spec.tars, decode_chunk, workers, seconds)
    rows.append({"backend": "decode-only", "decoder": f"opencv, {workers} processes", "hw_decoder_load": None,
                 "batch_size": batch_size, "images_per_s": t.per_s, "gpu_mem_mb": None, "images": t.items,
                 "seconds": t.seconds})
    best = max((r for r in rows if r["backend"] == "dali"), key=lambda r: r["images_per_s"])
    result["best_dali"] = {k: best[k] for k in ("decoder", "hw_decoder_load", "images_per_s")}


HW_LOADS = (0.0, 0.65, 1.0)
SAME_RATE = 0.03  # images/s within 3% for every hw_decoder_load: the hardware decoder share changes nothing


def decoder_backends(spec, device: torch.device, workers: int, result: dict, deadline) -> None:
    """Which decoder DALI's pipeline used per setting (measure.decoders: nvImageCodec's log): a mixed decoder
    that quietly fell back to the CPU is reported as such (`decoder_fallback`)."""
    settings = [(hw, roi) for hw in HW_LOADS for roi in (True, False)] if device.type == "cuda" else [(None, True)]
    census = result.setdefault("decoder_backends", [])
    for hw, roi in settings:
        census.append(decoder_census(spec.tars, spec.size, device, workers=workers, hw_decoder_load=hw, roi=roi))
        deadline.stop_if_over(f"decoder census hw_decoder_load={hw} roi={roi}")
    result["decoder_fallback"] = any(c["verdict"].startswith(("CPU FALLBACK", "PARTLY")) for c in census)
    result["decoder_notes"] = sorted({n for c in census for n in c["notes"]})


def hw_load_spread(rows: list[dict]) -> dict:
    """Per decode mode, (max - min) / max of the DALI images/s over hw_decoder_load: near 0 means the share
    sent to the hardware decoder made no difference (no such decoder, or not used for this mode)."""
    out = {}
    for mode in {r["decoder"] for r in rows if r["backend"] == "dali"}:
        rates = [r["images_per_s"] for r in rows if r["backend"] == "dali" and r["decoder"] == mode]
        spread = (max(rates) - min(rates)) / max(rates) if len(rates) > 1 and max(rates) > 0 else None
        out[mode] = {"spread": spread, "same_for_every_load": spread is not None and spread < SAME_RATE}
    return out
