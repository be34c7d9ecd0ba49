"""Train AlexNet (2012) on the shards with the paper's recipe.

    python -m model.train --shards shards/                                   # one process (GPU if present)
    torchrun --nproc_per_node=2 -m model.train --shards shards/              # DDP on two GPUs (NCCL)
    torchrun --nproc_per_node=2 -m model.train --shards shards/ --device cpu # two CPU processes (gloo)
    python -m model.train --shards shards/ --synthetic --max-steps 100       # the model alone, random tensors

Defaults are the paper's: global batch 128 split over the ranks, SGD momentum 0.9, weight decay 5e-4,
lr 0.01 divided by 10 when the val error stops improving (three times at most), 90 epochs, paper init.
--lr-scaling linear --warmup-epochs 5 with a large --batch-size is Goyal et al.'s large-batch recipe (README).
Writes runs/<name>/ (model/run.py): config.json (with a history of resumes), metrics.jsonl and TensorBoard
events, last.pt (each epoch, and on SIGTERM/SIGINT), best.pt, epoch-NNN.pt (--keep-every N), model.pt
(weights for inference, at the end), curves.png, summary.json. A folder that holds a run is refused unless
--resume, --overwrite or another --name is given. --resume [PATH] continues exactly (model, optimizer,
schedule, RNG and loader position) from this run's last.pt, a run folder or a .pt file.
Rank 0 logs `[train] step=...` / `[eval] ...` lines and one JSON line per log step and eval.

The file reads top-down as the run goes: setup, resume (model.run), fit (epochs of train_epoch, eval,
checkpoint), report. Configuration: model/config.py; the run folder and its state: model/run.py; checkpoint
files: model/checkpoint.py; records, TensorBoard and curves: model/metrics.py.
"""
from __future__ import annotations

import hashlib
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import click
import torch
from torch.nn.parallel import DistributedDataParallel

from common import cli
from common.errors import ConfigError
from common.progress import progress_bar
from common.timing import InputWait
from model.alexnet import INITS, LRNS, VARIANTS, build_model
from model.checkpoint import inference_meta
from model.config import Config
from model.distributed import Dist, distributed
from model.evaluate import evaluate
from model.metrics import RunLog
from model.optim import make_optimizer, train_step
from model.run import Run, RunState, finish, load_state, open_run, save_model, save_state
from model.schedule import LR_SCALINGS, learning_rate, scaled_lr, warmup_lr, warmup_start
from model.stop import StopFlag
from model.synthetic import measure_model
from pipeline import BACKENDS, DEVICES, Dataset, make_loader, open_dataset


@dataclass
class EpochStats:
    """What one train_epoch did, counted over its log intervals (images and seconds of all ranks)."""
    steps: int = 0
    images: int = 0
    seconds: float = 0.0
    wait: float = 0.0                 # seconds blocked on the loader (host time in next(), mean over ranks)
    gpu_wait: float | None = None     # CUDA: the stream's seconds at the hand-over (common.timing.StreamWait)
    stopped: str | None = None        # what ended it early: a signal, "another rank", "max-steps"

    def __add__(self, later: EpochStats) -> EpochStats:
        gpu = None if later.gpu_wait is None else (self.gpu_wait or 0.0) + later.gpu_wait
        return EpochStats(self.steps + later.steps, self.images + later.images, self.seconds + later.seconds,
                          self.wait + later.wait, gpu, later.stopped)

    def rates(self) -> dict:
        """images/s and the data-wait fractions over the epoch's log intervals, and its training seconds."""
        if not self.seconds:
            return {}
        gpu = {} if self.gpu_wait is None else {"data_wait_gpu": self.gpu_wait / self.seconds}
        return {"images_per_s": self.images / self.seconds, "data_wait": self.wait / self.seconds, **gpu,
                "epoch_s": self.seconds}


def epochs_done(loader) -> float:
    """The one epoch axis of every record: epochs completed, as a float (1.5 = half way through the second)."""
    return loader.epoch + loader.batch / len(loader)


def local_batch(cfg: Config, dist: Dist) -> int:
    if cfg.batch_size % dist.world_size:
        raise ConfigError(f"--batch-size {cfg.batch_size} does not split over {dist.world_size} ranks")
    return cfg.batch_size // dist.world_size


