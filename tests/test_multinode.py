"""Multi-node training on one machine: two torchrun agents as two nodes (--nnodes 2 --nproc_per_node 1, c10d
rendezvous on 127.0.0.1, gloo, --device cpu), as a cluster runs them. The losses and the weights equal a
one-node two-process run's with the same seed, the weights are bit-identical on both ranks, only global rank 0
writes the run folder, --resume continues across the nodes, and a node lost (its agent and its worker killed)
ends the other within seconds with one line that says so."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model.metrics import read_metrics
from tests.conftest import REPO, small_shards
from tests.test_distributed import free_port

PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# 16 steps of global batch 4 per epoch (64 samples), runs of 3 steps (the epoch unfinished: one checkpoint),
# 8 val images: AlexNet takes about a second a step on one core even so
TRAIN = ["-m", "model.train", "--device", "cpu", "--backend", "dali", "--batch-size", "4", "--limit-train", "64",
         "--limit-val", "8", "--log-every", "1", "--workers", "1", "--init", "kaiming", "--seed", "5",
         "--no-ten-crop-eval", "--name", "mn"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return small_shards(tmp_path_factory.mktemp("multinode"), classes=3, train_per_class=24, val_per_class=4, shard_size=16, seed=4)


def node(port: int, *args) -> subprocess.Popen:
    """One node's torchrun agent (its own process group, so that the whole node can be killed)."""
    cmd = [PY, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"test-{port}", "--max-restarts", "0", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def two_nodes(shards: Path, runs: tuple[Path, Path], *args) -> list[tuple[int, str]]:
    port = free_port()
    first = node(port, *TRAIN, "--shards", str(shards), "--runs", str(runs[0]), *args)
    time.sleep(1.0)  # the first agent holds the rendezvous store, as the host named in --rdzv-endpoint would
    second = node(port, *TRAIN, "--shards", str(shards), "--runs", str(runs[1]), *args)
    out = []
    for proc in (first, second):
        _, err = proc.communicate(timeout=600)
        out.append((proc.returncode, err))
    return out


def losses(run: Path) -> list[tuple]:
    return [(r["kind"], r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl") if r["kind"] != "synthetic"]


@pytest.fixture(scope="module")
def one_node(shards, tmp_path_factory) -> Path:
    """The reference: one node, two processes (DDP over gloo), 3 steps; first the model alone, as the run wraps it
    (--measure-synthetic draws from a forked RNG: the two-node run below, without it, must still match bit for bit)."""
    runs = tmp_path_factory.mktemp("one_node")
    r = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *TRAIN, "--shards",
                        str(shards), "--runs", str(runs), "--max-steps", "3", "--measure-synthetic", "1"], cwd=REPO,
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return runs / "mn"


def test_two_processes_on_one_node_keep_identical_weights(one_node):
    """... see every val image once between them, and time the model alone wrapped as the run's (DDP): like
    with like."""
    summary = json.loads((one_node / "summary.json").read_text())
    assert summary["ranks_weights_equal"] is True and summary["steps"] == 3
    assert summary["val_images"] == 8  # each val image once, over both ranks
    assert json.loads((one_node / "config.json").read_text())["provenance"]["world_size"] == 2
    synthetic = [m for m in read_metrics(one_node / "metrics.jsonl") if m["kind"] == "synthetic"]
    assert len(synthetic) == 1 and synthetic[0]["ddp"] is True and synthetic[0]["compiled"] is False
    assert summary["vs_synthetic"] > 0 and "data_wait_gpu" not in summary  # CPU: no device time to measure


@pytest.mark.slow
def test_two_nodes_train_as_one_node_only_global_rank_0_writes_and_resume_continues(shards, one_node, tmp_path):
    """Two steps on two nodes with a run folder each (no shared file system for the run): only global rank 0's
    is written, the weights are bit-identical on both ranks. Then --resume on both nodes, both given the folder
    that was written (a resume reads the checkpoint on every node), to step 3: losses and weights are those of
    the one-node run, bit for bit."""
    runs = (tmp_path / "node-a", tmp_path / "node-b")
    for rc, err in two_nodes(shards, runs, "--max-steps", "2"):
        assert rc == 0, err[-3000:]
    written = [r for r in runs if r.exists()]
    assert len(written) == 1, "only global rank 0 writes the run folder; the other node writes nothing"
    run = written[0] / "mn"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ranks_weights_equal"] is True and summary["steps"] == 2 and summary["val_images"] == 8
    assert json.loads((run / "config.json").read_text())["provenance"]["world_size"] == 2
    for rc, err in two_nodes(shards, (written[0], written[0]), "--max-steps", "3", "--resume"):
        assert rc == 0, err[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ranks_weights_equal"] is True and summary["steps"] == 3
    assert summary["weights_sha256"] == json.loads((one_node / "summary.json").read_text())["weights_sha256"]
    train_losses = [x for x in losses(run) if x[0] == "train"]
    assert train_losses == [x for x in losses(one_node) if x[0] == "train"] and len(train_losses) == 3
    history = json.loads((run / "config.json").read_text())["history"]
    assert [h["step"] for h in history] == [0, 2] and history[-1]["resumed_from"] == str(run / "last.pt")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(c) for c in f.read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in children(k)]


@pytest.mark.slow
def test_a_lost_node_ends_the_other_within_seconds_with_one_line(shards, tmp_path):
    port = free_port()
    args = [*TRAIN, "--shards", str(shards), "--epochs", "100"]
    survivor = node(port, *args, "--runs", str(tmp_path / "a"))
    time.sleep(1.0)
    lost = node(port, *args, "--runs", str(tmp_path / "b"))
    metrics = [tmp_path / side / "mn" / "metrics.jsonl" for side in ("a", "b")]
    deadline = time.time() + 300
    while not any(m.is_file() and '"kind": "train"' in m.read_text() for m in metrics) and time.time() < deadline:
        assert survivor.poll() is None and lost.poll() is None, "a node stopped before it trained"
        time.sleep(0.2)
    for pid in [*children(lost.pid), lost.pid]:  # the whole node at once: its agent and its worker
        os.kill(pid, signal.SIGKILL)
    lost.wait(timeout=60)
    t0 = time.time()
    _, err = survivor.communicate(timeout=120)
    assert time.time() - t0 < 30, "the other node waited for the lost one"
    assert survivor.returncode != 0
    lines = [ln for ln in err.splitlines() if "another rank stopped" in ln or "rendezvous store is gone" in ln]
    assert lines and "--resume" in lines[0], err[-3000:]
