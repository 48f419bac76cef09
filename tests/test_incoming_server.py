"""Incoming forwards through the gevent shell, in process, on loopback only: a host client
connects to a -t/-u listener and our own WireGuard core plays the peer inside the tunnel."""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterator

import gevent
import pytest
from gevent import socket as gsocket

from wgslirpy import Gateway
from wgslirpy.config import parse_incoming
from wgslirpy.errors import ConfigError
from wgslirpy.net.build import build_tcp, build_udp
from wgslirpy.net.segments import TcpFlags, TcpSegment, UdpDatagram

from .test_server import ME, TunnelClient, make_config

SRC = ipaddress.ip_address("10.0.0.9")


def _free_port(kind: int) -> int:
    s = gsocket.socket(gsocket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def forwarded() -> Iterator[tuple[Gateway, TunnelClient, int, int]]:
    tport, uport = _free_port(gsocket.SOCK_STREAM), _free_port(gsocket.SOCK_DGRAM)
    cfg = make_config(
        incoming=(
            parse_incoming(f"127.0.0.1:{tport},{SRC}:0,{ME}:22", "tcp"),
            parse_incoming(f"127.0.0.1:{uport},{SRC}:0,{ME}:53", "udp"),
        )
    )
    gw = Gateway(cfg)
    gw.start()
    client = TunnelClient(gw.address)
    # a first packet from the peer makes the handshake (the gateway does not initiate here)
    client.send(build_udp(UdpDatagram(ME, ipaddress.ip_address("10.0.0.53"), 999, 53, b"\0" * 12)))
    gevent.sleep(0.2)
    try:
        yield gw, client, tport, uport
    finally:
        client.close()
        gw.stop()


def test_tcp_forward_relays_both_ways_and_half_closes(forwarded: tuple[Gateway, TunnelClient, int, int]) -> None:
    _gw, peer, tport, _ = forwarded
    host = gsocket.create_connection(("127.0.0.1", tport), timeout=5)
    syn = peer.expect(lambda x: isinstance(x, TcpSegment) and x.flags == TcpFlags.SYN)
    assert isinstance(syn, TcpSegment) and syn.src == SRC and syn.dst == ME and syn.dport == 22
    assert syn.mss and syn.sack_permitted and syn.wscale is not None and syn.ts_val is not None
    assert 32768 <= syn.sport <= 60999
    pisn = 4242

    def to_gw(seq: int, ack: int, flags: TcpFlags, payload: bytes = b"") -> None:
        peer.send(build_tcp(TcpSegment(ME, SRC, 22, syn.sport, seq, ack, flags, 65535, payload=payload)))

    to_gw(pisn, syn.seq + 1, TcpFlags.SYN | TcpFlags.ACK)
    peer.expect(lambda x: isinstance(x, TcpSegment) and x.flags == TcpFlags.ACK and x.ack == pisn + 1)
    host.sendall(b"ping")
    data = peer.expect(lambda x: isinstance(x, TcpSegment) and bool(x.payload))
    assert isinstance(data, TcpSegment) and data.payload == b"ping"
    host.shutdown(gsocket.SHUT_WR)  # host half-close -> FIN into the tunnel
    fin = peer.expect(lambda x: isinstance(x, TcpSegment) and bool(x.flags & TcpFlags.FIN))
    assert isinstance(fin, TcpSegment) and fin.seq == syn.seq + 5
    # the peer still talks after our FIN, then closes
    to_gw(pisn + 1, fin.seq + 1, TcpFlags.ACK | TcpFlags.PSH, b"pong")
    to_gw(pisn + 5, fin.seq + 1, TcpFlags.ACK | TcpFlags.FIN)
    got = b""
    while chunk := host.recv(100):
        got += chunk
    assert got == b"pong"
    host.close()


def test_tcp_forward_rst_resets_the_host_connection(forwarded: tuple[Gateway, TunnelClient, int, int]) -> None:
    _gw, peer, tport, _ = forwarded
    host = gsocket.create_connection(("127.0.0.1", tport), timeout=5)
    syn = peer.expect(lambda x: isinstance(x, TcpSegment) and x.flags == TcpFlags.SYN)
    assert isinstance(syn, TcpSegment)
    peer.send(build_tcp(TcpSegment(ME, SRC, 22, syn.sport, 0, syn.seq + 1, TcpFlags.RST | TcpFlags.ACK, 0)))
    with pytest.raises(OSError) as e:
        host.recv(10)
    assert e.value.errno in (errno.ECONNRESET, errno.ECONNREFUSED)
    host.close()


def test_udp_forward_echo_large_datagram(forwarded: tuple[Gateway, TunnelClient, int, int]) -> None:
    _gw, peer, _, uport = forwarded
    host = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
    host.settimeout(5)
    host.sendto(b"d" * 4000, ("127.0.0.1", uport))
    d = peer.expect(lambda x: isinstance(x, UdpDatagram) and x.dport == 53 and x.src == SRC)
    assert isinstance(d, UdpDatagram) and d.payload == b"d" * 4000
    peer.send(build_udp(UdpDatagram(ME, SRC, 53, d.sport, d.payload.upper())))
    data, _ = host.recvfrom(65535)
    assert data == b"D" * 4000
    host.close()


def test_a_host_port_in_use_fails_start() -> None:
    busy = gsocket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        gw = Gateway(make_config(incoming=(parse_incoming(f"127.0.0.1:{port},{SRC}:0,{ME}:22", "tcp"),)))
        with pytest.raises(ConfigError, match="cannot listen"):
            gw.start()
        gw.stop()
    finally:
        busy.close()


def test_stop_closes_listeners_and_flows(forwarded: tuple[Gateway, TunnelClient, int, int]) -> None:
    gw, peer, tport, _ = forwarded
    host = gsocket.create_connection(("127.0.0.1", tport), timeout=5)
    peer.expect(lambda x: isinstance(x, TcpSegment) and x.flags == TcpFlags.SYN)
    assert gw.stats()["tcp_flows"] == 1
    gw.stop()
    assert gw.stats()["tcp_flows"] == 0 and len(gw._group) == 0
    with pytest.raises(OSError):
        gsocket.create_connection(("127.0.0.1", tport), timeout=2)
    host.close()


def test_omitted_source_presents_the_host_client() -> None:
    """HOST,DST: the SYN inside the tunnel comes from the host client's address and port."""
    tport = _free_port(gsocket.SOCK_STREAM)
    gw = Gateway(make_config(incoming=(parse_incoming(f"127.0.0.1:{tport},{ME}:22", "tcp"),)))
    gw.start()
    peer = TunnelClient(gw.address)
    try:
        peer.send(build_udp(UdpDatagram(ME, ipaddress.ip_address("10.0.0.53"), 999, 53, b"\0" * 12)))
        gevent.sleep(0.2)
        host = gsocket.create_connection(("127.0.0.1", tport), timeout=5)
        syn = peer.expect(lambda x: isinstance(x, TcpSegment) and x.flags == TcpFlags.SYN)
        assert isinstance(syn, TcpSegment)
        assert (str(syn.src), syn.sport) == host.getsockname()
        host.close()
    finally:
        peer.close()
        gw.stop()
