"""Distributed set-up in one place: read torchrun's environment, pick NCCL on CUDA and gloo on CPU.

    with distributed(device="cuda") as dist:   # also works as a single plain process
        ... dist.rank, dist.world_size, dist.device ...

Several nodes: torchrun on each (c10d rendezvous) sets RANK (global), LOCAL_RANK (the GPU on this node) and
LOCAL_WORLD_SIZE (ranks on this node). Only the global rank decides the data and who writes; only the local
values pick the device and split this node's cores (Dist.workers). Nothing is written to a file the other
nodes read: what they share is the rendezvous store (TCP) and the process group.

When one rank fails, the others do not wait on a collective that will never complete (NCCL would wait for
its 10-minute timeout): the failing rank writes what went wrong into the rendezvous store, and a watchdog
thread on every rank polls that key and ends its process within about a second, with the failed rank's exit
status (2 for a user error, 1 for a bug). Rank 0 prints the failed rank's `error:` line; a user error that
all ranks hit (a missing file) is still printed once. A rank killed outright (kill -9, out of memory) cannot
publish: gloo then fails the others' next collective at once ("Connection reset/closed by peer"), which
distributed() turns into RankLost, one line that says so and how to go on.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import click
import torch
import torch.distributed as td

from common import cli
from common.errors import ConfigError, DataError
from common.parallel import default_workers

FAILED = "failed"   # store key: {"rank", "code", "message"} of the first rank that failed
POLL_S = 0.25
PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Connection refused")


class RankLost(RuntimeError):
    """Another process of the run stopped without a word (killed); this one cannot go on alone."""


@dataclass(frozen=True)
class Dist:
    rank: int               # global: what the data is split by, rank 0 writes the run folder
    local_rank: int         # on this node: which GPU
    world_size: int
    device: torch.device
    local_world_size: int = 1  # processes on this node: what shares its cores

    @property
    def workers(self) -> int:
        """Loader workers per rank by default: this node's cores over this node's ranks (not over all ranks)."""
        return default_workers(self.local_world_size)

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

    def synchronize(self) -> None:
        """Wait for this rank's queued GPU work, so that a clock read after it is honest; no-op on CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def all_gather(self, obj) -> list:
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out


def exit_code(e: BaseException) -> int:
    """The status a rank ends with: 2 for what the user can fix, 130 for Ctrl-C, 1 for a bug."""
    if isinstance(e, (DataError, ConfigError, click.ClickException)):
        return cli.EXIT_USER_ERROR
    return 130 if isinstance(e, KeyboardInterrupt) else 1


class Watchdog:
    """Publishes this rank's failure in the store, and ends this process when another rank published one."""

    def __init__(self, store, rank: int):
        self.store, self.rank = td.PrefixStore("watchdog/", store), rank
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="rank-failure-watchdog", daemon=True)
        self._thread.start()

    def publish(self, e: BaseException) -> None:
        message = str(e) if exit_code(e) == cli.EXIT_USER_ERROR else f"{type(e).__name__}: {e}"
        record = json.dumps({"rank": self.rank, "code": exit_code(e), "message": message})
        self._stop.set()  # this rank reports its own failure; its watchdog must not print a second line
        try:
            self.store.compare_set(FAILED, "", record)  # the first failure wins
        except RuntimeError:  # the store's host is gone: the others are failing already
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                if not self.store.check([FAILED]):
                    continue
                failure = json.loads(self.store.get(FAILED))
            except RuntimeError:  # the store's host (rank 0's process or node, or its torchrun) is gone: so is the job
                if self._stop.is_set():
                    return
                # rank 0 may be what is gone, so this rank says it itself
                click.echo(f"error: rank {self.rank}: the rendezvous store is gone (the process or node that held it "
                           "stopped); the run stops here: look at the other nodes' output for why, then continue "
                           "from the last checkpoint with --resume", err=True)
                sys.stderr.flush()
                os._exit(1)
            if failure["rank"] == self.rank or self._stop.is_set():
                return
            if self.rank == 0:
                kind = "" if failure["code"] == cli.EXIT_USER_ERROR else "failed with "
                cli.print_error(f"rank {failure['rank']} {kind}{failure['message']}")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(failure["code"])  # the main thread may be blocked inside a collective: leave now


@contextmanager
def distributed(device: str = "cuda"):
    """Yield a Dist; with torchrun (WORLD_SIZE set) initialise the process group and the rank-failure
    watchdog, and always tear them down."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))  # torchrun sets it: ranks on this node
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda, but torch sees no CUDA device (use --device cpu)")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise ConfigError(f"unknown device {device!r}; use cuda or cpu")
    watchdog = None
    if world > 1:
        store, rank, world = next(td.rendezvous("env://"))
        td.init_process_group("nccl" if dev.type == "cuda" else "gloo", store=store, rank=rank, world_size=world,
                              device_id=dev if dev.type == "cuda" else None)
        watchdog = Watchdog(store, rank)
    try:
        yield Dist(rank, local, world, dev, local_world)
    except BaseException as e:
        if world > 1 and isinstance(e, RuntimeError) and any(s in str(e) for s in PEER_GONE):
            e = RankLost(f"rank {rank} of {world}: another rank stopped (its connection closed: "
                         f"{str(e).splitlines()[0][:160]}); the run stops here: look at the other ranks' output "
                         "for why, then continue from the last checkpoint with --resume")
        if watchdog is not None:
            watchdog.publish(e)
        if isinstance(e, RankLost):
            raise e from None
        raise
    finally:
        if watchdog is not None:
            watchdog.close()
        if world > 1 and td.is_initialized():
            td.destroy_process_group()
