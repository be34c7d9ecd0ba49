"""One error convention for every command-line tool: a user error prints one `error:` line and exits 2,
without a traceback, also under torchrun (rank 0 only)."""
from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, write_shards


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def assert_user_error(r: subprocess.CompletedProcess, *words: str) -> str:
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert len(errors) == 1, r.stderr
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def no_pca(tmp_path_factory) -> Path:
    gray = np.full((256, 256, 3), 128, np.uint8)
    out = write_shards(tmp_path_factory.mktemp("no_pca"), {"train": [(gray, 0)] * 4, "val": [(gray, 1)] * 2}, 2)
    (out / "pca.json").unlink()
    return out


COMMANDS = {
    "compute_pca": ["tools/compute_pca.py", "--shards", "{shards}"],
    "bench": ["tools/bench_loader.py", "--shards", "{shards}", "--batch-size", "2"],
    "preview": ["-m", "pipeline.preview", "--shards", "{shards}", "--out", "{tmp}/preview.png"],
    "train": ["-m", "model.train", "--shards", "{shards}", "--runs", "{tmp}/runs", "--device", "cpu"],
}


@functools.cache
def click_commands() -> dict[str, object]:
    """Every command's click object: tools/*.py (loaded as files, not run) and the python -m modules."""
    import runpy
    from importlib import import_module
    found = {p.name: runpy.run_path(str(p))["main"] for p in sorted((REPO / "tools").glob("*.py"))}
    for module in ("pipeline.preview", "model.train", "model.evaluate", "model.predict", "model.export"):
        found[module] = import_module(module).main
    return found


def test_every_command_answers_help_with_its_options():
    from tests.conftest import invoke
    commands = click_commands()
    assert len(commands) >= 16
    for name, command in commands.items():
        r = invoke(command, ["--help"])
        assert r.exit_code == 0 and "Usage:" in r.output and "--help" in r.output, (name, r.output)


@pytest.mark.parametrize("old,new", [("pipeline.bench", "tools/bench_loader.py"), ("model.bench_lrn", "tools/bench_lrn.py")])
def test_the_older_command_names_still_run_the_tools(old, new):
    """python -m pipeline.bench and python -m model.bench_lrn: what users typed before the benchmarks moved."""
    via_alias, via_tool = run("-m", old, "--help"), run(new, "--help")
    assert via_alias.returncode == 0 and via_alias.stdout == via_tool.stdout and "--json" in via_tool.stdout


def run_here(*args: str) -> subprocess.CompletedProcess:
    """A command of COMMANDS in this process (through cli.run, as its __main__ does): the same exit status and
    lines, without a second start-up of torch and DALI. Its stderr holds what cli.run printed."""
    from tests.conftest import invoke
    name = args[1] if args[0] == "-m" else Path(args[0]).name
    r = invoke(click_commands()[name], list(args[2 if args[0] == "-m" else 1:]))
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


@pytest.mark.parametrize("tool", sorted(COMMANDS))
def test_missing_manifest(tool, tmp_path):
    args = [a.format(shards=tmp_path / "nowhere", tmp=tmp_path) for a in COMMANDS[tool]]
    assert_user_error(run_here(*args), "manifest.json: not found", "make_shards.py")


@pytest.mark.parametrize("tool", ["bench", "preview", "train"])
def test_missing_pca(tool, tmp_path, no_pca):
    args = [a.format(shards=no_pca, tmp=tmp_path) for a in COMMANDS[tool]]
    assert_user_error(run_here(*args), "pca.json: not found", "compute_pca.py")


def test_evaluate_missing_checkpoint(tmp_path, no_pca):
    assert_user_error(run("-m", "model.evaluate", "--shards", str(no_pca), "--checkpoint", str(tmp_path / "x.pt")),
                      "x.pt: no checkpoint there")


def test_click_usage_errors_exit_2(tmp_path):
    r = run("tools/make_shards.py", "--src", str(tmp_path), "--shard-size", "0")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--shard-size" in r.stderr, r.stderr


@pytest.mark.slow
def test_torchrun_prints_the_error_once(tmp_path):
    r = run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "model.train",
            "--shards", str(tmp_path / "nowhere"), "--runs", str(tmp_path / "runs"), "--device", "cpu")
    errors = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'nowhere' / 'manifest.json'}: not found; make shards first: "
                      f"python tools/make_shards.py --src SRC --out {tmp_path / 'nowhere'}"], r.stderr
    # torchrun's own failure report follows (it cannot be switched off). The first rank to exit shows status 2;
    # both ranks fail alike, but torchrun sends SIGTERM to the other as soon as one has failed, so that one shows
    # status 2 if it exited first and -15 if torchrun's signal won the race (about one run in four here).
    codes = re.findall(r"exitcode  : (-?\d+)", r.stderr)
    assert len(codes) == 2 and "2" in codes and set(codes) <= {"2", "-15"}, r.stderr
    assert "model/" not in r.stderr  # no traceback from our code


def test_progress_off_a_terminal_prints_plain_periodic_lines(capsys):
    from common.progress import progress_bar
    with progress_bar(4, "train", every=0.0) as bar:  # capsys: stderr is not a terminal
        for _ in range(4):
            bar.update()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"train: {i}/4 img ({25 * i}%)" for i in range(1, 5)]
    assert "eta" in lines[0] and "\r" not in "".join(lines)
    with progress_bar(4, "quiet", enabled=False, every=0.0) as bar:
        bar.update(4)
    assert capsys.readouterr().err == ""
