"""ImageNet tree -> 256x256 WebDataset shards + DALI index files + manifest.json (docs/FORMAT.md, "Shards").
The library behind tools/make_shards.py: `convert(Options(...))` does the whole conversion.

Every image: shorter side resized to `size` (antialiased), central size x size cut out, saved as a baseline
RGB JPEG (`<key>.jpg`) with its class index as ASCII (`<key>.cls`). Each split is put in the canonical order
(shardkit.sources.canonical: by label and key, whatever the layout); train is then shuffled globally by `seed`
before being cut into shards of `shard_size`; val keeps the canonical order. Worker processes convert, this
process writes, in order, so the bytes do not depend on `workers`. A shard is written under a temporary name
and renamed when complete, with a state file under OUT/.make_shards/; a re-run keeps finished shards and does
the rest.
Files that cannot be decoded are skipped and listed in the manifest (fatal with `strict`).

The source is any layout shardkit.layouts recognizes (a tree, Kaggle's, the official archives, Hugging Face's
parquet or gzip tars, timm's WebDataset tars); shardkit.inputs lists each split, and the shards are
byte-identical whichever it is. Streamed layouts are converted while read (shardkit.stream).

Each shard's size and SHA-256 (tar and index) are recorded in its state file and in the manifest, computed
while writing. With `verify`, a finished shard is kept only if its files still have those sizes and hashes;
any other is made again (shardkit/verify.py finds them; this repairs them). A full disk stops with one line
(common.files.DiskFull) and keeps every finished shard; the re-run after freeing space completes them.

Several machines: `part=Part(k, n)` makes only every n-th shard (counted over the splits in order, from k - 1)
and then its record OUT/.make_shards/part-K-of-N.json; `merge=n` checks the n records (shardkit.parts) and
writes the manifest from the shards' state files. Every machine lists the same sources and plans the same
shards, so the result is byte for byte that of one run. The manifest holds no timings (how a run went is in
OUT/.make_shards/conversion.json), so its bytes, too, depend only on the sources and options.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import click
import cv2
import numpy as np
import PIL

from shardkit import archives, imaging, inputs, layouts, parts, sources
from shardkit.stream import Spilled, read_spilled, spill_complete
from common.errors import ConfigError, DataError
from common.files import full_disk_as_error, partial_path, read_json, remove_stale_partials, write_json
from shardkit.parts import Part
from shardkit.storage import is_remote
from shardkit.format import FORMAT_VERSION, MANIFEST, PackedSample, ShardWriter, file_sha256, index_path, \
    pack_sample, shard_name, split_formats
from common.parallel import default_workers, ordered_map
from common.progress import progress_bar

SPLITS = ("train", "val")
CHECKSUMS = ("bytes", "sha256", "index_bytes", "index_sha256")  # per shard, in the manifest as shard_<name>
STATE_DIR = ".make_shards"
CONVERSION = "conversion.json"  # in STATE_DIR: how the last run went (images, seconds, workers)


@dataclass(frozen=True)
class Options:
    src: str | None = None           # a tree, or a folder with the official archives
    out: str = "shards"
    splits: tuple[str, ...] = ("train", "val")
    size: int = 256
    quality: int = 90
    shard_size: int = 1000
    workers: int | None = None  # None: every core this process may use
    seed: int = 0
    val_labels: str | None = None
    strict: bool = False
    train_archive: str | None = None  # ILSVRC2012_img_train.tar
    val_archive: str | None = None    # ILSVRC2012_img_val.tar
    devkit: str | None = None         # ILSVRC2012_devkit_t12.tar.gz or its folder
    verify: bool = False  # re-hash finished shards and re-make those whose bytes changed
    layout: str | None = None  # which layout of --src to read when it holds two (shardkit.layouts.NAMES)
    part: Part | None = None   # make only part K of N (shardkit.parts); the manifest waits for the merge
    merge: int | None = None   # write the manifest of N finished parts


@dataclass
class Shard:
    split: str
    index: int
    items: list[sources.Item]

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)

    def fingerprint(self, opts: Options) -> str:
        """Changes whenever the bytes of this shard would: its items, labels, keys and encoding options."""
        h = hashlib.sha256(json.dumps([FORMAT_VERSION, opts.size, opts.quality]).encode())
        for it in self.items:
            h.update(f"{it.path}\0{it.label}\0{it.key}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()


def plan_shards(split: str, items: list[sources.Item], shard_size: int, seed: int) -> list[Shard]:
    """Cut the split into shards: train shuffled globally by `seed` (numpy's default_rng permutation of the
    canonical order), val in the canonical order. Both depend on (split, label, key) alone, not the layout."""
    if split == "train":
        order = np.random.default_rng(seed).permutation(len(items))
        items = [items[i] for i in order]
    return [Shard(split, i, items[s:s + shard_size]) for i, s in enumerate(range(0, len(items), shard_size))]


def convert_item(job: tuple[str | tuple[str, int, int] | Spilled, str, int], size: int,
                 quality: int) -> tuple[PackedSample | None, str | None]:
    """(path, (archive, offset, size) or Spilled, key, label) -> (tar-packed sample, None) or (None, reason);
    runs in a worker process. A streamed image was converted while its archive was read: its JPEG is read back
    from the spill file. An archive cut short since it was indexed raises (archives.TruncatedArchive)."""
    where, key, label = job
    if isinstance(where, Spilled):
        jpeg, reason = (None, where.reason) if where.reason else (read_spilled(where), None)
    else:
        try:
            data = archives.read_member(where) if isinstance(where, tuple) else Path(where).read_bytes()
        except OSError as e:
            return None, f"cannot read ({e.strerror or e})"
        jpeg, reason = imaging.try_convert(data, size, quality)
    if jpeg is None:
        return None, reason
    return pack_sample(key, {"jpg": jpeg, "cls": str(label).encode()}), None


class ShardState:
    """OUT/.make_shards/<shard>.json: written last, so its presence (with a matching fingerprint) means done."""

    def __init__(self, out: Path, verify: bool = False):
        self.dir = out / STATE_DIR
        self.verify = verify
        self.remade: list[str] = []  # finished shards whose files no longer matched their state (verify)

    def done(self, shard: Shard, fingerprint: str) -> dict | None:
        path = self.dir / f"{shard.name}.json"
        if not path.is_file():
            return None
        try:
            state = read_json(path, "shard state")
        except DataError:  # a damaged state file: the shard is simply made again
            return None
        if state.get("fingerprint") != fingerprint:
            return None
        if state.get("tar") is None:  # a shard whose files were all skipped
            return state if state.get("samples") == 0 else None
        tar_path = self.dir.parent / Path(state["tar"]).name
        idx = index_path(tar_path)
        if not tar_path.is_file() or tar_path.stat().st_size != state.get("bytes") or not idx.is_file() or \
                idx.stat().st_size != state.get("index_bytes", idx.stat().st_size):
            return None
        if self.verify and (file_sha256(tar_path) != state.get("sha256") or
                            file_sha256(idx) != state.get("index_sha256")):
            self.remade.append(tar_path.name)  # changed (or made before checksums were recorded): made again
            return None
        return state

    def save(self, shard: Shard, state: dict) -> None:
        self.dir.mkdir(exist_ok=True)
        write_json(self.dir / f"{shard.name}.json", state)


def convert_split(shards: list[Shard], opts: Options, state: ShardState) -> tuple[dict[int, dict], int]:
    """Write every shard given (of one split) that is not done yet; return each one's state, by shard index,
    and the images converted."""
    results: dict[int, dict] = {}
    pending = []
    for shard in shards:
        fp = shard.fingerprint(opts)
        prev = state.done(shard, fp)
        if prev is None:
            pending.append((shard, fp))
        else:
            results[shard.index] = prev
    split = shards[0].split if shards else "?"
    if results:
        click.echo(f"{split}: {len(results)} of {len(shards)} shards already done, kept")
    writing = SplitWriting(split, pending, opts)
    writing.run(state, results)
    return results, writing.total


class SplitWriting:
    """The shards of one split still to write, in order, from the workers' outputs. What this run has committed
    so far estimates the space still needed when the disk fills up."""

    def __init__(self, split: str, pending: list[tuple[Shard, str]], opts: Options):
        self.split, self.pending, self.opts = split, pending, opts
        self.out, self.src = Path(opts.out), Path(opts.src or ".")
        self.total = sum(len(s.items) for s, _ in pending)
        self.images = self.bytes = 0          # committed by this run
        self.writer: ShardWriter | None = None
        self.bar = None

    def still_needed(self) -> int:
        written = self.bytes + (self.writer.bytes_written if self.writer else 0)
        per_image = written / self.bar.n if written and self.bar.n else 0.1 * 3 * self.opts.size ** 2  # JPEG ~10:1
        return int(per_image * (self.total - self.images))

    def run(self, state: ShardState, results: dict[int, dict]) -> None:
        work = partial(convert_item, size=self.opts.size, quality=self.opts.quality)
        jobs = ((it.where or str(self.src / it.path), it.key, it.label) for shard, _ in self.pending
                for it in shard.items)
        spilled = all(isinstance(it.where, Spilled) for shard, _ in self.pending for it in shard.items)
        # a streamed split was converted while read: cutting its shards only copies bytes, done in this process
        outputs = ordered_map(work, jobs, 1 if spilled else self.opts.workers, initializer=imaging.one_thread)
        with progress_bar(self.total, self.split, enabled=self.total > 0) as self.bar, \
                full_disk_as_error(self.out, self.still_needed, doing=f"writing {self.split} shards"):
            for shard, fp in self.pending:
                results[shard.index] = self.write_shard(shard, fp, outputs)
                state.save(shard, results[shard.index])
                self.images += len(shard.items)
                self.bytes += results[shard.index]["bytes"]

    def write_shard(self, shard: Shard, fingerprint: str, outputs) -> dict:
        """One shard from the next outputs; its state: tar (None if every file was skipped), checksums, skipped."""
        self.writer = writer = ShardWriter(self.out / shard.name)
        skipped = []
        try:
            for item in shard.items:
                packed, reason = next(outputs)
                self.bar.update()
                if packed is None:
                    if self.opts.strict:
                        raise DataError(f"{item.path if item.where else self.src / item.path}: {reason} (--strict)")
                    skipped.append({"path": item.path, "reason": reason})  # listed once, in the summary
                    continue
                writer.add_packed(packed)
        except BaseException:
            writer.abort()
            outputs.close()
            raise
        if writer.samples:
            tar, _ = shard.name, writer.commit()
            sums = writer.checksums
        else:  # every file of this shard was skipped: no empty tar (DALI refuses empty indexes)
            writer.abort()
            tar, sums = None, {"bytes": 0}
        return {"tar": tar, "fingerprint": fingerprint, "samples": writer.samples, **sums, "skipped": skipped}


def split_entry(shards: list[Shard], results: dict[int, dict]) -> dict:
    """A split's manifest entry from its shards' states: names, counts, checksums, totals, skipped files."""
    done = [results[s.index] for s in shards if results[s.index]["samples"]]
    skipped = [s for shard in shards for s in results[shard.index]["skipped"]]
    return {"shards": [d["tar"] for d in done], "shard_samples": [d["samples"] for d in done],
            **{f"shard_{k}": [d.get(k) for d in done] for k in CHECKSUMS},
            "samples": sum(d["samples"] for d in done), "bytes": sum(d["bytes"] for d in done),
            "skipped": skipped}


def require_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = partial_path(out / ".write-test")  # per host and process: parts may share the folder
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from None


def convert(opts: Options) -> dict:
    """The whole conversion; returns the manifest it wrote."""
    unknown = [s for s in opts.splits if s not in SPLITS]
    if unknown or not opts.splits:
        raise ConfigError(f"--splits: unknown split(s) {unknown}; use {' and/or '.join(SPLITS)}")
    if opts.part and opts.merge:
        raise ConfigError("--part and --merge: a part makes shards, the merge joins all of them; give one")
    if is_remote(opts.out):
        raise ConfigError(f"--out {opts.out}: make_shards writes to a local folder (a shared file system, or this "
                          f"machine's disk); upload the result with: python tools/stage_shards.py --shards shards/ "
                          f"--out {opts.out}")
    if opts.workers is None:
        opts = replace(opts, workers=default_workers())
    t0 = time.perf_counter()
    out = Path(opts.out)
    require_writable(out)
    with full_disk_as_error(out, doing="writing the manifest"):
        return _convert(opts, out, t0)


def _convert(opts: Options, out: Path, t0: float) -> dict:
    for folder in (out, out / STATE_DIR):  # temporary files of a run killed with -9
        remove_stale_partials(folder)
    refuse_streamed_parts(opts)
    found = inputs.resolve(opts.src, splits=opts.splits, train_archive=opts.train_archive,
                           val_archive=opts.val_archive, devkit=opts.devkit, val_labels=opts.val_labels,
                           workers=opts.workers, layout=opts.layout,
                           streaming=inputs.Streaming(out / STATE_DIR, opts.size, opts.quality))
    doing = f" (part {opts.part.name})" if opts.part else f" (merge of {opts.merge} parts)" if opts.merge else ""
    click.echo(f"make_shards{doing}: {', '.join(sorted(set(found.origins.values())))} -> {out}: "
               f"{len(found.classes)} classes, " + ", ".join(f"{s} {len(l.items)} images"
                                                          for s, l in found.listings.items())
               + f"; {opts.workers} workers{_indexed(found)}")
    for note in found.notes:
        click.echo(f"note: {note}")
    plans = plan_all(opts, found)
    state = ShardState(out, verify=opts.verify)
    if opts.merge:
        return merge_parts(opts, out, found, plans, state, t0)
    if opts.part:
        done = {split: convert_split(shards, opts, state) for split, shards in part_of(opts.part, plans).items()}
        run = run_record(opts, found, sum(n for _, n in done.values()), t0)
        return finish_part(opts, out, found, plans, {split: r for split, (r, _) in done.items()}, run)
    manifest, removed, converted = new_manifest(opts, found, _previous(out, found.classes, opts.splits)), 0, 0
    for split, shards in plans.items():
        if split in found.restream and _needs_pass(shards, opts, out):  # a streamed split whose spill is gone
            found.listings[split] = found.restream[split]()
            shards = plans[split] = plan_shards(split, found.listings[split].items, opts.shard_size, opts.seed)
        results, n = convert_split(shards, opts, state)
        converted += n
        removed += add_split(opts, out, found, manifest, split, shards, results)
        if split in found.spills:  # the streamed split's converted images are all in its shards now
            found.spills[split].unlink(missing_ok=True)
    return finish(opts, out, found, manifest, run_record(opts, found, converted, t0), removed, state)


def _indexed(found: inputs.Inputs) -> str:
    """What reading the sources took beside converting: archive headers indexed, streamed splits."""
    return (f"; archives indexed in {found.index_seconds:.1f} s" if found.archives else "") + \
        "".join(f"; {how}" for how in found.how)


def refuse_streamed_parts(opts: Options) -> None:
    """A streamed layout (Hugging Face's) is converted while it is read, in one pass into one spill file: it
    cannot be split over machines. Checked before anything is read."""
    if not (opts.part or opts.merge) or not opts.src:
        return
    named = {"train": opts.train_archive, "val": opts.val_archive}
    needed = tuple(s for s in inputs.SPLIT_ORDER if s in opts.splits and not named[s])
    found = layouts.recognize(Path(opts.src), needed, opts.layout, classes=not opts.train_archive) if needed else None
    if found is not None and found.name.startswith("hf-"):  # as shardkit.inputs tells a streamed layout
        raise ConfigError(f"--src {opts.src}: {found.title}: a streamed layout is read and "
                          "converted in one pass, so --part/--merge cannot split it; convert it on one machine "
                          "(the shards are the same bytes)")


def run_record(opts: Options, found: inputs.Inputs, converted: int, t0: float) -> dict:
    """How this run went (STATE_DIR/conversion.json): kept apart from the manifest, whose bytes depend only on
    the sources and options."""
    dt = time.perf_counter() - t0
    return {"images": converted, "seconds": round(dt, 3), "images_per_s": round(converted / dt, 1),
            "workers": opts.workers, "index_seconds": round(found.index_seconds, 3)}


def plan_all(opts: Options, found: inputs.Inputs) -> dict[str, list[Shard]]:
    """Every shard of every split, in order (the same plan on every machine and for every part)."""
    plans = {}
    for split, listing in found.listings.items():
        if opts.strict and listing.skipped:
            s = listing.skipped[0]
            raise DataError(f"{_shown(opts, s['path'])}: {s['reason']} (--strict)")
        plans[split] = plan_shards(split, listing.items, opts.shard_size, opts.seed)
    return plans


def part_of(part: Part | None, plans: dict[str, list[Shard]]) -> dict[str, list[Shard]]:
    """The shards of part K of N: every N-th shard counted over all splits in order (all of them for None)."""
    if part is None:
        return plans
    numbered = enumerate(s for shards in plans.values() for s in shards)
    mine = {id(s) for i, s in numbered if part.owns(i)}
    return {split: [s for s in shards if id(s) in mine] for split, shards in plans.items()}


def add_split(opts: Options, out: Path, found: inputs.Inputs, manifest: dict, split: str, shards: list[Shard],
              results: dict[int, dict]) -> int:
    """The split's entry written into manifest.json at once (a later split's failure keeps this one); shards of
    an earlier run that the manifest no longer lists are removed (returns how many)."""
    manifest["splits"][split] = manifest_entry(opts, found, split, shards, results)
    write_json(out / MANIFEST, manifest)
    return remove_stale(out, split, manifest["splits"][split]["shards"], [s.name for s in shards])


def finish(opts: Options, out: Path, found: inputs.Inputs, manifest: dict, run: dict, removed: int,
           state: ShardState) -> dict:
    if run["images"] or run.get("parts"):  # how it went (a re-run that converted nothing keeps the old record)
        write_json(out / STATE_DIR / CONVERSION, run)
    if opts.verify:
        click.echo(f"verify: {len(state.remade)} finished shard(s) no longer matched their checksums and were made "
                   "again" + (": " + ", ".join(state.remade) if state.remade else ""))
    report(manifest, list(found.listings), run["seconds"], run["images"], removed, _indexed(found))
    return manifest


def _needs_pass(shards: list[Shard], opts: Options, out: Path) -> bool:
    """Whether a streamed split whose listing was reused must be read again: some shard is still to write and
    the spill it would be cut from is gone (deleted once the split was done, or never whole)."""
    spilled = [(None, it.where) for s in shards for it in s.items if isinstance(it.where, Spilled)]
    if spill_complete(spilled):
        return False
    state = ShardState(out)
    return any(state.done(s, s.fingerprint(opts)) is None for s in shards)


def manifest_entry(opts: Options, found: inputs.Inputs, split: str, shards: list[Shard],
                   results: dict[int, dict]) -> dict:
    listing = found.listings[split]
    entry = split_entry(shards, results)
    if not entry["samples"]:
        raise _no_images(found.origins[split], split, listing, entry)
    entry["skipped"] = listing.skipped + entry["skipped"]
    entry.update({"ignored_files": listing.ignored, "seed": opts.seed if split == "train" else None,
                  "shard_size": opts.shard_size, "source": found.origins[split], "format": FORMAT_VERSION})
    return entry


def part_identity(opts: Options, found: inputs.Inputs) -> dict:
    """What a part's shards are made from and with: equal in every part of one job, checked by the merge."""
    options = {"size": opts.size, "quality": opts.quality, "shard_size": opts.shard_size, "seed": opts.seed,
               "splits": list(opts.splits), "strict": opts.strict, "format": FORMAT_VERSION}
    lines = [json.dumps([found.classes, found.class_names])]
    for split, listing in found.listings.items():
        lines.append(json.dumps([split, listing.ignored, listing.skipped]))
        lines += (f"{it.path}\0{it.label}\0{it.key}" for it in listing.items)
    # the libraries that decode and encode: another version may give other JPEG bytes
    software = {"opencv": cv2.__version__, "pillow": PIL.__version__}
    return {"options": options, "software": software, "sources": parts.fingerprint(lines)}


