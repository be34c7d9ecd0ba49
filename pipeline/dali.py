"""The NVIDIA DALI input pipeline: shards -> decoded, cropped, flipped, lit, normalized NCHW batches.

With CUDA: the `mixed` decoder (nvJPEG; hardware JPEG decoder share set by `hw_decoder_load`), GPU operators,
batches left on the GPU. Without CUDA (`device_id=None`): the same graph on DALI's CPU operators.

    train: readers.webdataset (sharded by rank, reshuffled globally each epoch)
           -> decoders.image_crop (decodes only the 224 window at offsets uniform in 0..32; ROI_DECODE=False:
              full decode, the window cut by crop_mirror_normalize)
           -> crop_mirror_normalize (flip p=0.5; mean shifted per image by the PCA lighting offset)
    val:   the centre window, or the 10 windows (corners + centre, and mirrored) stacked per sample.
Labels: the .cls member is ASCII; it is padded to a fixed width in the graph and parsed to int64 on the host.
Batches reach torch with no copy and no host wait (`DaliLoader._next_batch`: `run(stream)` + DLPack).
"""
from __future__ import annotations

import re

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types

from pipeline.spec import ALPHA_STD, CROP, MAX_OFFSET, TEN_CROP_ANCHORS, ShardSpec, epoch_plan
from common.errors import ConfigError, DataError
from shardkit.verify import VERIFY_CMD, bad_sample_error, find_bad_sample

LABEL_BYTES = 8                      # widest .cls member accepted (8 decimal digits)
HW_DECODER_LOAD = 0.65               # share of images sent to the hardware JPEG decoder (A100/H100 have one)
ROI_DECODE = True                    # train/val: decode only the 224 window (False: full decode, then crop)
OFFSETS = [k / MAX_OFFSET for k in range(MAX_OFFSET + 1)]  # crop_pos k/32 -> integer offset k


