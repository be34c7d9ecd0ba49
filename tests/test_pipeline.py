"""pipeline.make_loader, both backends on the CPU: crops, flips, lighting, labels, sharding, exact val, errors."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from pipeline import Loader, make_loader
from pipeline.augment import lighting_offset, normalize, ten_crop
from pipeline.spec import CROP, MAX_OFFSET
from pipeline.augment import denormalize
from tests.conftest import flat_pca, write_shards
from common.errors import ConfigError, DataError

BACKENDS = ["dali", "torch"]


def pixels(x, pca: dict) -> np.ndarray:
    """A batch back on the 0..255 pixel scale, with a pca.json's mean and std (pipeline.augment.denormalize)."""
    return denormalize(x, pca["mean"], pca["std"])


def position_image(i: int) -> np.ndarray:
    """Red = x, green = y (so a crop's offset and a flip can be read back), blue = a sample id."""
    y, x = np.mgrid[0:256, 0:256]
    return np.stack([x, y, np.full_like(x, (i * 37) % 256)], -1)


def flat_image(rgb) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.float64), (256, 256, 3)).copy()


def loader(shards, split, bs, backend, **kw):
    kw.setdefault("workers", 2)
    return make_loader(shards, split, bs, backend=backend, device="cpu", **kw)


def collect(ldr):
    xs, ys = [], []
    for x, y in ldr:
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


