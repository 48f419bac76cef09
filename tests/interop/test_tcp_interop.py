"""TCP relay, end to end with the kernel's TCP stack as the client: bulk transfers with
sha256 checks, half-close both ways, refused/unroutable/blackholed destinations, many
connections at once and in a row, a lossy path, and clean-up of flows and descriptors.

The last test checks the gateway's counters after everything above, so keep it last.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from . import fetch
from .topology import (
    BLACKHOLE_V4,
    BLACKHOLE_V6,
    CLOSED_PORT,
    ECHO_PORT,
    GW_PING_V4,
    HTTP_PORT,
    SINK_PORT,
    SRV_V4,
    SRV_V6,
    UNROUTABLE_V4,
    UNROUTABLE_V6,
    Topology,
    wait_until,
)

pytestmark = pytest.mark.interop

BIG = int(os.environ.get("WGSLIRPY_INTEROP_MIB", "100")) << 20
FAMILIES = pytest.mark.parametrize("srv", [SRV_V4, SRV_V6], ids=["v4", "v6"])
REFUSAL_ERRNOS = {"ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "ECONNRESET"}


@pytest.fixture(scope="module")
def baseline(topo: Topology) -> dict[str, Any]:
    """The gateway's descriptor count once the tunnel is up, before any TCP test."""
    assert topo.wait_for_ping(GW_PING_V4, timeout=10) is not None, "tunnel does not come up"
    return {"fds": topo.gateway.fd_count()}


@FAMILIES
def test_http_download(topo: Topology, baseline: dict[str, Any], srv: str, measure: Callable[[str], None]) -> None:
    seed = 11
    cmd = topo.client.cmd(fetch.blob_curl(srv, HTTP_PORT, BIG, seed, max_time=240))
    elapsed = fetch.download(cmd, BIG, seed, wait=30)
    measure(f"download {BIG >> 20} MiB: {BIG / elapsed / 1e6:.1f} MB/s ({elapsed:.1f} s)")


@FAMILIES
def test_upload(topo: Topology, baseline: dict[str, Any], srv: str, measure: Callable[[str], None]) -> None:
    r = topo.probe("upload", srv, str(SINK_PORT), "--size", str(BIG), "--timeout", "240", timeout=300)
    assert r["ok"], r
    measure(f"upload {BIG >> 20} MiB: {r['mbps']:.1f} MB/s ({r['elapsed']:.1f} s)")


@FAMILIES
def test_half_close_client_shuts_first(topo: Topology, baseline: dict[str, Any], srv: str) -> None:
    # The sink answers only after our FIN: the reply must come back on the half-closed flow.
    r = topo.probe("upload", srv, str(SINK_PORT), "--size", "100000", "--timeout", "10", timeout=30)
    assert r["ok"], r


@FAMILIES
def test_half_close_server_shuts_first(topo: Topology, baseline: dict[str, Any], srv: str) -> None:
    # The talker sends, shuts its write side, and must still receive everything we send after.
    r = topo.probe("talker", srv, "--recv-size", "200000", "--send-size", "300000", "--timeout", "10", timeout=40)
    assert r["recv_ok"], f"data before the server's FIN: {r}"
    assert r["send_ok"], f"data sent after the server's FIN: {r}"


@FAMILIES
def test_closed_port_refused(topo: Topology, baseline: dict[str, Any], srv: str) -> None:
    r = topo.probe("connect", srv, str(CLOSED_PORT), "--timeout", "3")
    assert r["errno"] == "ECONNREFUSED", r
    assert r["elapsed"] < 1.0, r


@pytest.mark.parametrize("dst", [UNROUTABLE_V4, UNROUTABLE_V6], ids=["v4", "v6"])
def test_unroutable_fails_fast_and_others_proceed(topo: Topology, baseline: dict[str, Any], dst: str) -> None:
    srv = SRV_V6 if ":" in dst else SRV_V4
    r = topo.probe("connect-pair", dst, "80", srv, str(ECHO_PORT), "--timeout", "5", timeout=20)
    assert not r["slow"]["ok"], r
    assert r["slow"]["errno"] in REFUSAL_ERRNOS, r
    assert r["slow"]["elapsed"] < 3.0, r
    assert r["fast"]["ok"] and r["fast"]["elapsed"] < 2.0, r


@pytest.mark.parametrize("dst", [BLACKHOLE_V4, BLACKHOLE_V6], ids=["v4", "v6"])
def test_blackhole_does_not_delay_others(topo: Topology, baseline: dict[str, Any], dst: str) -> None:
    srv = SRV_V6 if ":" in dst else SRV_V4
    r = topo.probe("connect-pair", dst, "80", srv, str(ECHO_PORT), "--timeout", "4", timeout=20)
    assert not r["slow"]["ok"], f"the blackholed connect succeeded: {r}"
    assert r["fast"]["ok"] and r["fast"]["elapsed"] < 2.0, r


def test_200_simultaneous_echo_connections(
    topo: Topology, baseline: dict[str, Any], measure: Callable[[str], None]
) -> None:
    r = topo.probe(
        "echo-many", SRV_V4, str(ECHO_PORT), "--conns", "200", "--size", str(1 << 20), "--timeout", "180", timeout=240
    )
    assert r["ok"], r
    measure(f"200 x 1 MiB echo: {r['elapsed']:.1f} s, {r['mbps']:.1f} MB/s each way")


def test_1000_short_connections(topo: Topology, baseline: dict[str, Any], measure: Callable[[str], None]) -> None:
    r = topo.probe("short-conns", SRV_V4, str(ECHO_PORT), "--count", "1000", "--timeout", "120", timeout=180)
    assert r["ok"], r
    measure(f"1000 short connections: {r['rate']:.0f} conn/s")


def test_transfer_through_lossy_relay(topo: Topology, baseline: dict[str, Any], measure: Callable[[str], None]) -> None:
    relay = topo.start_relay(seed=5, loss=0.02, dup=0.01, reorder=0.03, delay_ms=0)
    try:
        topo.set_client_endpoint(relay.address)
        r = topo.probe(
            "echo-many",
            SRV_V4,
            str(ECHO_PORT),
            "--conns",
            "1",
            "--size",
            str(20 << 20),
            "--timeout",
            "180",
            timeout=240,
        )
    finally:
        counts = relay.stop()
        topo.set_client_endpoint(topo.gateway.endpoint)
    assert r["ok"], r
    assert counts.get("dropped", 0) > 0 and counts.get("duplicated", 0) > 0 and counts.get("reordered", 0) > 0
    measure(f"20 MiB echo through 2% loss/1% dup/3% reorder: {r['elapsed']:.1f} s; relay {counts}")


def test_gateway_releases_flows_and_fds(
    topo: Topology, baseline: dict[str, Any], wgslirpy_only: None, measure: Callable[[str], None]
) -> None:
    t0 = time.monotonic()
    last: dict[str, Any] = {}

    def no_flows() -> bool:
        last.update(topo.gateway.stats() or {})
        return last.get("tcp_flows") == 0

    try:
        wait_until(no_flows, timeout=15, interval=0.5, what="tcp_flows == 0")
    except Exception:
        pytest.fail(f"gateway still reports flows after 15 s: {last}")
    took = time.monotonic() - t0
    try:
        wait_until(
            lambda: topo.gateway.fd_count() == baseline["fds"],
            timeout=5,
            interval=0.5,
            what="fd count back to its starting value",
        )
    except Exception:
        pytest.fail(f"gateway has {topo.gateway.fd_count()} fds, {baseline['fds']} at the start")
    measure(f"0 tcp_flows after {took:.1f} s; fds back to {baseline['fds']}")
