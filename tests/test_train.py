"""model/train.py on the CPU: it learns, resume is exact, signals, errors, run folders (refused, overwritten,
resumed with config changes), checkpoint files, metrics after a kill. DDP over gloo: tests/test_multinode.py."""
from __future__ import annotations

import json
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
from tests.conftest import REPO, convert, invoke
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
    summary = train(cfg(train_shards, tmp_path, name="learn", epochs=2, log_every=4))
    curve = list(losses(tmp_path / "learn").values())
    assert len(curve) == 6  # steps 4, 8, 10 (the end of epoch 0), 12, 16, 20
    assert sum(curve[-2:]) / 2 < 0.7 * curve[0], curve
    assert summary["val_images"] == 24 and summary["epochs"] == 2
    run = tmp_path / "learn"
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.jsonl", "last.pt", "best.pt", "model.pt",
                                             "curves.png", "summary.json"}
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    evals = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert [e["epoch"] for e in evals] == [1, 2] and all(e["images"] == 24 for e in evals)
    assert min(e["top1_err"] for e in evals) <= 0.5  # chance is 0.75
    ckpt = load_checkpoint(run / "last.pt")  # weights_only load works on what train wrote
    assert ckpt["epoch"] == 2 and ckpt["arch"] == {"variant": "paper", "num_classes": 4}
    best = load_checkpoint(run / "best.pt")
    assert best["val_errors"][-1] == min(e["top1_err"] for e in evals)  # the epoch with the lowest top-1
    weights = load_checkpoint(run / "model.pt")
    assert set(weights) == {"model", "arch", "inference"} and weights["inference"] == ckpt["inference"]
    assert torch.equal(weights["model"]["classifier.6.weight"], ckpt["model"]["classifier.6.weight"])
    info = ckpt["inference"]  # what model.predict / model.export need
    pca = json.loads((train_shards / "pca.json").read_text())
    assert info["classes"] == json.loads((train_shards / "manifest.json").read_text())["classes"]
    assert (info["variant"], info["lrn"], info["mean"], info["std"]) == ("paper", "paper", pca["mean"], pca["std"])


def test_a_run_reads_each_index_once(train_shards, tmp_path, monkeypatch):
    """setup, both loaders (in this process: workers=0), every epoch, the 10-crop test and the checkpoints'
    metadata share one pipeline.Dataset: every .idx of the folder is parsed exactly once."""
    from pipeline import dataset, spec
    from shardkit import format
    reads = []
    real = dataset.read_member_table
    monkeypatch.setattr(dataset, "read_member_table",
                        lambda idx, *a, **kw: reads.append(idx.name) or real(idx, *a, **kw))
    for module in (format, spec):  # the other reader of an index (sample keys for messages) is not used
        monkeypatch.setattr(module, "read_index", lambda idx: pytest.fail(f"{idx} read a second way"))
    summary = train(cfg(train_shards, tmp_path, name="once", backend="torch", workers=0, epochs=2, limit_train=16,
                        limit_val=8, ten_crop_eval=True))
    assert summary["epochs"] == 2 and "ten_crop_top1_err" in summary
    assert sorted(reads) == sorted(p.name for p in train_shards.glob("*.idx"))


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
    """2 epochs of 4 steps (32 samples, batch 8): one run whole, one stopped at step 3 (inside epoch 0) and
    resumed; every loss and the final weights equal, across the epoch boundary and the reshuffle."""
    kw = dict(backend=backend, epochs=2, batch_size=8, limit_train=32, limit_val=8, init="paper", seed=7)
    train(cfg(train_shards, tmp_path, name="whole", **kw))
    train(cfg(train_shards, tmp_path, name="cut", max_steps=3, **kw))  # stops inside epoch 0
    assert max(losses(tmp_path / "cut")) == 3
    train(cfg(train_shards, tmp_path, name="cut", resume="", **kw))
    whole, cut = losses(tmp_path / "whole"), losses(tmp_path / "cut")
    assert sorted(whole) == sorted(cut) == list(range(1, 9))
    for step in whole:
        assert whole[step] == cut[step], (step, whole[step], cut[step])
    assert torch.equal(load_checkpoint(tmp_path / "whole" / "last.pt")["model"]["classifier.6.weight"],
                       load_checkpoint(tmp_path / "cut" / "last.pt")["model"]["classifier.6.weight"])