@pytest.fixture(scope="module")
def position_shards(tmp_path_factory):
    samples = [(position_image(i), i % 3) for i in range(96)]
    return write_shards(tmp_path_factory.mktemp("pos"), {"train": samples, "val": samples[:10]}, classes=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_crops_are_224_windows_with_offsets_0_to_32_and_flips_half(position_shards, backend):
    pca = flat_pca()
    x, _ = collect(loader(position_shards, "train", 16, backend))
    assert x.shape == (96, 3, CROP, CROP) and x.dtype == torch.float32
    px = pixels(x, pca)
    offsets, flips = [], []
    cols = np.arange(CROP)
    for img in px:
        red, green = img[0].mean(0), img[1].mean(1)  # red along x, green along y
        slope = np.polyfit(cols, red, 1)[0]
        assert abs(abs(slope) - 1) < 0.03  # a 224 window at scale 1: no resize, no stretch
        flipped = slope < 0
        ox = np.mean(red[::-1] - cols) if flipped else np.mean(red - cols)
        oy = np.mean(green - cols)
        assert abs(ox - round(ox)) < 0.3 and abs(oy - round(oy)) < 0.3
        offsets += [round(ox), round(oy)]
        flips.append(flipped)
    offsets = np.array(offsets)
    assert offsets.min() >= 0 and offsets.max() <= MAX_OFFSET
    assert len(set(offsets)) >= 20  # uniform over 33 values: most of them show up in 192 draws
    assert 0.3 < np.mean(flips) < 0.7  # p = 0.5, 96 draws


@pytest.mark.parametrize("backend", BACKENDS)
def test_val_is_the_centre_window(position_shards, backend):
    x, _ = collect(loader(position_shards, "val", 4, backend))
    px = pixels(x, flat_pca())
    cols = np.arange(CROP)
    for img in px:
        assert np.abs(img[0].mean(0) - (cols + 16)).mean() < 1.0
        assert np.abs(img[1].mean(1) - (cols + 16)).mean() < 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_ten_crop(position_shards, backend):
    x, y = collect(loader(position_shards, "val", 4, backend, ten_crop=True))
    assert x.shape == (10, 10, 3, CROP, CROP) and y.shape == (10,)
    px = pixels(x, flat_pca())
    expected = [(0, 0), (32, 0), (0, 32), (32, 32), (16, 16)]
    for k in range(10):
        ox, oy = expected[k % 5]
        red = px[0, k, 0].mean(0)
        red = red[::-1] if k >= 5 else red
        assert np.abs(red - (np.arange(CROP) + ox)).mean() < 1.0
        assert np.abs(px[0, k, 1].mean(1) - (np.arange(CROP) + oy)).mean() < 1.0


LIGHT = flat_pca(eigval=(0.2, 0.02, 0.0))  # rank 2: the offsets must stay in the span of eigvec[:, :2]


COLOURS = np.random.default_rng(0).integers(60, 196, (12, 3))  # one flat colour per label


@pytest.fixture(scope="module")
def flat_shards(tmp_path_factory):
    samples = [(flat_image(COLOURS[i % 12]), i % 12) for i in range(192)]
    return write_shards(tmp_path_factory.mktemp("flat"), {"train": samples, "val": samples[:8]}, classes=12,
                        shard_size=32, pca=LIGHT)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lighting_offset_is_constant_in_span_with_expected_spread(flat_shards, backend):
    x, y = collect(loader(flat_shards, "train", 32, backend))
    px = pixels(x, LIGHT) / 255.0  # [N, 3, H, W] on [0, 1]
    per_image = px.reshape(len(px), 3, -1)
    assert per_image.std(-1).max() < 0.01  # one offset per image: the picture stays flat
    vec = np.asarray(LIGHT["eigvec"])
    alphas = []
    for img, label in zip(per_image.mean(-1), y.numpy()):
        off = img - COLOURS[label] / 255.0
        assert abs(np.dot(off, vec[:, 2])) < 0.01  # no component along the zero-eigenvalue direction
        alphas.append((vec.T @ off)[:2] / np.asarray(LIGHT["eigval"][:2]))
    alphas = np.array(alphas)
    assert 0.075 < alphas[:, 0].std() < 0.125  # alpha ~ N(0, 0.1): 192 draws
    assert abs(alphas[:, 0].mean()) < 0.03


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels_belong_to_their_images_and_parse_multi_digit(tmp_path, backend):
    # 12 classes so that labels 10 and 11 are two ASCII bytes; colour encodes the label
    samples = [(flat_image([20 * (i % 12), 250 - 20 * (i % 12), 128]), i % 12) for i in range(60)]
    shards = write_shards(tmp_path / "s", {"train": samples, "val": samples[:25]}, classes=12, shard_size=7)
    for split in ("train", "val"):
        x, y = collect(loader(shards, split, 8, backend))
        assert y.dtype == torch.int64
        assert set(y.tolist()) == set(range(12))
        red = pixels(x, flat_pca())[:, 0].mean((1, 2))
        np.testing.assert_allclose(red, 20 * y.numpy(), atol=3)


def test_parse_labels_refuses_a_bad_cls():
    from pipeline.dali import LABEL_BYTES, parse_labels

    def raw(*members: bytes) -> np.ndarray:  # the graph's output: each .cls zero-padded to LABEL_BYTES
        return np.array([list(m.ljust(LABEL_BYTES, b"\0")) for m in members], np.uint8)

    assert parse_labels(raw(b"5", b"123", b" 42\n")).tolist() == [5, 123, 42]
    with pytest.raises(DataError, match=r"^shards/x: a \.cls member is not a decimal label: b'7a'$"):
        parse_labels(raw(b"1", b"7a"), "shards/x")
    with pytest.raises(DataError, match=r"^shards/x: a \.cls member is not a decimal label: b''$"):
        parse_labels(raw(b"3", b""), "shards/x")  # an empty .cls


@pytest.fixture(scope="module")
def id_shards(tmp_path_factory):
    """Each sample's id in its colour: red = 16 * (id % 16), green = 16 * (id // 16)."""
    samples = [(flat_image([16 * (i % 16) + 8, 16 * (i // 16) + 8, 100]), i % 5) for i in range(203)]
    return write_shards(tmp_path_factory.mktemp("ids"), {"train": samples, "val": samples[:103]}, classes=5,
                        shard_size=25)


def ids(x) -> list[int]:
    px = pixels(x, flat_pca()).mean((-1, -2))
    return [int(r // 16) + 16 * int(g // 16) for r, g in px[:, :2]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_ranks_disjoint_and_cover(id_shards, backend):
    seen = []
    for rank in (0, 1):
        ldr = loader(id_shards, "train", 10, backend, rank=rank, world_size=2, augment=False)
        assert len(ldr) == 203 // 20
        x, _ = collect(ldr)
        assert len(x) == len(ldr) * 10
        seen.append(set(ids(x)))
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 200  # one epoch: all but the dropped remainder (< batch x ranks)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("world,bs", [(1, 10), (2, 10), (3, 7)])
def test_val_epoch_is_exact(id_shards, backend, world, bs):
    got = []
    for rank in range(world):
        ldr = loader(id_shards, "val", bs, backend, rank=rank, world_size=world)
        for _ in range(2):  # two epochs, the same images each time
            x, _ = collect(ldr)
            got.append(ids(x))
    per_epoch = [[i for r in range(world) for i in got[r * 2 + e]] for e in range(2)]
    for epoch_ids in per_epoch:
        assert sorted(epoch_ids) == list(range(103))


@pytest.mark.parametrize("backend", BACKENDS)
def test_val_limit(id_shards, backend):
    ids_all = []
    for rank in range(2):
        x, _ = collect(loader(id_shards, "val", 8, backend, rank=rank, world_size=2, limit=31))
        ids_all += ids(x)
    assert len(ids_all) == len(set(ids_all)) == 31


@pytest.mark.parametrize("backend", BACKENDS)
def test_val_limit_restarts_every_epoch(id_shards, backend):
    """A val limit stops inside the reader's epoch: DALI rebuilds its pipeline for each epoch then (the
    rebuild path), so each epoch is the first `limit` samples again, in order, not the ones after them."""
    ldr = loader(id_shards, "val", 8, backend, limit=20)
    assert [ids(collect(ldr)[0]) for _ in range(3)] == [list(range(20))] * 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_limit_below_one_batch_is_a_clear_error(position_shards, backend):
    with pytest.raises(DataError, match=r"5 train samples are fewer than one global batch \(8 x 1 ranks\)"):
        loader(position_shards, "train", 8, backend, limit=5)
    with pytest.raises(DataError, match=r"12 train samples are fewer than one global batch \(8 x 2 ranks\)"):
        loader(position_shards, "train", 8, backend, limit=12, rank=1, world_size=2)
    assert len(loader(position_shards, "train", 8, backend, limit=8)) == 1  # one whole batch is enough


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_backends_follow_the_loader_contract(position_shards, backend):
    train = loader(position_shards, "train", 16, backend, seed=2)  # 96 samples: 6 batches
    assert isinstance(train, Loader) and len(train) == 6 and (train.epoch, train.batch) == (0, 0)
    batches = iter(train)
    next(batches), next(batches)
    assert (train.epoch, train.batch) == (0, 2)
    state = train.state_dict()
    assert (state["epoch"], state["batch"]) == (0, 2)
    rest = list(batches)
    assert len(rest) == 4 and (train.epoch, train.batch) == (1, 0)  # one iteration = the rest of one epoch
    again = loader(position_shards, "train", 16, backend, seed=2)
    again.load_state_dict(state)
    assert (again.epoch, again.batch) == (0, 2)
    resumed = list(again)
    assert len(resumed) == 4 and (again.epoch, again.batch) == (1, 0)
    for (x1, y1), (x2, y2) in zip(rest, resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    val = loader(position_shards, "val", 4, backend)  # 10 samples: 3 batches, the last one short
    assert isinstance(val, Loader) and len(val) == 3
    assert [len(y) for _, y in val] == [4, 4, 2] and (val.epoch, val.batch) == (1, 0)
    assert not isinstance([1, 2], Loader)  # len and iter alone are not the contract


def test_backends_agree(demo_shards):
    """Same val outputs (deterministic maths), same train statistics (random maths)."""
    d = collect(make_loader(demo_shards, "val", 8, backend="dali", device="cpu"))
    t = collect(make_loader(demo_shards, "val", 8, backend="torch", device="cpu", workers=1))
    assert torch.equal(d[1], t[1])
    assert (d[0] - t[0]).abs().mean() < 0.02  # decoders may differ by a level here and there
    stats = []
    for backend in BACKENDS:
        x, _ = collect(make_loader(demo_shards, "train", 8, backend=backend, device="cpu", seed=1))
        stats.append((x.mean((0, 2, 3)), x.std((0, 2, 3))))
    assert (stats[0][0] - stats[1][0]).abs().max() < 0.15
    assert (stats[0][1] - stats[1][1]).abs().max() < 0.1


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_mid_epoch_gives_the_same_batches(position_shards, backend):
    a = loader(position_shards, "train", 8, backend, seed=3)
    batches = []
    for k, (x, y) in enumerate(a):
        batches.append((x, y))
        if k == 4:
            state = a.state_dict()
    rest = [b for b in a]  # the next epoch, for continuity after a full one
    b = loader(position_shards, "train", 8, backend, seed=3)
    b.load_state_dict(state)
    resumed = list(b)
    assert len(resumed) == len(batches) - 5
    for (x1, y1), (x2, y2) in zip(batches[5:], resumed):
        assert torch.equal(y1, y2) and torch.equal(x1, x2)
    assert len(rest) == len(a)


def test_normalize_maths():
    img = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    alpha = torch.tensor([[0.1, -0.2, 0.05], [0.0, 0.3, -0.1]])
    eigval, eigvec = torch.tensor([0.2, 0.02, 0.005]), torch.linalg.qr(torch.randn(3, 3))[0]
    off = lighting_offset(alpha, eigval, eigvec)
    expected = (img.float() / 255 + off[:, :, None, None] - mean[:, None, None]) / std[:, None, None]
    torch.testing.assert_close(normalize(img, mean, std, off), expected)
    torch.testing.assert_close(off[0], eigvec @ (alpha[0] * eigval))
    crops = ten_crop(img.expand(2, 3, 4, 4).repeat(1, 1, 64, 64)[:, :, :256, :256])
    assert crops.shape == (2, 10, 3, 224, 224)


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors_name_the_file(position_shards, tmp_path, backend):
    import shutil
    s = tmp_path / "s"
    shutil.copytree(position_shards, s)
    (s / "pca.json").unlink()
    with pytest.raises(DataError, match=r"pca.json: not found.*compute_pca"):
        loader(s, "train", 8, backend)
    with pytest.raises(DataError, match=r"manifest.json: not found.*make_shards"):
        loader(tmp_path / "nothing", "train", 8, backend)
    shutil.copy(position_shards / "pca.json", s / "pca.json")
    tar = s / "train-000002.tar"
    tar.write_bytes(tar.read_bytes()[:5000])  # truncated shard
    with pytest.raises(DataError, match=r"train-000002.tar: truncated"):
        loader(s, "train", 8, backend)
    with pytest.raises(ValueError, match="unknown backend"):
        make_loader(position_shards, "train", 8, backend="tf", device="cpu")


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_jpeg_inside_a_shard_fails_clearly(tmp_path, backend):
    samples = [(position_image(i), 0) for i in range(16)]
    s = write_shards(tmp_path / "s", {"train": samples}, classes=1, shard_size=16)
    idx = (s / "train-000000.idx").read_text().splitlines()[3].split()
    data = bytearray((s / "train-000000.tar").read_bytes())
    data[int(idx[1]) + 200:int(idx[1]) + int(idx[2])] = b"\x00" * (int(idx[2]) - 200)  # garbage JPEG body
    (s / "train-000000.tar").write_bytes(bytes(data))
    # both name the shard and the sample (DALI's loader finds it by decoding on the CPU after DALI fails)
    with pytest.raises(DataError, match=r"train-000000\.tar: sample train_000002: \.jpg does not decode"):
        collect(make_loader(s, "train", 4, backend=backend, device="cpu", workers=1))


def test_cuda_device_without_cuda_is_a_clear_error(position_shards):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="no CUDA"):
        make_loader(position_shards, "train", 8, device="cuda")


def decoder_device(ldr) -> str:
    """The device of the JPEG decoder in a DaliLoader's built pipeline, read from its serialized graph (the
    decoder op's name, then its `device` string argument)."""
    graph = ldr._pipe.serialize()
    found = re.search(rb"decoders__\w+.*?\x06device\x12\x06string\*.(\w+)", graph, re.S)
    assert found, "no decoder in the DALI graph"
    return found.group(1).decode()


def test_cpu_pipeline_decodes_on_the_cpu(position_shards):
    ldr = loader(position_shards, "train", 8, "dali")
    next(iter(ldr))
    assert decoder_device(ldr) == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_pipeline_uses_mixed_decoder(demo_shards):
    ldr = make_loader(demo_shards, "train", 16, backend="dali", device="cuda")
    x, y = next(iter(ldr))
    assert x.is_cuda and y.is_cuda and x.shape == (16, 3, 224, 224)
    assert decoder_device(ldr) == "mixed"  # nvJPEG (and the hardware decoder where there is one)
    cpu = collect(make_loader(demo_shards, "val", 8, backend="dali", device="cpu"))
    gpu = collect(make_loader(demo_shards, "val", 8, backend="dali", device="cuda"))
    assert torch.equal(cpu[1], gpu[1].cpu()) and (cpu[0] - gpu[0].cpu()).abs().mean() < 0.05


@pytest.mark.parametrize("split", ["train", "val"])
def test_reference_workers_read_each_sample_once_per_epoch(position_shards, monkeypatch, split):
    """W DataLoader workers together read every sample of the epoch once (by offset), not each shard W times."""
    from types import SimpleNamespace

    from pipeline import reference
    reads = []
    real = reference.read_sample
    monkeypatch.setattr(reference, "read_sample", lambda f, spec, rows, shard, position:
                        reads.append((shard, position)) or real(f, spec, rows, shard, position))
    ldr = loader(position_shards, split, 8, "torch", workers=0)
    stream = reference._ShardStream(ldr.spec, 8, train=ldr.train, augment=ldr.augment, rank=0, seed=0, epoch=0,
                                    start_batch=0, batches=len(ldr), share=ldr.share)
    batches = []
    for w in range(3):  # what three DataLoader workers do, one after the other in this process
        monkeypatch.setattr(reference, "get_worker_info", lambda: SimpleNamespace(id=w, num_workers=3))
        batches += list(stream)
    used = len(ldr) * 8 if split == "train" else ldr.share[1] - ldr.share[0]
    assert sum(len(b[1]) for b in batches) == used
    assert len(reads) == len(set(reads)) == used


def test_reference_output_is_the_same_for_any_worker_count(position_shards):
    a = collect(loader(position_shards, "train", 8, "torch", workers=0, seed=2))
    b = collect(loader(position_shards, "train", 8, "torch", workers=2, seed=2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_reference_loader_in_a_small_dev_shm_prefetches_less_and_says_so(position_shards, monkeypatch):
    """A container's small /dev/shm (injected: room for 1 train batch of 8) gives fewer workers and batches ahead,
    one warning, the same batches; with room for none, no worker processes at all, instead of a Bus error."""
    from common.parallel import IN_HAND, SHM_SHARE
    from pipeline import reference
    batch = 8 * 3 * CROP * CROP
    expected = collect(loader(position_shards, "train", 8, "torch", workers=0, seed=2))
    for batches, plan in ((1, (1, 1)), (0, (0, 0))):
        monkeypatch.setattr(reference, "shared_memory_free", lambda: int((batches + IN_HAND) * batch / SHM_SHARE))
        ldr = loader(position_shards, "train", 8, "torch", workers=2, seed=2)
        with pytest.warns(RuntimeWarning, match=r"MB free, too little for 2 workers x 4 batches"):
            got = collect(ldr)
        assert (ldr.worker_plan["workers"], ldr.worker_plan["prefetch_factor"]) == plan, ldr.worker_plan
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def dali_build_error(kind: str, op: str, cause: str) -> str:
    """A pipeline build failure as DALI 2.4 words it (its operator, the line after `encountered:`)."""
    return (f"Critical error when building pipeline:\nError in {kind} operator `nvidia.dali.fn.{op}`,\n"
            "which was used in the pipeline definition with the following traceback:\n\n"
            f'  File "pipeline/dali.py", line 60, in shard_pipeline\n\nencountered:\n\n{cause}\n'
            "C++ context: [dali/operators/...] \nCurrent pipeline object is no longer valid.")


@pytest.mark.parametrize("kind, op, cause, error, says", [
    ("MIXED", "decoders.image_crop", "dlopen libnvimgcodec.so failed!. Please install nvimagecodec.", ConfigError,
     r"on cpu \(not a problem of the shards\): nvidia.dali.fn.decoders.image_crop \(MIXED\) failed: dlopen "
     r"libnvimgcodec.so failed.*nvImageCodec, nvJPEG.*docs/gpu.md.*--backend torch"),
    ("MIXED", "decoders.image_crop", "Failed to check the version of nvimgcodec.", ConfigError, r"nvImageCodec"),
    ("CPU", "readers.webdataset", 'Assert on "..." failed: Malformed index file at "train-000000.idx" line 1',
     DataError, r"DALI could not open the shards of .*: Assert on .* Malformed index file"),
])
def test_a_dali_build_failure_names_its_real_cause(position_shards, monkeypatch, kind, op, cause, error, says):
    """The mixed decoder failing to start (libraries missing) is the set-up, named as such, not the shards;
    the reader failing is the shards'. DALI's own words are injected (no GPU needed)."""
    from pipeline import dali

    class Broken:
        def build(self):
            raise RuntimeError(dali_build_error(kind, op, cause))

    monkeypatch.setattr(dali, "shard_pipeline", lambda **kw: Broken())
    with pytest.raises(error, match=says) as e:
        next(iter(loader(position_shards, "train", 8, "dali")))
    assert type(e.value) is error and ("could not open the shards" in str(e.value)) == (error is DataError)


def test_gpu_decoder_options_fit_256px_shards():
    from pipeline.dali import decoder_options
    gpu = decoder_options(True, 256, 0.5)
    assert gpu["device"] == "mixed" and gpu["jpeg_fancy_upsampling"] is True and gpu["hw_decoder_load"] == 0.5
    # per decoder thread: at least one decoded image (3 x 256^2 bytes), at most 1 MiB (was 211 MB / 141 MB)
    for pad in ("device_memory_padding", "host_memory_padding"):
        assert 3 * 256 * 256 <= gpu[pad] <= 2**20
    assert gpu["preallocate_width_hint"] == gpu["preallocate_height_hint"] == 256
    assert decoder_options(False, 256) == {"device": "cpu", "output_type": gpu["output_type"]}


def dali_loader(shards, split, bs, device="cpu", **kw):
    from pipeline.dali import DaliLoader
    from pipeline import open_dataset
    opts = dict(rank=0, world_size=1, seed=0, augment=split == "train", ten_crop=False, workers=2, limit=None)
    opts.update(kw)
    return DaliLoader(open_dataset(shards).split(split), bs, device=torch.device(device), **opts)


@pytest.mark.parametrize("split", ["train", "val"])
def test_dali_full_decode_then_crop_equals_window_decode(demo_shards, split):
    roi = collect(dali_loader(demo_shards, split, 8, seed=4))
    full = collect(dali_loader(demo_shards, split, 8, seed=4, roi_decode=False))
    assert torch.equal(roi[1], full[1])
    assert (roi[0] - full[0]).abs().max() < 1e-5  # the same draws, the same window, the same pixels


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("split", ["train", "val"])
def test_gpu_batches_match_cpu_batches(demo_shards, split):
    """Same seed: the same crops, flips, lighting and labels; pixels within 1/255 on average (4:2:0 shards)."""
    cpu = collect(dali_loader(demo_shards, split, 8, seed=4))
    gpu = collect(dali_loader(demo_shards, split, 8, "cuda", seed=4))
    assert torch.equal(cpu[1], gpu[1].cpu())
    std = torch.tensor(json.loads((demo_shards / "pca.json").read_text())["std"]).view(1, 3, 1, 1)  # to [0, 1]
    assert ((cpu[0] - gpu[0].cpu()).abs() * std).mean() <= 1 / 255
    x, y = next(iter(dali_loader(demo_shards, split, 8, "cuda")))
    assert x.is_cuda and y.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
