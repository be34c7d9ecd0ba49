"""RGB mean, std, covariance and its PCA over every pixel of the train shards -> shards/pca.json.
The library behind tools/compute_pca.py: `compute(Options(shards=...))`.

Pixels are on the [0, 1] scale (value / 255). The sums are kept as exact integers (sum of x and of x_i * x_j
per image, merged by integer addition), so the result is the same bits whatever --workers and the shard
order are; cov = (M * Q - S S^T) / (M^2 255^2) is formed from those integers. eigval are descending
variances; column j of eigvec is the unit eigenvector of eigval[j], its largest-magnitude component made
positive (the sign rule, so runs agree). Work is split into chunks of samples read by offset through the DALI
index, decoded with OpenCV (libjpeg-turbo) in worker processes. A pca.json made with the same shards and
options is kept (unless `force`); a recomputed one replaces it only once complete.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import click
import cv2
import numpy as np

from common.errors import DataError
from common.files import atomic_write, full_disk_as_error, read_json, write_json
from shardkit.format import MANIFEST, PCA, index_path, load_manifest, read_index, read_samples, \
    split_shards
from common.parallel import default_workers, ordered_map
from common.progress import progress_bar

CHUNK = 256  # samples per task: small enough to balance 2 workers on a few shards
PAIRS = ((0, 1), (0, 2), (1, 2))
BGR_TO_RGB = (2, 1, 0)


@dataclass(frozen=True)
class Options:
    shards: str = "shards"
    workers: int | None = None  # None: every core this process may use
    max_images: int | None = None
    seed: int = 0
    out: str | None = None      # None: SHARDS/pca.json
    mean_image: bool = False
    force: bool = False         # recompute even when the existing output is up to date


@dataclass
class Sums:
    """Exact integer sufficient statistics, in OpenCV's BGR channel order."""
    images: int = 0
    pixels: int = 0
    s: list[int] = field(default_factory=lambda: [0, 0, 0])
    q: list[list[int]] = field(default_factory=lambda: [[0] * 3 for _ in range(3)])
    pixel_sum: np.ndarray | None = None  # per-pixel sum, for --mean-image

    def add_image(self, img: np.ndarray) -> None:
        planes = cv2.split(img)
        sq = [round(cv2.norm(p, cv2.NORM_L2SQR)) for p in planes]  # SIMD; exact after rounding
        for c in range(3):
            self.s[c] += round(cv2.sumElems(planes[c])[0])
            self.q[c][c] += sq[c]
        for i, j in PAIRS:  # x_i x_j = (x_i^2 + x_j^2 - (x_i - x_j)^2) / 2
            cross = (sq[i] + sq[j] - round(cv2.norm(planes[i], planes[j], cv2.NORM_L2SQR))) // 2
            self.q[i][j] += cross
            self.q[j][i] += cross
        self.images += 1
        self.pixels += img.shape[0] * img.shape[1]

    def merge(self, other: "Sums") -> None:
        self.images += other.images
        self.pixels += other.pixels
        for i in range(3):
            self.s[i] += other.s[i]
            for j in range(3):
                self.q[i][j] += other.q[i][j]
        if other.pixel_sum is not None:
            self.pixel_sum = other.pixel_sum if self.pixel_sum is None else self.pixel_sum + other.pixel_sum


def decode(jpeg: bytes) -> np.ndarray | None:
    """HxWx3 uint8, BGR (OpenCV's order; the statistics are reordered to RGB at the end)."""
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)


def process_chunk(task: tuple[str, list[tuple[str, int, int]]], mean_image: bool) -> Sums:
    """Statistics of some samples of one tar, read by offset; runs in a worker process."""
    tar, samples = task
    sums = Sums()
    for key, jpeg in read_samples(tar, samples):
        img = decode(jpeg)
        if img is None:
            raise DataError(f"{tar}: sample {key}: its .jpg does not decode")
        sums.add_image(img)
        if mean_image:
            if sums.pixel_sum is None:
                sums.pixel_sum = np.zeros(img.shape, np.uint64)
            elif sums.pixel_sum.shape != img.shape:
                raise DataError(f"{tar}: sample {key}: size {img.shape} differs; --mean-image needs one size")
            sums.pixel_sum += img
    return sums


def decode_chunk(task: tuple[str, list[tuple[str, int, int]]]) -> int:
    """Read and decode one task's samples with the same decoder, and nothing else: the decode ceiling that
    compute_pca and the loaders are measured against."""
    tar, samples = task
    for _, jpeg in read_samples(tar, samples):
        decode(jpeg)
    return len(samples)


def plan_chunks(tars: list[Path], max_images: int | None, seed: int) -> list[tuple[str, list]]:
    """(tar, [(key, offset, size)]) tasks; with max_images, a seeded uniform subset of all samples."""
    per_tar = []
    for tar in tars:
        samples = read_index(index_path(tar))
        jpgs = []
        for key, members in samples:
            if "jpg" not in members:
                raise DataError(f"{tar}: sample {key} has no .jpg member")
            jpgs.append((key, *members["jpg"]))
        per_tar.append(jpgs)
    total = sum(len(s) for s in per_tar)
    if max_images is not None and max_images < total:
        chosen = np.zeros(total, bool)
        chosen[np.random.default_rng(seed).choice(total, max_images, replace=False)] = True
        start, picked = 0, []
        for s in per_tar:
            picked.append([x for x, keep in zip(s, chosen[start:start + len(s)]) if keep])
            start += len(s)
        per_tar = picked
    return [(str(tar), s[i:i + CHUNK]) for tar, s in zip(tars, per_tar) for i in range(0, len(s), CHUNK) if s[i:i + CHUNK]]


