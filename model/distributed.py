"""Distributed set-up in one place: read torchrun's environment, pick NCCL on CUDA and gloo on CPU.

    with distributed(device="cuda") as dist:   # also works as a single plain process
        ... dist.rank, dist.world_size, dist.device ...

When another rank dies (killed, out of memory), gloo fails this rank's next collective at once ("Connection
reset/closed by peer"); distributed() turns that into RankLost, one line that says so and how to go on.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as td

from shardkit.errors import ConfigError


PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Connection refused")


class RankLost(RuntimeError):
    """Another process of the run stopped; this one cannot go on alone."""


@dataclass(frozen=True)
class Dist:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum a few numbers over ranks (one collective); identity on one process."""
        if self.world_size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        td.all_reduce(t)
        return t.tolist()

    def all_gather(self, obj) -> list:
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out


@contextmanager
def distributed(device: str = "cuda"):
    """Yield a Dist; with torchrun (WORLD_SIZE set) initialise the process group, and always tear it down."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda, but torch sees no CUDA device (use --device cpu)")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise ConfigError(f"unknown device {device!r}; use cuda or cpu")
    if world > 1:
        td.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world,
                              device_id=dev if dev.type == "cuda" else None)
    try:
        yield Dist(rank, local, world, dev)
    except RuntimeError as e:
        if world > 1 and any(s in str(e) for s in PEER_GONE):
            raise RankLost(f"rank {rank} of {world}: another rank stopped (its connection closed: "
                           f"{str(e).splitlines()[0][:160]}); the run stops here: look at the other ranks' output "
                           "for why, then continue from the last checkpoint with --resume") from None
        raise
    finally:
        if world > 1 and td.is_initialized():
            td.destroy_process_group()
