"""The plain PyTorch reference loader: samples read by offset (DALI index) + Pillow decode in DataLoader workers.

Same maths and outputs as the DALI pipeline. uint8 crops travel through the workers (4x less than float);
lighting and normalization run on the whole batch, on the target device.

Every batch is a pure function of (seed, epoch, rank, batch index), whatever the number of workers:
- the split is a sequence of samples: for train, in epoch e the shard order is permuted with (seed, e) and the
  samples inside each shard with (seed, e, shard); val keeps stored order;
- rank r takes its contiguous share of the sequence (disjoint ranks that cover the split); batch j is the j-th
  run of B samples of that share (train drops the remainder, so every rank has the same batch count; the
  last val batch may be short);
- augmentation draws for batch j come from (seed, e, rank, j).
Worker w builds batches start+w, start+w+W, ..., which DataLoader's round-robin returns in order; a worker
reads only the samples of its own batches, by offset (`read_sample`, through the split's index that
pipeline.dataset read once), so the W workers together read each sample once per epoch, and resuming at
batch k reads nothing before k.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import warnings
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.augment import lighting_offset, normalize, ten_crop
from pipeline.spec import ALPHA_STD, CROP, MAX_OFFSET, ShardSpec, epoch_plan
from common.errors import DataError
from common.parallel import SHM, fit_shared_memory, shared_memory_free
from shardkit import storage
from shardkit.storage import open_ranged
from shardkit.verify import bad_sample_error


class Sample(NamedTuple):
    jpg: bytes
    label: int
    shard: int       # which tar of the split
    position: int    # which sample of that tar


def read_sample(f, spec: ShardSpec, rows: np.ndarray, shard: int, position: int) -> Sample:
    """Sample `position` of tar `shard`, read by offset from that tar, open as `f` (shardkit.storage.open_ranged),
    through `rows` (the split's SampleIndex as numpy). The one place where the reference loader reads shard
    bytes: one read from the first member's data to the end of the last's (a sample's members are adjacent in
    its tar), i.e. one ranged GET from object storage."""
    jpg_off, jpg_size, cls_off, cls_size = (int(v) for v in rows[int(spec.index.starts[shard]) + position])
    begin = min(jpg_off, cls_off)
    f.seek(begin)
    span = f.read(max(jpg_off + jpg_size, cls_off + cls_size) - begin)
    jpg = span[jpg_off - begin:jpg_off - begin + jpg_size]
    raw = span[cls_off - begin:cls_off - begin + cls_size]
    if len(jpg) != jpg_size:
        raise DataError(f"{spec.tars[shard]}: sample {spec.key(shard, position)}: truncated .jpg; re-make it with "
                        "tools/make_shards.py")
    try:
        label = int(raw)
    except ValueError:
        raise DataError(f"{spec.tars[shard]}: sample {spec.key(shard, position)}: .cls is {raw[:16]!r}, not a "
                        "decimal label") from None
    return Sample(jpg, label, shard, position)


def _decode(sample: Sample, spec: ShardSpec) -> np.ndarray:
    try:
        return np.asarray(Image.open(io.BytesIO(sample.jpg)).convert("RGB"))
    except Exception as e:  # Pillow raises many types for bad bytes; all mean the same here
        raise bad_sample_error(spec.tars[sample.shard], spec.key(sample.shard, sample.position),
                               f".jpg does not decode ({type(e).__name__}: {e})") from None


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _centre(img: np.ndarray) -> np.ndarray:
    """Central CROP x CROP window of an HWC array."""
    y, x = (img.shape[0] - CROP) // 2, (img.shape[1] - CROP) // 2
    return img[y:y + CROP, x:x + CROP]


def _centre_chw(images: torch.Tensor) -> torch.Tensor:
    y, x = (images.shape[-2] - CROP) // 2, (images.shape[-1] - CROP) // 2
    return images[..., y:y + CROP, x:x + CROP]


def _worker_context():
    """Workers come from a clean fork server (torch preloaded there), never forked from this process, which
    may run DALI or CUDA threads that a fork would copy mid-lock."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["pipeline.reference"])
    return ctx


class _Sequence:
    """Random access to the epoch's sample sequence. Only the samples asked for are read, by offset through
    the split's index, so the workers together read each sample once per epoch."""

    def __init__(self, spec: ShardSpec, train: bool, seed: int, epoch: int):
        self.spec, self.train, self.seed, self.epoch = spec, train, seed, epoch
        self.rows = spec.index.rows()
        self.order = np.arange(len(spec.tars))
        if train:
            self.order = np.random.default_rng([seed, epoch]).permutation(len(spec.tars))
        self.starts = np.cumsum([0] + [spec.counts[i] for i in self.order])
        self._perm = (None, None)    # (shard, its samples' order in this epoch) last used
        self._file = (None, None)    # (shard, open tar) last read

    def _positions(self, t: int) -> np.ndarray:
        if self._perm[0] != t:
            n = self.spec.counts[t]
            order = np.random.default_rng([self.seed, self.epoch, t]).permutation(n) if self.train else np.arange(n)
            self._perm = (t, order)
        return self._perm[1]

    def _open(self, t: int):
        if self._file[0] != t:
            if self._file[1] is not None:
                self._file[1].close()
            self._file = (t, open_ranged(self.spec.tars[t]))
        return self._file[1]

    def take(self, begin: int, end: int) -> list[Sample]:
        out = []
        k = int(np.searchsorted(self.starts, begin, side="right")) - 1
        while begin < end:
            lo = begin - int(self.starts[k])
            hi = min(end, int(self.starts[k + 1])) - int(self.starts[k])
            t = int(self.order[k])
            f = self._open(t)
            out += [read_sample(f, self.spec, self.rows, t, int(p)) for p in self._positions(t)[lo:hi]]
            begin += hi - lo
            k += 1
        return out

    def close(self) -> None:
        if self._file[1] is not None:
            self._file[1].close()
        self._file = (None, None)


def train_draws(seed: int, epoch: int, rank: int, batch: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The augmentation draws of one train batch: crop offsets [n, 2] (x, y), flips [n], lighting alphas [n, 3]."""
    rng = np.random.default_rng([seed, epoch, rank, batch])
    xy = rng.integers(0, MAX_OFFSET + 1, size=(n, 2))
    flip = rng.random(n) < 0.5
    alpha = rng.normal(0.0, ALPHA_STD, size=(n, 3)).astype(np.float32)
    return xy, flip, alpha


class _ShardStream(IterableDataset):
    """Batches start..batches-1 of one rank and epoch, split round-robin across DataLoader workers."""

    def __init__(self, spec: ShardSpec, batch_size: int, *, train: bool, augment: bool, rank: int, seed: int,
                 epoch: int, start_batch: int, batches: int, share: tuple[int, int]):
        self.spec, self.b, self.train, self.augment = spec, batch_size, train, augment
        self.rank, self.seed, self.epoch = rank, seed, epoch
        self.start_batch, self.batches, self.share = start_batch, batches, share
        self.storage_env = storage.environment()  # remote shards: the settings of this process, not the fork server's

    def __iter__(self):
        info = get_worker_info()
        w, nw = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:
            storage.use_environment(self.storage_env)
        seq = _Sequence(self.spec, self.train, self.seed, self.epoch)
        try:
            for j in range(self.start_batch + w, self.batches, nw):
                lo = self.share[0] + j * self.b
                batch = seq.take(lo, min(lo + self.b, self.share[1]))
                yield self._train_batch(batch, j) if self.train else self._val_batch(batch)
        finally:
            seq.close()

    def _train_batch(self, batch, j: int):
        n = len(batch)
        xy, flip, alpha = train_draws(self.seed, self.epoch, self.rank, j, n)
        alpha = torch.from_numpy(alpha)
        images = torch.empty((n, 3, CROP, CROP), dtype=torch.uint8)
        for i, sample in enumerate(batch):
            img = _decode(sample, self.spec)
            if self.augment:
                x, y = xy[i]
                img = img[y:y + CROP, x:x + CROP]
                if flip[i]:
                    img = img[:, ::-1]
            else:
                img = _centre(img)
            images[i] = _chw(img)
        labels = torch.tensor([s.label for s in batch], dtype=torch.int64)
        return images, labels, (alpha if self.augment else None)

    def _val_batch(self, batch):
        images = torch.stack([_chw(_decode(s, self.spec)) for s in batch])
        labels = torch.tensor([s.label for s in batch], dtype=torch.int64)
        return images, labels, None


def _worker_errors(loader):
    """Iterate `loader`, re-raising a worker's DataError with its own message (DataLoader prefixes the worker's
    whole traceback, which would bury the line that names the shard and the sample)."""
    try:
        yield from loader
    except DataError as e:
        lines = str(e).splitlines()
        tail = [ln.split("DataError: ", 1)[1] for ln in lines if "DataError: " in ln]
        raise DataError(tail[-1] if tail else str(e)) from None


PREFETCH = 4  # batches each worker makes ahead, when shared memory has room for them


class ReferenceLoader:
    """Iterable over one epoch of (images, labels) on `device`; see make_loader."""

    def __init__(self, spec: ShardSpec, batch_size: int, *, device: torch.device, rank: int, world_size: int,
                 seed: int, augment: bool, ten_crop: bool, workers: int, limit: int | None):
        self.spec, self.batch_size, self.device = spec, batch_size, device
        self.rank, self.seed = rank, seed
        self.train = spec.split == "train"
        self.augment, self.ten_crop, self.workers = augment and self.train, ten_crop, workers
        self.share, self.batches, _ = epoch_plan(spec, batch_size, rank, world_size, limit)
        self.epoch, self.batch = 0, 0
        f = dict(dtype=torch.float32, device=device)
        self.mean, self.std = torch.tensor(spec.mean, **f), torch.tensor(spec.std, **f)
        self.eigval, self.eigvec = torch.tensor(spec.eigval, **f), torch.tensor(spec.eigvec, **f)
        self.ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))  # loaders sharing /dev/shm (torchrun)
        self.worker_plan: dict | None = None  # what the last epoch used (fit_shared_memory)

    def __len__(self) -> int:
        return self.batches

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def __iter__(self):
        stream = _ShardStream(self.spec, self.batch_size, train=self.train, augment=self.augment, rank=self.rank,
                              seed=self.seed, epoch=self.epoch, start_batch=self.batch, batches=self.batches,
                              share=self.share)
        workers, prefetch = self._fit_shared_memory(max(0, min(self.workers, self.batches - self.batch)))
        loader = DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=self.device.type == "cuda",
                            prefetch_factor=prefetch if workers else None,
                            multiprocessing_context=_worker_context() if workers else None,
                            generator=torch.Generator())  # leave the global RNG (dropout's) untouched
        for images, labels, alpha in _worker_errors(loader):
            images = images.to(self.device, non_blocking=True)
            offset = None if alpha is None else lighting_offset(alpha.to(self.device), self.eigval, self.eigvec)
            if not self.train:
                images = ten_crop(images) if self.ten_crop else _centre_chw(images)
            self.batch += 1
            yield normalize(images, self.mean, self.std, offset), labels.to(self.device, non_blocking=True)
        self.epoch, self.batch = self.epoch + 1, 0

    def _fit_shared_memory(self, workers: int) -> tuple[int, int]:
        """Workers and prefetch depth whose uint8 batches fit in /dev/shm, where the workers hand them over (a
        container's 64 MB ends them with a Bus error); `worker_plan` says what was used, a smaller plan is said."""
        side = CROP if self.train else self.spec.size  # val batches travel whole, cut here
        batch_bytes = self.batch_size * 3 * side * side
        free = shared_memory_free()
        used = fit_shared_memory(workers, PREFETCH, batch_bytes, free, self.ranks_here)
        plan = {"workers": used[0], "prefetch_factor": used[1] if used[0] else 0, "asked": [workers, PREFETCH],
                "batch_mb": round(batch_bytes / 1e6, 1), "shm_free_mb": None if free is None else round(free / 1e6)}
        if used != (workers, PREFETCH) and plan != self.worker_plan:
            warnings.warn(f"reference loader: {SHM} has {plan['shm_free_mb']} MB free, too little for {workers} "
                          f"workers x {PREFETCH} batches of {plan['batch_mb']} MB; using {used[0]} x {used[1]}"
                          + (" (batches made in this process, slowly)" if not used[0] else "")
                          + "; for full speed give it more (docker run --shm-size=4g)", RuntimeWarning, stacklevel=3)
        self.worker_plan = plan
        return used
