"""model/metrics.py: metrics.jsonl records on one epoch axis with ETA, TensorBoard events, curves.png."""
from __future__ import annotations


import pytest

from model.metrics import RunLog, keep_metrics_until, plot_curves, read_metrics


def fake_run(run_dir, epochs=4, steps_per_epoch=4, ten_crop=True, lines=None) -> RunLog:
    log = RunLog(run_dir, True, echo=(lines.append if lines is not None else lambda s: None), epochs=epochs)
    step = 0
    for e in range(epochs):
        lr = 0.01 if e < 2 else 0.001
        for b in range(1, steps_per_epoch + 1):
            step += 1
            log.write("train", step=step, epoch=e + b / steps_per_epoch, lr=lr, loss=2.3 - 0.1 * step,
                      images_per_s=100.0, data_wait=0.01, epoch_s=1.0)
        log.write("eval", step=step, epoch=float(e + 1), loss=2.2 - 0.2 * e, top1_err=0.8 - 0.1 * e,
                  top5_err=0.4 - 0.05 * e, images=40)
    if ten_crop:
        log.write("eval_ten_crop", step=step, epoch=float(epochs), top1_err=0.45, top5_err=0.2, images=40)
    log.close()
    return log


def test_records_share_the_epoch_axis_and_carry_an_eta(tmp_path):
    lines = []
    fake_run(tmp_path, lines=lines)
    records = read_metrics(tmp_path / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["epoch"] for r in train[:5]] == [0.25, 0.5, 0.75, 1.0, 1.25]
    assert [r["epoch"] for r in evals] == [1.0, 2.0, 3.0, 4.0]
    assert "eta_s" not in train[0] and all(r["eta_s"] >= 0 for r in train[1:])  # first record: no rate yet
    assert train[-1]["eta_s"] == 0
    assert "peak_gpu_mem_gb" not in train[0]  # CPU run
    assert lines[1].startswith("[train] step=2 epoch=0.5 lr=0.01 loss=2.1 images_per_s=100 data_wait=0.01 "
                               "epoch_s=0:01 eta_s=")


def test_tensorboard_events_hold_the_curves(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    fake_run(tmp_path)
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_s", "train/data_wait", "eval/top1_err", "eval/top5_err",
            "eval/loss", "eval_ten_crop/top1_err"} <= tags
    assert [e.step for e in acc.Scalars("eval/top1_err")] == [4, 8, 12, 16]
    assert acc.Scalars("train/lr")[-1].value == pytest.approx(0.001)


def test_keep_metrics_until_drops_steps_a_resume_repeats(tmp_path):
    fake_run(tmp_path, ten_crop=False)
    assert keep_metrics_until(tmp_path / "metrics.jsonl", 8) == 10  # steps 9..16 and two evals
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert max(r["step"] for r in records) == 8 and records[-1]["kind"] == "eval"
    assert keep_metrics_until(tmp_path / "metrics.jsonl", 8) == 0


def test_curves_png(tmp_path):
    fake_run(tmp_path)
    png = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png", title="demo", num_classes=10)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert plot_curves(tmp_path / "none.jsonl", tmp_path / "none.png") is None
