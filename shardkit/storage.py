"""Where a shards folder lies: a local folder, or a prefix in object storage (s3://bucket/prefix, https://host/path)
read through fsspec (s3fs for s3://; `pip install -e ".[s3]"`). Readers never write there.

    root = location("s3://bucket/imagenet")          # a RemotePath; location("shards/") is a pathlib.Path
    manifest = (root / "manifest.json").read_text()  # a RemotePath answers the few Path calls readers make
    with open_ranged(root / "train-000000.tar") as f:
        f.seek(offset); f.read(size)                 # exactly one ranged GET per read, nothing cached
    with open_stream(tar) as f: ...                  # whole-file reads (hashing): large blocks, read ahead
    datas = read_many([idx1, idx2, ...])             # many small files at once (concurrent GETs)

S3 is configured as the AWS tools are: credentials from the usual variables or files, and an S3-compatible
server's address in AWS_ENDPOINT_URL, which s3fs (through botocore) and DALI's own S3 client both read.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import IO, NamedTuple

from common.errors import ConfigError, DataError

REMOTE = ("s3", "http", "https")
EXTRA = 'pip install -e ".[s3]" (s3fs and fsspec)'
STREAM_BLOCK = 8 * 2**20  # whole-file reads: 8 MiB GETs


class Stat(NamedTuple):
    st_size: int


def is_remote(where) -> bool:
    return isinstance(where, RemotePath) or isinstance(where, str) and where.split("://", 1)[0] in REMOTE \
        and "://" in where


def location(where: str | os.PathLike) -> Path | RemotePath:
    """A local folder or file as a Path, a URL (s3://, http://, https://) as a RemotePath."""
    if isinstance(where, (Path, RemotePath)):
        return where
    where = str(where)
    if "://" in where:
        scheme = where.split("://", 1)[0]
        if scheme == "file":
            return Path(where[len("file://"):])
        if scheme not in REMOTE:
            raise ConfigError(f"{where}: {scheme}:// is not a storage this project reads; use a local folder, "
                              "s3://bucket/prefix or https://host/path")
        return RemotePath(where)
    return Path(where)


def _filesystem(scheme: str):
    """fsspec's file system for a scheme (one per process: fsspec keeps the instance)."""
    try:
        import fsspec
        return fsspec.filesystem(scheme)
    except ImportError as e:
        raise ConfigError(f"reading {scheme}:// needs {e.name}: {EXTRA}") from None


class RemotePath:
    """A file or folder in object storage, with the part of pathlib.Path's interface that readers use."""
    __slots__ = ("url",)

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(f"{self.url}/{name}")

    @property
    def _path(self) -> PurePosixPath:
        return PurePosixPath(self.url.split("://", 1)[1])

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def stem(self) -> str:
        return self._path.stem

    @property
    def suffix(self) -> str:
        return self._path.suffix

    @property
    def parent(self) -> RemotePath:
        return RemotePath(f"{self.scheme}://{self._path.parent}")

    def with_suffix(self, suffix: str) -> RemotePath:
        return RemotePath(f"{self.scheme}://{self._path.with_suffix(suffix)}")

    def with_name(self, name: str) -> RemotePath:
        return RemotePath(f"{self.scheme}://{self._path.with_name(name)}")

    @property
    def fs(self):
        return _filesystem(self.scheme)

    def _info(self) -> dict | None:
        try:
            return self.fs.info(self.url)
        except FileNotFoundError:
            return None
        except Exception as e:  # credentials, endpoint, permissions: the storage's own words, one line
            raise unreachable(self, e) from None

    def is_file(self) -> bool:
        info = self._info()
        return info is not None and info.get("type", "file") == "file"

    def exists(self) -> bool:
        return self._info() is not None

    def stat(self) -> Stat:
        info = self._info()
        if info is None:
            raise FileNotFoundError(self.url)
        return Stat(int(info["size"]))

    def read_bytes(self) -> bytes:
        try:
            return self.fs.cat_file(self.url)
        except FileNotFoundError:
            raise
        except Exception as e:
            raise unreachable(self, e) from None

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def list_folder(self) -> None:
        """List this folder once, so that is_file() and stat() of what it holds are answered from that listing
        (one request per 1,000 objects on S3, instead of one per file). A store that cannot list (plain
        HTTPS) answers each file by itself."""
        try:
            self.fs.ls(self.url, detail=True)
        except Exception:  # noqa: BLE001 - listing is an optimisation only
            pass


def environment() -> dict[str, str]:
    """The variables that configure object storage (AWS_*, proxies) in this process: a loader hands them to its
    worker processes, which a fork server may have started before they were set."""
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k.lower().endswith("_proxy")}


