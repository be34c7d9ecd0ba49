"""The ILSVRC2012 devkit: class names and the val labels, read in place (no extraction).

    kit = devkit.load(Path("ILSVRC2012_devkit_t12.tar.gz"))   # or the extracted folder, or its data/ folder
    kit.words["n01440764"]            # 'tench, Tinca tinca'
    kit.val_labels(classes)           # {'ILSVRC2012_val_00000001': 65, ...}: sorted-wnid indices

`data/meta.mat` (MATLAB v5) holds a struct array `synsets` with fields ILSVRC2012_ID, WNID, words,
num_children, ...; the leaf synsets (num_children == 0, the first 1,000) are the classes.
`data/ILSVRC2012_validation_ground_truth.txt` lists one ILSVRC2012_ID per line, line i for
ILSVRC2012_val_{i:08d}.JPEG. Those IDs are devkit order, not sorted-wnid indices: meta.mat maps them to wnids.
"""
from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from common.errors import DataError

ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"
FOLDER = "ILSVRC2012_devkit_t12"
META = "meta.mat"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
SYNSET_FIELDS = ("ILSVRC2012_ID", "WNID", "words", "num_children")


def val_name(i: int) -> str:
    """File name of the i-th val image (1-based), as in the val archive."""
    return f"ILSVRC2012_val_{i:08d}.JPEG"


@dataclass(frozen=True)
class Devkit:
    source: str                  # what it was read from, for messages
    wnids: dict[int, str]        # ILSVRC2012_ID -> wnid, leaf classes only
    words: dict[str, str]        # wnid -> words ('tench, Tinca tinca')
    ground_truth: list[int] | None  # ILSVRC2012_ID of each val image, in val-file order

    def val_wnids(self) -> dict[str, str]:
        """{val file name: wnid} from the ground truth."""
        if self.ground_truth is None:
            raise DataError(f"{self.source}: no {GROUND_TRUTH} in it, so it labels no val images")
        bad = [i for i in self.ground_truth if i not in self.wnids]
        if bad:
            raise DataError(f"{self.source}: {GROUND_TRUTH} has ID {bad[0]}, which is not a leaf class of "
                            f"{META} (IDs 1..{len(self.wnids)}); the devkit files do not belong together")
        return {val_name(n): self.wnids[i] for n, i in enumerate(self.ground_truth, start=1)}


def read_meta(data: bytes, source: str) -> tuple[dict[int, str], dict[str, str]]:
    """meta.mat bytes -> ({ILSVRC2012_ID: wnid}, {wnid: words}) for the leaf synsets."""
    from scipy.io import loadmat  # numeric arrays and strings only: MATLAB files hold no code or pickles

    try:
        mat = loadmat(io.BytesIO(data), variable_names=["synsets"], squeeze_me=True, chars_as_strings=True)
    except (ValueError, TypeError, NotImplementedError, OSError, EOFError, KeyError) as e:
        raise DataError(f"{source}: not a readable MATLAB v5 file ({type(e).__name__}: {e}); "
                        f"take meta.mat from the original {ARCHIVE}") from None
    synsets = mat.get("synsets")
    names = getattr(getattr(synsets, "dtype", None), "names", None) or ()
    missing = [f for f in SYNSET_FIELDS if f not in names]
    if synsets is None or missing:
        raise DataError(f"{source}: no 'synsets' struct array with fields {', '.join(SYNSET_FIELDS)} "
                        f"(missing: {', '.join(missing) or 'synsets'}); is it the ILSVRC2012 devkit's meta.mat?")
    wnids, words = {}, {}
    for s in synsets.reshape(-1):
        if int(s["num_children"]) != 0:  # inner nodes of the hierarchy, not classes
            continue
        wnid = str(s["WNID"])
        wnids[int(s["ILSVRC2012_ID"])] = wnid
        words[wnid] = str(s["words"])
    if not wnids:
        raise DataError(f"{source}: no leaf synsets (num_children == 0) in 'synsets'")
    return wnids, words


def read_ground_truth(text: str, source: str) -> list[int]:
    try:
        return [int(line) for line in text.split()]
    except ValueError as e:
        raise DataError(f"{source}: expected one ILSVRC2012_ID per line ({e})") from None


def load(path: Path) -> Devkit:
    """The devkit from its .tar.gz (read in memory, 2.5 MB) or from an extracted folder."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    if not path.is_file():
        raise DataError(f"--devkit {path}: no such file or folder; give {ARCHIVE} or its extracted folder")
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                base = info.name.rsplit("/", 1)[-1]
                if info.isfile() and base in (META, GROUND_TRUTH) and base not in found:
                    found[base] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable devkit archive ({type(e).__name__}: {e}); "
                        f"download {ARCHIVE} again") from None
    if META not in found:
        raise DataError(f"{path}: no data/{META} in the archive; is it {ARCHIVE}?")
    wnids, words = read_meta(found[META], f"{path}:{META}")
    truth = found.get(GROUND_TRUTH)
    gt = read_ground_truth(truth.decode(), f"{path}:{GROUND_TRUTH}") if truth is not None else None
    return Devkit(str(path), wnids, words, gt)


def _load_folder(path: Path) -> Devkit:
    for data in (path / "data", path, path / FOLDER / "data"):
        if (data / META).is_file():
            wnids, words = read_meta((data / META).read_bytes(), str(data / META))
            gt_file = data / GROUND_TRUTH
            gt = read_ground_truth(gt_file.read_text(), str(gt_file)) if gt_file.is_file() else None
            return Devkit(str(path), wnids, words, gt)
    raise DataError(f"--devkit {path}: no {META} in {path}/data, {path} or {path}/{FOLDER}/data; "
                    f"give {ARCHIVE} or the folder it extracts to")


def find(src: Path | None) -> Path | None:
    """The devkit in SRC, archive or extracted folder, if there is one."""
    if src is None:
        return None
    for candidate in (Path(src) / ARCHIVE, Path(src) / FOLDER):
        if candidate.exists():
            return candidate
    return None