def finish_part(opts: Options, out: Path, found: inputs.Inputs, plans: dict[str, list[Shard]],
                results: dict[str, dict[int, dict]], run: dict) -> dict:
    """Part K of N is done: its record (written last) lets the merge find it; no manifest yet."""
    names = [shards_done["tar"] for r in results.values() for shards_done in r.values() if shards_done["tar"]]
    record = {**part_identity(opts, found), "shards": names, "conversion": run}
    parts.write_record(out / STATE_DIR / opts.part.record_name(), opts.part, record)
    images = sum(d["samples"] for r in results.values() for d in r.values())
    total = sum(len(s) for s in plans.values())
    click.echo(f"done: part {opts.part.name}: {images} images in {len(names)} of the {total} shards, "
               f"{run['seconds']:.1f} s, {run['images'] / max(run['seconds'], 1e-9):.0f} images/s "
               f"({run['images']} converted this run); when every part is done: make_shards ... --merge "
               f"{opts.part.n}")
    return record


def merge_parts(opts: Options, out: Path, found: inputs.Inputs, plans: dict[str, list[Shard]], state: ShardState,
                t0: float) -> dict:
    """--merge N: the manifest of N finished parts, refused (naming each bad part) before anything is written."""
    n = opts.merge
    numbered = [(i, s) for i, s in enumerate(s for shards in plans.values() for s in shards)]
    done = {id(s): state.done(s, s.fingerprint(opts)) for _, s in numbered}

    def progress(part: Part) -> tuple[int, int]:
        mine = [s for i, s in numbered if part.owns(i)]
        return sum(done[id(s)] is not None for s in mine), len(mine)

    command = "python tools/make_shards.py (the same options)"
    problems = parts.check_parts(n, part_identity(opts, found), where=lambda part: out / STATE_DIR / part.record_name(),
                                 command=command, progress=progress)
    if not problems:  # every part says it finished: its shards must still be there
        problems = [f"part {Part(i % n + 1, n).name}: {s.name} missing or changed since the part finished: run "
                    f"`{command} --part {Part(i % n + 1, n).name}` again" for i, s in numbered if done[id(s)] is None]
    if problems:
        raise parts.refuse(out, n, problems)
    runs = [parts.read_record(out / STATE_DIR / Part(k, n).record_name()).get("conversion", {})
            for k in range(1, n + 1)]
    run = {**run_record(opts, found, 0, t0), "parts": runs}  # this run converts nothing; the parts did
    manifest, removed = new_manifest(opts, found, _previous(out, found.classes, opts.splits)), 0
    for split, shards in plans.items():
        removed += add_split(opts, out, found, manifest, split, shards, {s.index: done[id(s)] for s in shards})
    return finish(opts, out, found, manifest, run, removed, state)


