"""The shape of the house (docs/FORMAT.md, section 1): which floor may import which, functions a reader takes in
at once, package docstrings that list what the package holds. Read from the source with `ast`, nothing run."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

# package -> the project packages its modules may import (lazily inside functions too)
FLOORS = {
    "common": {"common"},
    "shardkit": {"common", "shardkit"},
    "pipeline": {"common", "shardkit", "pipeline"},
    "model": {"common", "pipeline", "model"},
    "measure": {"common", "shardkit", "pipeline", "model", "measure"},
}
FOLDERS = {"common": "common", "shardkit": "shardkit", "pipeline": "pipeline", "model": "model",
           "measure": "tools/measure"}
PROJECT = set(FLOORS) | {"tools", "tests"}
MAX_FUNCTION_LINES = 50
NO_TORCH = ("common", "shardkit")  # the offline tools run without torch and DALI


def modules(package: str) -> list[Path]:
    return sorted((REPO / FOLDERS[package]).glob("*.py"))


def imported(path: Path, top_level_only: bool = False) -> set[str]:
    """The top-level names of every module `path` imports (relative imports count as its own package)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(path.parent.name if node.level else (node.module or "").split(".")[0])
    return names


@pytest.mark.parametrize("package", list(FLOORS))
def test_each_floor_imports_only_the_floors_below_it(package):
    wrong = {f"{p.relative_to(REPO)}: {sorted((imported(p) & PROJECT) - FLOORS[package])}"
             for p in modules(package) if (imported(p) & PROJECT) - FLOORS[package]}
    assert not wrong, f"imports that run up or across the floors: {sorted(wrong)}"


@pytest.mark.parametrize("package", NO_TORCH)
def test_common_and_shardkit_load_without_torch_or_dali(package):
    for path in modules(package):
        heavy = imported(path, top_level_only=package == "common") & {"torch", "nvidia", "webdataset"}
        assert not heavy, f"{path.relative_to(REPO)} imports {heavy}"


def test_the_libraries_hold_no_measuring_code():
    """Checks and benchmarks live under tools/ (the measure package); the libraries only do their job, and the
    old command names pipeline.bench and model.bench_lrn are two-line aliases."""
    for package in ("common", "shardkit", "pipeline", "model"):
        for path in modules(package):
            assert "measure" not in imported(path), path
    for alias, tool in (("pipeline/bench.py", "bench_loader.py"), ("model/bench_lrn.py", "bench_lrn.py")):
        code = [ln for ln in (REPO / alias).read_text().split('"""')[-1].splitlines() if ln.strip()]
        assert len(code) <= 4 and tool in code[-1], alias


def python_files() -> list[Path]:
    return sorted(p for folder in ("common", "shardkit", "pipeline", "model", "tools") for p in (REPO / folder).rglob("*.py"))


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these into named steps: " + "; ".join(long)


def test_threads_and_processes_are_sized_by_the_affinity_mask_not_the_machine():
    """os.cpu_count() is the machine's count, which a container or taskset does not lower: only
    common.parallel.available_cores (the affinity mask, with os.cpu_count as its non-Linux fallback) reads it."""
    users = sorted(str(p.relative_to(REPO)) for p in python_files() if "cpu_count(" in p.read_text())
    assert users == ["common/parallel.py"], users


def test_default_workers_is_a_share_of_the_affinity_mask(monkeypatch):
    from common import parallel
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4}, raising=False)
    assert parallel.available_cores() == 5
    assert [parallel.default_workers(w) for w in (1, 2, 8)] == [5, 2, 1]


@pytest.mark.parametrize("package", ["common", "shardkit", "measure"])
def test_package_docstrings_list_exactly_their_modules(package):
    doc = ast.get_docstring(ast.parse((REPO / FOLDERS[package] / "__init__.py").read_text())) or ""
    listed = set(re.findall(r"^\s+(\w+)\.py\b", doc, re.MULTILINE))
    present = {p.stem for p in modules(package)} - {"__init__"}
    assert listed == present, f"missing from the docstring: {present - listed}; not there: {listed - present}"
