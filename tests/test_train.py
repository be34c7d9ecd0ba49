"""model/train.py on the CPU: it learns, DDP over gloo keeps ranks equal, resume is exact, signals, errors."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.metrics import read_metrics
from model.train import Config, train
from tests.conftest import REPO, convert
from shardkit import stats as compute_pca
from shardkit.demo_data import make_demo


@pytest.fixture(scope="module")
def train_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    make_demo(root / "src", classes=4, train_per_class=40, val_per_class=6, seed=5, odd_files=False)
    convert(root / "src", root / "shards", shard_size=40, workers=2)
    compute_pca.compute(compute_pca.Options(shards=str(root / "shards"), workers=2))
    return root / "shards"


def cfg(shards, runs, **kw) -> Config:
    base = dict(shards=str(shards), runs=str(runs), device="cpu", backend="dali", batch_size=16, workers=1,
                ten_crop_eval=False, log_every=1, init="kaiming")
    base.update(kw)
    return Config(**base)


def losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"}


def test_loss_goes_down(train_shards, tmp_path):
    summary = train(cfg(train_shards, tmp_path, name="learn", epochs=3, log_every=5))
    curve = list(losses(tmp_path / "learn").values())
    assert len(curve) >= 5
    assert sum(curve[-2:]) / 2 < 0.7 * curve[0], curve
    assert summary["val_images"] == 24 and summary["epochs"] == 3
    run = tmp_path / "learn"
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.jsonl", "checkpoint.pt", "curves.png",
                                             "summary.json"}
    evals = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert [e["epoch"] for e in evals] == [1, 2, 3] and all(e["images"] == 24 for e in evals)
    assert min(e["top1_err"] for e in evals) <= 0.5  # chance is 0.75
    ckpt = load_checkpoint(run / "checkpoint.pt")  # weights_only load works on what train wrote
    assert ckpt["epoch"] == 3 and ckpt["arch"] == {"variant": "paper", "num_classes": 4}
    info = ckpt["inference"]  # what model.predict / model.export need
    pca = json.loads((train_shards / "pca.json").read_text())
    assert info["classes"] == json.loads((train_shards / "manifest.json").read_text())["classes"]
    assert (info["variant"], info["lrn"], info["mean"], info["std"]) == ("paper", "paper", pca["mean"], pca["std"])


def test_linear_scaling_and_warmup_in_the_loop(train_shards, tmp_path):
    """Batch 32 with linear scaling: base rate 0.04 * 32 / 128 = 0.01, reached step by step over one epoch
    (5 steps of 32 of the 160 images, 3 of them run), from zero since scaling lowered the rate."""
    train(cfg(train_shards, tmp_path, name="warm", lr=0.04, batch_size=32, lr_scaling="linear", warmup_epochs=1,
              max_steps=3, epochs=2, limit_val=8))
    lrs = [r["lr"] for r in read_metrics(tmp_path / "warm" / "metrics.jsonl") if r["kind"] == "train"]
    steps = 160 // 32
    assert lrs == pytest.approx([0.01 * (s + 1) / steps for s in range(3)])


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_resume_gives_the_same_losses(train_shards, tmp_path, backend):
    kw = dict(backend=backend, epochs=2, batch_size=32, init="paper", seed=7)
    train(cfg(train_shards, tmp_path, name="whole", **kw))
    train(cfg(train_shards, tmp_path, name="cut", max_steps=3, **kw))  # stops inside epoch 0
    assert max(losses(tmp_path / "cut")) == 3
    train(cfg(train_shards, tmp_path, name="cut", resume=True, **kw))
    whole, cut = losses(tmp_path / "whole"), losses(tmp_path / "cut")
    assert sorted(whole) == sorted(cut) == list(range(1, 11))
    for step in whole:
        assert whole[step] == cut[step], (step, whole[step], cut[step])
    assert torch.equal(load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"]["classifier.6.weight"],
                       load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["model"]["classifier.6.weight"])


def torchrun(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "model.train", *args], cwd=REPO, capture_output=True, text=True, env=env, **kw)


def test_two_gloo_processes_keep_identical_weights(train_shards, tmp_path):
    r = torchrun("--shards", str(train_shards), "--runs", str(tmp_path), "--name", "ddp", "--device", "cpu",
                 "--backend", "dali", "--batch-size", "16", "--max-steps", "4", "--log-every", "2",
                 "--init", "kaiming", "--no-ten-crop-eval", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["ranks_weights_equal"] is True
    assert summary["val_images"] == 24  # each val image once, over both ranks
    assert summary["steps"] == 4
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["provenance"]["world_size"] == 2


def test_sigterm_writes_a_checkpoint_and_resume_finishes(train_shards, tmp_path):
    args = [sys.executable, "-m", "model.train", "--shards", str(train_shards), "--runs", str(tmp_path),
            "--name", "sig", "--device", "cpu", "--backend", "torch", "--batch-size", "16", "--epochs", "1",
            "--log-every", "1", "--workers", "1", "--no-ten-crop-eval"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "sig" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.is_file() and metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped by SIGTERM" in out
    ckpt = load_checkpoint(tmp_path / "sig" / "checkpoint.pt")
    assert ckpt["epoch"] == 0 and 1 <= ckpt["step"] < 10
    r = subprocess.run(args + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed {tmp_path / 'sig' / 'checkpoint.pt'} at epoch 0, step {ckpt['step']}" in r.stdout + r.stderr
    assert sorted(losses(tmp_path / "sig")) == list(range(1, 11))


def run_train(*args):
    return subprocess.run([sys.executable, "-m", "model.train", "--device", "cpu", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_errors(train_shards, tmp_path):
    r = run_train("--shards", str(tmp_path / "none"))
    assert r.returncode == 2 and "manifest.json: not found" in r.stderr and "make_shards" in r.stderr
    nopca = tmp_path / "nopca"
    shutil.copytree(train_shards, nopca)
    (nopca / "pca.json").unlink()
    r = run_train("--shards", str(nopca), "--runs", str(tmp_path))
    assert r.returncode == 2 and "pca.json: not found" in r.stderr and "compute_pca" in r.stderr
    r = run_train("--shards", str(train_shards), "--backend", "tensorflow")
    assert r.returncode == 2 and "tensorflow" in r.stderr
    # a checkpoint for another class count
    run = tmp_path / "other"
    run.mkdir()
    save_checkpoint(run / "checkpoint.pt", {"arch": {"variant": "paper", "num_classes": 1000}})
    r = run_train("--shards", str(train_shards), "--runs", str(tmp_path), "--name", "other", "--resume")
    assert r.returncode == 2 and "num_classes': 1000" in r.stderr and "num_classes': 4" in r.stderr
