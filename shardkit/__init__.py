"""shardkit: the shard format and everything that makes or checks shards, behind tools/ (docs/FORMAT.md).

    format.py         the on-disk contract: shard tars + DALI index, manifest.json, pca.json
    layouts.py        which way a --src folder holds ImageNet, recognized from its file names
    sources.py        the ImageNet tree layouts, their listing and labels, and the canonical order
    archives.py       the official archives, listed in place (nothing extracted)
    devkit.py         the ILSVRC2012 devkit: class names and val labels
    hf.py             Hugging Face's ILSVRC/imagenet-1k (parquet, or its earlier gzip tars), read in place
    timm_wds.py       timm's imagenet-1k-wds WebDataset tars, read in place
    stream.py         sources read front to back (gzip, parquet): converted while read, via a spill file
    inputs.py         where each split comes from (any layout) and its listing in the canonical order
    imaging.py        decode, antialiased resize + centre crop, baseline JPEG encode
    convert.py        the conversion (tools/make_shards.py)
    stats.py          exact RGB statistics and PCA (tools/compute_pca.py)
    parts.py          one conversion or PCA split over machines: --part K/N, --merge N
    verify.py         sizes, SHA-256 and decoding against the manifest (tools/verify_shards.py)
    storage.py        a shards folder on a local disk or in object storage (s3://, https://), read-only
    stage.py          copy shards between object storage and a local disk, checked (tools/stage_shards.py)
    demo_data.py      the synthetic demo tree and photo-like benchmark sources
    demo_archives.py  the demo tree packed as the official files, Hugging Face's and timm's copies (tests, benchmarks)

No torch and no DALI here: the offline tools run without them (fsspec/s3fs only for remote folders). What every layer shares (errors, atomic
files, the command conventions, progress bars, parallel map, timing) is in common/.
"""
