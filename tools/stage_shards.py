"""Copy a shards folder from object storage to a local disk, or upload one, checked against the manifest.

    python tools/stage_shards.py --shards s3://bucket/imagenet --out /local/shards     # download (staging)
    python tools/stage_shards.py --shards https://host/imagenet --out /local/shards    # from a web server
    python tools/stage_shards.py --shards shards/ --out s3://bucket/imagenet           # upload

Resumable: only files that are missing or differ from the manifest's size and SHA-256 are copied, each whole
or not at all, and manifest.json goes last; run the same command again after a kill. A thin command over
shardkit.stage (docs/cluster.md: when to stage, and the S3 settings).
"""
from __future__ import annotations

import click

from common import cli
from shardkit.stage import WORKERS, stage


@click.command(context_settings=cli.CONTEXT)
@click.option("--shards", required=True, metavar="DIR|URL", help="The shards folder to copy (with manifest.json).")
@click.option("--out", required=True, metavar="DIR|URL", help="Where to: a local folder, or s3://bucket/prefix.")
@click.option("--workers", default=WORKERS, show_default=True, type=click.IntRange(1), help="Files in flight at once.")
def main(shards, out, workers):
    """Stage shards from object storage to a local disk, or upload them (see docs/cluster.md)."""
    r = stage(shards, out, workers=workers)
    click.echo(f"done: {r.copied} files copied ({r.bytes / 1e6:.1f} MB), {r.kept} already there and checked, "
               f"{r.seconds:.1f} s ({r.bytes / 1e6 / max(r.seconds, 1e-9):.1f} MB/s) -> {out}")


if __name__ == "__main__":
    cli.run(main)
