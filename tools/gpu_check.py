"""The GPU path proven in one short run: correctness, loader speed, training speed, DDP, model.train itself.

    python tools/gpu_check.py                          # on one GPU, within --budget seconds (default 480)
    python tools/gpu_check.py --device cpu --quick     # the same sections on the CPU, in well under a minute
    PYTHON=python3 make gpu-check                      # the same from the repository root, no install step

Writes DIR/gpu_report.json and DIR/gpu_report.md (default DIR gpu_check/) after every section, so a section
that fails or runs out of time leaves a report that says so; a SIGTERM (an outer time limit) stops the check
with the report rewritten (exit status 143). Each section keeps the time the later ones need (Plan.reserve).
A thin command over measure.gpu_report; docs/gpu.md says what each figure means. Sections, in order:
  correctness  DALI on the GPU vs DALI on the CPU vs the reference loader on position-coded images: crop
               offsets, flips, labels, pixels; val exactly once over 2 ranks; 10-crop; mid-epoch resume
  loader       the DALI train pipeline per decoder setting (hw_decoder_load, window vs full decode), the
               reference loader, plain decoding on all cores; GPU memory per loader; which decoder did the work
  train        AlexNet (bf16 on GPU) on random tensors vs on DALI batches; channels_last and compile on/off
  ddp          two gloo ranks on the one device (weights identical after); a one-rank NCCL DDP smoke test
  model_train  `python -m model.train` on the check's shards, paper recipe, bf16: images/s, data-wait (host
               and loader GPU time) and peak memory from its own logs
Its data is built under DIR/data (or DIR/data-quick) from the demo generator, once; the train shards are
repeated by hard links so that timed windows span many batches.
Needs torch, numpy, pillow, opencv, click, tqdm, DALI (and for model_train, model.train's tensorboard and
matplotlib) and this repository on PYTHONPATH; no network. tools/gpu_session.sh runs it on a borrowed GPU.
"""
from __future__ import annotations

import multiprocessing
import signal
import sys
from pathlib import Path

import click

from common import cli
from common.errors import ConfigError
from common.parallel import available_cores
from measure.gpu_report import SECTIONS, OutOfTime, Stopped, run_sections


@click.command(context_settings=cli.CONTEXT)
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default=None, help="[default: cuda if available]")
@click.option("--quick", is_flag=True, help="Small data and few steps: every section in well under a minute on a CPU.")
@click.option("--out", default="gpu_check", show_default=True, type=click.Path(path_type=Path))
@click.option("--budget", default=480.0, show_default=True, type=click.FloatRange(1), help="Seconds for all sections.")
@click.option("--workers", type=click.IntRange(1), help="Loader threads/processes [default: all cores].")
@click.option("--sections", default=",".join(SECTIONS), show_default=True, help="Comma-separated subset to run.")
def main(device, quick, out, budget, workers, sections):
    """Prove the GPU path in one run; report in OUT/gpu_report.{json,md}."""
    # Every process pool of this process (the data build's converters, the decode ceiling) starts its workers
    # from a fork server: this process holds a CUDA context and DALI's threads, which a fork copies mid-lock.
    multiprocessing.set_start_method("forkserver", force=True)
    import torch
    only = tuple(s.strip() for s in sections.split(",") if s.strip())
    if unknown := [s for s in only if s not in SECTIONS]:
        raise click.BadParameter(f"unknown section(s) {', '.join(unknown)}; use {', '.join(SECTIONS)}", param_hint="--sections")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but torch sees no CUDA device; use --device cpu or a CUDA build of torch")
    dev = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device("cpu")
    out = out.resolve()  # the DDP ranks meet at a file:// URL, which a relative path is not
    out.mkdir(parents=True, exist_ok=True)

    def hard_stop(signum, frame):  # a section stuck in one long call: end it shortly after the budget
        raise OutOfTime("the budget (plus 60 s of grace) ran out inside one call")

    def stopped(signum, frame):  # an outer limit's SIGTERM: stop the section, rewrite the report, leave
        signal.signal(signum, signal.SIG_IGN)
        raise Stopped(f"{signal.Signals(signum).name} (an outer time limit?)")

    signal.signal(signal.SIGALRM, hard_stop)
    signal.signal(signal.SIGTERM, stopped)
    signal.alarm(int(budget) + 60)
    try:
        report = run_sections(out, dev, quick, budget, workers or available_cores(), only)
    finally:
        signal.alarm(0)
    for s in SECTIONS:
        click.echo(f"  {s}: {report[s]['status']}" + (f" ({report[s]['error']})" if report[s].get("error") else ""))
    click.echo(f"gpu_check: {'all sections ok' if report['ok'] else 'NOT all sections ok'} on {dev} in "
               f"{report['elapsed_s']:.0f} s; report in {out / 'gpu_report.md'} and {out / 'gpu_report.json'}")
    sys.exit(143 if report.get("stopped", "").startswith("SIGTERM") else 0 if report["ok"] else 1)


if __name__ == "__main__":
    cli.run(main)
