"""A local S3-compatible server for the tests and tools/bench_remote.py: moto's server mode, in its own process,
on 127.0.0.1 (no network, never a real bucket).

    with local_s3() as endpoint:             # http://127.0.0.1:PORT; AWS_ENDPOINT_URL and dummy keys set
        make_bucket("shards", public=True)   # public: readable over plain HTTP(S) too, as a web server would be
        ... s3://shards/... through s3fs and DALI, http://127.0.0.1:PORT/shards/... through fsspec's HTTP ...

Its own process because DALI builds a pipeline holding Python's GIL, which would starve a server thread. The
endpoint is an IP literal: DALI's S3 client (the AWS C++ SDK) addresses buckets by virtual host otherwise.
DALI reads AWS_ENDPOINT_URL once per process, at its first s3:// access: one server per process.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Iterator

ENV = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


class S3Unavailable(RuntimeError):
    """moto (or s3fs) is not installed, or its server did not start."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(endpoint: str, proc: subprocess.Popen, timeout: float) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise S3Unavailable(f"moto's S3 server exited at start (status {proc.returncode})")
        try:
            opener.open(endpoint + "/", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # an HTTP answer: it is serving
        except OSError:
            time.sleep(0.05)
    raise S3Unavailable(f"moto's S3 server did not answer on {endpoint} within {timeout:.0f} s")


@contextmanager
def local_s3(timeout: float = 60.0) -> Iterator[str]:
    """Start the server, point this process's S3 clients at it (environment), yield its endpoint, stop it."""
    for module in ("moto.server", "s3fs"):
        try:
            __import__(module)
        except ImportError as e:
            raise S3Unavailable(f"{module} is not installed ({e}); pip install -e \".[test]\"") from None
    endpoint = f"http://127.0.0.1:{_free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", endpoint.rsplit(":", 1)[1]],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in (*ENV, "AWS_ENDPOINT_URL", "NO_PROXY", "no_proxy")}
    try:
        _wait(endpoint, proc, timeout)
        os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint)
        for key in ("NO_PROXY", "no_proxy"):  # the loopback server is never reached through a proxy
            os.environ[key] = ",".join(x for x in ("127.0.0.1", "localhost", os.environ.get(key)) if x)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def make_bucket(name: str, public: bool = False) -> None:
    """A bucket on the server local_s3() started; public: objects put later are world-readable (plain HTTP)."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(name, acl="public-read" if public else "private")
    if public:  # moto applies the bucket policy to anonymous GETs
        import json
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                          "Resource": f"arn:aws:s3:::{name}/*"}]}
        fs.call_s3("put_bucket_policy", Bucket=name, Policy=json.dumps(policy))
