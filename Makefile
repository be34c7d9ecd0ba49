# One way to set up and run everything; every target works on a fresh clone.
#   make install   .venv with the package, its test extras, DALI, and the CPU build of torch
#   make demo      the whole pipeline on the built-in demo data (tools/demo.py)
#   make test      the test suite (CPU, a few minutes)
#   make bench     conversion and loader benchmarks on generated ImageNet-like data
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
	test -f demo/shards/manifest.json || $(MAKE) demo
	$(BIN)/python -m pipeline.bench --shards demo/shards

clean:
	rm -rf demo runs preview.png

# One short real training on one GPU: DALI mixed decoding, bf16, images/s, data-wait and the model-alone
# (--synthetic) rate for comparison. SHARDS defaults to the demo's; point it at ImageNet shards for real figures.
SHARDS ?= demo/shards
gpu-check: install
	test -f $(SHARDS)/manifest.json || $(MAKE) demo
	$(BIN)/python -m pipeline.bench --shards $(SHARDS) --device cuda --batch-size 256 --batches 200 --json gpu_bench.json
	$(BIN)/python -m model.train --shards $(SHARDS) --device cuda --backend dali --name gpu-check --batch-size 256 \
	  --max-steps 300 --measure-synthetic 100 --log-every 50 --limit-val 2000 --no-ten-crop-eval
	$(BIN)/python -m model.bench_lrn --device cuda --batch-size 256 --json gpu_lrn.json
	$(BIN)/python -m pytest -q tests/test_torchvision.py tests/test_lrn.py
