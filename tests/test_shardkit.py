"""shardkit's small shared pieces: ordered_map, shared-memory sizing, the timing clock, the CLI error convention,
atomic writes, index and pca.json checks."""
from __future__ import annotations

import dataclasses
import json
import os
import time

import click
import pytest

from common import cli
from common.errors import ConfigError, DataError
from common.files import atomic_write, write_json
from shardkit.format import INDEX_VERSION, load_pca, read_index, read_index_count, read_member_table
from common.timing import Clock
from common.parallel import IN_HAND, SHM_SHARE, fit_shared_memory, ordered_map, shared_memory_free
from tests.conftest import flat_pca


def square(x: int) -> int:
    return x * x


def parent(_) -> int:
    return os.getppid()


def fail_on_7(x: int) -> int:
    if x == 7:
        raise ValueError(f"item {x} is bad")
    return x


@pytest.mark.parametrize("workers", [1, 3])
def test_ordered_map_keeps_input_order(workers):
    assert list(ordered_map(square, range(100), workers, chunksize=3, ahead=2)) == [x * x for x in range(100)]


def test_ordered_map_starts_its_workers_the_way_it_is_asked():
    """A fork server's workers are not this process's children: nothing of its CUDA context or DALI threads is
    copied into them (measure.loader_speed.decode_rate, tools/gpu_check.py); the default forks this process."""
    assert set(ordered_map(parent, range(4), 2, chunksize=1, start_method="forkserver")) != {os.getpid()}
    assert set(ordered_map(parent, range(4), 2, chunksize=1)) == {os.getpid()}


def test_ordered_map_reads_ahead_only_a_bounded_window():
    consumed = []

    def items():
        for i in range(10_000):
            consumed.append(i)
            yield i

    workers, chunksize, ahead = 2, 4, 3
    results = ordered_map(square, items(), workers, chunksize=chunksize, ahead=ahead)
    assert next(results) == 0
    window = (workers * ahead + 1) * chunksize  # the chunks in flight, plus the one submitted after the first
    assert len(consumed) <= window
    for k in range(1, 100):
        assert next(results) == k * k
        assert len(consumed) <= k + 1 + window  # it never runs further ahead of the reader than the window
    results.close()
    assert len(consumed) < 10_000


@pytest.mark.parametrize("workers", [1, 2])
def test_ordered_map_raises_the_workers_error_after_the_results_before_it(workers):
    got = []
    with pytest.raises(ValueError, match="item 7 is bad"):
        for r in ordered_map(fail_on_7, range(20), workers, chunksize=1, ahead=1):
            got.append(r)
    assert got == list(range(7))


def test_shared_memory_sizing_keeps_what_fits_and_cuts_prefetch_before_workers():
    mb = 2**20
    room = lambda batches: int((batches + IN_HAND) * mb / SHM_SHARE)  # noqa: E731  free bytes that hold them
    assert fit_shared_memory(16, 4, mb, room(64)) == (16, 4)          # all of it fits: as asked
    assert fit_shared_memory(16, 4, mb, room(40)) == (16, 2)          # fewer batches ahead first
    assert fit_shared_memory(16, 4, mb, room(16)) == (16, 1)
    assert fit_shared_memory(16, 4, mb, room(5)) == (5, 1)            # then fewer workers
    assert fit_shared_memory(16, 4, mb, room(70), processes=4) == (16, 1)  # 4 ranks share it: 18 batches each
    assert fit_shared_memory(16, 4, mb, room(0)) == (0, 0)            # not one batch: no worker processes
    # the case: 16 workers x 4 pinned batches of 38.5 MB in a container's 64 MB
    assert fit_shared_memory(16, 4, 256 * 3 * 224 * 224, 64 * mb) == (0, 0)
    assert fit_shared_memory(16, 4, mb, None) == (16, 4)              # unknown: as asked
    assert fit_shared_memory(0, 4, mb, 0) == (0, 4)                   # no workers asked: nothing to fit
    free = shared_memory_free()
    assert free is None or free >= 0


