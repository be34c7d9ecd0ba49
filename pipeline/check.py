"""The loader sections of `tools/gpu_check.py`: correctness (DALI on the GPU vs DALI on the CPU vs the reference
loader, on position-coded images) and loader throughput. Library code: the CLI in tools/gpu_check.py runs it.

Position-coded images (as tests/test_pipeline.py uses): red = x, green = y, blue = 28 + 2 * id, saved as 4:2:0
JPEGs like the shards. From any 224 window of one, the crop offsets, the flip and the sample id read back.
"""
from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from pipeline import make_loader
from pipeline.spec import CROP, MAX_OFFSET, read_spec
from shardkit.files import write_json
from shardkit.format import MANIFEST, PCA, ShardWriter, shard_name

POS_CLASSES = 7
FLAT_PCA = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "cov": np.eye(3).tolist(),
            "eigval": [1e-8, 1e-8, 1e-8], "eigvec": np.eye(3).tolist(), "images": 1, "pixels": 1}  # lighting ~off


def position_jpeg(i: int) -> bytes:
    y, x = np.mgrid[0:256, 0:256]
    img = np.stack([x, y, np.full_like(x, 28 + 2 * i)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90, subsampling=2)  # 4:2:0, as make_shards writes
    return buf.getvalue()


def write_position_shards(out: Path, train: int = 112, val: int = 100, shard_size: int = 16) -> dict[int, bytes]:
    """Shards of position-coded images (ids 0..train-1; val = the first `val` of them), label = id % 7."""
    out.mkdir(parents=True, exist_ok=True)
    jpegs = {i: position_jpeg(i) for i in range(train)}
    manifest = {"size": 256, "classes": [f"n{i:08d}" for i in range(POS_CLASSES)], "splits": {}}
    for split, n in (("train", train), ("val", val)):
        names, counts = [], []
        for s in range(0, n, shard_size):
            w = ShardWriter(out / shard_name(split, len(names)))
            for i in range(s, min(n, s + shard_size)):
                w.add(f"{split}_{i:06d}", {"jpg": jpegs[i], "cls": str(i % POS_CLASSES).encode()})
            w.commit()
            names.append(shard_name(split, len(names)))
            counts.append(w.samples)
        manifest["splits"][split] = {"shards": names, "shard_samples": counts, "samples": n, "skipped": []}
    write_json(out / PCA, FLAT_PCA)
    write_json(out / MANIFEST, manifest)  # last: its presence marks the folder complete
    return jpegs


def to_pixels(x: torch.Tensor, shards: Path) -> np.ndarray:
    """Normalized [..., 3, H, W] -> 0..255 float64, with the shards' pca.json mean and std."""
    spec = read_spec(shards, "val")
    x = np.asarray(x.float().cpu(), np.float64)
    return (x * spec.std.reshape(3, 1, 1) + spec.mean.reshape(3, 1, 1)) * 255.0


def read_back(img: np.ndarray) -> dict:
    """(x offset, y offset, flipped, id, window ok) of one [3, 224, 224] 0..255 position-coded window."""
    cols = np.arange(CROP)
    red, green = img[0].mean(0), img[1].mean(1)
    slope = np.polyfit(cols, red, 1)[0]
    flipped = bool(slope < 0)
    ox = float(np.mean(red[::-1] - cols) if flipped else np.mean(red - cols))
    oy = float(np.mean(green - cols))
    ok = abs(abs(slope) - 1) < 0.03 and abs(ox - round(ox)) < 0.3 and abs(oy - round(oy)) < 0.3 \
        and 0 <= round(ox) <= MAX_OFFSET and 0 <= round(oy) <= MAX_OFFSET
    return {"x": round(ox), "y": round(oy), "flip": flipped, "id": int(round((img[2].mean() - 28) / 2)), "ok": ok}


def expected_window(jpeg: bytes, x: int, y: int, flip: bool) -> np.ndarray:
    """What the window must hold: Pillow's (libjpeg's) decode of the stored JPEG, cut and mirrored."""
    img = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float64)[y:y + CROP, x:x + CROP]
    return (img[:, ::-1] if flip else img).transpose(2, 0, 1)