def new_manifest(opts: Options, found: inputs.Inputs, previous: dict) -> dict:
    """The manifest this run writes, keeping an earlier run's splits and class names. Nothing in it depends on
    when, where or how fast it was made (that is STATE_DIR/conversion.json), so the same sources and options
    give the same bytes, in one run or in parts."""
    manifest = {"format": FORMAT_VERSION, "size": opts.size, "quality": opts.quality, "classes": found.classes,
                "splits": dict(previous.get("splits", {})), "created_by": "tools/make_shards.py"}
    if found.class_names or "class_names" in previous:  # words of each class, for tools that show classes
        manifest["class_names"] = found.class_names or previous["class_names"]
    return manifest


def report(manifest: dict, splits: list[str], seconds: float, converted: int, removed: int, indexed: str) -> None:
    """The summary line, then the files skipped (20 per split at most; all of them are in the manifest)."""
    entries = [manifest["splits"][s] for s in splits]
    images = sum(e["samples"] for e in entries)
    per_split = ", ".join(f"{s} {e['samples']}" for s, e in zip(splits, entries))
    n_shards = sum(len(e["shards"]) for e in entries)
    n_skipped = sum(len(e["skipped"]) for e in entries)
    megabytes = sum(e["bytes"] for e in entries) / 1e6
    click.echo(f"done: {images} images ({per_split}) in {n_shards} shards, {n_skipped} skipped, {megabytes:.1f} MB, "
               f"{seconds:.1f} s, {converted / seconds:.0f} images/s ({converted} converted this run"
               + (f", {removed} shards of an earlier run not in the manifest removed)" if removed else ")") + indexed)
    for split, e in zip(splits, entries):
        for s in e["skipped"][:20]:
            click.echo(f"  skipped {s['path']}: {s['reason']}")
        if len(e["skipped"]) > 20:
            click.echo(f"  ... and {len(e['skipped']) - 20} more {split} files: manifest.json, splits.{split}.skipped")