def slow_source(seconds: float, make=lambda: 1):
    while True:
        time.sleep(seconds)
        yield make()


def test_clock_counts_host_wait_apart_and_no_gpu_time_on_the_cpu():
    clock = Clock(5, warmup=2, device="cpu")
    source = slow_source(0.01)
    for _ in clock:
        clock.wait_for(source)
        clock.count(2)
    t = clock.result
    assert (t.steps, t.items) == (5, 10) and 0.05 <= t.wait <= t.seconds and t.wait_fraction > 0.5
    assert t.gpu_wait is None and t.gpu_wait_fraction is None


@pytest.mark.gpu
def test_clock_sees_the_device_time_of_the_input_that_host_time_misses():
    """A source whose batch is GPU work queued on the stream (as DALI's hand-over is): next() returns at once,
    the stream waits; the CUDA events around next() see it."""
    import torch
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")

    def queued():
        torch.cuda._sleep(50_000_000)  # some 25 ms of GPU time, queued without a host wait
        return torch.zeros(1, device="cuda")

    clock = Clock(5, warmup=1, device=torch.device("cuda"))
    source = slow_source(0, queued)
    for _ in clock:
        clock.wait_for(source)
    t = clock.result
    assert t.gpu_wait > 0.05 and t.gpu_wait > 10 * t.wait and t.gpu_wait_fraction > 0.5


@click.command()
@click.option("--raise", "kind", type=click.Choice(["data", "config", "bug", "none"]), default="none")
def command(kind):
    if kind == "data":
        raise DataError("shards/manifest.json: not found; run make_shards")
    if kind == "config":
        raise ConfigError("--backend tf: use dali or torch")
    if kind == "bug":
        raise KeyError("a bug")
    click.echo("done")


@pytest.mark.parametrize("kind,message", [("data", "error: shards/manifest.json: not found; run make_shards\n"),
                                          ("config", "error: --backend tf: use dali or torch\n")])
def test_cli_turns_user_errors_into_one_line_and_exit_2(capsys, kind, message):
    with pytest.raises(SystemExit) as e:
        cli.run(command, ["--raise", kind])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert err == message and out == ""


