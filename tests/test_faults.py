"""Faults injected for real, each in seconds on a few dozen small images: kill -9 of make_shards and of a
checkpoint save, damaged shards (flipped byte, garbage JPEG, truncated index, missing tar, doubled manifest
entry), a full disk, a killed rank, and source names that a tar or an index cannot carry as they are."""
from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.checkpoint import load_checkpoint, save_checkpoint
from model.metrics import RunLog, read_metrics
from pipeline import make_loader
from common import files
from shardkit import stats as compute_pca
from shardkit.demo_data import make_demo
from common.errors import DataError
from common.files import DiskFull
from shardkit.format import index_path, pack_sample, read_index
from shardkit.verify import verify
from tests.conftest import REPO, convert, invoke, iter_shard, kill_9_when, read_manifest

BACKENDS = ("dali", "torch")
SHARD = 8  # 30 train images -> 4 shards, 12 val -> 2
PY = sys.executable


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "src"
    make_demo(root, classes=3, train_per_class=10, val_per_class=4, seed=3, odd_files=False)
    return root


@pytest.fixture(scope="module")
def good(src, tmp_path_factory) -> Path:
    """An uninterrupted conversion (with pca.json): what every repaired or resumed folder must equal."""
    out = tmp_path_factory.mktemp("faults") / "good"
    convert(src, out, shard_size=SHARD)
    compute_pca.compute(compute_pca.Options(shards=str(out), workers=1))
    return out


def shard_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*-*.tar")) + sorted(out.glob("*-*.idx"))}


def partials(out: Path) -> list[Path]:
    return list(out.rglob("*.partial"))


def copy(good: Path, to: Path) -> Path:
    shutil.copytree(good, to)
    return to


def jpg_of(out: Path, tar: str, i: int) -> tuple[str, int, int]:
    key, members = read_index(index_path(out / tar))[i]
    return (key, *members["jpg"])


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