def arch(cfg: Config, classes: int) -> dict:
    return {"variant": cfg.variant, "num_classes": classes}


def new_model(cfg: Config, dist: Dist, classes: int) -> torch.nn.Module:
    torch.manual_seed(cfg.seed * 1000 + dist.rank)  # DDP broadcasts rank 0's initial weights
    model = build_model(cfg.variant, classes, cfg.init, cfg.dropout, cfg.lrn).to(dist.device)
    return model.to(memory_format=torch.channels_last) if channels_last(cfg, dist) else model


def channels_last(cfg: Config, dist: Dist) -> bool:
    return dist.device.type == "cuda" and cfg.channels_last


def autocast(cfg: Config, dist: Dist):
    return torch.autocast("cuda", dtype=torch.bfloat16) if dist.device.type == "cuda" and cfg.amp else nullcontext()


def wrap(model: torch.nn.Module, cfg: Config, dist: Dist) -> torch.nn.Module:
    """What the steps run: DDP over the ranks, torch.compile with --compile; the same for --measure-synthetic."""
    net = model
    if dist.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    return torch.compile(net) if cfg.compile else net


def loader_args(cfg: Config, dist: Dist) -> dict:
    return dict(backend=cfg.backend, device=dist.device, rank=dist.rank, world_size=dist.world_size, seed=cfg.seed,
                workers=dist.workers if cfg.workers is None else cfg.workers)


def setup(cfg: Config, dist: Dist) -> Run:
    torch.backends.cudnn.benchmark = dist.device.type == "cuda"  # every shape is fixed: time cuDNN's algorithms once
    # the shards folder read once for the whole run, and checked before the run folder is touched
    data = open_dataset(cfg.shards)
    inference = dataset_inference_meta(cfg, data)
    batch, shape = local_batch(cfg, dist), arch(cfg, len(data.classes))
    train_loader = make_loader(data, "train", batch, limit=cfg.limit_train, **loader_args(cfg, dist))
    val_loader = make_loader(data, "val", batch, limit=cfg.limit_val, **loader_args(cfg, dist))
    model = new_model(cfg, dist, len(data.classes))
    opt = make_optimizer(cfg.update, model, cfg.lr, cfg.momentum, cfg.weight_decay)
    folder = open_run(cfg, dist, shape)
    net = wrap(model, cfg, dist)
    return Run(cfg=cfg, dist=dist, folder=folder, data=data, arch=shape, model=model, net=net, opt=opt,
               train_loader=train_loader, val_loader=val_loader, autocast=autocast(cfg, dist), inference=inference)


def dataset_inference_meta(cfg: Config, data: Dataset) -> dict:
    names = data.class_names
    return inference_meta(variant=cfg.variant, lrn=cfg.lrn, classes=list(data.classes),
                          class_names=list(names) if names else None, mean=data.stats["mean"], std=data.stats["std"])


def is_log_step(run: Run, step: int, stop: StopFlag) -> bool:
    """Host syncs happen only here: every --log-every steps, at the end of an epoch, and at once when a single
    process is asked to stop (several ranks agree on stopping at their next log step)."""
    return (step % run.cfg.log_every == 0 or run.train_loader.batch == len(run.train_loader)
            or (run.dist.world_size == 1 and stop.signal is not None))


@dataclass
class Interval:
    """What the steps since the last log step did, on this rank."""
    loss: torch.Tensor                # summed on the device: read only at log steps
    input: InputWait                  # host seconds in next(loader) and, on CUDA, the stream's at the hand-over
    steps: int = 0
    t0: float = field(default_factory=time.perf_counter)        # the interval's start
    epoch_t0: float = field(default_factory=time.perf_counter)  # this train_epoch's start


