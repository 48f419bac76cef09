"""Incoming forwards (-t/-u) with the real client (wgslirpy only): servers listen in ns
client (on every address, so on its tunnel addresses too) and are reached from ns gw
through listeners on the gateway's underlay address. The sources we present inside the
tunnel (10.202.0.9, fd00:202::9, ports from the range) are within the client's
wireguard-go allowed-ips (10.202.0.0/24, fd00:202::/64) and routed back through wg.

Covered: a bulk download with sha256 (and, in the same run, the same download the
outbound way, client -> gateway -> ns srv, for the throughput ratio), an upload, half-close
both ways, a closed port surfacing as a reset connection, UDP echo up to 16000-byte
datagrams, IPv6, and IPv4 on the host mixed with IPv6 inside the tunnel.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from . import fetch
from .conftest import require_interop
from .servers import CLOSED_PORT, ECHO_PORT, HTTP_PORT, SINK_PORT, TALKER_PORT, TALKER_RESULT_PORT, UDP_ECHO_PORT
from .topology import (
    CLIENT_TUNNEL_V4,
    CLIENT_TUNNEL_V6,
    GW_PING_V4,
    GW_UNDERLAY_V4,
    GW_UNDERLAY_V6,
    PYTHON,
    SERVERS_PY,
    SRV_V4,
    Topology,
)

pytestmark = pytest.mark.interop

BIG = int(os.environ.get("WGSLIRPY_INTEROP_MIB", "100")) << 20
SRC_V4 = "10.202.0.9"
SRC_V6 = "fd00:202::9"
#: host port of the IPv4-listener -> IPv6-tunnel forward (HTTP)
MIXED_PORT = 18080
#: a port the client rejects with ICMP(v6) administratively prohibited (nftables)
REJECTED_PORT = 9998
TCP_PORTS = (HTTP_PORT, SINK_PORT, ECHO_PORT, TALKER_PORT, TALKER_RESULT_PORT, CLOSED_PORT, REJECTED_PORT)


def forward_args() -> list[str]:
    args: list[str] = []
    for port in TCP_PORTS:
        args += ["-t", f"{GW_UNDERLAY_V4}:{port},{SRC_V4}:0,{CLIENT_TUNNEL_V4}:{port}"]
        args += ["-t", f"[{GW_UNDERLAY_V6}]:{port},[{SRC_V6}]:0,[{CLIENT_TUNNEL_V6}]:{port}"]
    args += ["-t", f"{GW_UNDERLAY_V4}:{MIXED_PORT},[{SRC_V6}]:0,[{CLIENT_TUNNEL_V6}]:{HTTP_PORT}"]
    args += ["-u", f"{GW_UNDERLAY_V4}:{UDP_ECHO_PORT},{SRC_V4}:0,{CLIENT_TUNNEL_V4}:{UDP_ECHO_PORT}"]
    args += ["-u", f"[{GW_UNDERLAY_V6}]:{UDP_ECHO_PORT},[{SRC_V6}]:0,[{CLIENT_TUNNEL_V6}]:{UDP_ECHO_PORT}"]
    return args


@pytest.fixture(scope="module")
def topo(socket_buffers: None) -> Iterator[Topology]:
    """This module's own bed: wgslirpy with the forwards, servers in ns client as well."""
    require_interop()
    from .conftest import gateway_kind

    if gateway_kind() != "wgslirpy":
        pytest.skip("incoming forwards are a wgslirpy feature")
    if True:
        t = Topology(
            "wgslirpy", gateway_args=forward_args(), keep_workdir=os.environ.get("WGSLIRPY_INTEROP_KEEP") == "1"
        )
        try:
            t.up()
            proc = t.client.spawn(
                [PYTHON, str(SERVERS_PY), "serve"], log_path=t.workdir / "client-servers.log", stdout_pipe=True
            )
            from .topology import _wait_ready

            _wait_ready(proc, "servers.py serve in ns client")
            t.client.run(
                ["nft", "-f", "-"],
                input=(
                    "table inet wgsi_reject {\n chain in { type filter hook input priority 0; policy accept;\n"
                    f"  tcp dport {REJECTED_PORT} reject with icmpx type admin-prohibited\n }}\n}}\n"
                ),
            )
            assert t.wait_for_ping(GW_PING_V4, timeout=15) is not None, "tunnel does not come up"
            yield t
        finally:
            t.down()