def use_environment(env: dict[str, str]) -> None:
    os.environ.update(env)


def unreachable(where: RemotePath, e: Exception) -> DataError:
    hint = ("check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and, for an "
            "S3-compatible server, AWS_ENDPOINT_URL") if where.scheme == "s3" else "check the URL and the server"
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return DataError(f"{where}: cannot read ({type(e).__name__}: {first[:200]}); {hint}")


def open_ranged(path: Path | RemotePath) -> IO[bytes]:
    """Random access: every read(n) of a remote file is one ranged GET of those n bytes (no read-ahead, so a
    loader that reads a sample reads that sample and nothing else)."""
    return _open(path, block_size=2**20, cache_type="none")


def open_stream(path: Path | RemotePath) -> IO[bytes]:
    """Whole-file reads (hashing, copying): large blocks, read ahead."""
    return _open(path, block_size=STREAM_BLOCK, cache_type="readahead")


def _open(path: Path | RemotePath, **how) -> IO[bytes]:
    """A local file as it is; a remote one through fsspec with `how` (block size, cache), its failures (other
    than a missing file) one line that names it."""
    if not isinstance(path, RemotePath):
        return open(path, "rb")
    try:
        return path.fs.open(path.url, "rb", **how)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise unreachable(path, e) from None


def read_many(paths: list[Path | RemotePath]) -> list[bytes]:
    """The bytes of many small files; remote ones fetched concurrently (fsspec's cat of a list)."""
    remote = [p for p in paths if isinstance(p, RemotePath)]
    fetched: dict[str, bytes] = {}
    by_scheme: dict[str, list[RemotePath]] = {}
    for p in remote:
        by_scheme.setdefault(p.scheme, []).append(p)
    for scheme, group in by_scheme.items():
        try:
            got = group[0].fs.cat([p.url for p in group], on_error="return")
        except Exception as e:
            raise unreachable(group[0], e) from None
        for p in group:
            value = got.get(p.url, got.get(p.url.split("://", 1)[1]))
            if isinstance(value, FileNotFoundError) or value is None:
                raise DataError(f"{p}: not found")
            if isinstance(value, Exception):
                raise unreachable(p, value)
            fetched[p.url] = value
    return [fetched[p.url] if isinstance(p, RemotePath) else Path(p).read_bytes() for p in paths]


def cache_dir() -> Path:
    """Local copies of remote index files: $ALEXNET_CACHE, else $XDG_CACHE_HOME/alexnet-pipeline, else
    ~/.cache/alexnet-pipeline."""
    if os.environ.get("ALEXNET_CACHE"):
        return Path(os.environ["ALEXNET_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alexnet-pipeline"


def local_indexes(idxs: list[RemotePath], sha256: list[str | None]) -> list[tuple[Path, bytes]]:
    """(local copy, bytes) of each remote index file, fetched once: kept as CACHE/index/<its SHA-256>.idx, so a
    later run (another rank on this node, a resume) whose manifest records that SHA-256 takes it from the
    cache without a request. Every copy is checked against the manifest's SHA-256 when it has one."""
    import hashlib

    from common.files import atomic_write

    folder = cache_dir() / "index"
    out: list[tuple[Path, bytes] | None] = [None] * len(idxs)
    for i, want in enumerate(sha256):
        cached = folder / f"{want}.idx" if want else None
        if cached is not None and cached.is_file():
            data = cached.read_bytes()
            if hashlib.sha256(data).hexdigest() == want:
                out[i] = (cached, data)
    todo = [i for i, got in enumerate(out) if got is None]
    for i, data in zip(todo, read_many([idxs[i] for i in todo]) if todo else []):
        digest = hashlib.sha256(data).hexdigest()
        if sha256[i] and digest != sha256[i]:
            raise DataError(f"{idxs[i]}: SHA-256 differs from the manifest's ({sha256[i][:12]}...): the index "
                            f"changed after make_shards wrote it; check the folder with: python tools/verify_shards.py "
                            f"--shards {idxs[i].parent}")
        path = folder / f"{digest}.idx"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not path.is_file():
                with atomic_write(path) as f:
                    f.write(data)
        except OSError as e:
            raise ConfigError(f"{folder}: cannot keep the remote index files there ({e.strerror or e}); set "
                              "ALEXNET_CACHE to a writable local folder") from None
        out[i] = (path, data)
    return out
