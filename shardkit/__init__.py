"""shardkit: the shard format and everything that makes or checks shards, behind tools/ (docs/FORMAT.md).

    format.py         the on-disk contract: shard tars + DALI index, manifest.json, pca.json
    sources.py        the ImageNet tree layouts, their listing and labels
    archives.py       the official archives, listed in place (nothing extracted)
    devkit.py         the ILSVRC2012 devkit: class names and val labels
    inputs.py         where each split comes from (tree or archive) and its listing
    imaging.py        decode, antialiased resize + centre crop, baseline JPEG encode
    convert.py        the conversion (tools/make_shards.py)
    stats.py          exact RGB statistics and PCA (tools/compute_pca.py)
    verify.py         sizes, SHA-256 and decoding against the manifest (tools/verify_shards.py)
    demo_data.py      the synthetic demo tree and photo-like benchmark sources
    demo_archives.py  the demo tree packed as the three official files, for tests and benchmarks

No torch and no DALI here: the offline tools run without them. What every layer shares (errors, atomic
files, the command conventions, progress bars, parallel map, timing) is in common/.
"""
