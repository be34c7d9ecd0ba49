"""Train AlexNet (2012) on the shards with the paper's recipe.

    python -m model.train --shards shards/                                   # one process (GPU if present)
    torchrun --nproc_per_node=2 -m model.train --shards shards/              # DDP on two GPUs (NCCL)
    torchrun --nproc_per_node=2 -m model.train --shards shards/ --device cpu # two CPU processes (gloo)
    python -m model.train --shards shards/ --synthetic --max-steps 100       # the model alone, random tensors

Defaults are the paper's: global batch 128 split over the ranks, SGD momentum 0.9, weight decay 5e-4,
lr 0.01 divided by 10 when the val error stops improving (three times at most), 90 epochs, paper init.
Writes runs/<name>/: config.json, metrics.jsonl, checkpoint.pt (each epoch, and on SIGTERM/SIGINT),
curves.png, summary.json. --resume continues from checkpoint.pt exactly (model, optimizer, schedule, RNG and
loader position). Rank 0 logs `[train] step=...` lines and one JSON line per log step and eval.
"""
from __future__ import annotations

import copy
import json
import platform
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.alexnet import INITS, VARIANTS, build_model
from model.checkpoint import CheckpointError, check_arch, load_checkpoint, save_checkpoint
from model.distributed import Dist, distributed
from model.evaluate import evaluate
from model.metrics import RunLog, plot_curves
from model.optim import PaperSGD
from model.schedule import learning_rate


@dataclass(frozen=True)
class Config:
    shards: str = "shards"
    name: str = "alexnet"
    runs: str = "runs"
    backend: str = "dali"
    device: str = "cuda"
    epochs: int = 90
    batch_size: int = 128            # global, split over the ranks
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "plateau"        # plateau | step | constant
    patience: int = 5                # plateau: epochs without improvement before a drop
    milestones: tuple[int, ...] = (30, 60, 80)  # step: epochs at which the rate is divided by 10
    update: str = "pytorch"          # pytorch (torch.optim.SGD) | paper (the paper's exact rule)
    init: str = "paper"
    variant: str = "paper"
    dropout: float = 0.5
    amp: bool = True                 # bf16 autocast (CUDA only)
    channels_last: bool = True       # CUDA only
    compile: bool = False
    seed: int = 0
    workers: int | None = None       # loader threads/processes per rank
    max_steps: int | None = None
    limit_train: int | None = None   # samples per train epoch
    limit_val: int | None = None     # evaluate only the first N val images
    log_every: int = 50
    synthetic: bool = False
    measure_synthetic: int = 0       # steps of the model alone on random tensors before training, for comparison
    ten_crop_eval: bool = True
    resume: bool = False


class StopFlag:
    """While active, SIGTERM/SIGINT ask for a checkpoint and a clean exit; a second SIGINT interrupts at once."""

    def __init__(self):
        self.signal, self._previous = None, {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.signal == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name


def provenance(dist: Dist) -> dict:
    try:
        import nvidia.dali
        dali = nvidia.dali.__version__
    except ImportError:
        dali = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    device = torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else platform.processor() or "cpu"
    return {"torch": str(torch.__version__), "dali": dali, "cuda": torch.version.cuda, "device": device,
            "world_size": dist.world_size, "git_commit": commit, "python": platform.python_version()}


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.update == "paper":
        return PaperSGD(model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train_step(model, opt, images, labels, autocast) -> torch.Tensor:
    with autocast:
        loss = F.cross_entropy(model(images), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def measure_model(cfg: Config, model, dist: Dist, batch: int, classes: int, steps: int, autocast) -> float:
    """images/s (all ranks) of the model alone on random tensors, on copies so training is untouched."""
    model = copy.deepcopy(model)
    opt = make_optimizer(cfg, model)
    fmt = torch.channels_last if dist.device.type == "cuda" and cfg.channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, 224, 224, device=dist.device).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), device=dist.device)
    warmup = min(5, steps)
    for i in range(steps + warmup):
        if i == warmup:
            _sync(dist)
            t0 = time.perf_counter()
        train_step(model, opt, x, y, autocast)
    _sync(dist)
    dt = dist.all_sum([time.perf_counter() - t0])[0] / dist.world_size
    return steps * batch * dist.world_size / dt