def sign_rule(vecs: np.ndarray) -> np.ndarray:
    """Flip each column so that its largest-magnitude component is positive (first one on ties)."""
    vecs = vecs.copy()
    for j in range(vecs.shape[1]):
        if vecs[np.argmax(np.abs(vecs[:, j])), j] < 0:
            vecs[:, j] = -vecs[:, j]
    return vecs


def statistics(sums: Sums) -> dict:
    """The docs/FORMAT.md fields from exact sums (RGB order, [0, 1] scale)."""
    m = sums.pixels
    if m == 0:
        raise DataError("no pixels: the train shards hold no images")
    s = [sums.s[c] for c in BGR_TO_RGB]
    q = [[sums.q[a][b] for b in BGR_TO_RGB] for a in BGR_TO_RGB]
    mean = np.array([si / (255 * m) for si in s])
    # integer numerator, one rounding at the division
    cov = np.array([[(m * q[i][j] - s[i] * s[j]) / (m * m * 255 * 255) for j in range(3)] for i in range(3)])
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = eigval[order], sign_rule(eigvec[:, order])
    return {"mean": mean.tolist(), "std": np.sqrt(np.diag(cov)).tolist(), "cov": cov.tolist(),
            "eigval": eigval.tolist(), "eigvec": eigvec.tolist(), "images": sums.images, "pixels": m}


def compute(opts: Options) -> dict:
    """Compute (or keep, when up to date) the statistics of a shards folder; returns what pca.json holds."""
    t0 = time.perf_counter()
    if opts.workers is None:
        opts = replace(opts, workers=default_workers())
    shards_dir = Path(opts.shards)
    out = Path(opts.out) if opts.out else shards_dir / PCA
    tars, _ = split_shards(shards_dir, "train", load_manifest(shards_dir))
    source = {"manifest": str(shards_dir / MANIFEST), "shards": [t.name for t in tars],
              "shard_bytes": [t.stat().st_size for t in tars], "max_images": opts.max_images,
              "seed": opts.seed if opts.max_images else None, "mean_image": opts.mean_image}
    kept = up_to_date(out, source) if not opts.force else None
    if kept is not None:
        click.echo(f"compute_pca: {out} is up to date with {len(tars)} train shards, kept (--force to redo)")
        return kept
    tasks = plan_chunks(tars, opts.max_images, opts.seed)
    n = sum(len(s) for _, s in tasks)
    subset = f" (a seeded random subset: --max-images {opts.max_images} --seed {opts.seed})" if opts.max_images else ""
    click.echo(f"compute_pca: {n} images from {len(tars)} train shards{subset}, {opts.workers} workers")
    total = Sums()
    work = partial(process_chunk, mean_image=opts.mean_image)
    with progress_bar(n, "pca") as bar:
        for part, (_, samples) in zip(ordered_map(work, tasks, opts.workers, chunksize=1, ahead=2), tasks):
            total.merge(part)
            bar.update(len(samples))
    stats = statistics(total)
    dt = time.perf_counter() - t0
    stats.update({"source": source, "subset": bool(opts.max_images), "seconds": round(dt, 3),
                  "created_by": "tools/compute_pca.py", "decoder": f"opencv {cv2.__version__}"})
    write_statistics(out, stats, total if opts.mean_image else None)
    np.set_printoptions(precision=4, suppress=True)
    click.echo(f"eigval {np.array(stats['eigval'])}  (fb.resnet.torch on ImageNet: [0.2175 0.0188 0.0045])")
    click.echo(f"eigvec (columns)\n{np.array(stats['eigvec'])}")
    click.echo(f"mean {np.array(stats['mean'])}  std {np.array(stats['std'])}")
    click.echo(f"done: {stats['images']} images, {stats['pixels']} pixels{' (subset)' if opts.max_images else ''}, "
               f"{dt:.1f} s, {stats['images'] / dt:.0f} images/s -> {out}")
    return stats


def up_to_date(out: Path, source: dict) -> dict | None:
    """The statistics in `out` if they were computed from `source` (the same shards and options), else None."""
    if not out.is_file():
        return None
    try:
        stats = read_json(out, "previous statistics")
    except DataError:
        return None
    return stats if stats.get("source") == source else None


def write_statistics(out: Path, stats: dict, mean_image: Sums | None) -> None:
    """pca.json, and with `mean_image` the per-pixel mean image (RGB, [0, 1], float32) as mean_image.npy."""
    needed = 4096 + (mean_image.pixel_sum.size * 4 if mean_image else 0)
    with full_disk_as_error(out.parent, needed, doing=f"writing {out.name}"):
        if mean_image is not None:
            pixels = mean_image.pixel_sum[:, :, list(BGR_TO_RGB)] / (255.0 * mean_image.images)
            npy = out.with_name("mean_image.npy")
            with atomic_write(npy) as f:
                np.save(f, pixels.astype(np.float32))
            stats["mean_image"] = npy.name
        write_json(out, stats)
