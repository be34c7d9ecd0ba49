"""model/run.py and the checkpoint files of model/checkpoint.py: run folders are not overwritten by accident;
resume checks the config; last/best/epoch-NNN/model.pt; a killed write leaves the previous last.pt.
(model.train's use of them, through the CLI: tests/test_train.py.)"""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch

from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoints, save_weights
from model.run import resume_changes, config_changes, prepare_run_dir, resume_path, write_config
from common.errors import ConfigError
from tests.conftest import REPO


def test_an_existing_run_is_refused_with_the_three_ways_on(tmp_path):
    run = tmp_path / "alexnet"
    prepare_run_dir(run, resume=False, overwrite=False)  # empty: fine
    record = '{"kind": "train", "step": 1}\n'
    (run / "metrics.jsonl").write_text(record)
    with pytest.raises(ConfigError) as e:
        prepare_run_dir(run, resume=False, overwrite=False)
    assert all(w in str(e.value) for w in (str(run), "--resume", "--overwrite", "--name"))
    assert (run / "metrics.jsonl").read_text() == record  # nothing lost
    prepare_run_dir(run, resume=True, overwrite=False)
    assert (run / "metrics.jsonl").read_text() == record
    (run / "note.txt").write_text("mine")
    (run / ".last.pt.123.partial").write_bytes(b"half")  # what a killed write leaves
    prepare_run_dir(run, resume=False, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["note.txt"]  # only the run's own files go


def test_resume_path_takes_a_folder_a_file_or_nothing(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    with pytest.raises(CheckpointError, match=f"no checkpoint at {run / 'last.pt'}"):
        resume_path("", run)
    (run / "last.pt").write_bytes(b"x")
    (run / "epoch-002.pt").write_bytes(b"x")
    assert resume_path("", run) == run / "last.pt"
    assert resume_path(str(run), tmp_path / "other") == run / "last.pt"
    assert resume_path(str(run / "epoch-002.pt"), run) == run / "epoch-002.pt"


def test_resume_refuses_model_and_data_changes_and_records_the_rest(tmp_path):
    saved = {"lr": 0.01, "epochs": 10, "batch_size": 128, "milestones": [3, 6], "name": "a", "resume": ""}
    new = {"lr": 0.001, "epochs": 20, "batch_size": 128, "milestones": (3, 6), "name": "b", "resume": "x"}
    assert config_changes(saved, new) == ({}, {"epochs": [10, 20], "lr": [0.01, 0.001]})
    lines = []
    accepted = resume_changes(saved, new, tmp_path / "last.pt", echo=lines.append)
    assert lines == ["resume: --epochs 10 -> 20", "resume: --lr 0.01 -> 0.001"] and len(accepted) == 2
    with pytest.raises(ConfigError, match=r"--batch-size 128 \(now 256\).*another --name"):
        resume_changes(saved, {**new, "batch_size": 256}, tmp_path / "last.pt", echo=lines.append)
    assert lines[-1] == "resume: --batch-size 128 -> 256 (refused)"
    with pytest.raises(ConfigError, match=r"--lrn paper \(now caffe\)"):
        resume_changes({**saved, "lrn": "paper"}, {**new, "lrn": "caffe"}, tmp_path / "last.pt", echo=print)
    write_config(tmp_path, saved, {"torch": "x"})
    write_config(tmp_path, new, {"torch": "y"}, step=40, changes=accepted, resumed_from=tmp_path / "last.pt")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["config"]["lr"] == 0.001
    assert [h["step"] for h in config["history"]] == [0, 40]
    assert config["history"][1]["changes"] == {"epochs": [10, 20], "lr": [0.01, 0.001]}
    assert config["history"][1]["resumed_from"] == str(tmp_path / "last.pt")


def test_last_best_and_kept_epochs(tmp_path):
    for epoch, best in ((1, True), (2, True), (3, False), (4, False)):
        save_checkpoints(tmp_path, {"epoch": epoch, "w": torch.ones(2) * epoch}, best=best,
                         snapshot=epoch if epoch % 2 == 0 else None)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 4
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["best.pt", "epoch-002.pt", "epoch-004.pt", "last.pt"]
    assert not list(tmp_path.glob(".*partial"))


def test_a_failed_write_keeps_the_previous_last(tmp_path, monkeypatch):
    save_checkpoints(tmp_path, {"epoch": 1})

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoints(tmp_path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


KEEP_WRITING = """
import sys, torch
from model.checkpoint import save_checkpoints
for i in range(1000):
    save_checkpoints(sys.argv[1], {"i": i, "w": torch.full((4_000_000,), float(i))})
    print(i, flush=True)
"""


def test_kill_9_while_writing_leaves_a_complete_last_pt(tmp_path):
    """The process is killed while it writes last.pt over and over (16 MB each): last.pt is still the
    previous complete one, and its contents are all of one write."""
    proc = subprocess.Popen([sys.executable, "-c", KEEP_WRITING, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    for _ in range(3):  # three complete writes, then kill during the fourth or a later one
        assert proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["i"] >= 2 and torch.equal(ckpt["w"], torch.full((4_000_000,), float(ckpt["i"])))


def test_weights_file_holds_only_what_inference_needs(tmp_path):
    model = torch.nn.Linear(3, 2)
    meta = {"variant": "paper", "lrn": "paper", "classes": ["n1", "n2"], "mean": [0.5] * 3, "std": [0.2] * 3}
    path = save_weights(tmp_path, model.state_dict(), {"variant": "paper", "num_classes": 2}, meta)
    ckpt = load_checkpoint(path)
    assert set(ckpt) == {"model", "arch", "inference"} and ckpt["inference"] == meta
    torch.nn.Linear(3, 2).load_state_dict(ckpt["model"])