def _sync(dist: Dist) -> None:
    if dist.device.type == "cuda":
        torch.cuda.synchronize(dist.device)


def train_epoch(net, opt, loader, dist: Dist, log: RunLog, stop: StopFlag, meter: dict, *, cfg: Config,
                epoch: int, lr: float, step: int, autocast) -> tuple[int, str | None]:
    """The rest of one epoch. Host syncs only on log steps, where the ranks also agree on stopping.
    Returns the step count and what ended the epoch early (a signal, "another rank", "max-steps") or None."""
    net.train()
    channels_last = dist.device.type == "cuda" and cfg.channels_last
    bar = tqdm(total=len(loader), initial=loader.batch, desc=f"epoch {epoch}", unit="batch",
               disable=not dist.main, dynamic_ncols=True, leave=False)
    loss_sum = torch.zeros((), device=dist.device)
    n, wait, t_log, stopped = 0, 0.0, time.perf_counter(), None
    batches = iter(loader)
    while stopped is None:
        t0 = time.perf_counter()
        images, labels = next(batches, (None, None))
        if images is None:
            break
        wait += time.perf_counter() - t0  # time blocked on the loader
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss_sum += train_step(net, opt, images, labels, autocast)
        step, n = step + 1, n + 1
        bar.update()
        at_max = cfg.max_steps is not None and step >= cfg.max_steps
        if step % cfg.log_every and not at_max and loader.batch < len(loader) and \
                not (dist.world_size == 1 and stop.signal):
            continue
        _sync(dist)
        elapsed = time.perf_counter() - t_log
        loss, waited, asked = dist.all_sum([loss_sum.item(), wait, float(bool(stop.signal))])
        loss, waited = loss / (n * dist.world_size), waited / dist.world_size
        rate = n * cfg.batch_size / elapsed
        log.write("train", step=step, epoch=epoch, lr=lr, loss=loss, images_per_s=rate, data_wait=waited / elapsed)
        bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.0f}", wait=f"{100 * waited / elapsed:.0f}%")
        meter["images"] += n * cfg.batch_size
        meter["seconds"] += elapsed
        meter["wait"] += waited
        loss_sum.zero_()
        n, wait, t_log = 0, 0.0, time.perf_counter()
        if asked:
            stopped = stop.signal or "another rank"
        elif at_max:
            stopped = "max-steps"
    bar.close()
    return step, stopped


