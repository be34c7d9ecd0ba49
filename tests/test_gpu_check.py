"""tools/gpu_check.py runs every section on the CPU (--quick), and its report says what ran and what did not,
also when a budget runs out or a SIGTERM stops it; which decoder DALI used; make gpu-check's exit status."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def run_check(out, *args, timeout=600):
    """--out relative, as make gpu-check gives it (the DDP ranks' rendezvous once failed on that)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "tools/gpu_check.py", "--device", "cpu", "--quick", "--out",
                           os.path.relpath(out, REPO), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


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
    for section in ("correctness", "loader", "train", "ddp", "model_train"):
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
    plan = next(r for r in rows if r["backend"] == "reference")["worker_plan"]  # what /dev/shm allowed
    assert plan["workers"] >= 1 and plan["shm_free_mb"] is not None
    census = report["loader"]["decoder_backends"]  # who decoded, from nvImageCodec's log
    assert census[0]["images"].get("libjpeg_turbo_decoder", 0) > 0 and census[0]["verdict"].startswith("CPU decoder")
    assert report["loader"]["decoder_fallback"] is False
    t = report["train"]
    assert {"synthetic_images_per_s", "real_images_per_s", "vs_synthetic", "data_wait", "data_wait_gpu"} <= set(t)
    assert t["data_wait_gpu"] is None and t["compiled"]["vs_synthetic"] > 0  # no device time on a CPU
    assert {(r["input"], r["channels_last"], r["compile"]) for r in t["results"]} == {
        ("synthetic", True, False), ("dali", True, False), ("synthetic", False, False),
        ("synthetic", True, True), ("dali", True, True)}
    d = report["ddp"]
    assert d["ranks_weights_equal"] is True and d["one_rank_smoke"]["ok"] is True
    # two ranks of batch_size_per_rank images per step, at the slower rank's ms per step
    assert d["images_per_s"] == pytest.approx(2 * d["batch_size_per_rank"] * 1000 / d["step_ms"])
    m = report["model_train"]  # python -m model.train itself, figures from its own logs
    assert m["returncode"] == 0 and m["steps"] == report["plan"]["run_steps"] and m["train_images_per_s"] > 0
    assert m["synthetic_wrapping"] == {"ddp": False, "compiled": False} and m["peak_gpu_mem_gb"] is None
    assert "data_wait_gpu" not in m and m["steady"]["data_wait"] >= 0
    windows = [report[s]["window_s"] for s in ("correctness", "loader", "train")]  # later sections' time is kept
    assert all(w <= report["budget_s"] - sum(report["plan"]["reserve"].values()) for w in windows)
    md = (out / "gpu_report.md").read_text()
    assert "| correctness | ok |" in md and "## loader" in md and "## train" in md and "## ddp" in md
    assert "## model_train" in md and "## decoder" in md


def test_a_spent_budget_still_writes_a_report_that_says_so(out):
    r = run_check(out, "--budget", "1", "--sections", "correctness,ddp")  # data from the test above is kept
    assert r.returncode == 1
    report = json.loads((out / "gpu_report.json").read_text())
    assert report["ok"] is False
    assert report["correctness"]["status"].startswith("out of time")
    assert report["loader"]["status"] == report["train"]["status"] == "skipped (--sections)"
    assert "out of time" in (out / "gpu_report.md").read_text()


def test_a_sigterm_keeps_the_finished_sections_in_the_report(out):
    """An outer time limit's SIGTERM: the section running is stopped, the one finished stays, exit 143."""
    proc = subprocess.Popen([sys.executable, "tools/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out),
                             "--sections", "loader,train"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started, report, deadline = time.time(), {}, time.time() + 300
    while report.get("train", {}).get("status") != "running (did not finish)" and time.time() < deadline:
        time.sleep(0.2)
        path = out / "gpu_report.json"  # written atomically: whole or not there; an older run's until this one's
        if path.is_file() and path.stat().st_mtime >= started:
            report = json.loads(path.read_text())
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output[-3000:]
    report = json.loads((out / "gpu_report.json").read_text())
    assert report["ok"] is False and report["stopped"].startswith("SIGTERM")
    assert report["loader"]["status"] == "ok" and report["loader"]["results"]
    assert report["train"]["status"].startswith("stopped by SIGTERM")
    assert report["ddp"]["status"] == "skipped (--sections)"
    assert "Stopped early by SIGTERM" in (out / "gpu_report.md").read_text()


def test_the_decoder_census_tells_a_quiet_cpu_fallback_from_gpu_decoding():
    """nvImageCodec's info lines as DALI's mixed decoder writes them (injected: no GPU here)."""
    from measure.decoders import read_log, verdict
    log = "\n".join(["\x1b[0;32m[INFO] \x1b[0m[nvjpeg-ext] HW decoder not supported by this platform. Skip."] +
                    [f"\x1b[0;32m[INFO] \x1b[0m[nvimgcodec] 0: libjpeg_turbo_decoder process #{i}" for i in range(3)])
    images, notes = read_log(log)
    assert images == Counter(libjpeg_turbo_decoder=3) and notes == ["nvjpeg-ext: HW decoder not supported by this "
                                                                    "platform. Skip."]
    assert verdict(images, gpu=True, hw_decoder_load=0.65).startswith("CPU FALLBACK")
    assert verdict(images, gpu=False, hw_decoder_load=None).startswith("CPU decoder, as asked")
    gpu = Counter(nvjpeg_hw_decoder=40, nvjpeg_cuda_decoder=24)
    assert verdict(gpu, gpu=True, hw_decoder_load=0.65) == "GPU (nvjpeg_hw_decoder 40, nvjpeg_cuda_decoder 24)"
    assert verdict(Counter(nvjpeg_cuda_decoder=64), gpu=True, hw_decoder_load=0.65).startswith("GPU, no hardware")
    assert verdict(gpu + Counter(libjpeg_turbo_decoder=1), gpu=True, hw_decoder_load=1.0).startswith("PARTLY")
    assert verdict(Counter(), gpu=True, hw_decoder_load=0.65).startswith("unknown")


@pytest.mark.parametrize("check, lrn, status", [(1, 0, 1), (0, 1, 1), (0, 0, 0)])
def test_make_gpu_check_runs_the_lrn_benchmark_after_a_failed_section_and_fails_at_the_end(tmp_path, check, lrn,
                                                                                          status):
    """A stand-in python (no GPU, no torch) records what make runs and fails where told."""
    calls, fake = tmp_path / "calls", tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho \"$1\" >> {calls}\n"
                    f"case \"$1\" in *gpu_check.py) exit {check};; *bench_lrn.py) exit {lrn};; esac\n")
    fake.chmod(0o755)
    r = subprocess.run(["make", "-s", "gpu-check", f"PYTHON={fake}"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert calls.read_text().split() == ["tools/gpu_check.py", "tools/bench_lrn.py"]
    assert (r.returncode == 0) == (status == 0), r.stderr


def test_cuda_without_cuda_is_a_clear_error(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "tools/gpu_check.py", "--device", "cuda", "--out", str(tmp_path)], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no CUDA device" in r.stderr


def test_the_device_script_reassembles_carried_wheels_and_looks_at_the_machine(tmp_path):
    """tools/gpu_session.sh preflight: wheel parts joined byte for byte, unpacked where pip refuses them (this
    stand-in has no .dist-info), /dev/shm's size and the imports the check needs reported in OUT."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("fakepkg_xyz/__init__.py", "VALUE = 42\n" + "#\n" * 50_000)
    wheel, wheels, out = buf.getvalue(), tmp_path / "whl", tmp_path / "out"
    wheels.mkdir()
    name = "fakepkg_xyz-0.1-py3-none-any.whl"
    (wheels / f"{name}.part-aa").write_bytes(wheel[:40_000])
    (wheels / f"{name}.part-ab").write_bytes(wheel[40_000:])
    r = subprocess.run(["bash", "tools/gpu_session.sh", "preflight"], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "PYTHON": sys.executable, "WHEELS": str(wheels), "OUT": str(out)},
                       timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (wheels / name).read_bytes() == wheel
    assert (wheels / "site" / "fakepkg_xyz" / "__init__.py").is_file()
    assert "/dev/shm" in (out / "shm.txt").read_text()
    assert "preflight: all imports there" in (out / "preflight.txt").read_text()
    assert "reassembled" in (out / "session.log").read_text()