def train_epoch(run: Run, stop: StopFlag, *, epoch: int, lr: float, step: int) -> EpochStats:
    """The rest of the epoch from the loader's position, or up to --max-steps or a stop signal."""
    cfg, dist, loader = run.cfg, run.dist, run.train_loader
    run.net.train()
    # a bar on a terminal; else nothing, the log lines below are the periodic plain lines
    bar = progress_bar(len(loader), f"epoch {epoch}", "batch", initial=loader.batch, enabled=dist.main, every=None)
    stats = EpochStats(gpu_wait=0.0 if dist.device.type == "cuda" else None)
    interval = Interval(torch.zeros((), device=dist.device), InputWait(dist.device))
    batches = iter(loader)
    while stats.stopped is None:
        images, labels = interval.input.next(batches, (None, None))
        if images is None:  # the epoch's end: its last log step has been written, this wait is not reported
            break
        if epoch < cfg.warmup_epochs:  # Goyal et al.: the rate rises step by step to the epoch's rate
            for group in run.opt.param_groups:
                group["lr"] = warmup_lr(lr, step + stats.steps, cfg.warmup_epochs * len(loader),
                                        warmup_start(cfg.lr, lr))
        if channels_last(cfg, dist):
            images = images.contiguous(memory_format=torch.channels_last)
        interval.loss += train_step(run.net, run.opt, images, labels, run.autocast)
        stats.steps, interval.steps = stats.steps + 1, interval.steps + 1
        bar.update()
        at_max = cfg.max_steps is not None and step + stats.steps >= cfg.max_steps
        if not (at_max or is_log_step(run, step + stats.steps, stop)):
            continue
        asked = log_interval(run, interval, stats, step + stats.steps, stop, bar)
        if asked:
            stats.stopped = stop.signal or "another rank"
        elif at_max:
            stats.stopped = "max-steps"
    bar.close()
    return stats


def log_interval(run: Run, interval: Interval, stats: EpochStats, step: int, stop: StopFlag, bar) -> bool:
    """A log step (the only host syncs): one train record over the interval, which is added to `stats` and
    started again. Returns whether any rank was asked to stop."""
    cfg, dist, loader = run.cfg, run.dist, run.train_loader
    dist.synchronize()
    elapsed = time.perf_counter() - interval.t0
    wait, gpu_wait = interval.input.take()
    loss, waited, gpu_waited, asked = dist.all_sum([interval.loss.item(), wait, gpu_wait or 0.0,
                                                    float(stop.signal is not None)])
    n, ranks = interval.steps, dist.world_size
    loss, waited, gpu_waited = loss / (n * ranks), waited / ranks, gpu_waited / ranks  # means over ranks
    rate = n * cfg.batch_size / elapsed
    gpu = {} if gpu_wait is None else {"data_wait_gpu": gpu_waited / elapsed}
    run.log.write("train", step=step, epoch=epochs_done(loader), lr=run.opt.param_groups[0]["lr"], loss=loss,
                  images_per_s=rate, data_wait=waited / elapsed, **gpu,
                  epoch_s=time.perf_counter() - interval.epoch_t0)
    bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.0f}", wait=f"{100 * waited / elapsed:.0f}%")
    stats.images += n * cfg.batch_size
    stats.seconds += elapsed
    stats.wait += waited
    if gpu_wait is not None:
        stats.gpu_wait = (stats.gpu_wait or 0.0) + gpu_waited
    interval.loss.zero_()
    interval.steps, interval.t0 = 0, time.perf_counter()
    return bool(asked)


def fit(run: Run, state: RunState, stop: StopFlag) -> tuple[EpochStats, dict]:
    """Epochs from `state` on (which it advances): train, evaluate, checkpoint. Returns the training
    totals and the last evaluation ({} if none ran)."""
    cfg, total, result = run.cfg, EpochStats(), {}
    for epoch in range(state.epoch, cfg.epochs):
        state.epoch = epoch
        lr = learning_rate(scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling), epoch, schedule=cfg.schedule,
                           milestones=cfg.milestones, val_errors=state.val_errors, patience=cfg.patience)
        for group in run.opt.param_groups:
            group["lr"] = lr
        stats = train_epoch(run, stop, epoch=epoch, lr=lr, step=state.step)
        total, state.step = total + stats, state.step + stats.steps
        if stats.stopped not in (None, "max-steps"):
            save_state(run, state, finished=False)
            run.echo(f"stopped by {stats.stopped}: checkpoint written to {run.dir / 'last.pt'}; continue with "
                     f"--resume")
            break
        finished = run.train_loader.batch == 0  # else --max-steps ended it inside the epoch
        result = evaluate(run.model, run.val_loader, run.dist, amp=run.on_gpu and cfg.amp)
        run.log.write("eval", step=state.step, epoch=epochs_done(run.train_loader), lr=lr, **result,
                      **stats.rates())
        if finished:
            state.epoch = epoch + 1
            state.val_errors.append(result["top1_err"])
        save_state(run, state, finished=finished)
        run.plot()
        if stats.stopped or stop.signal:
            break
    return total, result


