"""Which JPEG decoder did the work. DALI 2.x decodes through nvImageCodec; for device="mixed" it gives
nvImageCodec four backends, in order: the hardware JPEG decoder (its share of the images: hw_decoder_load),
nvJPEG on CUDA, nvJPEG's hybrid CPU+GPU path, and the CPU (libjpeg-turbo). nvImageCodec falls back along them
without a word to the caller (DALI's dali/operators/imgcodec/image_decoder.h, the `backends_` it builds), and
DALI reports no per-image choice. Its one window on it is nvImageCodec's log, whose level DALI reads from
DALI_NVIMGCODEC_LOG_LEVEL each time it builds a decoder: at 3 (info) the log says which decoders were
registered or skipped ("[nvjpeg-ext] HW decoder not supported by this platform. Skip.") and has one line per
image decoded, `<n>: <decoder id> process #<sample>` (seen with DALI 2.4.0 and nvImageCodec 0.9.0).

    census = decoder_census(tars, 256, device, workers=16, hw_decoder_load=0.65, roi=True)
    census["images"]    # {"nvjpeg_hw_decoder": 83, "nvjpeg_cuda_decoder": 45}: who decoded how many
    census["verdict"]   # one line: on the GPU (and how), partly or wholly on the CPU (a quiet fallback)

A small pipeline of its own is built with the log on and this process's standard error captured for it; the
timed loaders run without the log.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from pipeline.spec import CROP
from shardkit.format import index_path

LOG_LEVEL = "DALI_NVIMGCODEC_LOG_LEVEL"
DECODED = re.compile(r"\d+: (\w+) process #\d+")
NOTE = re.compile(r"\[(nvjpeg[-_]ext|nvimgcodec)\] (.*(?:skip|not supported|fail|could not|cannot).*)", re.I)
GPU_PREFIX = "nvjpeg"   # nvjpeg_hw_decoder, nvjpeg_cuda_decoder, ...; the CPU ones: libjpeg_turbo_, opencv_


def decode_only(tars, device: str, batch_size: int, workers: int, decoder: dict, roi: bool):
    """A built DALI pipeline that reads the tars' JPEGs and decodes them (the CROP window only, with `roi`)."""
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=batch_size, num_threads=workers, device_id=0 if device == "cuda" else None)
    def pipe():
        jpegs, _ = fn.readers.webdataset(paths=[str(t) for t in tars], index_paths=[str(index_path(t)) for t in tars],
                                         ext=["jpg", "cls"])
        if roi:
            return fn.decoders.image_crop(jpegs, crop=(CROP, CROP), **decoder)
        return fn.decoders.image(jpegs, **decoder)

    p = pipe()
    p.build()
    return p


@contextmanager
def stderr_into(path: Path):
    """This process's file descriptor 2 (C and C++ libraries' messages too) into `path`, then back."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "wb") as f:
            os.dup2(f.fileno(), 2)
            yield path
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def read_log(text: str) -> tuple[Counter, list[str]]:
    """(images per decoder id, the notes on decoders skipped or failing) from nvImageCodec's info log."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # its colours
    notes = sorted({f"{m.group(1)}: {m.group(2).strip()}" for m in NOTE.finditer(text)
                    if "encoder" not in m.group(2).lower()})  # this check is about decoding
    return Counter(DECODED.findall(text)), notes


def verdict(images: Counter, gpu: bool, hw_decoder_load: float | None) -> str:
    """One line: where the images were decoded, and what that means for a mixed decoder."""
    total = sum(images.values())
    cpu = sum(n for d, n in images.items() if not d.startswith(GPU_PREFIX))
    hw = sum(n for d, n in images.items() if "hw" in d)
    who = ", ".join(f"{d} {n}" for d, n in images.most_common())
    if not total:
        return "unknown: nvImageCodec logged no decoded image (this DALI may not read " + LOG_LEVEL + ")"
    if not gpu:
        return f"CPU decoder, as asked (device cpu): {who}"
    if cpu == total:
        return f"CPU FALLBACK: the mixed decoder decoded all {total} images on the CPU ({who}); no GPU decoding"
    if cpu:
        return f"PARTLY ON THE CPU: {cpu} of {total} images ({who})"
    if hw_decoder_load and not hw:
        return f"GPU, no hardware decoder: hw_decoder_load={hw_decoder_load} has no effect here ({who})"
    return f"GPU ({who})"


def decoder_census(tars, size: int, device, *, workers: int, hw_decoder_load: float | None, roi: bool,
                   batch_size: int = 64, batches: int = 2) -> dict:
    """Decode `batches` batches with the loader's decoder options (pipeline.dali.decoder_options) and count,
    from nvImageCodec's log, which decoder took each image."""
    from pipeline.dali import HW_DECODER_LOAD, decoder_options
    gpu = device.type == "cuda"
    decoder = decoder_options(gpu, size, HW_DECODER_LOAD if hw_decoder_load is None else hw_decoder_load)
    saved = os.environ.get(LOG_LEVEL)
    os.environ[LOG_LEVEL] = "3"  # read when the decoder is built: this pipeline's only
    try:
        with tempfile.TemporaryDirectory() as tmp, stderr_into(Path(tmp) / "log") as log:
            pipe = decode_only(tars, device.type, batch_size, workers, decoder, roi)
            for _ in range(batches):
                pipe.run()
            del pipe
            text = log.read_text(errors="replace")
    finally:
        os.environ.pop(LOG_LEVEL) if saved is None else os.environ.__setitem__(LOG_LEVEL, saved)
    images, notes = read_log(text)
    return {"hw_decoder_load": hw_decoder_load if gpu else None, "roi": roi, "images": dict(images),
            "notes": notes, "verdict": verdict(images, gpu, hw_decoder_load)}
