"""WireGuard foundation, end to end: handshake, ping both families at full MTU, hostile
datagrams at the gateway's port, and recovery after a gateway restart."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from .relay import read_records
from .topology import GW_PING_V4, GW_PING_V6, Topology

pytestmark = pytest.mark.interop


def test_handshake_completes(topo: Topology) -> None:
    _tx, rx, out = topo.ping(GW_PING_V4, count=1, wait=5)
    assert rx == 1, out
    assert topo.client_wg.latest_handshake(topo.gateway.public_key) > 0


@pytest.mark.parametrize(
    "host,size",
    [(GW_PING_V4, None), (GW_PING_V6, None), (GW_PING_V4, 1392), (GW_PING_V6, 1372)],
    ids=["v4", "v6", "v4-mtu", "v6-mtu"],
)
def test_ping(topo: Topology, host: str, size: int | None) -> None:
    # 1392 + 8 + 20 and 1372 + 8 + 40 fill the 1420-byte tunnel MTU exactly.
    assert topo.wait_for_ping(host, timeout=10) is not None, "no handshake/ping at all"
    tx, rx, out = topo.ping(host, count=10, interval=0.2, wait=2, size=size)
    assert (tx, rx) == (10, 10), out


def test_garbage_datagrams_do_not_stop_ping(topo: Topology) -> None:
    sent = topo.send_datagrams("garbage", "--to", topo.gateway.endpoint, "--count", "400", "--seed", "7")
    assert sent["sent"] == 400
    _tx, rx, out = topo.ping(GW_PING_V4, count=3, interval=0.2, wait=2)
    assert rx == 3, out
    assert topo.gateway.pid is not None, "gateway process died"


def test_replayed_datagrams_do_not_stop_ping(topo: Topology) -> None:
    record = topo.workdir / "recorded.bin"
    relay = topo.start_relay(record=record)
    try:
        # A fresh peer entry makes the client handshake again, so the recording holds an
        # initiation as well as transport data and keepalives.
        topo.reset_client_peer(endpoint=relay.address)
        _tx, rx, out = topo.ping(GW_PING_V4, count=5, interval=0.2, wait=3)
        assert rx == 5, f"through the recording relay: {out}"
    finally:
        counts = relay.stop()
        topo.set_client_endpoint(topo.gateway.endpoint)
    assert counts.get("recorded", 0) >= 6, counts
    kinds = [(d[0], len(d)) for d in read_records(str(record)) if d]
    assert (1, 148) in kinds, f"no handshake initiation recorded: {kinds[:10]}"
    _tx, rx, out = topo.ping(GW_PING_V4, count=2, interval=0.2, wait=2)
    assert rx == 2, f"after returning to the direct path: {out}"
    sent = topo.send_datagrams("replay", "--file", str(record), "--to", topo.gateway.endpoint, "--copies", "2")
    assert sent["sent"] == 2 * counts["recorded"]
    _tx, rx, out = topo.ping(GW_PING_V4, count=3, interval=0.2, wait=2)
    assert rx == 3, f"after replaying {sent['sent']} datagrams: {out}"
    assert topo.gateway.pid is not None, "gateway process died"


def test_client_recovers_after_gateway_restart(topo: Topology, measure: Callable[[str], None]) -> None:
    assert topo.wait_for_ping(GW_PING_V4, timeout=10) is not None
    before = topo.client_wg.latest_handshake(topo.gateway.public_key)
    time.sleep(max(0.0, before + 1.1 - time.time()))  # handshake times have 1 s resolution
    code = topo.gateway.stop(timeout=10)
    if topo.gateway.is_wgslirpy:
        assert code == 0, f"wgslirpy exited with {code} on SIGTERM"
    # The gateway gets the client's endpoint (-p) so it can start the new handshake itself;
    # left alone, wireguard-go would only re-handshake after ~15 s of unanswered data.
    topo.gateway.start(initiate_to=topo.client_initiate_endpoint())
    took = topo.wait_for_ping(GW_PING_V4, timeout=12)
    assert took is not None, "client did not recover within 12 s of the restart"
    assert topo.client_wg.latest_handshake(topo.gateway.public_key) > before, "no new handshake"
    measure(f"recovered {took:.1f} s after the restart")