def ten_crop_test(run: Run, step: int) -> dict:
    """The paper's test: the mean softmax of 10 crops per val image (4 corners, centre, and their mirrors)."""
    cfg, dist = run.cfg, run.dist
    loader = make_loader(run.data, "val", max(1, local_batch(cfg, dist) // 4), ten_crop=True, limit=cfg.limit_val,
                         **loader_args(cfg, dist))
    ten = evaluate(run.model, loader, dist, amp=run.on_gpu and cfg.amp)
    run.log.write("eval_ten_crop", step=step, epoch=epochs_done(run.train_loader), **ten)
    return ten


def report(run: Run, state: RunState, total: EpochStats, result: dict, ten: dict | None,
           synthetic_rate: float | None) -> dict:
    summary = {"epochs": len(state.val_errors), "steps": state.step, "stopped_by": total.stopped}
    if result:
        summary.update({"val_top1_err": result["top1_err"], "val_top5_err": result["top5_err"],
                        "val_images": result["images"]})
    if ten:
        summary.update({"ten_crop_top1_err": ten["top1_err"], "ten_crop_top5_err": ten["top5_err"]})
    if total.seconds:
        summary.update({"train_images_per_s": total.images / total.seconds, "data_wait": total.wait / total.seconds})
        if total.gpu_wait is not None:
            summary["data_wait_gpu"] = total.gpu_wait / total.seconds
    if synthetic_rate:
        summary.update({"synthetic_images_per_s": synthetic_rate,
                        "vs_synthetic": summary.get("train_images_per_s", 0) / synthetic_rate})
    digest = weights_digest(run.model)
    summary["ranks_weights_equal"] = len(set(run.dist.all_gather(digest))) == 1  # bit for bit, on every rank
    summary["weights_sha256"] = digest
    return summary


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in order: equal digests, bit-identical weights."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def measure_synthetic(cfg: Config, dist: Dist, model: torch.nn.Module, classes: int, log: RunLog, steps: int) -> float:
    """images/s of the model alone on random tensors (model/synthetic.py), wrapped as the run's steps are (DDP,
    --compile), logged as a `synthetic` line that says which wrapping it timed."""
    rate, wrapping = measure_model(cfg, model, dist, local_batch(cfg, dist), classes, steps, autocast(cfg, dist),
                                   partial(wrap, cfg=cfg, dist=dist))
    log.write("synthetic", images_per_s=rate, batch=cfg.batch_size, world_size=dist.world_size, **wrapping)
    return rate


def train(cfg: Config) -> dict:
    with distributed(cfg.device) as dist:
        run = setup(cfg, dist)
        state = load_state(run) if run.folder.resume_from else RunState()
        synthetic_rate = None
        if cfg.measure_synthetic:
            synthetic_rate = measure_synthetic(cfg, dist, run.model, run.arch["num_classes"], run.log,
                                               cfg.measure_synthetic)
        with StopFlag() as stop:
            total, result = fit(run, state, stop)
        ended = total.stopped in (None, "max-steps")  # not stopped by a signal
        ten = ten_crop_test(run, state.step) if cfg.ten_crop_eval and ended and result else None
        if ended:
            save_model(run)
        run.plot()
        summary = report(run, state, total, result, ten, synthetic_rate)
        finish(run.log, summary)
        return summary


def synthetic(cfg: Config) -> dict:
    """--synthetic: images/s of the model alone on random tensors for --max-steps steps (100 by default)."""
    if cfg.resume is not None:
        raise ConfigError("--synthetic trains nothing that --resume could continue; leave one out")
    with distributed(cfg.device) as dist:
        classes = len(open_dataset(cfg.shards).classes)
        model = new_model(cfg, dist, classes)
        log = open_run(cfg, dist, arch(cfg, classes)).log
        summary = {"synthetic_images_per_s": measure_synthetic(cfg, dist, model, classes, log, cfg.max_steps or 100)}
        finish(log, summary)
        return summary


def _int_tuple(ctx, param, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter("expected comma-separated epochs, e.g. 30,60,80") from None


default = partial(cli.default, Config)


@click.command(context_settings=cli.CONTEXT)
@click.option("--shards", default=default("shards"), show_default=True, metavar="DIR|URL")
@click.option("--name", default=default("name"), show_default=True, help="Run folder name under --runs.")
@click.option("--runs", default=default("runs"), show_default=True, type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(BACKENDS), default=default("backend"), show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default=default("device"), show_default="cuda if available")
@click.option("--epochs", default=default("epochs"), show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=default("batch_size"), show_default=True, type=click.IntRange(1),
              help="Global batch size.")
@click.option("--lr", default=default("lr"), show_default=True, help="At batch 128 (see --lr-scaling).")
@click.option("--lr-scaling", type=click.Choice(LR_SCALINGS), default=default("lr_scaling"), show_default=True,
              help="linear: lr * batch-size / 128 (Goyal et al. 2017).")
@click.option("--warmup-epochs", default=default("warmup_epochs"), show_default=True, type=click.IntRange(0),
              help="Gradual warm-up to the (scaled) rate over N epochs, step by step.")
@click.option("--momentum", default=default("momentum"), show_default=True)
@click.option("--weight-decay", default=default("weight_decay"), show_default=True)
@click.option("--schedule", type=click.Choice(["plateau", "step", "constant"]), default=default("schedule"),
              show_default=True)
@click.option("--patience", default=default("patience"), show_default=True,
              help="plateau: epochs without improvement before lr/10.")
@click.option("--milestones", default=",".join(map(str, default("milestones"))), show_default=True,
              callback=_int_tuple, help="step: epochs of lr/10.")
@click.option("--update", type=click.Choice(["pytorch", "paper"]), default=default("update"), show_default=True,
              help="paper: v <- 0.9v - 0.0005 lr w - lr grad; w <- w + v.")
@click.option("--init", type=click.Choice(INITS), default=default("init"), show_default=True)
@click.option("--variant", type=click.Choice(VARIANTS), default=default("variant"), show_default=True)
@click.option("--lrn", type=click.Choice(LRNS), default=default("lrn"), show_default=True,
              help="paper: alpha on the plain sum, per column; caffe: alpha / n over all maps (bvlc_alexnet).")
@click.option("--dropout", default=default("dropout"), show_default=True)
@click.option("--amp/--no-amp", default=default("amp"), show_default=True, help="bf16 autocast on CUDA.")
@click.option("--channels-last/--no-channels-last", default=default("channels_last"), show_default=True,
              help="On CUDA.")
@click.option("--compile", "compile_", is_flag=True, default=default("compile"), help="torch.compile the model.")
@click.option("--seed", default=default("seed"), show_default=True)
@click.option("--workers", type=click.IntRange(0), help="Loader threads/processes per rank [default: cores / ranks].")
@click.option("--max-steps", type=click.IntRange(1), help="Stop after this many steps (then evaluate).")
@click.option("--limit-train", type=click.IntRange(1), help="Samples per train epoch.")
@click.option("--limit-val", type=click.IntRange(1), help="Evaluate only the first N val images.")
@click.option("--log-every", default=default("log_every"), show_default=True, type=click.IntRange(1))
@click.option("--synthetic", is_flag=True, default=default("synthetic"),
              help="Only measure the model on random tensors (--max-steps steps).")
@click.option("--measure-synthetic", default=default("measure_synthetic"), show_default=True, type=click.IntRange(0),
              help="First measure the model alone for N steps; the summary gives the real run as a fraction.")
@click.option("--ten-crop-eval/--no-ten-crop-eval", default=default("ten_crop_eval"), show_default=True,
              help="Final 10-crop test.")
@click.option("--keep-every", default=default("keep_every"), show_default=True, type=click.IntRange(0),
              help="Also keep epoch-NNN.pt every N finished epochs.")
@click.option("--resume", is_flag=False, flag_value="", default=default("resume"), metavar="[PATH]",
              help="Continue this run (RUNS/NAME/last.pt), or from a run folder or a .pt file.")
@click.option("--overwrite", is_flag=True, default=default("overwrite"),
              help="Start again in a folder that holds a run (its files are deleted).")
def main(**options):
    """Train AlexNet on WebDataset shards (see README)."""
    options["compile"] = options.pop("compile_")
    cfg = Config(**{k: str(v) if isinstance(v, Path) else v for k, v in options.items()})
    synthetic(cfg) if cfg.synthetic else train(cfg)


if __name__ == "__main__":
    cli.run(main)