def train(cfg: Config) -> dict:
    from pipeline import make_loader
    from tools.shardio import load_manifest

    with distributed(cfg.device) as dist:
        log_echo = tqdm.write if dist.main else (lambda *a: None)
        if cfg.batch_size % dist.world_size:
            raise ValueError(f"--batch-size {cfg.batch_size} does not split over {dist.world_size} ranks")
        batch = cfg.batch_size // dist.world_size
        torch.manual_seed(cfg.seed * 1000 + dist.rank)
        run_dir = Path(cfg.runs) / cfg.name
        classes = len(load_manifest(Path(cfg.shards))["classes"])
        on_gpu = dist.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu and cfg.amp else nullcontext()
        torch.backends.cudnn.benchmark = on_gpu  # every shape is fixed: cuDNN times its algorithms once, keeps the best

        model = build_model(cfg.variant, classes, cfg.init, cfg.dropout).to(dist.device)
        if on_gpu and cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = make_optimizer(cfg, model)
        arch = {"variant": cfg.variant, "num_classes": classes}
        prov = provenance(dist)
        if dist.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            click.echo(f"config: {json.dumps(asdict(cfg))}\nprovenance: {json.dumps(prov)}")
            (run_dir / "config.json").write_text(json.dumps({"config": asdict(cfg), "provenance": prov}, indent=1) + "\n")
        log = RunLog(run_dir, dist.main, echo=log_echo)

        if cfg.synthetic:
            rate = measure_model(cfg, model, dist, batch, classes, cfg.max_steps or 100, autocast)
            log.write("synthetic", images_per_s=rate, batch=cfg.batch_size, world_size=dist.world_size)
            summary = {"synthetic_images_per_s": rate}
            _finish(dist, run_dir, summary)
            return summary
        loader_args = dict(backend=cfg.backend, device=dist.device, rank=dist.rank, world_size=dist.world_size,
                           seed=cfg.seed, workers=cfg.workers)
        train_loader = make_loader(cfg.shards, "train", batch, limit=cfg.limit_train, **loader_args)
        val_loader = make_loader(cfg.shards, "val", batch, limit=cfg.limit_val, **loader_args)

        epoch, step, val_errors = 0, 0, []
        ckpt_path = run_dir / "checkpoint.pt"
        if cfg.resume:
            ckpt = load_checkpoint(ckpt_path)
            check_arch(ckpt, ckpt_path, **arch)
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            epoch, step, val_errors = ckpt["epoch"], ckpt["step"], list(ckpt["val_errors"])
            if ckpt["world_size"] == dist.world_size:
                mine = ckpt["ranks"][dist.rank]
                torch.set_rng_state(mine["rng_cpu"])
                if on_gpu and mine["rng_cuda"] is not None:
                    torch.cuda.set_rng_state(mine["rng_cuda"], dist.device)
                train_loader.load_state_dict(mine["loader"])
            else:
                log_echo(f"note: checkpoint from {ckpt['world_size']} ranks, now {dist.world_size}: "
                         "the loaders restart the epoch and the RNG is reseeded")
                train_loader.load_state_dict({"epoch": epoch, "batch": 0})
            log_echo(f"resumed {ckpt_path} at epoch {epoch}, step {step}")

        net = DistributedDataParallel(model, device_ids=[dist.device.index] if on_gpu else None) \
            if dist.world_size > 1 else model
        if cfg.compile:
            net = torch.compile(net)
        synthetic_rate = None
        if cfg.measure_synthetic:
            synthetic_rate = measure_model(cfg, model, dist, batch, classes, cfg.measure_synthetic, autocast)
            log.write("synthetic", images_per_s=synthetic_rate, batch=cfg.batch_size, world_size=dist.world_size)

        def checkpoint(ep: int) -> None:
            ranks = dist.all_gather({"rng_cpu": torch.get_rng_state(),
                                     "rng_cuda": torch.cuda.get_rng_state(dist.device) if on_gpu else None,
                                     "loader": train_loader.state_dict()})
            if dist.main:
                save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                            "epoch": ep, "step": step, "val_errors": val_errors,
                                            "config": _plain(asdict(cfg)), "arch": arch, "ranks": ranks,
                                            "world_size": dist.world_size, "provenance": prov})

        with StopFlag() as stop:
            meter = {"images": 0, "seconds": 0.0, "wait": 0.0}
            result, stopped = {}, None
            for epoch in range(epoch, cfg.epochs):
                lr = learning_rate(cfg.lr, epoch, schedule=cfg.schedule, milestones=cfg.milestones,
                                   val_errors=val_errors, patience=cfg.patience)
                for group in opt.param_groups:
                    group["lr"] = lr
                step, stopped = train_epoch(net, opt, train_loader, dist, log, stop, meter, cfg=cfg, epoch=epoch,
                                            lr=lr, step=step, autocast=autocast)
                if stopped and stopped != "max-steps":
                    checkpoint(epoch)
                    log_echo(f"stopped by {stopped}: checkpoint written to {ckpt_path}; continue with --resume")
                    break
                partial = train_loader.batch != 0  # --max-steps ended it inside the epoch
                result = evaluate(net, val_loader, dist, amp=on_gpu and cfg.amp)
                log.write("eval", step=step, epoch=epoch + (0 if partial else 1), **result)
                if not partial:
                    val_errors.append(result["top1_err"])
                checkpoint(epoch if partial else epoch + 1)
                if dist.main:
                    plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
                if stopped or stop.signal:
                    break

        summary = {"epochs": len(val_errors), "steps": step, "stopped_by": stopped}
        if result:
            summary.update({"val_top1_err": result["top1_err"], "val_top5_err": result["top5_err"],
                            "val_images": result["images"]})
        if cfg.ten_crop_eval and stopped in (None, "max-steps") and result:
            tc = make_loader(cfg.shards, "val", max(1, batch // 4), ten_crop=True, limit=cfg.limit_val, **loader_args)
            ten = evaluate(net, tc, dist, amp=on_gpu and cfg.amp)
            log.write("eval_ten_crop", step=step, **ten)
            summary.update({"ten_crop_top1_err": ten["top1_err"], "ten_crop_top5_err": ten["top5_err"]})
        if meter["seconds"]:
            summary.update({"train_images_per_s": meter["images"] / meter["seconds"],
                            "data_wait": meter["wait"] / meter["seconds"]})
        if synthetic_rate:
            summary.update({"synthetic_images_per_s": synthetic_rate,
                            "vs_synthetic": summary.get("train_images_per_s", 0) / synthetic_rate})
        checksum = float(sum(p.double().sum().item() for p in model.parameters()))
        summary["ranks_weights_equal"] = len(set(dist.all_gather(checksum))) == 1
        _finish(dist, run_dir, summary)
        return summary


def _plain(d: dict) -> dict:
    """Config as builtins only (tuples to lists), loadable with weights_only=True."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _finish(dist: Dist, run_dir: Path, summary: dict) -> None:
    if dist.main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        click.echo("summary: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in summary.items()))


def _int_tuple(ctx, param, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter("expected comma-separated epochs, e.g. 30,60,80") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--shards", default="shards", show_default=True, type=click.Path(path_type=Path))
@click.option("--name", default="alexnet", show_default=True, help="Run folder name under --runs.")
@click.option("--runs", default="runs", show_default=True, type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["dali", "torch"]), default="dali", show_default=True)
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda" if torch.cuda.is_available() else "cpu",
              show_default="cuda if available")
@click.option("--epochs", default=90, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1), help="Global batch size.")
@click.option("--lr", default=0.01, show_default=True)
@click.option("--momentum", default=0.9, show_default=True)
@click.option("--weight-decay", default=5e-4, show_default=True)
@click.option("--schedule", type=click.Choice(["plateau", "step", "constant"]), default="plateau", show_default=True)
@click.option("--patience", default=5, show_default=True, help="plateau: epochs without improvement before lr/10.")
@click.option("--milestones", default="30,60,80", show_default=True, callback=_int_tuple, help="step: epochs of lr/10.")
@click.option("--update", type=click.Choice(["pytorch", "paper"]), default="pytorch", show_default=True,
              help="paper: v <- 0.9v - 0.0005 lr w - lr grad; w <- w + v.")
@click.option("--init", type=click.Choice(INITS), default="paper", show_default=True)
@click.option("--variant", type=click.Choice(VARIANTS), default="paper", show_default=True)
@click.option("--dropout", default=0.5, show_default=True)
@click.option("--amp/--no-amp", default=True, show_default=True, help="bf16 autocast on CUDA.")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True, help="On CUDA.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", type=click.IntRange(0), help="Loader threads/processes per rank [default: cores / ranks].")
@click.option("--max-steps", type=click.IntRange(1), help="Stop after this many steps (then evaluate).")
@click.option("--limit-train", type=click.IntRange(1), help="Samples per train epoch.")
@click.option("--limit-val", type=click.IntRange(1), help="Evaluate only the first N val images.")
@click.option("--log-every", default=50, show_default=True, type=click.IntRange(1))
@click.option("--synthetic", is_flag=True, help="Only measure the model on random tensors (--max-steps steps).")
@click.option("--measure-synthetic", default=0, show_default=True, type=click.IntRange(0),
              help="First measure the model alone for N steps; the summary gives the real run as a fraction.")
@click.option("--ten-crop-eval/--no-ten-crop-eval", default=True, show_default=True, help="Final 10-crop test.")
@click.option("--resume", is_flag=True, help="Continue from RUNS/NAME/checkpoint.pt.")
def main(**options):
    """Train AlexNet on WebDataset shards (see README)."""
    options["compile"] = options.pop("compile_")
    cfg = Config(**{k: str(v) if isinstance(v, Path) else v for k, v in options.items()})
    from tools.shardio import DataError
    try:
        train(cfg)
    except (DataError, CheckpointError, ValueError, ImportError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
