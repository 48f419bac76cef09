"""UDP relay and the built-in DNS responder, end to end: bulk echo, fragmented datagrams,
full-cone replies, ICMP port-unreachable as ECONNREFUSED, dig over UDP/TCP and both
families, and the default loopback policy (wgslirpy only for DNS and loopback)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from .topology import (
    CLOSED_PORT,
    GW_DNS_V4,
    GW_DNS_V6,
    GW_LOOPBACK_PORT,
    GW_PING_V4,
    HOSTS_NAME,
    LOOPBACK_STANDIN_V4,
    SRV_V4,
    SRV_V6,
    TUNNEL_MTU,
    UDP_CONE_PORT,
    UDP_CONE_REPLY_PORT,
    UDP_ECHO_PORT,
    Topology,
)

pytestmark = pytest.mark.interop

FAMILIES = pytest.mark.parametrize("srv", [SRV_V4, SRV_V6], ids=["v4", "v6"])
RESOLVERS = pytest.mark.parametrize("resolver", [GW_DNS_V4, GW_DNS_V6], ids=["v4", "v6"])


@pytest.fixture(scope="module", autouse=True)
def tunnel_up(topo: Topology) -> None:
    assert topo.wait_for_ping(GW_PING_V4, timeout=10) is not None, "tunnel does not come up"


@FAMILIES
def test_udp_echo_10000(topo: Topology, srv: str, measure: Callable[[str], None]) -> None:
    largest = TUNNEL_MTU - (48 if ":" in srv else 28)
    r = topo.probe(
        "udp-echo",
        srv,
        str(UDP_ECHO_PORT),
        "--count",
        "10000",
        "--min",
        "4",
        "--max",
        str(largest),
        "--timeout",
        "90",
        timeout=120,
    )
    assert r["bad"] == 0, r
    assert r["loss"] <= 0.01, r
    measure(f"10000 datagrams 4..{largest} B: {r['rate']:.0f} datagrams/s, loss {r['loss']:.2%}")


@FAMILIES
def test_udp_fragmented_datagrams(topo: Topology, srv: str) -> None:
    r = topo.probe("udp-sizes", srv, str(UDP_ECHO_PORT), "--sizes", "1500,4000,16000,32000", timeout=60)
    assert r["ok"], r


@FAMILIES
def test_udp_full_cone(topo: Topology, srv: str) -> None:
    r = topo.probe("udp-cone", srv, str(UDP_CONE_PORT), "--reply-port", str(UDP_CONE_REPLY_PORT), timeout=30)
    assert r["ok"], r


@FAMILIES
def test_udp_closed_port_refused(topo: Topology, srv: str) -> None:
    r = topo.probe("udp-refused", srv, str(CLOSED_PORT), "--wait", "2", timeout=30)
    assert r["ok"], r


def dig(topo: Topology, resolver: str, name: str, rtype: str, *extra: str) -> tuple[str, list[str], float]:
    """(status, answer data, seconds) from ``dig`` in the client namespace."""
    t0 = time.monotonic()
    out = topo.client.run(
        ["dig", f"@{resolver}", name, rtype, "+time=2", "+tries=1", "+noall", "+comments", "+answer", *extra],
        timeout=15,
        check=False,
    ).stdout
    elapsed = time.monotonic() - t0
    status = ""
    answers: list[str] = []
    for line in out.splitlines():
        if "status:" in line:
            status = line.split("status:", 1)[1].split(",", 1)[0].strip()
        elif line and not line.startswith(";"):
            fields = line.split()
            if len(fields) >= 5 and fields[3] == rtype:
                answers.append(fields[4])
    assert status, f"no DNS reply from {resolver}:\n{out}"
    return status, answers, elapsed


@RESOLVERS
def test_dns_localhost(topo: Topology, wgslirpy_only: None, resolver: str) -> None:
    assert dig(topo, resolver, "localhost", "A")[:2] == ("NOERROR", ["127.0.0.1"])
    assert dig(topo, resolver, "localhost", "AAAA")[:2] == ("NOERROR", ["::1"])


@RESOLVERS
def test_dns_hosts_file_name(topo: Topology, wgslirpy_only: None, resolver: str) -> None:
    assert dig(topo, resolver, HOSTS_NAME, "A")[:2] == ("NOERROR", [SRV_V4])
    assert dig(topo, resolver, HOSTS_NAME, "AAAA")[:2] == ("NOERROR", [SRV_V6])


@RESOLVERS
def test_dns_nxdomain_fast(topo: Topology, wgslirpy_only: None, resolver: str) -> None:
    status, answers, elapsed = dig(topo, resolver, "nonexistent.invalid", "A")
    assert status == "NXDOMAIN" and not answers
    assert elapsed < 1.0, f"NXDOMAIN took {elapsed:.2f} s"


@RESOLVERS
def test_dns_over_tcp(topo: Topology, wgslirpy_only: None, resolver: str) -> None:
    assert dig(topo, resolver, "localhost", "A", "+tcp")[:2] == ("NOERROR", ["127.0.0.1"])


def test_loopback_refused_by_default(topo: Topology, wgslirpy_only: None) -> None:
    # ns gw has a listener on 127.0.0.1:GW_LOOPBACK_PORT: only the policy keeps us out.
    # IPv4 only: see Topology.enable_loopback_rewrite for why ::1 cannot be sent.
    topo.enable_loopback_rewrite()
    r = topo.probe("connect", LOOPBACK_STANDIN_V4, str(GW_LOOPBACK_PORT), "--timeout", "3")
    assert not r["ok"], "reached 127.0.0.1 in the gateway's namespace through the tunnel"
    assert r["errno"] == "ECONNREFUSED", r