def test_synthetic_timing_names_the_wrapping_it_timed():
    from model.synthetic import wrapping
    m = torch.nn.Linear(2, 2)
    assert wrapping(m) == {"ddp": False, "compiled": False}
    assert wrapping(torch.compile(m, backend="eager")) == {"ddp": False, "compiled": True}  # compiles lazily


def test_sigterm_writes_a_checkpoint_and_resume_finishes(train_shards, tmp_path):
    args = [sys.executable, "-m", "model.train", "--shards", str(train_shards), "--runs", str(tmp_path),
            "--name", "sig", "--device", "cpu", "--backend", "torch", "--batch-size", "8", "--epochs", "1",
            "--log-every", "1", "--workers", "1", "--no-ten-crop-eval", "--limit-train", "32", "--limit-val", "8"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "sig" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.is_file() and metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped by SIGTERM" in out
    ckpt = load_checkpoint(tmp_path / "sig" / "last.pt")
    assert ckpt["epoch"] == 0 and 1 <= ckpt["step"] < 4
    r = subprocess.run(args + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed {tmp_path / 'sig' / 'last.pt'} at epoch 0, step {ckpt['step']}" in r.stdout + r.stderr
    assert sorted(losses(tmp_path / "sig")) == list(range(1, 5))


def run_train(*args):
    """The command in a process of its own, as a user runs it (a pipe: log lines, no bar)."""
    return subprocess.run([sys.executable, "-m", "model.train", "--device", "cpu", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def train_cli(*args):
    """The same command in this process, through common.cli.run (`error:` lines, exit 2): no second start-up
    of torch and DALI. Returns click's Result: exit_code, output (stdout and stderr)."""
    from model.train import main
    return invoke(main, ["--device", "cpu", *args])


def test_errors(train_shards, tmp_path):
    r = train_cli("--shards", str(tmp_path / "none"))
    assert r.exit_code == 2 and "manifest.json: not found" in r.output and "make_shards" in r.output
    nopca = tmp_path / "nopca"
    shutil.copytree(train_shards, nopca)
    (nopca / "pca.json").unlink()
    r = train_cli("--shards", str(nopca), "--runs", str(tmp_path))
    assert r.exit_code == 2 and "pca.json: not found" in r.output and "compute_pca" in r.output
    assert not (tmp_path / "alexnet").exists()  # the data is checked before the run folder is made
    r = train_cli("--shards", str(train_shards), "--backend", "tensorflow")
    assert r.exit_code == 2 and "tensorflow" in r.output
    # a checkpoint for another class count
    run = tmp_path / "other"
    run.mkdir()
    save_checkpoint(run / "last.pt", {"arch": {"variant": "paper", "num_classes": 1000}})
    r = train_cli("--shards", str(train_shards), "--runs", str(tmp_path), "--name", "other", "--resume")
    assert r.exit_code == 2 and "num_classes': 1000" in r.output and "num_classes': 4" in r.output


def files(run_dir) -> dict[str, tuple]:
    """name -> (size, mtime_ns), and the bytes of the small files: enough to see any change."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes() if p.stat().st_size < 2**20 else None)
            for p in sorted(run_dir.iterdir())}


def test_run_folder_refusal_resume_and_overwrite(train_shards, tmp_path):
    """Through the CLI, 3 steps per epoch (24 samples, batch 8), 8 val images: a second run with the same
    --name is refused and changes nothing; a resume may change --lr (recorded) but not --batch-size; a resume
    after kill -9 drops the records the dead process wrote past its checkpoint, so no step goes back;
    --resume takes a run folder or a .pt file; --overwrite starts again."""
    run = tmp_path / "r"
    base = ["--shards", str(train_shards), "--runs", str(tmp_path), "--backend", "torch", "--batch-size", "8",
            "--workers", "1", "--log-every", "1", "--init", "kaiming", "--no-ten-crop-eval", "--limit-train", "24",
            "--limit-val", "8", "--keep-every", "1"]
    r = run_train(*base, "--name", "r", "--epochs", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert {"last.pt", "best.pt", "epoch-001.pt", "model.pt"} <= {p.name for p in run.iterdir()}
    assert "\r" not in r.stdout + r.stderr and "[train] step=3 epoch=1 " in r.stdout  # no bar in a pipe: lines
    before = files(run)

    r = train_cli(*base, "--name", "r", "--epochs", "1")
    assert r.exit_code == 2
    assert f"error: {run} already holds a run; continue it with --resume, start it again with --overwrite" in r.output
    assert "another --name" in r.output
    r = train_cli(*base, "--name", "r", "--epochs", "2", "--resume", "--batch-size", "4")
    assert r.exit_code == 2 and "--batch-size 8 (now 4)" in r.output
    assert "resume: --batch-size 8 -> 4 (refused)" in r.output
    r = train_cli(*base, "--name", "r", "--resume", "--overwrite")
    assert r.exit_code == 2 and "--resume and --overwrite contradict" in r.output
    assert files(run) == before  # nothing of the first run changed

    # resume with another --lr, killed mid-epoch after step 4 was logged (the checkpoint is at step 3)
    more = [*base, "--name", "r", "--epochs", "2", "--lr", "0.005", "--resume"]
    proc = subprocess.Popen([sys.executable, "-m", "model.train", "--device", "cpu", *more], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while (run / "metrics.jsonl").read_text().count('"kind": "train"') < 4 and time.time() < deadline:
        time.sleep(0.1)  # counted as text: the last line may be half written
    proc.kill()
    proc.wait(timeout=60)
    assert max(losses(run)) >= 4 and load_checkpoint(run / "last.pt")["step"] == 3
    r = train_cli(*more)
    assert r.exit_code == 0, r.output[-3000:]
    assert "resume: --lr 0.01 -> 0.005" in r.output and "after step 3 dropped" in r.output
    records = read_metrics(run / "metrics.jsonl")
    assert [x["step"] for x in records if x["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [(x["step"], x["epoch"]) for x in records if x["kind"] == "eval"] == [(3, 1), (6, 2)]
    assert [x["lr"] for x in records if x["kind"] == "train"] == [0.01] * 3 + [0.005] * 3
    history = json.loads((run / "config.json").read_text())["history"]
    assert [h["step"] for h in history] == [0, 3, 3]
    assert history[-1]["changes"] == {"epochs": [1, 2], "lr": [0.01, 0.005]}
    assert history[-1]["resumed_from"] == str(run / "last.pt")
    assert {"epoch-002.pt", "model.pt"} <= {p.name for p in run.iterdir()}

    # --resume FOLDER and --resume FILE, into new run folders (nothing left to train: they load and stop)
    r = train_cli(*base, "--name", "from-folder", "--epochs", "2", "--resume", str(run))
    assert r.exit_code == 0 and f"resumed {run / 'last.pt'} at epoch 2, step 6" in r.output
    r = train_cli(*base, "--name", "from-file", "--epochs", "1", "--resume", str(run / "epoch-001.pt"))
    assert r.exit_code == 0 and f"resumed {run / 'epoch-001.pt'} at epoch 1, step 3" in r.output

    r = train_cli(*base, "--name", "r", "--epochs", "1", "--max-steps", "1", "--keep-every", "0", "--overwrite")
    assert r.exit_code == 0, r.output[-3000:]
    assert not (run / "epoch-002.pt").exists() and not (run / "epoch-001.pt").exists()
    assert max(losses(run)) == 1 and len(json.loads((run / "config.json").read_text())["history"]) == 1
