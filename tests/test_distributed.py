"""model/distributed.py: when one rank of a two-process gloo run fails, the other exits within seconds."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import REPO

# Rank 1 fails after the first collective; rank 0 goes on into a collective that rank 1 never joins.
WORKER = """
import sys, time, torch
from model.distributed import distributed
from common import cli
from common.errors import DataError

def main():
    with distributed("cpu") as dist:
        dist.all_sum([1.0])
        if dist.rank == 1:
            if sys.argv[1] in ("user", "slow-exit"):
                raise DataError("shard train-000003.tar: truncated; re-run make_shards")
            raise ZeroDivisionError("a bug")
        time.sleep(0.5)
        dist.all_sum([2.0])   # waits for rank 1
        time.sleep(600)       # never reached: the watchdog or the collective ends rank 0
try:
    main()
except DataError as e:
    if sys.argv[1] == "slow-exit":  # e.g. loader workers that take long to join
        time.sleep(6)
    cli.fail(str(e))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(kind: str) -> list[tuple[int, str, float]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, kind], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    ended = [None, None]

    def wait(r: int) -> None:
        procs[r].wait(timeout=120)
        ended[r] = time.monotonic()

    threads = [threading.Thread(target=wait, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [(p.returncode, p.stderr.read(), t) for p, t in zip(procs, ended)]


@pytest.mark.slow
def test_a_user_error_on_one_rank_ends_the_other_with_one_error_line():
    (rc0, err0, t0), (rc1, err1, t1) = launch("user")
    assert (rc0, rc1) == (2, 2), (err0, err1)
    assert abs(t0 - t1) < 5  # rank 0 does not wait out a collective timeout
    assert err1 == ""    # only rank 0 prints
    assert err0.strip() == "error: rank 1 shard train-000003.tar: truncated; re-run make_shards", err0
    assert "Traceback" not in err0


@pytest.mark.slow
def test_the_others_do_not_wait_for_a_failed_rank_that_is_slow_to_exit():
    (rc0, err0, t0), (rc1, err1, t1) = launch("slow-exit")
    assert (rc0, rc1) == (2, 2), (err0, err1)
    assert t1 - t0 > 4, "rank 0 waited for rank 1's exit (6 s after its failure)"
    assert err0.strip() == "error: rank 1 shard train-000003.tar: truncated; re-run make_shards", err0


@pytest.mark.slow
def test_a_bug_on_one_rank_keeps_its_traceback_and_ends_the_other():
    (rc0, err0, t0), (rc1, err1, t1) = launch("bug")
    assert (rc0, rc1) == (1, 1), (err0, err1)
    assert abs(t0 - t1) < 5
    assert "ZeroDivisionError: a bug" in err1 and "Traceback" in err1
    assert "error: rank 1 failed with ZeroDivisionError: a bug" in err0
