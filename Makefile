# One way to set up and run everything; every target works on a fresh clone.
#   make install   .venv with the package, its test extras, DALI, and the CPU build of torch
#   make demo      the whole pipeline on the built-in demo data (tools/demo.py)
#   make test      the test suite (CPU, a few minutes)
#   make bench     conversion, PCA, start-up and loader benchmarks on generated ImageNet-like data
#   make gpu-check the GPU path in one run (tools/gpu_check.py), with the python already installed
PYTHON ?= python3
VENV   ?= .venv
# CPU build by default; GPU users: make install TORCH="torch" TORCHVISION="torchvision" DALI_EXTRA=dali
# (see README, "GPU set-up"). torchvision goes in with --no-deps: its wheel pins the CUDA build of torch, and
# the tests only read its AlexNet definition from the installed files (tests/torchvision_ref.py).
TORCH       ?= torch==2.13.0
TORCHVISION ?= torchvision==0.28.0
DALI_EXTRA ?= dali
BIN := $(VENV)/bin

.PHONY: install demo test bench clean gpu-check

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet --no-deps "$(TORCHVISION)"
	$(BIN)/python -m pip install --quiet -e ".[test,$(DALI_EXTRA)]"
	touch $@

demo: install
	$(BIN)/python tools/demo.py

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python tools/bench_shards.py
	$(BIN)/python tools/bench_pca.py
	$(BIN)/python tools/bench_startup.py
	test -f demo/shards/manifest.json || $(MAKE) demo
	$(BIN)/python tools/bench_loader.py --shards demo/shards

clean:
	rm -rf demo runs preview.png gpu_check

# The GPU path proven in one run on one GPU (tools/gpu_check.py): correctness, loader, training, DDP, within
# BUDGET seconds; report in gpu_check/gpu_report.{md,json}; then the LRN benchmark, which runs even when a
# section failed (the target still fails at the end). Uses $(PYTHON) as it is (an existing CUDA build of
# torch and DALI): no virtualenv, no install step, no network.  PYTHON=python3 make gpu-check
BUDGET ?= 480
gpu-check:
	PYTHONPATH=$(CURDIR) $(PYTHON) tools/gpu_check.py --out gpu_check --budget $(BUDGET); status=$$?; \
	PYTHONPATH=$(CURDIR) $(PYTHON) tools/bench_lrn.py --device cuda --batch-size 256 --json gpu_check/lrn.json \
	  && exit $$status
