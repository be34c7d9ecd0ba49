"""Benchmark: tools/make_shards.py against a naive converter, on the same ImageNet-like sources.

    python tools/bench_shards.py                        # 1200 generated photo-like JPEGs, ~500x375
    python tools/bench_shards.py --images 2000 --workers 1,2 --json bench_shards.json
    python tools/bench_shards.py --src /data/ILSVRC2012  # your own tree (train split only)
    python tools/bench_shards.py --sources official,hf-parquet,hf-tar,timm-wds --workers 2   # every layout

The naive converter is what one writes first: one process, Pillow full decode, `resize` (Pillow's default
filter, bicubic) of the shorter side to 256, centre `crop`, `save` as JPEG at the same quality, written with
webdataset's TarWriter. make_shards runs as the CLI does, with each --workers value, into fresh folders. The
sources are read once before timing, so every contender starts from a warm page cache. Prints images/s of each
and their ratios, as a table and as JSON. With --sources the same images are also packed in each named layout
(shardkit.demo_archives: the official ILSVRC2012_img_train.tar, Hugging Face's parquet files or gzip tars,
timm's WebDataset tars) and make_shards converts each, its indexing or streaming pass included in its time;
"vs tree" is its rate over the tree's at the same worker count. Rounds interleave every contender
(common.timing.best_of), so a noisy moment on a shared machine hits them alike; "CPU ms/image" (the least over
the rounds, this process and its worker pools) is the figure other users' load moves least.
--archive = --sources official.
"""
from __future__ import annotations

import io
import resource
import shutil
import tempfile
from functools import partial
from pathlib import Path

import click
from PIL import Image

from common import cli
from shardkit import sources
from shardkit.convert import Options, convert
from shardkit.demo_archives import pack_hf, pack_official, pack_timm
from shardkit.demo_data import make_sources
from common.files import write_json
from common.timing import best_of, time_calls

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


PACKERS = {  # layout -> pack(tree, out): the same train images, held as that layout holds them
    "official": lambda src, out: pack_official(src, out, {}),
    "hf-parquet": lambda src, out: pack_hf(src, out, {}, fmt="parquet"),
    "hf-tar": lambda src, out: pack_hf(src, out, {}, fmt="tar"),
    "timm-wds": lambda src, out: pack_timm(src, out, {}, shard_size=256),
}


def _timed(fn) -> float:
    return time_calls(fn).seconds


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (make_shards' worker pools)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _cpu_counted(fn, spent: list[float]) -> None:
    """fn(), its CPU seconds appended to `spent`: on a shared machine CPU per image moves far less than the
    wall clock, which other users' load stretches."""
    c0 = _cpu_seconds()
    fn()
    spent.append(_cpu_seconds() - c0)


@click.command(context_settings=cli.CONTEXT)
@click.option("--src", type=click.Path(path_type=Path), help="An ImageNet tree to use instead of generated images.")
@click.option("--images", default=1200, show_default=True, type=click.IntRange(10), help="Generated images.")
@click.option("--workers", default="1,2", show_default=True, help="make_shards --workers values to run.")
@click.option("--quality", default=90, show_default=True)
@click.option("--shard-size", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1), help="Rounds; each contender's best counts.")
@click.option("--sources", "layouts", default="", help=f"Also convert the same images packed in these layouts: "
              f"comma-separated, of {', '.join(PACKERS)}.")
@click.option("--archive", is_flag=True, help="Also convert the same images from the official archive layout.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the results here.")
def main(src, images, workers, quality, shard_size, repeat, layouts, archive, json_path):
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
        chosen = [x.strip() for x in layouts.split(",") if x.strip()] + (["official"] if archive else [])
        unknown = [x for x in chosen if x not in PACKERS]
        if unknown:
            raise click.BadParameter(f"unknown layout(s) {unknown}; use {', '.join(PACKERS)}", param_hint="--sources")
        runs = contenders(src, tmp, [int(x) for x in workers.split(",")], quality, shard_size, dict.fromkeys(chosen))
        cpu: list[list[float]] = [[] for _ in runs]
        best = best_of([partial(time_calls, partial(_cpu_counted, fn, spent)) for (*_, fn), spent in zip(runs, cpu)],
                       repeat)
        results = [{"converter": name, "workers": w, "images_per_s": n / t.seconds,
                    "cpu_ms_per_image": 1e3 * min(spent) / n} for (name, w, _), t, spent in zip(runs, best, cpu)]
        print_table(results)
        if json_path:
            write_json(json_path, {"images": n, "results": results})
        click.echo(f"bench_shards: {n} images, {len(results)} converters, best of {repeat} runs each")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def contenders(src: Path, tmp: Path, counts: list[int], quality: int, shard_size: int, layouts) -> list:
    """(name, workers, convert) for the naive converter, make_shards at each worker count and make_shards
    from the same images packed in each of `layouts`."""
    def naive():
        shutil.rmtree(tmp / "naive", ignore_errors=True)
        naive_convert(src, tmp / "naive", 256, quality)

    def shards(w, source=src):
        out = tmp / f"w{w}-{Path(source).name}"
        shutil.rmtree(out, ignore_errors=True)
        convert(Options(src=str(source), out=str(out), splits=("train",), quality=quality, shard_size=shard_size,
                        workers=w))

    runs = [("naive (Pillow, 1 process)", 1, naive)] + [("make_shards", w, partial(shards, w)) for w in counts]
    for layout in layouts:
        packed = tmp / layout
        t = _timed(lambda: PACKERS[layout](src, packed))
        files = [p for p in packed.rglob("*") if p.is_file()]
        size = sum(len(p.read_bytes()) for p in files)  # read once: warm, as the tree was
        click.echo(f"packed the tree as {layout} ({len(files)} files, {size / 1e6:.0f} MB) in {t:.1f} s")
        runs += [(f"make_shards from {layout}", w, partial(shards, w, packed)) for w in counts]
    return runs


def print_table(results: list[dict]) -> None:
    """The table, with each converter's rate against the naive one, make_shards' against its 1-worker run,
    and the archive's against the tree at the same worker count."""
    base = results[0]["images_per_s"]
    one = next((r["images_per_s"] for r in results if r["converter"] == "make_shards" and r["workers"] == 1), None)
    tree = {r["workers"]: r for r in results if r["converter"] == "make_shards"}
    click.echo("\n| converter | workers | images/s | vs naive | vs make_shards 1 worker | vs tree | CPU ms/image "
               "| CPU vs tree |\n|---|---|---|---|---|---|---|---|")
    for r in results:
        r["vs_naive"] = r["images_per_s"] / base
        r["vs_one_worker"] = r["images_per_s"] / one if one and r["converter"] == "make_shards" else None
        from_layout = " from " in r["converter"]
        r["vs_tree"] = r["images_per_s"] / tree[r["workers"]]["images_per_s"] if from_layout else None
        r["cpu_vs_tree"] = r["cpu_ms_per_image"] / tree[r["workers"]]["cpu_ms_per_image"] if from_layout else None
        scale = f"{r['vs_one_worker']:.2f}x" if r["vs_one_worker"] else "-"
        vs_tree = f"{r['vs_tree']:.2f}x" if r["vs_tree"] else "-"
        cpu_vs = f"{r['cpu_vs_tree']:.2f}x" if r["cpu_vs_tree"] else "-"
        click.echo(f"| {r['converter']} | {r['workers']} | {r['images_per_s']:.0f} | {r['vs_naive']:.2f}x | {scale} "
                   f"| {vs_tree} | {r['cpu_ms_per_image']:.2f} | {cpu_vs} |")


if __name__ == "__main__":
    cli.run(main)