def _no_images(origin: str, split: str, listing: sources.Listing, entry: dict) -> DataError:
    """Name the split's own folder for a tree (SRC/train, ...), the archive for an archive."""
    folder = (sources.split_dir(Path(origin), split) if Path(origin).is_dir() else None) or origin
    found = f"{len(listing.items)} image files, all unreadable" if listing.items else "no image files"
    return DataError(f"{folder}: no convertible image in the {split} split ({found}, {listing.ignored} other files, "
                     f"{len(entry['skipped'])} skipped); put JPEG/PNG images in its class folders, or leave the split "
                     f"out with --splits")


def remove_stale(out: Path, split: str, listed: list[str], planned: list[str]) -> int:
    """Delete shards (and their index and state files) of `split` that an earlier run wrote and the manifest no
    longer lists (e.g. after another --shard-size); returns how many tars went."""
    removed = 0
    for tar in out.glob(f"{split}-*.tar"):
        if tar.name not in listed:
            tar.unlink()
            index_path(tar).unlink(missing_ok=True)
            removed += 1
    for state in (out / STATE_DIR).glob(f"{split}-*.json"):
        if state.stem not in planned:
            state.unlink()
    return removed


def _shown(opts: Options, path: str) -> str:
    """A listed path as the user finds it: archive paths as they are, tree paths under SRC."""
    return str(Path(opts.src) / path) if opts.src and (Path(opts.src) / path).exists() else path


