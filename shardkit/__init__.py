"""shardkit: the library behind tools/ and the shard-format contract that pipeline/ reads.

    format.py     the on-disk contract (docs/FORMAT.md): shard tars + DALI index, manifest.json, pca.json
    errors.py     DataError (a data file is wrong) and ConfigError (options are wrong)
    files.py      atomic writes (temporary name, fsync, rename), used by every stage
    cli.py        what every command shares: `error: ...` + exit 2, defaults written once
    sources.py    the ImageNet layouts and their labels
    imaging.py    decode, antialiased resize + centre crop, baseline JPEG encode
    convert.py    the conversion (tools/make_shards.py)
    stats.py      exact RGB statistics and PCA (tools/compute_pca.py)
    parallel.py   ordered parallel map with bounded memory
    demo_data.py  the synthetic demo tree and photo-like benchmark sources
    timing.py     interleaved best-of-N timing for benchmarks

No torch and no DALI here: the offline tools run without them.
"""
