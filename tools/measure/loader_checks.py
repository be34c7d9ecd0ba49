"""The correctness section of tools/gpu_check.py: DALI on the GPU vs DALI on the CPU vs the reference loader,
on position-coded images whose windows say where they were cut.

Position-coded images (as tests/test_pipeline.py uses): red = x, green = y, blue = 28 + 2 * id, saved as 4:2:0
JPEGs like the shards. From any 224 window of one, the crop offsets, the flip and the sample id read back.
Each check fills one entry {"ok": bool, ...} of the section's "checks"; the section is ok when all are.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from common.files import write_json
from pipeline import make_loader, open_dataset
from pipeline.augment import denormalize
from pipeline.spec import CROP, MAX_OFFSET
from shardkit.format import MANIFEST, PCA, write_split

POS_CLASSES = 7
FLAT_PCA = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "cov": np.eye(3).tolist(),
            "eigval": [1e-8, 1e-8, 1e-8], "eigvec": np.eye(3).tolist(), "images": 1, "pixels": 1}  # lighting ~off
SEED = 11
TEN_OFFSETS = [(0, 0), (32, 0), (0, 32), (32, 32), (16, 16)] * 2  # corners, centre; then the same mirrored
DECODER_SETTINGS = [(hw, roi) for hw in (0.0, 0.65, 1.0) for roi in (True, False)]


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
        samples = [(f"{split}_{i:06d}", jpegs[i], i % POS_CLASSES) for i in range(n)]
        manifest["splits"][split] = write_split(out, split, samples, shard_size)
    write_json(out / PCA, FLAT_PCA)
    write_json(out / MANIFEST, manifest)  # last: its presence marks the folder complete
    return jpegs


def pixels(x: torch.Tensor, shards: Path) -> np.ndarray:
    """Normalized [..., 3, H, W] -> 0..255 float64, with the shards' pca.json mean and std."""
    stats = open_dataset(shards).stats
    return denormalize(x, stats["mean"], stats["std"])


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
            return DaliLoader(open_dataset(shards).split(split), bs, device=torch.device(dev), rank=rank,
                              world_size=world_size, seed=seed, augment=split == "train", ten_crop=ten_crop,
                              workers=workers, limit=None, **opts)
        return make

    def reference(shards, split, bs, **kw):
        return make_loader(shards, split, bs, backend="torch", device=device, workers=ref_workers, **kw)

    found = {"dali-gpu": dali("cuda")} if device.type == "cuda" else {}
    return {**found, "dali-cpu": dali("cpu"), "reference": reference}


def train_windows(make, pos: Path, jpegs: dict[int, bytes]) -> tuple[dict, list]:
    """Offsets in 0..32, 224 at scale 1, flips, labels, pixels against Pillow's decode; and the draws seen."""
    x, y = collect(make(pos, "train", 8, seed=SEED))
    px = pixels(x, pos)
    back = [read_back(img) for img in px]
    mad = np.mean([np.abs(img - expected_window(jpegs[b["id"]], b["x"], b["y"], b["flip"])).mean()
                   for img, b in zip(px, back)]) / 255.0
    offsets = [v for b in back for v in (b["x"], b["y"])]
    flips = float(np.mean([b["flip"] for b in back]))
    ok = all(b["ok"] for b in back) and 0.2 < flips < 0.8 and len(set(offsets)) >= 20 \
        and all(b["id"] % POS_CLASSES == int(lab) for b, lab in zip(back, y))
    check = {"ok": bool(ok), "images": len(back), "distinct_offsets": len(set(offsets)), "flip_fraction": flips,
             "mad_vs_pillow": float(mad), "mad_ok": bool(mad <= 1 / 255)}
    return check, [(b["x"], b["y"], b["flip"], int(label)) for b, label in zip(back, y)]


