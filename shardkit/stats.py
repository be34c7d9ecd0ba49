"""RGB mean, std, covariance and its PCA over every pixel of the train shards -> shards/pca.json.
The library behind tools/compute_pca.py: `compute(Options(shards=...))`.

Pixels are on the [0, 1] scale (value / 255). The sums are kept as exact integers (sum of x and of x_i * x_j
per image, merged by integer addition), so the result is the same bits whatever --workers and the shard
order are; cov = (M * Q - S S^T) / (M^2 255^2) is formed from those integers. eigval are descending
variances; column j of eigvec is the unit eigenvector of eigval[j], its largest-magnitude component made
positive (the sign rule, so runs agree). Work is split into chunks of samples read by offset through the DALI
index, decoded with OpenCV (libjpeg-turbo) in worker processes. A pca.json made with the same shards and
options is kept (unless `force`); a recomputed one replaces it only once complete.

Several machines: `part=Part(k, n)` sums every n-th chunk and writes the exact integer sums to
OUT_DIR/.compute_pca/pca.json.part-K-of-N.json; `merge=n` adds the n parts' sums (refusing, naming the part, a
missing one or one made from other shards, options or decoder) and writes pca.json: integers add up the same
in any order, so it is byte for byte the one-machine pca.json. No timing goes into pca.json (it is printed).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import click
import cv2
import numpy as np

from common.errors import ConfigError, DataError
from common.files import atomic_write, full_disk_as_error, read_json, write_json
from shardkit import parts
from shardkit.parts import Part
from shardkit.storage import is_remote
from shardkit.format import MANIFEST, PCA, index_path, load_manifest, read_index, read_samples, \
    split_shards
from common.parallel import default_workers, ordered_map
from common.progress import progress_bar

CHUNK = 256  # samples per task: small enough to balance 2 workers on a few shards
PAIRS = ((0, 1), (0, 2), (1, 2))
BGR_TO_RGB = (2, 1, 0)
DECODER = f"opencv {cv2.__version__}"  # the decoder's version is part of what the sums are made with
PARTS_DIR = ".compute_pca"  # beside the output: part K of N's sums, part-K-of-N.json


@dataclass(frozen=True)
class Options:
    shards: str = "shards"
    workers: int | None = None  # None: every core this process may use
    max_images: int | None = None
    seed: int = 0
    out: str | None = None      # None: SHARDS/pca.json
    mean_image: bool = False
    force: bool = False         # recompute even when the existing output is up to date
    part: Part | None = None    # sum only part K of N (shardkit.parts); pca.json waits for the merge
    merge: int | None = None    # pca.json from the sums of N finished parts


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
    """Compute (or keep, when up to date) the statistics of a shards folder; returns what pca.json holds (with
    `part`: that part's record; with `merge`: pca.json from the N part records)."""
    if opts.part and opts.merge:
        raise ConfigError("--part and --merge: a part sums its share, the merge joins all of them; give one")
    if is_remote(opts.shards) or is_remote(opts.out or ""):
        raise ConfigError(f"--shards {opts.shards}: compute_pca reads a local shards folder and writes pca.json into "
                          "it; run it where make_shards wrote the shards (or stage them: python tools/stage_shards.py),"
                          " then upload with tools/stage_shards.py")
    t0 = time.perf_counter()
    if opts.workers is None:
        opts = replace(opts, workers=default_workers())
    shards_dir = Path(opts.shards)
    out = Path(opts.out) if opts.out else shards_dir / PCA
    tars, _ = split_shards(shards_dir, "train", load_manifest(shards_dir))
    # the manifest relative to the output, so that a copied or staged shards folder keeps its pca.json valid
    source = {"manifest": os.path.relpath(shards_dir / MANIFEST, out.parent), "shards": [t.name for t in tars],
              "shard_bytes": [t.stat().st_size for t in tars], "max_images": opts.max_images,
              "seed": opts.seed if opts.max_images else None, "mean_image": opts.mean_image}
    if opts.merge:
        total = merge_parts(out, source, opts.merge)
    else:
        kept = (part_done(out, source, opts.part) if opts.part else up_to_date(out, source)) if not opts.force else None
        if kept is not None:
            click.echo(f"compute_pca: {part_path(out, opts.part) if opts.part else out} is up to date with "
                       f"{len(tars)} train shards, kept (--force to redo)")
            return kept
        total = sum_images(opts, tars)
        if opts.part:
            return write_part(out, source, opts.part, total, time.perf_counter() - t0)
    return finish(opts, out, source, total, time.perf_counter() - t0)


def sum_images(opts: Options, tars: list[Path]) -> Sums:
    """The exact sums over the train images (of part K of N: every N-th chunk of samples)."""
    tasks = plan_chunks(tars, opts.max_images, opts.seed)
    if opts.part:
        tasks = [t for i, t in enumerate(tasks) if opts.part.owns(i)]
    n = sum(len(s) for _, s in tasks)
    subset = f" (a seeded random subset: --max-images {opts.max_images} --seed {opts.seed})" if opts.max_images else ""
    part = f" (part {opts.part.name})" if opts.part else ""
    click.echo(f"compute_pca{part}: {n} images from {len(tars)} train shards{subset}, {opts.workers} workers")
    total = Sums()
    work = partial(process_chunk, mean_image=opts.mean_image)
    with progress_bar(n, "pca") as bar:
        for done, (_, samples) in zip(ordered_map(work, tasks, opts.workers, chunksize=1, ahead=2), tasks):
            total.merge(done)
            bar.update(len(samples))
    return total


def finish(opts: Options, out: Path, source: dict, total: Sums, seconds: float) -> dict:
    """pca.json from the sums, and the summary. Nothing in it depends on when or how fast it was computed, so
    the same shards and options give the same bytes (in one run or in parts)."""
    stats = statistics(total)
    stats.update({"source": source, "subset": bool(opts.max_images), "created_by": "tools/compute_pca.py",
                  "decoder": DECODER})
    write_statistics(out, stats, total if opts.mean_image else None)
    np.set_printoptions(precision=4, suppress=True)
    click.echo(f"eigval {np.array(stats['eigval'])}  (fb.resnet.torch on ImageNet: [0.2175 0.0188 0.0045])")
    click.echo(f"eigvec (columns)\n{np.array(stats['eigvec'])}")
    click.echo(f"mean {np.array(stats['mean'])}  std {np.array(stats['std'])}")
    click.echo(f"done: {stats['images']} images, {stats['pixels']} pixels{' (subset)' if opts.max_images else ''}, "
               f"{seconds:.1f} s, {stats['images'] / seconds:.0f} images/s -> {out}")
    return stats


def part_path(out: Path, part: Part) -> Path:
    """Where part K of N of `out` keeps its sums: OUT_DIR/.compute_pca/<out name>.part-K-of-N.json."""
    return out.parent / PARTS_DIR / f"{out.name}.{part.record_name()}"


def part_identity(source: dict) -> dict:
    """What a part's sums are made from and with, equal in every part of one job (the manifest's path aside:
    machines may mount the shards in different places)."""
    return {"source": {k: v for k, v in source.items() if k != "manifest"}, "decoder": DECODER}


def part_done(out: Path, source: dict, part: Part) -> dict | None:
    """Part K of N's record when it was summed from these shards with these options (and its .npy is there)."""
    record = parts.read_record(part_path(out, part))
    ok = record is not None and all(record.get(k) == v for k, v in part_identity(source).items())
    return record if ok and (not source["mean_image"] or part_path(out, part).with_suffix(".npy").is_file()) else None


def write_part(out: Path, source: dict, part: Part, total: Sums, seconds: float) -> dict:
    """Part K of N's exact sums (integers, in JSON as they are) and, with --mean-image, its per-pixel sum."""
    part_path(out, part).parent.mkdir(parents=True, exist_ok=True)
    if total.pixel_sum is not None:
        with atomic_write(part_path(out, part).with_suffix(".npy")) as f:
            np.save(f, total.pixel_sum)
    record = {**part_identity(source), "images": total.images, "pixels": total.pixels, "s": total.s, "q": total.q}
    parts.write_record(part_path(out, part), part, record)
    click.echo(f"done: part {part.name}: {total.images} images, {seconds:.1f} s, "
               f"{total.images / max(seconds, 1e-9):.0f} images/s -> {part_path(out, part)}; when every part is "
               f"done: compute_pca ... --merge {part.n}")
    return record


def merge_parts(out: Path, source: dict, n: int) -> Sums:
    """The sums of N finished parts, refused (naming each bad part) before anything is written."""
    problems = parts.check_parts(n, part_identity(source), where=lambda part: part_path(out, part),
                                 command="python tools/compute_pca.py (the same options)",
                                 progress=lambda part: (0, 0))
    if problems:
        raise parts.refuse(out, n, problems)
    total = Sums()
    for k in range(1, n + 1):
        r = parts.read_record(part_path(out, Part(k, n)))
        part = Sums(r["images"], r["pixels"], r["s"], r["q"])
        if source["mean_image"]:
            part.pixel_sum = np.load(part_path(out, Part(k, n)).with_suffix(".npy"), allow_pickle=False)
        total.merge(part)
    return total


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