# ---------------------------------------------------------------- kill -9 of make_shards
def test_kill_9_mid_conversion_then_rerun_is_byte_identical(src, good, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([PY, "tools/make_shards.py", "--src", str(src), "--out", str(out), "--shard-size",
                             str(SHARD), "--workers", "1"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    kill_9_when(proc, out / ".make_shards" / "train-000001.tar.json", "make_shards")
    finished = {n: b for n, b in shard_files(out).items()}
    assert 2 <= len([n for n in finished if n.endswith(".tar")]) < 6
    for name, data in finished.items():  # whatever carries a final name is complete
        assert data == (good / name).read_bytes(), name
    convert(src, out, shard_size=SHARD)
    assert shard_files(out) == shard_files(good)
    assert read_manifest(out)["splits"] == read_manifest(good)["splits"]
    assert partials(out) == []  # the killed run's temporary files are gone too


# ---------------------------------------------------------------- a flipped byte, found and repaired
def test_flipped_byte_is_found_named_and_repaired(src, good, tmp_path):
    out = copy(good, tmp_path / "s")
    key, off, size = jpg_of(out, "train-000001.tar", 2)
    overwrite(out / "train-000001.tar", off + size // 2, bytes([(out / "train-000001.tar").read_bytes()[off + size // 2] ^ 0x55]))
    bad = [p.line() for p in verify(out, show_progress=False).problems]
    assert len(bad) == 1 and "train-000001.tar: SHA-256 differs" in bad[0]
    # a second sample whose JPEG start is broken: --decode names it
    key2, off2, _ = jpg_of(out, "val-000001.tar", 1)
    overwrite(out / "val-000001.tar", off2, b"\x00\x00")
    r = subprocess.run([PY, "tools/verify_shards.py", "--shards", str(out), "--decode", "--workers", "2"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"val-000001.tar: sample {key2}: .jpg does not decode" in r.stdout
    assert "train-000001.tar: SHA-256 differs" in r.stdout and "val-000001.tar: SHA-256 differs" in r.stdout
    assert "done: 6 shards" in r.stdout and "MB/s" in r.stdout and "2 bad" in r.stdout
    fix = r.stderr.strip().splitlines()[-1].split("repair with: ", 1)[1]
    assert fix == f"python tools/make_shards.py --src {src} --out {out} --shard-size {SHARD} --verify"
    convert(src, out, shard_size=SHARD)  # without --verify the sizes match: nothing is redone
    assert shard_files(out) != shard_files(good)
    r = subprocess.run(fix.replace("python", PY, 1).split(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "2 finished shard(s) no longer matched" in r.stdout
    assert shard_files(out) == shard_files(good)
    assert verify(out, decode=True, show_progress=False).problems == []


# ---------------------------------------------------------------- garbage JPEG: both loaders name it
@pytest.mark.parametrize("backend", BACKENDS)
def test_garbage_jpeg_names_shard_and_sample(good, tmp_path, backend):
    out = copy(good, tmp_path / "s")
    key, off, size = jpg_of(out, "train-000002.tar", 3)
    overwrite(out / "train-000002.tar", off, np.random.default_rng(0).bytes(size))
    loader = make_loader(out, "train", 5, backend=backend, device="cpu", workers=1)
    with pytest.raises(DataError) as e:
        for _ in loader:
            pass
    msg = str(e.value)
    assert f"train-000002.tar: sample {key}: .jpg does not decode" in msg
    assert "verify_shards.py" in msg and "--verify" in msg and "\n" not in msg


# ---------------------------------------------------------------- broken folders fail at loader start
@pytest.mark.parametrize("backend", BACKENDS)
def test_broken_folder_fails_at_loader_start(good, tmp_path, backend):
    def start(out):
        return make_loader(out, "train", 5, backend=backend, device="cpu", workers=1)

    out = copy(good, tmp_path / "idx")
    idx = out / "train-000001.idx"
    idx.write_bytes(idx.read_bytes()[: idx.stat().st_size // 2])
    with pytest.raises(DataError, match=r"train-000001\.idx: not a DALI webdataset index"):
        start(out)
    out = copy(good, tmp_path / "tar")
    (out / "train-000003.tar").unlink()
    with pytest.raises(DataError, match=r"train-000003\.tar: listed in .*manifest\.json but missing"):
        start(out)
    out = copy(good, tmp_path / "twice")
    manifest = read_manifest(out)
    entry = manifest["splits"]["train"]
    entry["shards"].append(entry["shards"][0])
    entry["shard_samples"].append(entry["shard_samples"][0])
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"manifest\.json: lists train-000000\.tar more than once"):
        start(out)
    assert any("lists train-000000.tar twice" in p.what for p in verify(out, show_progress=False).problems)


# ---------------------------------------------------------------- a full disk
class SmallDisk:
    """A folder of limited size: a tmpfs mount where the test may mount one (root, mount allowed); elsewhere
    a patched open() in the writers' modules whose files fail with ENOSPC beyond the budget."""

    def __init__(self, path: Path, size: int, monkeypatch):
        self.path, self.size = path, size
        path.mkdir()
        self.mounted = os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0
        if not self.mounted:
            self.used = 0
            for module in (files, sys.modules["model.metrics"]):
                monkeypatch.setattr(module, "open", self._open, raising=False)

    def _open(self, name, mode="r", *args, **kw):
        f = open(name, mode, *args, **kw)
        if Path(name).resolve().is_relative_to(self.path.resolve()) and ("w" in mode or "a" in mode):
            disk, write = self, f.write

            def limited(data):
                if disk.used + len(data) > disk.size:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.used += len(data)
                return write(data)

            f.write = limited
        return f

    def fill(self) -> None:
        """Leave about nothing free."""
        with pytest.raises(OSError), (open if self.mounted else self._open)(self.path / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()

    def free(self, size: int) -> None:
        (self.path / "filler").unlink(missing_ok=True)
        if self.mounted:
            subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)
        else:
            self.size, self.used = size, sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.path)], check=True)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    disks = []

    def make(size: int) -> SmallDisk:
        disks.append(SmallDisk(tmp_path / f"disk{len(disks)}", size, monkeypatch))
        return disks[-1]

    yield make
    for d in disks:
        d.close()


def test_full_disk_in_make_shards_then_rerun(src, good, small_disk):
    total = sum(len(b) for b in shard_files(good).values())
    disk = small_disk(total // 2)
    out = disk.path / "shards"
    with pytest.raises(DiskFull) as e:
        convert(src, out, shard_size=SHARD)
    msg = str(e.value)
    assert msg.startswith(f"{out}: disk full writing train shards (") and "free, about" in msg
    assert "still needed" in msg and "\n" not in msg
    assert partials(out) == []
    for name, data in shard_files(out).items():  # finished shards are whole
        assert data == (good / name).read_bytes(), name
    disk.free(4 * total)
    convert(src, out, shard_size=SHARD)
    assert shard_files(out) == shard_files(good)
    assert read_manifest(out)["splits"] == read_manifest(good)["splits"]


def test_full_disk_in_compute_pca_checkpoint_and_run_log(good, small_disk):
    disk = small_disk(2 << 20)
    before = {"model": {"w": torch.arange(10.0)}, "step": 1}
    save_checkpoint(disk.path / "checkpoint.pt", before)
    log = RunLog(disk.path, True, echo=lambda *a: None)
    log.write("train", step=1, loss=2.0)
    disk.fill()
    with pytest.raises(DiskFull, match=r"disk full writing checkpoint\.pt \(.* free, about 4\.2 MB still needed\)"):
        save_checkpoint(disk.path / "checkpoint.pt", {"model": {"w": torch.zeros(1 << 20)}, "step": 2})
    assert load_checkpoint(disk.path / "checkpoint.pt")["step"] == 1  # the previous one, intact
    with pytest.raises(DiskFull, match=r"disk full appending to metrics\.jsonl"):
        log.write("train", step=2, loss=1.5, note="x" * 100_000)
    assert [r["step"] for r in read_metrics(disk.path / "metrics.jsonl")] == [1]  # whole lines only
    with pytest.raises(DiskFull, match=re.escape(f"{disk.path}: disk full writing pca.json")):
        compute_pca.compute(compute_pca.Options(shards=str(good), workers=1, out=str(disk.path / "pca.json")))
    assert partials(disk.path) == [] and not (disk.path / "pca.json").exists()
    disk.free(16 << 20)
    save_checkpoint(disk.path / "checkpoint.pt", {"model": {"w": torch.zeros(1 << 20)}, "step": 2})
    assert load_checkpoint(disk.path / "checkpoint.pt")["step"] == 2


def test_cli_prints_one_line_for_a_full_disk(src, tmp_path):
    # the CLI path: `error: ...`, exit 2 (a patched write in the child, as no mount is needed for this)
    code = textwrap.dedent(f"""
        import errno, sys
        from common import cli
        from shardkit import format
        def full(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")
        format.ShardWriter._write = full
        sys.argv = ["make_shards", "--src", {str(src)!r}, "--out", {str(tmp_path / 'o')!r}, "--workers", "1"]
        from tools.make_shards import main
        cli.run(main)
    """)
    r = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {tmp_path / 'o'}: disk full writing train shards (") and "Traceback" not in r.stderr


# ---------------------------------------------------------------- kill -9 during a checkpoint save
def test_kill_9_during_checkpoint_save_keeps_the_previous_one(good, tmp_path):
    from model.train import main as train_main
    train = ["--shards", str(good), "--runs", str(tmp_path), "--name", "k", "--device", "cpu", "--backend", "torch",
             "--batch-size", "5", "--epochs", "1", "--workers", "0", "--log-every", "1", "--init", "kaiming",
             "--no-ten-crop-eval", "--limit-val", "5"]  # AlexNet on a CPU: few steps; in this process (cli.run)
    r = invoke(train_main, train + ["--max-steps", "1"])
    assert r.exit_code == 0, r.output[-2000:]
    ckpt = tmp_path / "k" / "last.pt"
    before = ckpt.read_bytes()
    # a save that stops after its first megabyte (a real, large state dict), then is killed with -9
    code = textwrap.dedent(f"""
        import time, torch
        from model import checkpoint
        write = checkpoint._Writes.write
        def slow(self, data):
            n = write(self, data)
            if self.f.tell() > 1 << 20:
                print("mid-write", flush=True)
                time.sleep(120)
            return n
        checkpoint._Writes.write = slow
        checkpoint.save_checkpoint({str(ckpt)!r}, {{"model": {{"w": torch.zeros(8 << 20)}}}})
    """)
    proc = subprocess.Popen([PY, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "mid-write"
    assert len(partials(tmp_path / "k")) == 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.read_bytes() == before and load_checkpoint(ckpt)["step"] == 1
    r = invoke(train_main, train + ["--resume", "--max-steps", "2"])
    assert r.exit_code == 0, r.output[-2000:]
    assert f"resumed {ckpt} at epoch 0, step 1" in r.output
    assert load_checkpoint(ckpt)["step"] == 2 and partials(tmp_path / "k") == []


# ---------------------------------------------------------------- a rank killed
def test_killed_rank_stops_the_other_with_a_clear_message(tmp_path):
    script = tmp_path / "two_ranks.py"
    script.write_text(textwrap.dedent("""
        import os, signal, time
        from model.distributed import distributed
        with distributed("cpu") as dist:
            dist.all_sum([1.0])
            if dist.rank == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            while True:
                dist.all_sum([1.0])
                time.sleep(0.01)
    """))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                   WORLD_SIZE="2", PYTHONPATH=str(REPO))
        procs.append(subprocess.Popen([PY, str(script)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    assert procs[1].wait(timeout=120) == -signal.SIGKILL
    t0 = time.time()
    _, err = procs[0].communicate(timeout=60)
    assert time.time() - t0 < 30 and procs[0].returncode != 0
    assert "RankLost: rank 0 of 2: another rank stopped" in err and "--resume" in err


# ---------------------------------------------------------------- names a tar or index cannot carry
def test_odd_source_names_are_cleaned_and_read_back_everywhere(tmp_path):
    names = {"ok 1.JPEG": "ok_1", "tab\there.JPEG": "tab_here", "ok_1.JPEG": None,  # collides with "ok 1"
             "dots.in.name.JPEG": "dots_in_name", "café ünï.JPEG": "café_ünï", "nb\u00a0sp.JPEG": "nb_sp"}
    rng = np.random.default_rng(0)
    for c in range(2):
        for i, name in enumerate(names):
            path = tmp_path / "src" / ("train", "val")[i % 2] / f"n0000000{c}" / f"{c}{name}"
            path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (300, 280, 3), dtype=np.uint8)).save(buf, "JPEG")
            path.write_bytes(buf.getvalue())
    out = tmp_path / "out"
    manifest = convert(tmp_path / "src", out, shard_size=2)
    compute_pca.compute(compute_pca.Options(shards=str(out), workers=1))
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    dup = [s for s in train["skipped"] if "duplicate key" in s["reason"]]
    assert len(dup) == 2 and all(s["path"].endswith("ok_1.JPEG") for s in dup)
    keys = {k for split in ("train", "val") for t in manifest["splits"][split]["shards"] for k, _ in iter_shard(out / t)}
    assert keys == {f"{c}{k}" for c in range(2) for k in names.values() if k}
    for split, entry in (("train", train), ("val", val)):
        n = entry["samples"]
        for t in entry["shards"]:  # our index reader and webdataset's tar reader agree on every key
            assert [k for k, _ in read_index(index_path(out / t))] == [k for k, _ in iter_shard(out / t)]
        for backend in BACKENDS:
            seen = sum(len(y) for _, y in make_loader(out, split, 1, backend=backend, device="cpu", workers=1))
            assert seen == n, (split, backend)
        assert dali_index_samples(out, entry["shards"]) == n
    assert verify(out, decode=True, show_progress=False).problems == []
    with pytest.raises(ValueError, match="whitespace"):
        pack_sample("a b", {"jpg": b"x"})


def dali_index_samples(out: Path, shards: list[str]) -> int:
    """Samples DALI's own webdataset reader finds through the index files, each read in full."""
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def read():
        jpg, cls = fn.readers.webdataset(paths=[str(out / s) for s in shards], ext=["jpg", "cls"], name="r",
                                         index_paths=[str(index_path(out / s)) for s in shards])
        return jpg, cls

    pipe = read()
    pipe.build()
    n = pipe.reader_meta("r")["epoch_size"]
    for _ in range(n):
        jpg, cls = pipe.run()
        assert np.array(jpg[0])[:2].tolist() == [0xFF, 0xD8] and bytes(np.array(cls[0])).isdigit()
    return n


def test_checksums_in_manifest_and_state_are_those_of_the_files(good):
    import hashlib

    manifest = read_manifest(good)
    for split, entry in manifest["splits"].items():
        assert len(entry["shard_sha256"]) == len(entry["shards"]) == len(entry["shard_index_sha256"])
        for name, size, sha, isize, isha in zip(entry["shards"], entry["shard_bytes"], entry["shard_sha256"],
                                                entry["shard_index_bytes"], entry["shard_index_sha256"]):
            tar, idx = (good / name).read_bytes(), index_path(good / name).read_bytes()
            assert (len(tar), hashlib.sha256(tar).hexdigest()) == (size, sha)
            assert (len(idx), hashlib.sha256(idx).hexdigest()) == (isize, isha)
            state = json.loads((good / ".make_shards" / f"{name}.json").read_text())
            assert (state["sha256"], state["index_sha256"]) == (sha, isha)
