"""The impairment relay itself (tests/interop/relay.py and relay.c), on loopback without root.

The link model is checked with a fake clock (per-direction decisions, the bottleneck queue,
duplicates, reorder holds); each engine is then run as a process on 127.0.0.1 and must
deliver every surviving datagram intact, no sooner than the configured delay, with
counters that add up. No speed is asserted.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .relay import Impairment, LinkSpec, build_c_engine
from .topology import RELAY_PY

RELAY_ARGS = ("--delay-ms", "5", "--loss", "0.1", "--seed", "3")  # 5 ms each way, 10 % loss


def test_link_spec_override() -> None:
    spec = LinkSpec(delay_ms=20).override("loss=0.01, delay_ms=50,rate-mbit=8")
    assert (spec.delay_ms, spec.loss, spec.rate_mbit) == (50, 0.01, 8)
    assert spec.rate_bytes() == 1e6 and spec.queue_bytes() == 64 * 1024  # 50 ms at 1 MB/s < 64 KiB
    with pytest.raises(ValueError):
        LinkSpec().override("lost=0.1")
    with pytest.raises(ValueError):
        LinkSpec().override("loss")


def test_decisions_are_seeded_and_counted() -> None:
    spec = LinkSpec(delay_ms=10, loss=0.1, dup=0.05, reorder=0.1, reorder_ms=5)
    a, b = Impairment(spec, 3), Impairment(spec, 3)
    ra = [a.decide(100.0, 1000) for _ in range(5000)]
    assert ra == [b.decide(100.0, 1000) for _ in range(5000)]
    c = a.counts
    assert c["in"] == 5000 and c["dropped"] == sum(not r for r in ra)
    assert c["duplicated"] == sum(len(r) == 2 for r in ra)
    assert 400 < c["dropped"] < 600 and 150 < c["duplicated"] < 350 and 350 < c["reordered"] < 650
    for r in ra:
        for due in r:
            assert 100.010 <= due <= 100.015 + 1e-6  # delay, plus a reorder hold of 1..5 ms
    held = [r[0] for r in ra if len(r) == 1 and r[0] > 100.0105]
    assert len(held) == c["reordered"]


def test_bottleneck_queue_tail_drops_and_spaces_departures() -> None:
    imp = Impairment(LinkSpec(rate_mbit=8, queue_kb=10), 1)  # 1 MB/s, 10 KiB queue
    out = [imp.decide(5.0, 1000) for _ in range(20)]
    accepted = [r[0] for r in out if r]
    assert len(accepted) == 10 and imp.counts["queue_dropped"] == 10
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(accepted)]
    assert gaps == [0.001] * 9  # 1000 bytes at 1 MB/s each
    assert imp.decide(5.5, 1000)  # drained by then: accepted again


@pytest.fixture(params=["python", "c", "c-no-gso"])
def engine(request: pytest.FixtureRequest) -> str:
    """The relay engine; ``c-no-gso``: the C engine with one message per datagram (its fallback)."""
    if request.param.startswith("c"):
        try:
            build_c_engine()
        except OSError as e:
            pytest.skip(f"no C engine: {e}")
    return str(request.param)


def _free_udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind(("127.0.0.1", 0))
    return s


@pytest.fixture
def loopback_relay(engine: str) -> Iterator[tuple[str, subprocess.Popen[bytes], socket.socket, socket.socket, int]]:
    """(engine, relay process, client socket, upstream echo socket, relay port) on 127.0.0.1."""
    upstream = _free_udp()
    probe = _free_udp()
    port = probe.getsockname()[1]
    probe.close()
    env = {**os.environ, "WGSLIRPY_RELAY_GSO": "0" if engine == "c-no-gso" else "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(RELAY_PY),
            "relay",
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            f"127.0.0.1:{upstream.getsockname()[1]}",
            "--engine",
            engine.split("-")[0],
            *RELAY_ARGS,
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    client = _free_udp()
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and proc.stdout.readline().startswith(b"ready")
        yield engine, proc, client, upstream, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        client.close()
        upstream.close()


def test_engine_delivers_intact_delayed_and_counted(
    loopback_relay: tuple[str, subprocess.Popen[bytes], socket.socket, socket.socket, int],
) -> None:
    engine, proc, client, upstream, port = loopback_relay
    n, delay = 150, 0.005  # RELAY_ARGS; 150 fit the default socket buffers
    sent_at: dict[bytes, float] = {}
    got: list[tuple[bytes, float]] = []
    for i in range(n):
        msg = b"%06d" % i + bytes(range(200))
        sent_at[msg] = time.monotonic()
        client.sendto(msg, ("127.0.0.1", port))
        time.sleep(0.0005)  # paced: no socket buffer on the way overflows
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # upstream echoes, the client collects
        r, _, _ = select.select([client, upstream], [], [], 0.3)
        if not r:
            if got:
                break
            continue
        for s in r:
            data, addr = s.recvfrom(4096)
            if s is upstream:
                upstream.sendto(data, addr)
            else:
                got.append((data, time.monotonic()))
    assert proc.stdout is not None
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    counts: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert got, "nothing came back"
    for data, at in got:
        assert data in sent_at, "a datagram changed on its way"
        assert at - sent_at[data] >= 2 * delay * 0.95, "returned before the two one-way delays"
    if engine != "python":
        assert counts["gso"] == (engine == "c"), counts
    up, down = counts["up"], counts["down"]
    assert up["in"] == n and up["dropped"] > 0 and down["dropped"] > 0
    assert up["out"] == up["in"] - up["dropped"] == down["in"]
    assert down["out"] == down["in"] - down["dropped"] == len(got)
