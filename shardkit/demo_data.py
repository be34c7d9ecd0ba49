"""The built-in demo dataset: a small ImageNet-layout tree of synthetic, learnable images, made in seconds.

    python tools/make_demo_data.py --out demo/imagenet            # 10 classes x (60 train + 10 val)
    python tools/make_demo_data.py --out demo/kaggle --layout kaggle --val-layout folders

Each class is a shape with its own texture and colour family (circle, square, triangle, stripes, checks, ring,
cross, dots, ...) on a noisy background, at a random place and scale; sizes vary from smaller to larger than
256, portrait and landscape. Like real ImageNet it holds a few odd files: CMYK and grayscale JPEGs, a PNG
named .JPEG (as n02105855_2933), palette and RGBA PNGs; and broken ones (empty, truncated, garbage), plus
non-image files. `demo.json` at the root lists them, for tests. Same --seed, same bytes.

Layouts (--layout / --val-layout): imagenet = SRC/{train,val}; kaggle = SRC/ILSVRC/Data/CLS-LOC/{train,val};
val flat with LOC_val_solution.csv at SRC (csv), flat with a 'filename wnid' file val_labels.txt (txt), or
class folders (folders).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common.files import write_json

SHAPES = ("circle", "square", "triangle", "hstripes", "vstripes", "checks", "ring", "cross", "dstripes", "dots")
HUES = (0, 120, 230, 55, 300, 180, 25, 270, 90, 200)  # one colour family per class (degrees)


def wnid(i: int) -> str:
    return f"n{90000000 + i:08d}"  # valid wnid pattern, obviously not a real synset


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    rgb = Image.new("HSV", (1, 1), (int(h / 360 * 255) % 256, int(s * 255), int(v * 255))).convert("RGB")
    return rgb.getpixel((0, 0))


def draw_image(rng: np.random.Generator, cls: int, width: int, height: int) -> Image.Image:
    """One sample of class `cls`: a textured shape on a noisy background."""
    bg = tuple(int(c) for c in rng.integers(40, 215, 3))
    im = Image.new("RGB", (width, height), bg)
    d = ImageDraw.Draw(im)
    hue = HUES[cls % len(HUES)] + rng.uniform(-20, 20)
    fg = _hsv(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    fg2 = _hsv(hue + 180, rng.uniform(0.3, 0.8), rng.uniform(0.2, 0.6))
    side = min(width, height)
    r = side * rng.uniform(0.25, 0.42)
    cx = width / 2 + rng.uniform(-0.5, 0.5) * (width - 2 * r)
    cy = height / 2 + rng.uniform(-0.5, 0.5) * (height - 2 * r)
    box = (cx - r, cy - r, cx + r, cy + r)
    step = max(3, int(side * rng.uniform(0.04, 0.08)))
    shape = SHAPES[cls % len(SHAPES)]
    if shape == "circle":
        d.ellipse(box, fill=fg)
    elif shape == "square":
        d.rectangle(box, fill=fg)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    elif shape == "ring":
        d.ellipse(box, outline=fg, width=max(2, int(r * 0.3)))
    elif shape == "cross":
        w = r * 0.3
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fg)
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fg)
    elif shape in ("hstripes", "vstripes", "dstripes", "checks", "dots"):
        d.rectangle(box, fill=fg2)
        x0, y0 = int(cx - r), int(cy - r)
        for i in range(0, int(2 * r), step * 2):
            for j in range(0, int(2 * r), step * 2):
                if shape == "checks":
                    d.rectangle((x0 + i, y0 + j, x0 + i + step, y0 + j + step), fill=fg)
                    d.rectangle((x0 + i + step, y0 + j + step, x0 + i + 2 * step, y0 + j + 2 * step), fill=fg)
                elif shape == "dots":
                    d.ellipse((x0 + i, y0 + j, x0 + i + step, y0 + j + step), fill=fg)
            if shape == "hstripes":
                d.rectangle((x0, y0 + i, x0 + 2 * r, y0 + i + step), fill=fg)
            elif shape == "vstripes":
                d.rectangle((x0 + i, y0, x0 + i + step, y0 + 2 * r), fill=fg)
            elif shape == "dstripes":
                d.line((x0 + i, y0, x0, y0 + i), fill=fg, width=step // 2 + 1)
                d.line((x0 + 2 * r, y0 + i, x0 + i, y0 + 2 * r), fill=fg, width=step // 2 + 1)
    noise = rng.normal(0, 12, (height, width, 1)).astype(np.float32)
    arr = np.clip(np.asarray(im, np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _size(rng: np.random.Generator) -> tuple[int, int]:
    short = int(rng.integers(120, 420))
    long_ = int(short * rng.uniform(1.0, 1.6))
    return (long_, short) if rng.random() < 0.6 else (short, long_)


class _Tree:
    """Writes files under the demo's root folder and names them relative to it."""

    def __init__(self, out: Path):
        self.out = out

    def rel(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()

    def put(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return self.rel(path)


ODD_KINDS = ("cmyk", "cmyk", "gray", "png_named_jpeg", "palette_png", "rgba_png")


def make_demo(out: Path, classes: int = 10, train_per_class: int = 60, val_per_class: int = 10, seed: int = 0,
              layout: str = "imagenet", val_layout: str = "csv", odd_files: bool = True) -> dict:
    """Write the tree; return what demo.json holds (odd files, counts)."""
    out = Path(out)
    tree, root = _Tree(out), out / "ILSVRC/Data/CLS-LOC" if layout == "kaggle" else out
    rng = np.random.default_rng(seed)
    wnids = [wnid(i) for i in range(classes)]
    info = {"classes": wnids, "shapes": [SHAPES[i % len(SHAPES)] for i in range(classes)],
            "odd": {}, "broken": {}, "ignored": [], "train": 0, "val": 0}
    # odd-but-valid files replace some regular ones; broken and non-image files are extra
    odd = {(i % classes, i + 1): kind for i, kind in enumerate(ODD_KINDS)} if odd_files else {}
    for c, w in enumerate(wnids):
        for k in range(train_per_class):
            path, data = _train_file(root / "train" / w / f"{w}_{k + 1}.JPEG", draw_image(rng, c, *_size(rng)),
                                     odd.get((c, k)))
            if odd.get((c, k)):
                info["odd"][tree.rel(path)] = odd[(c, k)]
            tree.put(path, data)
            info["train"] += 1
    val_dir = root / "val"
    labels = []  # (file stem, wnid, width, height)
    for n in range(classes * val_per_class):
        c = int(rng.integers(classes))
        im = draw_image(rng, c, *_size(rng))
        stem = f"ILSVRC2012_val_{n + 1:08d}"
        path = (val_dir / wnids[c] if val_layout == "folders" else val_dir) / f"{stem}.JPEG"
        cmyk = odd_files and n == 1
        tree.put(path, _jpeg(im.convert("CMYK")) if cmyk else _jpeg(im))
        if cmyk:
            info["odd"][tree.rel(path)] = "cmyk"
        labels.append((stem, wnids[c], *im.size))
        info["val"] += 1
    if odd_files:
        labels.append(_broken_files(tree, root, val_dir, rng, wnids, classes * val_per_class + 1, val_layout, info))
    _write_val_labels(tree, out, val_layout, labels)
    write_json(out / "demo.json", info)  # last, so its presence means the tree is complete
    return info


def _train_file(path: Path, im: Image.Image, kind: str | None) -> tuple[Path, bytes]:
    """A train image as a regular JPEG, or as one of ImageNet's odd kinds (its path may become .png)."""
    if kind == "cmyk":
        return path, _jpeg(im.convert("CMYK"))
    if kind == "gray":
        return path, _jpeg(im.convert("L"))
    if kind == "png_named_jpeg":
        return path, _png(im)
    if kind == "palette_png":
        return path.with_suffix(".png"), _png(im.convert("P", palette=Image.Palette.ADAPTIVE))
    if kind == "rgba_png":
        rgba = im.convert("RGBA")
        rgba.putalpha(255)
        return path.with_suffix(".png"), _png(rgba)
    return path, _jpeg(im)


def _broken_files(tree: _Tree, root: Path, val_dir: Path, rng: np.random.Generator, wnids: list[str], val_n: int,
                  val_layout: str, info: dict) -> tuple[str, str, int, int]:
    """Empty, truncated and garbage train files, a truncated val file, non-image files; the val file's label."""
    good = _jpeg(draw_image(rng, 0, 300, 200))
    classes = len(wnids)
    broken = {
        root / "train" / wnids[0] / f"{wnids[0]}_9001.JPEG": (b"", "empty"),
        root / "train" / wnids[1 % classes] / f"{wnids[1 % classes]}_9002.JPEG": (good[: len(good) // 2], "truncated"),
        root / "train" / wnids[2 % classes] / f"{wnids[2 % classes]}_9003.JPEG": (rng.bytes(5000), "garbage"),
    }
    vb = (val_dir / wnids[0] if val_layout == "folders" else val_dir) / f"ILSVRC2012_val_{val_n:08d}.JPEG"
    broken[vb] = (good[: len(good) // 3], "truncated")
    for path, (data, why) in broken.items():
        info["broken"][tree.put(path, data)] = why
    for junk in (root / "train" / wnids[0] / ".DS_Store", root / "train" / wnids[0] / "notes.txt"):
        info["ignored"].append(tree.put(junk, b"not an image\n"))
    return vb.stem, wnids[0], 2, 2


def _write_val_labels(tree: _Tree, out: Path, val_layout: str, labels: list[tuple[str, str, int, int]]) -> None:
    """Kaggle's LOC_val_solution.csv (csv) or a 'filename wnid' val_labels.txt (txt); folders need none."""
    if val_layout == "csv":
        rows = ["ImageId,PredictionString"] + [f"{stem},{w} 0 0 {wd - 1} {ht - 1} " for stem, w, wd, ht in labels]
        tree.put(out / "LOC_val_solution.csv", ("\n".join(rows) + "\n").encode())
    elif val_layout == "txt":
        rows = [f"{stem}.JPEG {w}" for stem, w, *_ in labels]
        tree.put(out / "val_labels.txt", ("\n".join(rows) + "\n").encode())


# Photo-like sources for the benchmarks: decode and compress like ImageNet photographs, at its common sizes.
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