def decoder_options(gpu: bool, size: int, hw_decoder_load: float = HW_DECODER_LOAD) -> dict:
    """Arguments of the JPEG decoder for shards of size x size images."""
    if not gpu:
        return dict(device="cpu", output_type=types.RGB)
    # nvJPEG's paddings are per decoder thread (one device buffer, two pinned host buffers each): the
    # full-size-ImageNet values of DALI's ResNet-50 example (211 MB, 141 MB) cost ~3 GiB of GPU and ~4 GiB of
    # pinned memory per loader at 16 threads; a size x size RGB image decodes to 3 size^2 bytes (196 kB at 256),
    # so twice that, rounded up to 1 MiB, leaves no reallocation.
    pad = -(-2 * 3 * size * size // 2**20) * 2**20
    return dict(device="mixed", output_type=types.RGB, hw_decoder_load=hw_decoder_load,
                device_memory_padding=pad, host_memory_padding=pad,
                preallocate_width_hint=size, preallocate_height_hint=size,
                # libjpeg's chroma upsampling, as the CPU decoder and Pillow do: 4:2:0 shards decode alike
                jpeg_fancy_upsampling=True)


@pipeline_def
def shard_pipeline(tars, idxs, *, decoder: dict, roi_decode: bool, train: bool, augment: bool, ten_crop: bool,
                   shard_id: int, num_shards: int, shuffle_seed: int, mean, std, eigval, eigvec,
                   params: bool = False):
    # train: a global permutation each epoch, the same on all ranks (same seed), each rank its part of it;
    # val: stored order, each rank exactly its share, the last batch padded (the loader trims it)
    order = dict(shuffle_after_epoch=True, shuffle_after_epoch_seed=shuffle_seed) if train else \
        dict(pad_last_batch=True, stick_to_shard=True)
    jpegs, cls = fn.readers.webdataset(
        paths=tars, index_paths=idxs, ext=["jpg", "cls"], missing_component_behavior="error", name="reader",
        shard_id=shard_id, num_shards=num_shards, **order)
    scale = [255.0 * s for s in std]
    labels = fn.pad(cls, fill_value=0, shape=[LABEL_BYTES], axes=[0])

    def decode(window: dict):
        """(images, what crop_mirror_normalize still has to cut): only the window decoded with roi_decode,
        else the whole image, the window left to the normalization."""
        if roi_decode:
            return fn.decoders.image_crop(jpegs, **window, **decoder), {}
        return fn.decoders.image(jpegs, **decoder), window

    if train and augment:
        pos = fn.random.uniform(values=OFFSETS, shape=[2])
        images, window = decode(dict(crop=(CROP, CROP), crop_pos_x=pos[0], crop_pos_y=pos[1]))
        # lighting folded into the per-image mean: (x/255 + eigvec @ (alpha * eigval) - mean) / std
        #   = (x - shift) / (255 std), shift = 255 mean - 255 eigvec diag(eigval) alpha, one coord_transform
        alpha = fn.random.normal(shape=[1, 3], stddev=ALPHA_STD)
        shift = fn.coord_transform(alpha, M=(-255.0 * eigvec * eigval[None, :]).reshape(-1).tolist(),
                                   T=[255.0 * v for v in mean])
        mirror = fn.random.coin_flip(probability=0.5)
        out = fn.crop_mirror_normalize(images, mean=fn.reshape(shift, shape=[3]), std=scale, **window,
                                       mirror=mirror, dtype=types.FLOAT, output_layout="HWC")
        if params:  # what each sample drew, and its JPEG, for pipeline/preview.py
            return out, labels, pos, mirror, alpha, jpegs
    elif ten_crop:
        images = fn.decoders.image(jpegs, **decoder)
        out = fn.stack(*[fn.crop_mirror_normalize(images, crop=(CROP, CROP), crop_pos_x=ax, crop_pos_y=ay,
                                                  mirror=m, mean=[255.0 * v for v in mean], std=scale,
                                                  dtype=types.FLOAT, output_layout="HWC")
                         for m in (0, 1) for ax, ay in TEN_CROP_ANCHORS])
    else:  # the centre window
        images, window = decode(dict(crop=(CROP, CROP)))
        out = fn.crop_mirror_normalize(images, mean=[255.0 * v for v in mean], std=scale, **window,
                                       dtype=types.FLOAT, output_layout="HWC")
    return out, labels


def parse_labels(raw: np.ndarray, where: str = "") -> np.ndarray:
    """[B, LABEL_BYTES] zero-padded ASCII decimal -> int64 [B] ("5" is 5, not 53)."""
    digits = raw.astype(np.int64) - ord("0")
    is_digit = (digits >= 0) & (digits <= 9)
    blank = np.isin(raw, (0, 9, 10, 13, 32))  # padding and whitespace
    if not (is_digit | blank).all() or not is_digit.any(axis=1).all():
        bad = raw[~(is_digit | blank).all(axis=1) | ~is_digit.any(axis=1)][0]
        raise DataError(f"{where}: a .cls member is not a decimal label: {bytes(bad).rstrip(bytes(1))!r}")
    value = np.zeros(raw.shape[0], np.int64)
    for c in range(raw.shape[1]):
        value = np.where(is_digit[:, c], value * 10 + digits[:, c], value)
    return value


class DaliLoader:
    """Iterable over one epoch of (images, labels) on `device`; see make_loader."""

    def __init__(self, spec: ShardSpec, batch_size: int, *, device: torch.device, rank: int, world_size: int,
                 seed: int, augment: bool, ten_crop: bool, workers: int, limit: int | None,
                 hw_decoder_load: float = HW_DECODER_LOAD, roi_decode: bool = ROI_DECODE, params: bool = False):
        self.spec, self.batch_size, self.device = spec, batch_size, device
        self.train = spec.split == "train"
        require_readable(spec)
        _, self.batches, self.last = epoch_plan(spec, batch_size, rank, world_size, limit)
        # val with a limit stops inside the reader's epoch: such a pipeline is rebuilt for every epoch
        self._rebuild = not self.train and limit is not None and limit < spec.samples
        self._kwargs = dict(
            batch_size=batch_size, num_threads=max(1, workers), seed=(seed * 7919 + rank) % 2**31,
            device_id=device.index if device.type == "cuda" else None, prefetch_queue_depth=2, exec_dynamic=True,
            enable_checkpointing=self.train,
            tars=[str(t) for t in spec.tars], idxs=[str(i) for i in spec.index_files],
            decoder=decoder_options(device.type == "cuda", spec.size, hw_decoder_load), roi_decode=roi_decode,
            train=self.train, augment=augment, ten_crop=ten_crop and not self.train, shard_id=rank,
            num_shards=world_size, shuffle_seed=seed % 2**31, mean=spec.mean.astype(np.float32),
            std=spec.std.astype(np.float32), eigval=spec.eigval.astype(np.float32),
            eigvec=spec.eigvec.astype(np.float32), params=params and self.train and augment)
        self._pipe, self._checkpoint = None, None
        self.params: dict | None = None  # with params=True: the last batch's draws (see _draws)
        self.epoch, self.batch = 0, 0

    def __len__(self) -> int:
        return self.batches

    def _build(self):
        kwargs = dict(self._kwargs)
        if self._checkpoint:
            kwargs["checkpoint"] = self._checkpoint
        try:
            pipe = shard_pipeline(**kwargs)
            pipe.build()
        except RuntimeError as e:
            raise self._build_error(e) from None
        epoch_size = pipe.reader_meta("reader")["epoch_size"]  # what the reader found in the index files
        if epoch_size != self.spec.samples:
            raise DataError(f"{self.spec.shards_dir}: the index files hold {epoch_size} {self.spec.split} samples, "
                            f"manifest.json says {self.spec.samples}; re-run tools/make_shards.py")
        return pipe

    def state_dict(self) -> dict:
        dali = self._pipe.checkpoint() if self._pipe is not None and self.train else self._checkpoint
        return {"epoch": self.epoch, "batch": self.batch, "dali": dali}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._checkpoint, self._pipe = state.get("dali"), None

    def __iter__(self):
        if self._pipe is None or self._rebuild:
            self._pipe = self._build()
        gpu = self.device.type == "cuda"
        while self.batch < self.batches:
            n = self.last if self.batch == self.batches - 1 else self.batch_size
            images, labels = self._next_batch(gpu, n)
            # HWC memory, NCHW shape: a channels_last tensor, the layout the convolutions want anyway
            images = images.permute(0, 3, 1, 2) if images.dim() == 4 else images.permute(0, 1, 4, 2, 3)
            self.batch += 1
            yield images[:n], labels[:n]
        self.epoch, self.batch = self.epoch + 1, 0

    def _next_batch(self, gpu: bool, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch as torch tensors on the device, without copying the images and without a host wait.

        GPU: DALI hands its outputs over on torch's current stream (`run(stream)`: stream-ordered, no host
        synchronisation) and torch takes the buffer through DLPack; the dynamic executor keeps it alive as
        long as the tensor lives. CPU: a numpy view of DALI's buffer, kept alive the same way."""
        try:
            if gpu:
                stream = torch.cuda.current_stream(self.device).cuda_stream
                images, raw, *draws = self._pipe.run(stream or 1)  # torch's default stream 0 = cudaStreamLegacy = 1
            else:
                images, raw, *draws = self._pipe.run()
        except RuntimeError as e:
            raise self._run_error(e) from None
        labels = torch.from_numpy(parse_labels(np.array(raw.as_tensor()), str(self.spec.shards_dir)))
        if draws:
            self.params = _draws(*draws, n=n, size=self.spec.size)
        if not gpu:
            return torch.from_numpy(np.asarray(images.as_tensor())), labels
        out = torch.from_dlpack(images.as_tensor())  # waits on DALI's stream in torch's stream if they differ
        return out, labels.pin_memory().to(self.device, non_blocking=True)

    def _build_error(self, e: RuntimeError) -> Exception:
        """The reader failing is the shards' fault (DataError); any other operator failing to build (the mixed
        decoder without nvImageCodec's or nvJPEG's libraries, no CUDA driver) is the set-up's (ConfigError)."""
        op = failed_operator(e)
        text = str(e).lower()
        if (op is None and not any(hint in text for hint in LIBRARY_HINTS)) or (op and ".readers." in op):
            return DataError(f"DALI could not open the shards of {self.spec.shards_dir}: {_error_line(e)}")
        fix = ("DALI's decoder libraries (nvImageCodec, nvJPEG) or the CUDA driver are missing or do not match this "
               "DALI build" if any(hint in text for hint in LIBRARY_HINTS) else "DALI's installation is at fault")
        return ConfigError(f"DALI could not build its pipeline on {self.device} (not a problem of the shards): "
                           f"{op or 'an operator'} failed: {_error_line(e)}; {fix}: install the DALI build for "
                           "this machine's CUDA (docs/gpu.md, GPU set-up), or use the reference loader "
                           "(--backend torch)")

    def _run_error(self, e: RuntimeError) -> DataError:
        """DALI names neither the shard nor the sample that failed: look for a sample that does not decode
        in this split's shards (those whose checksum changed first) and name it."""
        self._pipe = None  # a pipeline that raised is not reused
        bad = find_bad_sample(list(self.spec.tars), size=self.spec.size, classes=len(self.spec.classes))
        if bad is not None:
            return bad_sample_error(*bad)
        return DataError(f"DALI failed reading {self.spec.shards_dir} ({self.spec.split}): {_error_line(e)}; "
                         f"check the shards with: {VERIFY_CMD.format(dir=self.spec.shards_dir)}")


def require_readable(spec: ShardSpec) -> None:
    """DALI's readers open local files and s3:// objects (its own S3 client: AWS_ENDPOINT_URL and the usual
    AWS credentials; the index files come from the local cache that pipeline.dataset fills), not https://."""
    where = str(spec.shards_dir)
    if "://" in where and not where.startswith("s3://"):
        raise ConfigError(f"{where}: DALI reads local files and s3:// only, not {where.split('://')[0]}://; stage "
                          f"the shards to a local disk first: python tools/stage_shards.py --shards {where} --out "
                          "/local/shards (then --shards /local/shards), or use --backend torch, which reads them "
                          "by ranged GETs")


def _draws(pos, mirror, alpha, jpegs, *, n: int, size: int) -> dict:
    """A batch's augmentation draws: crop offsets [n, 2] (x, y, pixels), flips [n], alphas [n, 3], JPEGs."""
    xy = np.rint(np.array(pos.as_tensor())[:n] * (size - CROP)).astype(int)
    return {"xy": xy, "flip": np.array(mirror.as_tensor())[:n].astype(bool).reshape(n),
            "alpha": np.array(alpha.as_tensor())[:n].reshape(n, 3),
            "jpeg": [np.array(jpegs.at(i)).tobytes() for i in range(n)]}


LIBRARY_HINTS = ("nvimgcodec", "nvjpeg", "libcuda", "cuda driver", "dlopen", "shared object")
FAILED_OPERATOR = re.compile(r"Error in (\w+) operator `([^`]+)`")


def failed_operator(e: Exception) -> str | None:
    """`nvidia.dali.fn.decoders.image_crop (MIXED)` from DALI's "Error in MIXED operator `...`", else None."""
    m = FAILED_OPERATOR.search(str(e))
    return f"{m.group(2)} ({m.group(1)})" if m else None


def _error_line(e: Exception) -> str:
    """The line of a DALI error that says what went wrong: the one after 'encountered...', else the first."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for i, ln in enumerate(lines[:-1]):
        if ln.startswith("encountered"):
            return lines[i + 1]
    return lines[0] if lines else type(e).__name__
