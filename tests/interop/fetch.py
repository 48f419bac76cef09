"""Download a blob of ``servers.py``'s HTTP server with curl inside a namespace, checked byte for byte.

The one copy of the streaming check the interop tests share: read curl's output in MiB
chunks (curl's ``--max-time`` bounds the loop), count and hash it, and fail with what curl
said unless every byte of ``/blob/<size>/<seed>`` arrived intact.
"""

from __future__ import annotations

import hashlib
import subprocess
import time

from . import servers


def url_host(host: str) -> str:
    """``host`` as it stands in a URL (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


def blob_curl(host: str, port: int, size: int, seed: int, *, max_time: float = 300) -> list[str]:
    """The curl command line fetching ``/blob/<size>/<seed>`` from ``host``:``port`` to stdout."""
    url = f"http://{url_host(host)}:{port}/blob/{size}/{seed}"
    return ["curl", "-sS", "-g", "--fail", "--max-time", str(int(max_time)), "-o", "-", url]


def download(ns_cmd: list[str], size: int, seed: int, *, wait: float = 60) -> float:
    """Run curl (already wrapped for its namespace), check count and sha256; the seconds it took.
    ``wait`` bounds the wait for curl's exit after its output ended."""
    h = hashlib.sha256()
    count = 0
    t0 = time.monotonic()
    with subprocess.Popen(ns_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            while chunk := proc.stdout.read(1 << 20):
                h.update(chunk)
                count += len(chunk)
            rc = proc.wait(timeout=wait)
        finally:
            if proc.poll() is None:
                proc.kill()
        err = proc.stderr.read().decode(errors="replace")
    elapsed = time.monotonic() - t0
    assert rc == 0, f"curl exit {rc} after {count} of {size} bytes: {err}"
    assert count == size, f"got {count} of {size} bytes"
    assert h.hexdigest() == servers.blob_sha256(size, seed), "downloaded bytes differ"
    return elapsed
