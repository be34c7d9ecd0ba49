# One way to set up and run everything; every target works on a fresh clone.
#   make install   .venv with the package, its test extras, DALI, and the CPU build of torch
#   make demo      the whole pipeline on the built-in demo data (tools/demo.py)
#   make test      the test suite (CPU, a few minutes)
#   make bench     conversion and loader benchmarks on generated ImageNet-like data
PYTHON ?= python3
VENV   ?= .venv
# CPU build by default; GPU users: make install TORCH="torch" DALI_EXTRA=dali (see README, "GPU set-up")
TORCH      ?= torch==2.13.0
DALI_EXTRA ?= dali
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,$(DALI_EXTRA)]"
	touch $@

demo: install
	$(BIN)/python tools/demo.py

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python tools/bench_shards.py
	$(BIN)/python -m pipeline.bench --shards demo/shards

clean:
	rm -rf demo runs preview.png
