"""measure: the checks and benchmarks behind tools/, apart from the libraries they measure.

    loader_checks.py  position-coded shards; DALI on the GPU vs on the CPU vs the reference loader: windows,
                      flips, labels, pixels, val exactly once, the 10 windows, mid-epoch resume
    loader_speed.py   images/s of the loaders and of plain decoding, per decoder setting; memory
    decoders.py       which JPEG decoder DALI's pipeline really used (nvImageCodec's log): a quiet CPU fallback
    model_checks.py   AlexNet on random tensors vs real batches; DDP (two gloo ranks, a one-rank smoke test)
    lrn.py            this project's LRN against torch.nn.LocalResponseNorm
    gpu_report.py     the plan, data, sections and report of tools/gpu_check.py
    startup.py        what a training run's start-up reads, on an ImageNet-sized synthetic index
    data.py           photo-like shards generated for a benchmark run
    s3server.py       a local S3-compatible server (moto, 127.0.0.1) for tools/bench_remote.py and the tests

Every timed loop here goes through common.timing. The commands are tools/gpu_check.py, tools/bench_loader.py,
tools/bench_lrn.py, tools/bench_startup.py, tools/bench_remote.py (and tools/bench_shards.py, tools/bench_pca.py
for the offline tools).
"""
