"""Handshake flood against the real client: while a flood of valid-mac1 initiations (from
``flood.py`` in ns client, to the gateway's address in the test namespaces only) hits the
gateway, the wireguard-go client's 50 pings at 5/s all come back and a fresh handshake (the
client forgets its session) completes within 2 x REKEY_TIMEOUT.

Reported: the flood rate, the gateway's CPU share, its drops by reason and the kernel's
drops at its socket. ``WGSLIRPY_FLOOD_PROCS`` (default 1) sets the sender processes and
``WGSLIRPY_FLOOD_C=1`` uses the compiled sendmmsg sender when a C compiler exists.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wgslirpy.constants import REKEY_TIMEOUT

from .conftest import gateway_kind
from .topology import GATEWAY_PORT, GW_PING_V4, PYTHON, Topology, _wait_ready

pytestmark = pytest.mark.interop

FLOOD_PY = Path(__file__).resolve().parent / "flood.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    f = text[text.rindex(")") + 2 :].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def kernel_udp_drops(topo: Topology, port: int) -> int:
    """The ``drops`` column of the gateway's UDP socket(s) in /proc/net/udp{,6} of ns gw."""
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        out = topo.gw.run(["cat", table], check=False).stdout
        for line in out.splitlines()[1:]:
            cols = line.split()
            if len(cols) > 12 and cols[1].rsplit(":", 1)[-1] == f"{port:04X}":
                total += int(cols[-1])
    return total


@pytest.fixture(scope="module")
def flood_topo(socket_buffers: None) -> Iterator[Topology]:
    t = Topology(gateway_kind(), keep_workdir=os.environ.get("WGSLIRPY_INTEROP_KEEP") == "1")
    try:
        t.up()
        yield t
    finally:
        t.down()


def test_real_peer_keeps_flowing_during_a_handshake_flood(flood_topo: Topology, measure: Callable[[str], None]) -> None:
    topo = flood_topo
    assert topo.wait_for_ping(GW_PING_V4, timeout=10) is not None
    pid = topo.gateway.pid
    assert pid is not None
    procs = int(os.environ.get("WGSLIRPY_FLOOD_PROCS", "1"))
    seconds = 22.0
    args = [
        PYTHON,
        str(FLOOD_PY),
        "--to",
        topo.gateway.endpoint,
        "--peer-key",
        topo.gateway.public_key,
        "--seconds",
        str(seconds),
        "--procs",
        str(procs),
    ]
    if os.environ.get("WGSLIRPY_FLOOD_C") == "1":
        args.append("--c")
    kdrops0 = kernel_udp_drops(topo, GATEWAY_PORT)
    flood = topo.client.spawn(args, log_path=topo.workdir / "flood.log", stdout_pipe=True)
    _wait_ready(flood, "flood.py", timeout=60)
    t0, cpu0 = time.monotonic(), cpu_seconds(pid)
    result: dict[str, Any] = {}
    try:
        time.sleep(1.5)  # the flood is on: the queue is full and the gateway is under load
        tx, rx, out = topo.ping(GW_PING_V4, count=50, interval=0.2, wait=2)
        # A fresh handshake: the client forgets its session and must initiate again.
        before = topo.client_wg.latest_handshake(topo.gateway.public_key)
        time.sleep(max(0.0, before + 1.1 - time.time()))  # handshake times have 1 s resolution
        h0 = time.monotonic()
        topo.reset_client_peer()
        took = topo.wait_for_ping(GW_PING_V4, timeout=2 * REKEY_TIMEOUT)
        handshake_s = time.monotonic() - h0
        after = topo.client_wg.latest_handshake(topo.gateway.public_key)
        t1, cpu1 = time.monotonic(), cpu_seconds(pid)
        stats = topo.gateway.stats() if topo.gateway.is_wgslirpy else None
    finally:
        assert flood.stdout is not None
        try:
            text = flood.stdout.read().decode(errors="replace") if flood.wait(seconds + 60) == 0 else ""
        finally:
            topo.tracker.stop(flood)
        lines = [line for line in text.splitlines() if line.startswith("{")]
        if lines:
            result = json.loads(lines[-1])
    kdrops = kernel_udp_drops(topo, GATEWAY_PORT) - kdrops0
    cpu_share = (cpu1 - cpu0) / (t1 - t0)
    drops = {k: v for k, v in (stats or {}).get("drops", {}).items() if k.startswith("wg_")}
    measure(
        f"flood {result.get('rate', '?')}/s ({result.get('procs')} {result.get('sender')} sender), "
        f"gateway CPU {100 * cpu_share:.0f} %, pings {rx}/{tx}, fresh handshake {handshake_s:.1f} s, "
        f"kernel socket drops {kdrops}, drops {json.dumps(drops, sort_keys=True)}"
    )
    assert (tx, rx) == (50, 50), out
    assert took is not None and after > before, f"no fresh handshake within {2 * REKEY_TIMEOUT} s"
    assert handshake_s <= 2 * REKEY_TIMEOUT
    assert result.get("sent", 0) > 0, "the flood sender sent nothing"
    assert topo.gateway.pid is not None, "gateway died"
