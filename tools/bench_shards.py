"""Benchmark: tools/make_shards.py against a naive converter, on the same ImageNet-like sources.

    python tools/bench_shards.py                        # 1200 generated photo-like JPEGs, ~500x375
    python tools/bench_shards.py --images 2000 --workers 1,2 --json bench_shards.json
    python tools/bench_shards.py --src /data/ILSVRC2012  # your own tree (train split only)

The naive converter is what one writes first: one process, Pillow full decode, `resize` (Pillow's default
filter, bicubic) of the shorter side to 256, centre `crop`, `save` as JPEG at the same quality, written with
webdataset's TarWriter. make_shards runs as the CLI does, with each --workers value, into fresh folders. The
sources are read once before timing, so every contender starts from a warm page cache. Prints images/s of each
and their ratios, as a table and as JSON.
"""
from __future__ import annotations

import io
import json
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/bench_shards.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click
import numpy as np
from PIL import Image

from tools import make_shards, sources
from tools.timing import best_times

# (width, height, weight): the common ImageNet shapes
TYPICAL_SIZES = ((500, 375, 0.45), (500, 333, 0.2), (375, 500, 0.15), (500, 400, 0.05), (333, 500, 0.1),
                 (500, 500, 0.05))


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """1/f ("pink") noise with correlated colour channels: compresses and decodes like a photograph."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / max(width, height)) ** 1.1
    luma = np.fft.irfft2(amp * np.exp(2j * np.pi * rng.random(amp.shape)), s=(height, width))
    chroma = np.fft.irfft2(amp * np.exp(2j * np.pi * rng.random((2, *amp.shape))), s=(height, width))
    luma = (luma - luma.mean()) / (luma.std() + 1e-9)
    chroma = chroma / (chroma.std() + 1e-9)
    rgb = np.stack([luma + 0.4 * chroma[0], luma - 0.2 * chroma[0] - 0.2 * chroma[1], luma + 0.4 * chroma[1]], -1)
    rgb = 118 + 48 * rgb + rng.normal(0, 4, rgb.shape)  # sensor noise keeps the high frequencies busy
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def make_sources(root: Path, n: int, classes: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    sizes = [(w, h) for w, h, _ in TYPICAL_SIZES]
    weights = np.array([p for *_, p in TYPICAL_SIZES])
    for i in range(n):
        w, h = sizes[rng.choice(len(sizes), p=weights / weights.sum())]
        d = root / "train" / f"n{10000000 + i % classes:08d}"
        d.mkdir(parents=True, exist_ok=True)
        photo_like(rng, w, h).save(d / f"img_{i:06d}.JPEG", quality=90)


def naive_convert(src: Path, out: Path, size: int, quality: int) -> int:
    """The baseline: one process, Pillow, full decode."""
    import webdataset as wds

    classes = sources.train_classes(src)
    items = sources.list_train(src, classes).items
    out.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(out / "naive-000000.tar")) as sink:
        for it in items:
            im = Image.open(src / it.path).convert("RGB")
            w, h = im.size
            s = size / min(w, h)
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))))
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=quality)
            sink.write({"__key__": it.key, "jpg": buf.getvalue(), "cls": str(it.label).encode()})
    return len(items)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--src", type=click.Path(path_type=Path), help="An ImageNet tree to use instead of generated images.")
@click.option("--images", default=1200, show_default=True, type=click.IntRange(10), help="Generated images.")
@click.option("--workers", default="1,2", show_default=True, help="make_shards --workers values to run.")
@click.option("--quality", default=90, show_default=True)
@click.option("--shard-size", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1), help="Rounds; each contender's best counts.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the results here.")
def main(src, images, workers, quality, shard_size, repeat, json_path):
    """Conversion speed: make_shards vs a naive Pillow converter."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_shards_"))
    try:
        if src is None:
            src = tmp / "src"
            t = _timed(lambda: make_sources(src, images))
            click.echo(f"generated {images} photo-like JPEGs at ImageNet sizes in {t:.1f} s")
        files = [p for p in src.rglob("*") if p.is_file()]
        nbytes = sum(len(p.read_bytes()) for p in files)  # warm the page cache for everyone
        n = len(sources.list_train(src, sources.train_classes(src)).items)
        click.echo(f"sources: {n} train images, {nbytes / n / 1e3:.0f} kB each on average")

        def naive():
            shutil.rmtree(tmp / "naive", ignore_errors=True)
            naive_convert(src, tmp / "naive", 256, quality)

        def shards(w):
            out = tmp / f"w{w}"
            shutil.rmtree(out, ignore_errors=True)
            make_shards.run(make_shards.Options(src=str(src), out=str(out), splits=("train",), quality=quality,
                                                shard_size=shard_size, workers=w))

        contenders = [("naive (Pillow, 1 process)", 1, naive)]
        contenders += [("make_shards", w, partial(shards, w)) for w in [int(x) for x in workers.split(",")]]
        best = best_times([fn for *_, fn in contenders], repeat)
        results = [{"converter": name, "workers": w, "images_per_s": n / t}
                   for (name, w, _), t in zip(contenders, best)]
        base = results[0]["images_per_s"]
        one = next((r["images_per_s"] for r in results if r["converter"] == "make_shards" and r["workers"] == 1), None)
        click.echo("\n| converter | workers | images/s | vs naive | vs make_shards 1 worker |\n|---|---|---|---|---|")
        for r in results:
            r["vs_naive"] = r["images_per_s"] / base
            r["vs_one_worker"] = r["images_per_s"] / one if one and r["converter"] == "make_shards" else None
            scale = f"{r['vs_one_worker']:.2f}x" if r["vs_one_worker"] else "-"
            click.echo(f"| {r['converter']} | {r['workers']} | {r['images_per_s']:.0f} | {r['vs_naive']:.2f}x | {scale} |")
        if json_path:
            json_path.write_text(json.dumps({"images": n, "results": results}, indent=1) + "\n")
        click.echo(f"bench_shards: {n} images, {len(results)} converters, best of {repeat} runs each")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
