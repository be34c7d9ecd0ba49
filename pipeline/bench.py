"""`python -m pipeline.bench` is tools/bench_loader.py under its older name, kept so that commands written for
it still run; the benchmark and its options are there (measure.loader_speed behind it)."""
import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "tools" / "bench_loader.py"), run_name="__main__")
