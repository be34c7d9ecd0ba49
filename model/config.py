"""A training run's configuration: one frozen dataclass, the only place its defaults are written.

`python -m model.train` fills it from click options whose defaults are read from here (common.cli.default);
it is printed at the start, saved in config.json and in every checkpoint.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from common.device import default_device


@dataclass(frozen=True)
class Config:
    shards: str = "shards"
    name: str = "alexnet"
    runs: str = "runs"
    backend: str = "dali"
    device: str = field(default_factory=default_device)  # cuda if torch sees one, else cpu
    epochs: int = 90
    batch_size: int = 128            # global, split over the ranks
    lr: float = 0.01                 # at batch 128; see lr_scaling
    lr_scaling: str = "none"         # none | linear (Goyal et al. 2017: lr * batch_size / 128)
    warmup_epochs: int = 0           # gradual warm-up to the (scaled) rate over these epochs, step by step
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "plateau"        # plateau | step | constant
    patience: int = 5                # plateau: epochs without improvement before a drop
    milestones: tuple[int, ...] = (30, 60, 80)  # step: epochs at which the rate is divided by 10
    update: str = "pytorch"          # pytorch (torch.optim.SGD) | paper (the paper's exact rule)
    init: str = "paper"
    variant: str = "paper"
    lrn: str = "paper"               # paper (alpha on the plain sum, per column) | caffe (alpha / n, all maps)
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
    synthetic: bool = False          # only measure the model on random tensors (model.train.synthetic)
    measure_synthetic: int = 0       # steps of the model alone on random tensors before training, for comparison
    ten_crop_eval: bool = True
    keep_every: int = 0              # also keep epoch-NNN.pt every N finished epochs (0: only last.pt, best.pt)
    resume: str | None = None        # None: a new run; "": this run's last.pt; else a run folder or a .pt file
    overwrite: bool = False          # start again in a folder that holds a run (its run files are deleted)


def plain(cfg: Config) -> dict:
    """The config as builtins only (tuples to lists): loadable from a checkpoint with weights_only=True."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
