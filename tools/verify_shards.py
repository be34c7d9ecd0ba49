"""Check a shards folder against its manifest: size and SHA-256 of every tar and index, and with --decode
every sample decoded and its label checked. Lists each bad shard and sample with what is wrong; exit status 2
if there is any, with the command that repairs the folder (make_shards --verify re-makes exactly those).

    python tools/verify_shards.py --shards shards/                 # sizes + hashes, at about disk speed
    python tools/verify_shards.py --shards shards/ --decode        # also decode every image, check labels

A thin command over shardkit.verify.
"""
from __future__ import annotations

import click

from common import cli
from common.errors import DataError
from shardkit.format import load_manifest
from shardkit.verify import verify


@click.command(context_settings=cli.CONTEXT)
@click.option("--shards", default="shards", show_default=True, metavar="DIR|URL", help="Folder with manifest.json.")
@click.option("--decode", is_flag=True, help="Also decode every sample and check its label (slower).")
@click.option("--workers", type=click.IntRange(1), help="Worker processes [default: all cores].")
@click.option("--splits", default="", help="Comma-separated splits to check [default: all in the manifest].")
def main(shards, decode, workers, splits):
    """Verify the shards of a folder against the sizes and SHA-256 recorded in its manifest."""
    chosen = tuple(s.strip() for s in splits.split(",") if s.strip()) or None
    report = verify(shards, decode=decode, workers=workers, splits=chosen)
    for p in report.problems:
        click.echo(f"bad: {p.line()}")
    rate = report.bytes / 1e6 / report.seconds if report.seconds else 0.0
    decoded = f", {report.samples} samples decoded" if decode else ""
    click.echo(f"done: {report.shards} shards, {report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s "
               f"({rate:.0f} MB/s){decoded}; {len(report.bad_shards)} bad, {len(report.problems)} problem(s)")
    if report.problems:
        raise DataError(f"{shards}: {len(report.problems)} problem(s) in {len(report.bad_shards)} file(s) (listed "
                        f"above); repair with: {report.fix(load_manifest(shards))}")


if __name__ == "__main__":
    cli.run(main)
