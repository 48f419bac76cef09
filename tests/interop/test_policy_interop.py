"""Through the real client (wgslirpy only): a default-denied destination (the cloud
metadata address 169.254.169.254) is refused at once, TCP with a RST (ECONNREFUSED) and
UDP with ICMP administratively prohibited (EHOSTUNREACH), instead of being dialled from
the gateway's network; and a source port reused while our side is in TIME-WAIT connects
at once."""

from __future__ import annotations

import json

import pytest

from .topology import CLIENT_ALLOWED_IPS, GW_PING_V4, HTTP_PORT, PYTHON, SRV_V4, SRV_V6, Topology

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


# A client that reuses its source port right after a connection the server closed first
# (so our side of it sits in TIME-WAIT): the new SYN must open at once (RFC 6191), not be
# answered with a challenge ACK that costs the client a SYN retransmission (1 s).
_REUSE_PORT_PROBE = r"""
import json, socket, sys, time
host, port, sport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
def fetch():
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", sport))
    s.settimeout(8)
    t0 = time.monotonic()
    s.connect((host, port))
    took = time.monotonic() - t0
    s.sendall(b"GET /blob/1000/1 HTTP/1.0\r\n\r\n")
    got = 0
    while True:
        data = s.recv(65536)
        if not data:
            break
        got += len(data)
    s.close()
    return took, got
first, got1 = fetch()
time.sleep(0.3)
second, got2 = fetch()
print(json.dumps({"first": first, "second": second, "bytes": [got1, got2]}))
"""


@pytest.mark.parametrize("srv", [SRV_V4, SRV_V6], ids=["v4", "v6"])
def test_source_port_reuse_after_time_wait_connects_at_once(topo: Topology, wgslirpy_only: None, srv: str) -> None:
    sport = 47000 + (6 if ":" in srv else 4)
    proc = topo.client.run([PYTHON, "-c", _REUSE_PORT_PROBE, srv, str(HTTP_PORT), str(sport)], timeout=40, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
    r = json.loads(lines[-1])
    assert r["bytes"][0] > 1000 and r["bytes"][1] > 1000, r
    assert r["second"] < 0.5, r  # no challenge ACK + SYN retransmission
    stats = topo.gateway.stats()
    assert stats is not None and stats["stack"]["tcp_time_wait_reopened"] >= 1, stats