def _previous(out: Path, classes: list[str], splits: tuple[str, ...]) -> dict:
    """The manifest of an earlier run with the same classes, whose splits are kept (e.g. --splits val after
    train); {} if there is none or it was made from other classes. Splits made by another format version are
    not kept beside this run's (readers refuse such a mix): re-made by this run, or refused with the fix."""
    path = out / MANIFEST
    if not path.is_file():
        return {}
    try:
        old = read_json(path, "previous manifest")
    except DataError:  # unreadable: nothing of it can be kept
        return {}
    if old.get("classes") != classes or not isinstance(old.get("splits"), dict):
        click.echo(f"note: {path} was made from other classes; its splits are replaced", err=True)
        return {}
    older = {s: v for s, v in split_formats(old).items() if v != FORMAT_VERSION and s not in splits}
    if older:
        made = ", ".join(f"{s} by format {v}" for s, v in sorted(older.items()))
        raise ConfigError(f"{path}: holds shards of an earlier format ({made}), which this run (format "
                          f"{FORMAT_VERSION}, --splits {','.join(splits)}) would leave beside its own; re-make them "
                          f"too: --splits {','.join(sorted(set(splits) | set(older)))}, or use another --out")
    return {**old, "splits": {s: e for s, e in old["splits"].items() if split_formats(old)[s] == FORMAT_VERSION}}
