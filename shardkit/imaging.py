"""Turn one ImageNet source file into the shard image: the paper's shorter-side-to-256 + centre crop, as a
baseline RGB JPEG.

    from shardkit.imaging import convert
    jpeg_bytes = convert(open("n01440764_10026.JPEG", "rb").read(), size=256, quality=90)
    pixels = shard_pixels("cat.jpg")      # the same image as uint8 RGB, before the JPEG encoding (inference)

Geometry: the central square of the source (side = its shorter side, offset `(long - short) // 2`) is resized
to `size x size`. That is "resize the shorter side to 256, then cut out the central 256x256" without
resizing the margins that are thrown away (at most half a source pixel from the continuous centre).

Speed (the JPEG decode is the floor, everything else is kept small):
- plain RGB/grayscale JPEGs take the OpenCV path; when the source is at least twice the needed size, libjpeg
  decodes it already scaled by 1/2, 1/4 or 1/8 in the DCT domain ("draft mode");
- the antialiased downscale is a Gaussian prefilter (sigma = sqrt(s^2 - 1) / 2 for a factor s) followed by
  bilinear resampling, both on the central square only;
- CMYK, PNG (also when named .JPEG), palette, RGBA, 16-bit and anything else Pillow reads go through Pillow,
  then share the same resize.
Pixels are kept in OpenCV's BGR order internally; the JPEG written is an ordinary RGB (YCbCr) JPEG.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from common.errors import DataError

_JPEG_EOI = b"\xff\xd9"
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


class BadImage(Exception):
    """The file is not an image we can decode; the message says why."""


def probe(data: bytes) -> tuple[str, str, tuple[int, int]]:
    """(format, mode, (width, height)) from the header only."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format or "?", im.mode, im.size
    except Image.DecompressionBombError as e:
        raise BadImage(f"too large: {e}") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image (unknown format)") from None
    except Exception as e:  # Pillow raises many types for garbage
        raise BadImage(f"unreadable image header ({type(e).__name__}: {e})") from None


def _draft_factor(width: int, height: int, size: int) -> int:
    """Largest DCT scaling denominator (1, 2, 4, 8) that keeps the shorter side >= size."""
    for r in (8, 4, 2):
        if min(width, height) >= r * size:
            return r
    return 1


def _ends_complete(data: bytes) -> bool:
    """A complete JPEG ends with the EOI marker (allowing trailing padding)."""
    return data.rstrip(b"\x00\r\n ").endswith(_JPEG_EOI)


def decode_bgr(data: bytes, size: int) -> np.ndarray:
    """Decode any supported file to an HxWx3 uint8 BGR array, scaled in the DCT domain when that is free."""
    fmt, mode, (w, h) = probe(data)
    if fmt == "JPEG" and mode in ("RGB", "L") and _ends_complete(data):
        flags = _REDUCED[_draft_factor(w, h, size)] | cv2.IMREAD_IGNORE_ORIENTATION
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        if img is not None:
            return img
    return _decode_pillow(data, size)


def _decode_pillow(data: bytes, size: int) -> np.ndarray:
    """The general path: CMYK, PNG, palette, alpha, truncated files (which raise here)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG":
                im.draft("RGB", (size, size))  # DCT scaling, also for CMYK
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                # 16-bit or float grayscale: map the full range to 8 bits instead of clipping
                arr = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I") and arr.max() > 255 else max(arr.max(), 1.0)
                im = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8))
            rgb = np.asarray(im.convert("RGB"))  # as torchvision's loader: alpha is dropped
    except Image.DecompressionBombError as e:
        raise BadImage(f"too large: {e}") from None
    except Exception as e:
        raise BadImage(f"cannot decode ({type(e).__name__}: {e})") from None
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 1:
        raise BadImage(f"decoded to an unusable shape {rgb.shape}")
    return np.ascontiguousarray(rgb[:, :, ::-1])


def resize_center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Central square of side min(h, w), resized (antialiased when shrinking) to size x size."""
    h, w = img.shape[:2]
    short = min(h, w)
    top, left = (h - short) // 2, (w - short) // 2
    square = img[top:top + short, left:left + short]
    if short == size:
        return np.ascontiguousarray(square)
    if short > size:
        scale = short / size
        square = cv2.GaussianBlur(square, (0, 0), 0.5 * math.sqrt(scale * scale - 1.0))
        interp = cv2.INTER_LINEAR
    else:
        interp = cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interp)


def encode_jpeg(img_bgr: np.ndarray, quality: int) -> bytes:
    """Baseline (non-progressive) JPEG, 4:2:0, as every decoder (nvJPEG hardware included) likes it."""
    ok, buf = cv2.imencode(".jpg", img_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality),
                                            cv2.IMWRITE_JPEG_PROGRESSIVE, 0,
                                            cv2.IMWRITE_JPEG_OPTIMIZE, 0])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return buf.tobytes()


def convert(data: bytes, size: int = 256, quality: int = 90) -> bytes:
    """Source file bytes -> shard JPEG bytes. Raises BadImage for files that cannot be decoded."""
    return encode_jpeg(resize_center_crop(decode_bgr(data, size), size), quality)


def try_convert(data: bytes, size: int, quality: int) -> tuple[bytes | None, str | None]:
    """(shard JPEG bytes, None), or (None, why) for a file that cannot be decoded (skipped and listed)."""
    try:
        return convert(data, size, quality), None
    except BadImage as e:
        return None, str(e)


def one_thread() -> None:
    """The initializer of converting worker processes: parallelism comes from the processes, not OpenCV."""
    cv2.setNumThreads(1)


def shard_pixels(path: str | Path, size: int = 256) -> np.ndarray:
    """[size, size, 3] uint8 RGB from any image file, made exactly as a shard image is (the shorter side to
    `size`, antialiased, the centre square), without the shard's JPEG encoding: what inference feeds a model."""
    try:
        bgr = resize_center_crop(decode_bgr(Path(path).read_bytes(), size), size)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    except BadImage as e:
        raise DataError(f"{path}: {e}") from None
    return np.ascontiguousarray(bgr[:, :, ::-1])