def collect(loader, epochs: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(epochs):
        for x, y in loader:
            xs.append(x.cpu())
            ys.append(y.cpu())
    return torch.cat(xs), torch.cat(ys)


def backends(device: torch.device, workers: int, ref_workers: int) -> dict[str, Callable]:
    """name -> loader factory(shards, split, batch_size, **kw): DALI on the GPU (with CUDA), on the CPU, reference."""
    from pipeline.dali import DaliLoader

    def dali(dev):
        def make(shards, split, bs, *, rank=0, world_size=1, seed=0, ten_crop=False, **opts):
            return DaliLoader(read_spec(shards, split), bs, device=torch.device(dev), rank=rank,
                              world_size=world_size, seed=seed, augment=split == "train", ten_crop=ten_crop,
                              workers=workers, limit=None, **opts)
        return make

    def reference(shards, split, bs, **kw):
        return make_loader(shards, split, bs, backend="torch", device=device, workers=ref_workers, **kw)

    found = {"dali-gpu": dali("cuda")} if device.type == "cuda" else {}
    return {**found, "dali-cpu": dali("cpu"), "reference": reference}


def correctness(pos: Path, jpegs: dict[int, bytes], demo: Path, device: torch.device, workers: int,
                ref_workers: int, result: dict, deadline) -> None:
    """Fills `result` with named checks, each {"ok": bool, ...}; result["ok"] = all of them."""
    makers = backends(device, workers, ref_workers)
    checks = result.setdefault("checks", {})
    result["backends"] = list(makers)
    seed = 11

    # train windows: offsets in 0..32, 224 at scale 1, flips, labels, pixels against Pillow's decode
    draws = {}
    for name, make in makers.items():
        x, y = collect(make(pos, "train", 8, seed=seed))
        px = to_pixels(x, pos)
        back = [read_back(img) for img in px]
        mad = np.mean([np.abs(img - expected_window(jpegs[b["id"]], b["x"], b["y"], b["flip"])).mean()
                       for img, b in zip(px, back)]) / 255.0
        draws[name] = [(b["x"], b["y"], b["flip"], int(label)) for b, label in zip(back, y)]
        offsets = [v for b in back for v in (b["x"], b["y"])]
        checks[f"train_windows_{name}"] = {
            "ok": bool(all(b["ok"] for b in back) and 0.2 < np.mean([b["flip"] for b in back]) < 0.8
            and len(set(offsets)) >= 20 and all(b["id"] % POS_CLASSES == int(lab) for b, lab in zip(back, y))),
            "images": len(back), "distinct_offsets": len(set(offsets)),
            "flip_fraction": float(np.mean([b["flip"] for b in back])),
            "mad_vs_pillow": float(mad), "mad_ok": bool(mad <= 1 / 255)}
        deadline.check(f"train windows ({name})")
    if "dali-gpu" in draws:
        same = draws["dali-gpu"] == draws["dali-cpu"]
        checks["train_gpu_equals_cpu"] = {"ok": same, "what": "crop offsets, flips and labels, image by image"}
    result["reference_draws"] = "its own random numbers by design (DESIGN.md): checked window by window, not equal"

    # the same batches on GPU and CPU with lighting on (demo shards, their own PCA), for each decoder setting
    if "dali-gpu" in makers:
        std = read_spec(demo, "val").std.reshape(1, 3, 1, 1)
        for split in ("train", "val"):
            ref = collect(makers["dali-cpu"](demo, split, 8, seed=seed))
            for hw in (0.0, 0.65, 1.0):
                for roi in (True, False):
                    got = collect(makers["dali-gpu"](demo, split, 8, seed=seed, hw_decoder_load=hw, roi_decode=roi))
                    mad = float((np.abs(np.asarray(got[0] - ref[0])) * std).mean())
                    checks[f"gpu_vs_cpu_{split}_hw{hw}_{'roi' if roi else 'full'}"] = {
                        "ok": bool(torch.equal(got[1], ref[1]) and mad <= 1 / 255), "mad": mad,
                        "labels_equal": bool(torch.equal(got[1], ref[1]))}
                deadline.check(f"GPU vs CPU on {split}")
    else:  # val is deterministic: DALI and the reference must give the same images
        std = read_spec(demo, "val").std.reshape(1, 3, 1, 1)
        d, r = collect(makers["dali-cpu"](demo, "val", 8)), collect(makers["reference"](demo, "val", 8))
        mad = float((np.abs(np.asarray(d[0] - r[0])) * std).mean())
        checks["val_dali_cpu_vs_reference"] = {"ok": bool(torch.equal(d[1], r[1]) and mad <= 1 / 255), "mad": mad}

    # val: every image exactly once over 2 ranks (last batches short), and the 10 windows
    n_val = read_spec(pos, "val").samples
    for name, make in makers.items():
        ids = []
        for rank in range(2):
            x, _ = collect(make(pos, "val", 8, rank=rank, world_size=2))
            ids += [read_back(img)["id"] for img in to_pixels(x, pos)]
        checks[f"val_exactly_once_{name}"] = {"ok": sorted(ids) == list(range(n_val)), "images": len(ids)}
        x, _ = next(iter(make(pos, "val", 4, ten_crop=True)))
        px, errors = to_pixels(x[0], pos), []
        for k, (ox, oy) in enumerate([(0, 0), (32, 0), (0, 32), (32, 32), (16, 16)] * 2):
            red = px[k, 0].mean(0)
            red = red[::-1] if k >= 5 else red
            errors += [np.abs(red - (np.arange(CROP) + ox)).mean(), np.abs(px[k, 1].mean(1) - (np.arange(CROP) + oy)).mean()]
        checks[f"ten_crop_{name}"] = {"ok": bool(tuple(x.shape[1:]) == (10, 3, CROP, CROP) and max(errors) < 1.0),
                                      "max_error_levels": float(max(errors))}
        deadline.check(f"val ({name})")

    # mid-epoch resume: the same batches as the run that was not interrupted
    for name, make in makers.items():
        a, batches, state = make(pos, "train", 8, seed=3), [], None
        for k, (x, y) in enumerate(a):
            batches.append((x.cpu(), y.cpu()))
            if k == 4:
                state = a.state_dict()
        b = make(pos, "train", 8, seed=3)
        b.load_state_dict(state)
        resumed = [(x.cpu(), y.cpu()) for x, y in b]
        same = len(resumed) == len(batches) - 5 and all(
            torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(batches[5:], resumed))
        checks[f"resume_{name}"] = {"ok": bool(same), "batches_after_resume": len(resumed)}
        deadline.check(f"resume ({name})")
    result["ok"] = all(c["ok"] is True for c in checks.values())


def time_loader(loader, device: torch.device, warmup: int, batches: int, seconds: float) -> tuple[float, int]:
    """images/s over `batches` batches after `warmup` (or fewer, if `seconds` run out), across epochs."""
    n, images, t0 = 0, 0, None
    while True:
        for x, _ in loader:
            n += 1
            if n == warmup:
                _sync(device)
                t0 = time.perf_counter()
            elif t0 is not None:
                images += len(x)
                if n - warmup >= batches or time.perf_counter() - t0 >= seconds:
                    _sync(device)
                    return images / (time.perf_counter() - t0), n - warmup


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free_gpu_memory() -> int:
    """Free device memory after returning DALI's and torch's unused pools (bytes)."""
    from nvidia.dali.backend import ReleaseUnusedMemory
    ReleaseUnusedMemory()
    torch.cuda.empty_cache()
    return torch.cuda.mem_get_info()[0]


def loader_section(shards: Path, device: torch.device, workers: int, batch_size: int, batches: int,
                   seconds: float, result: dict, deadline) -> None:
    """images/s of the DALI train pipeline per decoder setting, the reference loader, and plain decoding."""
    from pipeline.dali import HW_DECODER_LOAD, ROI_DECODE, DaliLoader
    rows = result.setdefault("results", [])
    gpu = device.type == "cuda"
    spec = read_spec(shards, "train")
    result.update({"images": spec.samples, "workers": workers, "batch_size": batch_size,
                   "defaults": {"hw_decoder_load": HW_DECODER_LOAD, "roi_decode": ROI_DECODE}})
    configs = [(hw, roi) for hw in ((0.0, 0.65, 1.0) if gpu else (None,)) for roi in (True, False)]
    for hw, roi in configs:
        free0 = _free_gpu_memory() if gpu else None
        opts = {"hw_decoder_load": hw} if hw is not None else {}
        loader = DaliLoader(spec, batch_size, device=device, rank=0, world_size=1, seed=0, augment=True,
                            ten_crop=False, workers=workers, limit=None, roi_decode=roi, **opts)
        rate, n = time_loader(loader, device, 5, batches, seconds)
        mem = (free0 - torch.cuda.mem_get_info()[0]) / 2**20 if gpu else None  # while the loader is alive
        rows.append({"backend": "dali", "decoder": ("mixed" if gpu else "cpu") + (" window" if roi else " full+crop"),
                     "hw_decoder_load": hw, "batch_size": batch_size, "images_per_s": rate, "gpu_mem_mb": mem,
                     "batches": n})
        del loader
        deadline.check(f"DALI hw_decoder_load={hw} roi={roi}")
    free0 = _free_gpu_memory() if gpu else None
    loader = make_loader(shards, "train", batch_size, backend="torch", device=device, workers=workers)
    rate, n = time_loader(loader, device, 3, batches, seconds)
    rows.append({"backend": "reference", "decoder": f"pillow, {workers} processes", "hw_decoder_load": None,
                 "batch_size": batch_size, "images_per_s": rate, "batches": n,
                 "gpu_mem_mb": (free0 - torch.cuda.mem_get_info()[0]) / 2**20 if gpu else None})
    del loader
    deadline.check("reference loader")
    rows.append(decode_ceiling(spec.tars, workers, seconds, batch_size))
    best = max((r for r in rows if r["backend"] == "dali"), key=lambda r: r["images_per_s"])
    result["best_dali"] = {k: best[k] for k in ("decoder", "hw_decoder_load", "images_per_s")}


def decode_ceiling(tars, workers: int, seconds: float, batch_size: int) -> dict:
    """Plain OpenCV decoding of the same JPEGs on `workers` processes: what the cores can do at most."""
    from shardkit.parallel import ordered_map
    from shardkit.stats import decode_chunk, plan_chunks
    tasks = plan_chunks(list(tars), None, 0)
    list(ordered_map(decode_chunk, tasks[:1], 1))  # warm caches and imports
    n, t0 = 0, time.perf_counter()
    for done in ordered_map(decode_chunk, tasks, workers, chunksize=1, ahead=2):
        n += done
        if time.perf_counter() - t0 >= seconds:
            break
    return {"backend": "decode-only", "decoder": f"opencv, {workers} processes", "hw_decoder_load": None,
            "batch_size": batch_size, "images_per_s": n / (time.perf_counter() - t0), "gpu_mem_mb": None}
