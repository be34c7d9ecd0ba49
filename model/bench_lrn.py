"""`python -m model.bench_lrn` is tools/bench_lrn.py under its older name, kept so that commands written for
it still run; the benchmark and its options are there (measure.lrn behind it)."""
import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "tools" / "bench_lrn.py"), run_name="__main__")
