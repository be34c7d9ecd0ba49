"""Hugging Face's ILSVRC/imagenet-1k as downloaded, read in place (nothing extracted).

Two revisions of that dataset repository are in use (docs/FORMAT.md, section 2, cites where this is written):
- today's, parquet: data/train-NNNNN-of-00294.parquet, data/validation-NNNNN-of-00014.parquet and
  data/test-NNNNN-of-00028.parquet, with columns `image` (a struct: `bytes`, the original file; `path`, its
  name) and `label` (the position of its wnid in classes.py);
- the earlier one, read by its loading script imagenet-1k.py: data/train_images_{0..4}.tar.gz,
  data/val_images.tar.gz, data/test_images.tar.gz, gzip tars of JPEGs.
In both an image is named `<original stem>_<wnid>.JPEG` (n01440764_10026_n01440764.JPEG,
ILSVRC2012_val_00000001_n01751748.JPEG): the wnid gives the label and the original name the key, so the
shards are those of the official files. classes.py (IMAGENET2012_CLASSES, wnid -> words, in label order)
names the classes; it is read as data with `ast`, never run. Neither format can be read by offset, so both
are streamed (shardkit.stream). pyarrow, needed for parquet only, is the optional extra `hf`.
"""
from __future__ import annotations

import ast
import re
import tarfile
import zlib
from pathlib import Path
from typing import Iterator

from common.errors import ConfigError, DataError
from shardkit import archives, sources
from shardkit.stream import Member, Spilled

NAME = re.compile(r"^(?P<stem>.+)_(?P<wnid>n\d{8})(?P<ext>\.[^._]+)$")
CLASSES = "classes.py"
CLASSES_VARIABLE = "IMAGENET2012_CLASSES"


def original_name(name: str) -> tuple[str, str] | None:
    """`n01440764_10026_n01440764.JPEG` -> (`n01440764_10026.JPEG`, `n01440764`); None without a wnid."""
    m = NAME.match(name)
    return (m["stem"] + m["ext"], m["wnid"]) if m else None


def read_classes(path: Path) -> dict[str, str]:
    """{wnid: words} of classes.py, in its order, from its literal (OrderedDict({...}), OrderedDict([...]) or a
    dict): parsed with `ast`, so nothing in the file runs."""
    try:
        tree = ast.parse(Path(path).read_text(errors="replace"))
    except SyntaxError as e:
        raise DataError(f"{path}: not readable as Python ({e}); take classes.py from the dataset again") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == CLASSES_VARIABLE for t in node.targets):
            value = node.value
            if isinstance(value, ast.Call) and len(value.args) == 1:  # OrderedDict(<literal>)
                value = value.args[0]
            try:
                return {str(k): str(v) for k, v in dict(ast.literal_eval(value)).items()}
            except (ValueError, TypeError):
                break
    raise DataError(f"{path}: no literal {CLASSES_VARIABLE} = {{wnid: words, ...}} in it; "
                    "take classes.py from the dataset again")


class Reading:
    """What a streamed read met besides images: files that are not images, images whose name has no class,
    and (parquet) rows whose `label` is not the place of their wnid in classes.py."""

    def __init__(self, classes_py: list[str] | None):
        self.ignored, self.skipped, self.label_mismatches = 0, [], 0
        self.order = {w: i for i, w in enumerate(classes_py)} if classes_py else None

    def member(self, shown: str, name: str, data: bytes, label: int | None = None) -> Member | None:
        if not sources.is_image_name(name):
            self.ignored += 1
            return None
        parsed = original_name(name)
        if parsed is None:
            self.skipped.append({"path": shown, "reason": "no class in its name (expected <stem>_<wnid>.JPEG)"})
            return None
        if label is not None and self.order is not None and self.order.get(parsed[1]) != label:
            self.label_mismatches += 1
        return Member(shown, parsed[0], parsed[1], data)


def tar_members(files: list[Path], reading: Reading) -> Iterator[Member]:
    """The images of gzip tars, each read once front to back ('r|gz': no seek, a bounded buffer)."""
    for path in files:
        try:
            with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
                for info in tar:
                    if info.isfile():
                        name = info.name.rsplit("/", 1)[-1]
                        m = reading.member(f"{path.name}/{info.name}", name, tar.extractfile(info).read())
                        if m is not None:
                            yield m
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise archives.truncated(path, f"unreadable ({type(e).__name__}: {e})") from None


def _pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("reading Hugging Face's parquet files needs pyarrow: pip install pyarrow "
                          "(or this package's extra: pip install -e '.[hf]')") from None
    return pq


def parquet_rows(files: list[Path]) -> int:
    pq = _pyarrow()
    return sum(_open_parquet(pq, p).metadata.num_rows for p in files)


def _open_parquet(pq, path: Path):
    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...: a damaged or partial download
        raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e}); download it again") from None


def parquet_members(files: list[Path], reading: Reading) -> Iterator[Member]:
    """The images of parquet files, read a few rows at a time (a row group is read whole, never the file)."""
    pq = _pyarrow()
    for path in files:
        pf = _open_parquet(pq, path)
        columns = [c for c in ("image", "label") if c in pf.schema_arrow.names]
        if "image" not in columns:
            raise DataError(f"{path}: no 'image' column (has {pf.schema_arrow.names}); is it ILSVRC/imagenet-1k?")
        row = 0
        try:
            for batch in pf.iter_batches(batch_size=32, columns=columns):
                images = batch.column("image").to_pylist()
                labels = batch.column("label").to_pylist() if "label" in columns else [None] * len(images)
                for image, label in zip(images, labels):
                    name = ((image or {}).get("path") or f"row {row}").rsplit("/", 1)[-1]
                    m = reading.member(f"{path.name}/{name}", name, (image or {}).get("bytes") or b"", label)
                    row += 1
                    if m is not None:
                        yield m
        except Exception as e:  # a damaged column chunk: pyarrow's own error types
            raise DataError(f"{path}: unreadable after row {row} ({type(e).__name__}: {e}); download it again") \
                from None


def listing(spilled: list[tuple[Member, Spilled]], classes: list[str], skipped: list[dict], ignored: int,
            source: str) -> sources.Listing:
    """Items of a streamed split: label = place of the name's wnid among the train classes."""
    index = {w: i for i, w in enumerate(classes)}
    missing = sorted({m.wnid for m, _ in spilled if m.wnid not in index})
    if missing:
        raise sources.SourceError(f"{source}: class {missing[0]} is not one of the {len(classes)} train classes "
                                  f"({len(missing)} such); do the train and val files belong together?")
    items = [sources.Item(m.shown, index[m.wnid], sources.sample_key(m.name), s, m.name) for m, s in spilled]
    return sources.Listing(items, list(skipped), ignored)