def host_probe(topo: Topology, name: str, *args: str, timeout: float = 60.0) -> dict[str, object]:
    """``servers.py <name> args`` in ns gw (the host side of the forwards)."""
    import json

    proc = topo.gw.run([PYTHON, str(SERVERS_PY), name, *args], timeout=timeout, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"probe {name} {args} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
    result: dict[str, object] = json.loads(lines[-1])
    return result


def download(ns_cmd: list[str], size: int, seed: int) -> float:
    """Run curl (already wrapped for its namespace), check every byte; MB/s."""
    return size / fetch.download(ns_cmd, size, seed) / 1e6


def curl(host: str, port: int, size: int, seed: int) -> list[str]:
    return fetch.blob_curl(host, port, size, seed)


def test_throughput_through_forward_vs_outbound(topo: Topology, measure: Callable[[str], None]) -> None:
    """Both directions of a -t forward against the outbound flows, same run, compared by
    which side of our TCP is busy: our receiver (tunnel -> host through -t, client -> srv
    outbound) and our sender (host -> tunnel through -t, srv -> client outbound)."""
    in_down = download(topo.gw.cmd(curl(GW_UNDERLAY_V4, HTTP_PORT, BIG, 21)), BIG, 21)
    out_down = download(topo.client.cmd(curl(SRV_V4, HTTP_PORT, BIG, 22)), BIG, 22)
    up = ["--size", str(BIG), "--timeout", "240"]
    r_in = host_probe(topo, "upload", GW_UNDERLAY_V4, str(SINK_PORT), *up, timeout=300)
    r_out = topo.probe("upload", SRV_V4, str(SINK_PORT), *up, timeout=300)
    assert r_in["ok"] and r_out["ok"], (r_in, r_out)
    in_up, out_up = float(str(r_in["mbps"])), float(str(r_out["mbps"]))
    measure(
        f"{BIG >> 20} MiB, our TCP receiving: -t tunnel->host {in_down:.1f} MB/s vs outbound client->srv "
        f"{out_up:.1f} MB/s (ratio {in_down / out_up:.2f})"
    )
    measure(
        f"{BIG >> 20} MiB, our TCP sending: -t host->tunnel {in_up:.1f} MB/s vs outbound srv->client "
        f"{out_down:.1f} MB/s (ratio {in_up / out_down:.2f})"
    )


def test_download_ipv6_and_mixed(topo: Topology, measure: Callable[[str], None]) -> None:
    size = 8 << 20
    v6 = download(topo.gw.cmd(curl(GW_UNDERLAY_V6, HTTP_PORT, size, 23)), size, 23)
    mixed = download(topo.gw.cmd(curl(GW_UNDERLAY_V4, MIXED_PORT, size, 24)), size, 24)
    measure(f"8 MiB through -t: IPv6 {v6:.1f} MB/s; IPv4 host -> IPv6 tunnel {mixed:.1f} MB/s")


@pytest.mark.parametrize("host", [GW_UNDERLAY_V4, GW_UNDERLAY_V6], ids=["v4", "v6"])
def test_upload_and_half_close_host_first(topo: Topology, host: str, measure: Callable[[str], None]) -> None:
    # The sink answers only after our FIN: the reply must come back on the half-closed flow.
    size = 8 << 20
    r = host_probe(topo, "upload", host, str(SINK_PORT), "--size", str(size), "--timeout", "240", timeout=300)
    assert r["ok"], r
    measure(f"upload {size >> 20} MiB through -t ({host}): {r['mbps']:.1f} MB/s")


@pytest.mark.parametrize("host", [GW_UNDERLAY_V4, GW_UNDERLAY_V6], ids=["v4", "v6"])
def test_half_close_tunnel_side_first(topo: Topology, host: str) -> None:
    # The talker (inside the tunnel) sends, shuts its write side, and must still receive
    # everything the host client sends after.
    r = host_probe(
        topo, "talker", host, "--recv-size", "200000", "--send-size", "300000", "--timeout", "20", timeout=60
    )
    assert r["recv_ok"], f"data before the tunnel side's FIN: {r}"
    assert r["send_ok"], f"data sent after the tunnel side's FIN: {r}"


_RESET_PROBE = r"""
import json, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
t0 = time.monotonic()
try:
    s = socket.create_connection((host, port), timeout=10)
    data = s.recv(10)
    print(json.dumps({"errno": None, "data": len(data), "elapsed": time.monotonic() - t0}))
except OSError as e:
    import errno
    print(json.dumps({"errno": errno.errorcode.get(e.errno, str(e)), "elapsed": time.monotonic() - t0}))
"""


@pytest.mark.parametrize("port", [CLOSED_PORT, REJECTED_PORT], ids=["rst", "icmp"])
@pytest.mark.parametrize("host", [GW_UNDERLAY_V4, GW_UNDERLAY_V6], ids=["v4", "v6"])
def test_refused_port_resets_the_host_connection(topo: Topology, host: str, port: int) -> None:
    import json

    proc = topo.gw.run([PYTHON, "-c", _RESET_PROBE, host, str(port)], timeout=30, check=False)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"probe failed ({proc.returncode}): {proc.stderr}"
    r = json.loads(lines[-1])
    # The host kernel accepted the connection before the tunnel side answered, so the RST
    # from inside arrives as a reset (ECONNRESET), not as ECONNREFUSED: never as EOF.
    assert r["errno"] in ("ECONNRESET", "ECONNREFUSED"), r
    assert r["elapsed"] < 3.0, r


@pytest.mark.parametrize("host", [GW_UNDERLAY_V4, GW_UNDERLAY_V6], ids=["v4", "v6"])
def test_udp_echo_through_forward(topo: Topology, host: str) -> None:
    r = host_probe(
        topo, "udp-sizes", host, str(UDP_ECHO_PORT), "--sizes", "10,1400,4000,16000", "--tries", "3", timeout=60
    )
    assert r["ok"], r


def test_echo_many_connections(topo: Topology, measure: Callable[[str], None]) -> None:
    r = host_probe(
        topo, "echo-many", GW_UNDERLAY_V4, str(ECHO_PORT), "--conns", "50", "--size", str(256 << 10), timeout=180
    )
    assert r.get("ok"), r
    measure(f"50 x 256 KiB echo through -t: {r.get('elapsed')} s")


def test_flows_released(topo: Topology) -> None:
    deadline = time.monotonic() + 30
    stats = topo.gateway.stats()
    while stats is not None and stats["tcp_flows"] and time.monotonic() < deadline:
        time.sleep(0.5)
        stats = topo.gateway.stats()
    assert stats is not None and stats["tcp_flows"] == 0, stats
    assert stats["stack"].get("tcp_incoming_opened", 0) > 50, stats
    assert stats["stack"].get("tcp_incoming_unreachable", 0) >= 2, stats  # the ICMP-rejected port