def same_batches(make_a, make_b, shards: Path, split: str, **opts) -> dict:
    """Labels equal and mean |difference| of the images at most 1/255 (on the 0..1 pixel scale)."""
    a, b = collect(make_a(shards, split, 8, seed=SEED)), collect(make_b(shards, split, 8, seed=SEED, **opts))
    std = np.asarray(open_dataset(shards).stats["std"]).reshape(1, 3, 1, 1)
    mad = float((np.abs(np.asarray(b[0] - a[0])) * std).mean())
    labels = bool(torch.equal(a[1], b[1]))
    return {"ok": labels and mad <= 1 / 255, "mad": mad, "labels_equal": labels}


def val_exactly_once(make, pos: Path) -> dict:
    """Every val image exactly once over 2 ranks (last batches short)."""
    ids = []
    for rank in range(2):
        x, _ = collect(make(pos, "val", 8, rank=rank, world_size=2))
        ids += [read_back(img)["id"] for img in pixels(x, pos)]
    return {"ok": sorted(ids) == list(range(open_dataset(pos).split("val").samples)), "images": len(ids)}


def ten_windows(make, pos: Path) -> dict:
    """The 10 windows of one val image: corners and centre, then mirrored, in that order."""
    x, _ = next(iter(make(pos, "val", 4, ten_crop=True)))
    px, errors = pixels(x[0], pos), []
    for k, (ox, oy) in enumerate(TEN_OFFSETS):
        red = px[k, 0].mean(0)
        red = red[::-1] if k >= 5 else red
        errors += [np.abs(red - (np.arange(CROP) + ox)).mean(), np.abs(px[k, 1].mean(1) - (np.arange(CROP) + oy)).mean()]
    return {"ok": bool(tuple(x.shape[1:]) == (10, 3, CROP, CROP) and max(errors) < 1.0),
            "max_error_levels": float(max(errors))}


def resume_matches(make, pos: Path) -> dict:
    """A loader resumed from its state after 5 batches yields the same batches as the one not interrupted."""
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
    return {"ok": bool(same), "batches_after_resume": len(resumed)}


def correctness(pos: Path, jpegs: dict[int, bytes], demo: Path, device: torch.device, workers: int,
                ref_workers: int, result: dict, deadline) -> None:
    """Fills `result` with named checks, each {"ok": bool, ...}; result["ok"] = all of them."""
    makers = backends(device, workers, ref_workers)
    checks = result.setdefault("checks", {})
    result["backends"] = list(makers)
    draws = {}
    for name, make in makers.items():
        checks[f"train_windows_{name}"], draws[name] = train_windows(make, pos, jpegs)
        deadline.stop_if_over(f"train windows ({name})")
    if "dali-gpu" in draws:
        checks["train_gpu_equals_cpu"] = {"ok": draws["dali-gpu"] == draws["dali-cpu"],
                                          "what": "crop offsets, flips and labels, image by image"}
    result["reference_draws"] = "its own random numbers by design (docs/FORMAT.md): checked window by window, not equal"
    if "dali-gpu" in makers:  # the same batches, lighting on (the demo shards' own PCA), per decoder setting
        for split in ("train", "val"):
            for hw, roi in DECODER_SETTINGS:
                checks[f"gpu_vs_cpu_{split}_hw{hw}_{'roi' if roi else 'full'}"] = same_batches(
                    makers["dali-cpu"], makers["dali-gpu"], demo, split, hw_decoder_load=hw, roi_decode=roi)
            deadline.stop_if_over(f"GPU vs CPU on {split}")
    else:  # val is deterministic: DALI and the reference must give the same images
        checks["val_dali_cpu_vs_reference"] = same_batches(makers["dali-cpu"], makers["reference"], demo, "val")
    for name, make in makers.items():
        checks[f"val_exactly_once_{name}"] = val_exactly_once(make, pos)
        checks[f"ten_crop_{name}"] = ten_windows(make, pos)
        deadline.stop_if_over(f"val ({name})")
    for name, make in makers.items():
        checks[f"resume_{name}"] = resume_matches(make, pos)
        deadline.stop_if_over(f"resume ({name})")
    result["ok"] = all(c["ok"] is True for c in checks.values())