def test_cli_bad_options_show_usage_and_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.run(command, ["--raise", "nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Usage: ") and "Error: Invalid value for '--raise'" in err


def test_cli_keeps_the_traceback_of_bugs(capsys):
    with pytest.raises(KeyError, match="a bug"):
        cli.run(command, ["--raise", "bug"])
    cli.run(command, [])
    assert capsys.readouterr().out == "done\n"


def test_cli_prints_nothing_on_other_ranks(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    for args in (["--raise", "data"], ["--raise", "nope"]):
        with pytest.raises(SystemExit) as e:
            cli.run(command, args)
        assert e.value.code == 2
    assert capsys.readouterr() == ("", "")


def test_cli_default_reads_the_one_written_value():
    @dataclasses.dataclass(frozen=True)
    class Options:
        src: str
        size: int = 256
        splits: tuple = dataclasses.field(default_factory=lambda: ("train", "val"))
        val_labels: str | None = None

    def convert(shards, batch_size=128):
        pass

    assert cli.default(Options, "size") == 256 and cli.default(Options, "splits") == ("train", "val")
    assert cli.default(Options, "val_labels") is None and cli.default(convert, "batch_size") == 128
    with pytest.raises(KeyError, match="src has no default"):
        cli.default(Options, "src")
    with pytest.raises(KeyError, match="shards has no default"):
        cli.default(convert, "shards")


def test_atomic_write_keeps_the_old_file_when_the_block_fails(tmp_path):
    path = tmp_path / "data.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as f:
            f.write("half of the new")
            raise RuntimeError("crash while writing")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]  # no temporary left


def test_atomic_write_syncs_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    write_json(tmp_path / "x.json", {"a": [1, 2]})
    assert calls == ["fsync", "replace"]
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


INDEX_LINE = "jpg {o} 10 {k}.jpg cls {c} 1 {k}.cls"


def index_text(version: str, count: int, keys: list[str]) -> str:
    lines = [INDEX_LINE.format(o=512 + 2048 * i, c=1536 + 2048 * i, k=k) for i, k in enumerate(keys)]
    return "\n".join([f"{version} {count}", *lines]) + "\n"


def test_index_is_read_and_its_version_and_count_are_checked(tmp_path):
    idx = tmp_path / "train-000000.idx"
    idx.write_text(index_text(INDEX_VERSION, 2, ["a", "b"]))
    assert read_index(idx) == [("a", {"jpg": (512, 10), "cls": (1536, 1)}),
                               ("b", {"jpg": (2560, 10), "cls": (3584, 1)})]
    assert read_index_count(idx) == 2
    idx.write_text(index_text("v1.0", 2, ["a", "b"]))
    for read in (read_index, read_index_count):
        with pytest.raises(DataError, match=rf"train-000000.idx: not a DALI webdataset index \(version v1.0, "
                                            rf"expected {INDEX_VERSION}\)"):
            read(idx)
    idx.write_text(index_text(INDEX_VERSION, 3, ["a", "b"]))
    with pytest.raises(DataError, match=r"train-000000.idx: .*header says 3 samples, found 2"):
        read_index(idx)


def test_member_table_fast_path_agrees_with_read_index_and_falls_back(tmp_path):
    idx = tmp_path / "train-000000.idx"
    idx.write_text(index_text(INDEX_VERSION, 3, ["a", "b", "c"]))
    want = [[512 + 2048 * i, 10, 1536 + 2048 * i, 1] for i in range(3)]
    assert read_member_table(idx).tolist() == want
    # another member order (and a third member) goes through read_index: the same table
    idx.write_text(f"{INDEX_VERSION} 1\ncls 1536 1 a.cls json 3000 5 a.json jpg 512 10 a.jpg\n")
    assert read_member_table(idx).tolist() == [[512, 10, 1536, 1]]
    idx.write_text(f"{INDEX_VERSION} 2\njpg 512 10 a.jpg cls 1536 1 a.cls\njpg 2560 10 b.jpg\n")
    with pytest.raises(KeyError, match="b"):  # the caller names the shard
        read_member_table(idx)
    idx.write_text(f"{INDEX_VERSION} 1\njpg 512 ten a.jpg cls 1536 1 a.cls\n")
    with pytest.raises(DataError, match="train-000000.idx: not a DALI webdataset index"):
        read_member_table(idx)
    idx.write_text(index_text(INDEX_VERSION, 3, ["a", "b"]))
    with pytest.raises(DataError, match="header says 3 samples, found 2"):
        read_member_table(idx)


@pytest.mark.parametrize("field,value,shape", [("eigvec", [[1, 0], [0, 1], [0, 0]], r"\(3, 3\)"),
                                               ("mean", [0.5, 0.5], r"\(3,\)"),
                                               ("cov", [0.1, 0.2, 0.3], r"\(3, 3\)"),
                                               ("std", None, r"\(3,\)")])
def test_load_pca_checks_shapes(tmp_path, field, value, shape):
    stats = flat_pca()
    write_json(tmp_path / "pca.json", stats)
    assert load_pca(tmp_path / "pca.json") == json.loads(json.dumps(stats))
    if value is None:
        del stats[field]
    else:
        stats[field] = value
    write_json(tmp_path / "pca.json", stats)
    with pytest.raises(DataError, match=rf"pca.json: field '{field}' missing or not of shape {shape}; re-run "
                                        r"tools/compute_pca.py"):
        load_pca(tmp_path / "pca.json")
