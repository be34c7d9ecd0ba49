"""tools/gpu_check.py runs every section on the CPU (--quick), and its report says what ran and what did not."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def run_check(out, *args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "tools/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out),
                           *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("gpu_check")


def test_quick_cpu_run_passes_every_section(out):
    r = run_check(out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "gpu_report.json").read_text())
    assert report["ok"] and report["quick"]
    assert report["provenance"]["torch"] and report["provenance"]["dali"] and report["provenance"]["device"] == "cpu"
    assert report["provenance"]["start_method"] == "forkserver"  # its process pools never fork a CUDA process
    for section in ("correctness", "loader", "train", "ddp"):
        assert report[section]["status"] == "ok", report[section]
    c = report["correctness"]
    assert c["ok"] is True and c["backends"] == ["dali-cpu", "reference"]
    for name in ("train_windows_dali-cpu", "train_windows_reference", "val_exactly_once_dali-cpu",
                 "val_exactly_once_reference", "ten_crop_dali-cpu", "resume_dali-cpu", "resume_reference"):
        assert c["checks"][name]["ok"] is True
    assert c["checks"]["train_windows_dali-cpu"]["mad_vs_pillow"] <= 1 / 255
    rows = report["loader"]["results"]
    assert {r["backend"] for r in rows} == {"dali", "reference", "decode-only"}
    for row in rows:
        assert set(row) >= {"backend", "decoder", "hw_decoder_load", "batch_size", "images_per_s", "gpu_mem_mb"}
        assert row["images"] > 0 and row["images_per_s"] == pytest.approx(row["images"] / row["seconds"])
        if "batches" in row:  # the loaders: whole batches of the asked size were counted, nothing else
            assert row["images"] == row["batches"] * row["batch_size"]
    assert sum(r["images"] for r in rows if r["backend"] == "decode-only") == report["data"]["train_images_timed_set"] \
        or rows[-1]["seconds"] >= report["plan"]["loader_seconds"]  # every image decoded, unless time ran out
    t = report["train"]
    assert {"synthetic_images_per_s", "real_images_per_s", "vs_synthetic", "data_wait"} <= set(t)
    assert {(r["input"], r["channels_last"], r["compile"]) for r in t["results"]} == {
        ("synthetic", True, False), ("dali", True, False), ("synthetic", False, False),
        ("synthetic", True, True), ("dali", True, True)}
    d = report["ddp"]
    assert d["ranks_weights_equal"] is True and d["one_rank_smoke"]["ok"] is True
    # two ranks of batch_size_per_rank images per step, at the slower rank's ms per step
    assert d["images_per_s"] == pytest.approx(2 * d["batch_size_per_rank"] * 1000 / d["step_ms"])
    md = (out / "gpu_report.md").read_text()
    assert "| correctness | ok |" in md and "## loader" in md and "## train" in md and "## ddp" in md


def test_a_spent_budget_still_writes_a_report_that_says_so(out):
    r = run_check(out, "--budget", "1", "--sections", "correctness,ddp")  # data from the test above is kept
    assert r.returncode == 1
    report = json.loads((out / "gpu_report.json").read_text())
    assert report["ok"] is False
    assert report["correctness"]["status"].startswith("out of time")
    assert report["loader"]["status"] == report["train"]["status"] == "skipped (--sections)"
    assert "out of time" in (out / "gpu_report.md").read_text()


def test_cuda_without_cuda_is_a_clear_error(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "tools/gpu_check.py", "--device", "cuda", "--out", str(tmp_path)], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no CUDA device" in r.stderr
