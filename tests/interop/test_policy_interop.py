"""Destination policy through the real client: a default-denied destination (the cloud
metadata address 169.254.169.254) is refused at once, TCP with a RST (ECONNREFUSED) and
UDP with ICMP administratively prohibited (EHOSTUNREACH), instead of being dialled from
the gateway's network (wgslirpy only)."""

from __future__ import annotations

import pytest

from .topology import CLIENT_ALLOWED_IPS, GW_PING_V4, Topology

pytestmark = pytest.mark.interop

METADATA = "169.254.169.254"


@pytest.fixture(scope="module", autouse=True)
def metadata_through_the_tunnel(topo: Topology) -> None:
    """Route 169.254.169.254 from the client into the tunnel (only this module's topology)."""
    assert topo.wait_for_ping(GW_PING_V4, timeout=10) is not None, "tunnel does not come up"
    topo.client_wg.add_route(f"{METADATA}/32")
    topo.client_wg.set_peer(topo.gateway.public_key, allowed_ips=(*CLIENT_ALLOWED_IPS, f"{METADATA}/32"))


def test_denied_link_local_tcp_is_refused_at_once(topo: Topology, wgslirpy_only: None) -> None:
    r = topo.probe("connect", METADATA, "80", "--timeout", "5")
    assert not r["ok"] and r["errno"] == "ECONNREFUSED", r
    assert r["elapsed"] < 2.0, r  # a RST, not a dial that times out
    stats = topo.gateway.stats()
    assert stats is not None and stats["drops"].get("tcp_denied", 0) >= 1, stats


def test_denied_link_local_udp_gets_administratively_prohibited(topo: Topology, wgslirpy_only: None) -> None:
    r = topo.probe("udp-refused", METADATA, "53", "--wait", "3", "--tries", "1", timeout=30)
    # ICMP type 3 code 13 surfaces as EHOSTUNREACH on a connected UDP socket (Linux)
    assert r["errno"] == "EHOSTUNREACH", r
    assert r["elapsed"] < 2.0, r
    stats = topo.gateway.stats()
    assert stats is not None and stats["drops"].get("udp_denied", 0) >= 1, stats
