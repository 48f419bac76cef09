"""Host-side faults. UDP: queued ICMP errors are parsed, relayed with their own type and
code, and never close the binding; sends on a full socket never block. TCP: a reset after
the peer's FIN reaches the host socket even while the flow waits in its recv."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import time

import gevent
import gevent.queue
import gevent.server
import pytest
from gevent import socket as gsocket

from wgslirpy import Gateway
from wgslirpy.errors import DropReason
from wgslirpy.io import udp_forward
from wgslirpy.io.udp_forward import QueuedError, host_icmp_error, parse_extended_err
from wgslirpy.net.build import build_tcp, build_udp
from wgslirpy.net.checksum import checksum
from wgslirpy.net.segments import IcmpError, TcpFlags, TcpSegment, UdpDatagram
from wgslirpy.net.stack import HostIcmpError, relay_icmp_error

from .test_server import LOOP, ME, TunnelClient, make_config, serving

V4 = ipaddress.ip_address("192.0.2.7")
ROUTER = ipaddress.ip_address("198.51.100.1")


def ee(errno_: int, origin: int, type_: int, code: int, info: int = 0, offender: bytes = b"") -> bytes:
    return struct.pack("=IBBBBII", errno_, origin, type_, code, 0, info, 0) + offender


def sockaddr_in(addr: str) -> bytes:
    return struct.pack("=HH", socket.AF_INET, 0) + socket.inet_aton(addr) + bytes(8)


def sockaddr_in6(addr: str) -> bytes:
    return struct.pack("=HHI", socket.AF_INET6, 0, 0) + socket.inet_pton(socket.AF_INET6, addr) + bytes(4)


# --- sock_extended_err parsing (crafted control messages) --------------------------------


def test_parse_icmp_error_with_offender() -> None:
    anc = [(socket.IPPROTO_IP, 11, ee(errno.EHOSTUNREACH, 2, 3, 13, 0, sockaddr_in("198.51.100.1")))]
    assert parse_extended_err(anc) == QueuedError(errno.EHOSTUNREACH, 2, 3, 13, 0, ROUTER)


def test_parse_icmp6_packet_too_big() -> None:
    anc = [(socket.IPPROTO_IPV6, 25, ee(errno.EMSGSIZE, 3, 2, 0, 1400, sockaddr_in6("2001:db8::1")))]
    assert parse_extended_err(anc) == QueuedError(errno.EMSGSIZE, 3, 2, 0, 1400, ipaddress.ip_address("2001:db8::1"))


def test_parse_mapped_offender_is_unmapped_and_no_offender_is_none() -> None:
    anc = [(socket.IPPROTO_IPV6, 25, ee(errno.EPROTO, 2, 12, 0, 9, sockaddr_in6("::ffff:198.51.100.1")))]
    q = parse_extended_err(anc)
    assert q is not None and q.offender == ROUTER and q.info == 9
    bare = parse_extended_err([(socket.IPPROTO_IP, 11, ee(errno.EMSGSIZE, 1, 0, 0, 1280, struct.pack("=H", 0)))])
    assert bare is not None and bare.offender is None


@pytest.mark.parametrize(
    "anc",
    [
        [],
        [(socket.IPPROTO_IP, 11, ee(1, 2, 3, 3)[:15])],  # truncated
        [(socket.SOL_SOCKET, 11, ee(1, 2, 3, 3))],  # another level
        [(socket.IPPROTO_IP, 8, ee(1, 2, 3, 3))],  # another type (IP_PKTINFO)
    ],
)
def test_parse_ignores_what_is_not_an_extended_error(anc: list[tuple[int, int, bytes]]) -> None:
    assert parse_extended_err(anc) is None


@pytest.mark.parametrize("data", [b"", b"\x02", sockaddr_in("1.2.3.4")[:6], sockaddr_in6("::1")[:20], b"\xff" * 40])
def test_parse_tolerates_any_offender_bytes(data: bytes) -> None:
    q = parse_extended_err([(socket.IPPROTO_IP, 11, ee(1, 2, 3, 3) + data)])
    assert q is not None and q.offender is None


def test_host_icmp_error_by_origin() -> None:
    q = QueuedError(errno.EACCES, 3, 1, 1, 0, None)
    assert host_icmp_error(q, V4) == HostIcmpError(True, 1, 1, 0)
    local = QueuedError(errno.EMSGSIZE, 1, 0, 0, 1400, None)
    assert host_icmp_error(local, V4) == HostIcmpError(False, 3, 4, 1400)
    assert host_icmp_error(local, ipaddress.ip_address("2001:db8::1")) == HostIcmpError(True, 2, 0, 1400)
    assert host_icmp_error(QueuedError(errno.ENOBUFS, 1, 0, 0, 0, None), V4) is None  # other local errors


# --- relaying: same type and code, or RFC 7915 for an IPv6 client of an IPv4 remote ------


@pytest.mark.parametrize(
    "err, v6, expect",
    [
        (HostIcmpError(False, 3, 3), False, (3, 3, 0)),
        (HostIcmpError(False, 3, 13), False, (3, 13, 0)),  # administratively prohibited
        (HostIcmpError(False, 3, 4, 1400), False, (3, 4, 1400)),  # frag needed, next-hop MTU
        (HostIcmpError(False, 11, 0), False, (11, 0, 0)),
        (HostIcmpError(False, 12, 0, 9), False, (12, 0, 9 << 24)),  # pointer in the first byte
        (HostIcmpError(True, 1, 1), True, (1, 1, 0)),
        (HostIcmpError(True, 2, 0, 1400), True, (2, 0, 1400)),
        (HostIcmpError(True, 4, 0, 6), True, (4, 0, 6)),
        (HostIcmpError(True, 3, 0), True, (3, 0, 0)),
        (HostIcmpError(False, 3, 3), True, (1, 4, 0)),  # RFC 7915 §4.2
        (HostIcmpError(False, 3, 13), True, (1, 1, 0)),
        (HostIcmpError(False, 3, 4, 1400), True, (2, 0, 1420)),
        (HostIcmpError(False, 3, 2), True, (4, 1, 6)),
        (HostIcmpError(False, 11, 1), True, (3, 1, 0)),
        (HostIcmpError(False, 0, 0), False, None),  # an echo reply is no error
        (HostIcmpError(True, 128, 0), True, None),
        (HostIcmpError(True, 1, 0), False, None),  # ICMPv6 for an IPv4 client cannot happen
        (HostIcmpError(False, 3, 14), True, None),
    ],
)
def test_relay_icmp_error(err: HostIcmpError, v6: bool, expect: tuple[int, int, int] | None) -> None:
    assert relay_icmp_error(err, v6) == expect


# --- a real binding: the error arrives, the binding survives ------------------------------


def _forge_icmp(type_: int, code: int, rest: int, sport: int, dport: int) -> None:
    """Send ICMP ``type_``/``code`` to 127.0.0.1 quoting a UDP datagram 127.0.0.1:sport ->
    127.0.0.1:dport, as a router on the path would (needs a raw socket: root)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + 4, 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + 4, 1, 0, 64, 17, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
    )
    body = ip + udp + b"ping"
    head = struct.pack("!BBHI", type_, code, 0, rest)
    csum = checksum(head + body)
    msg = struct.pack("!BBHI", type_, code, csum, rest) + body
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        raw.sendto(msg, ("127.0.0.1", 0))
    finally:
        raw.close()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="forging an ICMP error needs a raw socket (root)")


@needs_root
@pytest.mark.parametrize(
    "type_, code, rest",
    [
        (12, 0, 9 << 24),  # parameter problem: EPROTO
        (3, 13, 0),  # communication administratively prohibited: EHOSTUNREACH
        (3, 2, 0),  # protocol unreachable: ENOPROTOOPT
    ],
)
def test_icmp_error_is_relayed_and_the_binding_survives(
    gateway: Gateway, client: TunnelClient, type_: int, code: int, rest: int
) -> None:
    sources: list[int] = []

    def echo(data: bytes, addr: tuple[str, int]) -> None:
        sources.append(addr[1])
        server.sendto(data, addr)

    server = gevent.server.DatagramServer(("127.0.0.1", 0), echo)
    with serving(server) as port:
        client.send(build_udp(UdpDatagram(ME, LOOP, 4444, port, b"ping")))
        client.expect(lambda x: isinstance(x, UdpDatagram) and x.sport == port)
        (relay,) = gateway.udp_relays.values()
        assert relay.sock is not None
        relay_port = relay.sock.getsockname()[1]
        _forge_icmp(type_, code, rest, relay_port, port)
        err = client.expect(lambda x: isinstance(x, IcmpError))
        assert isinstance(err, IcmpError) and (err.type, err.code) == (type_, code)
        assert err.src == LOOP and err.dst == ME
        assert err.quoted[9] == 17 and struct.unpack("!HH", err.quoted[20:24]) == (4444, port)
        client.send(build_udp(UdpDatagram(ME, LOOP, 4444, port, b"again")))
        reply = client.expect(lambda x: isinstance(x, UdpDatagram) and x.sport == port)
        assert isinstance(reply, UdpDatagram) and reply.payload == b"again"
        assert sources[0] == sources[-1] and len(set(sources)) == 1  # the same binding, same port
        assert list(gateway.udp_relays.values()) == [relay]
        assert gateway.stats()["stack"]["udp_icmp_errors_relayed"] == 1


def _forge_icmp6(type_: int, code: int, sport: int, dport: int) -> None:
    """ICMPv6 ``type_``/``code`` to ::1 quoting a UDP datagram [::1]:sport -> [::1]:dport
    (the kernel fills in the ICMPv6 checksum of a raw ICMPv6 socket)."""
    loop6 = socket.inet_pton(socket.AF_INET6, "::1")
    udp = struct.pack("!HHHH", sport, dport, 8 + 4, 0)
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(udp) + 4, 17, 64, loop6, loop6)
    msg = struct.pack("!BBHI", type_, code, 0, 0) + ip6 + udp + b"ping"
    raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        raw.sendto(msg, ("::1", 0))
    finally:
        raw.close()


@needs_root
def test_icmpv6_administratively_prohibited_is_relayed_and_the_binding_survives(
    gateway: Gateway, client: TunnelClient
) -> None:
    """EACCES (ICMPv6 1/1) tore the binding down before; now it is relayed as 1/1."""
    me6, loop6 = ipaddress.ip_address("fd00::2"), ipaddress.ip_address("::1")
    sources: list[int] = []

    def echo(data: bytes, addr: tuple[str, int, int, int]) -> None:
        sources.append(addr[1])
        server.sendto(data, addr)

    server = gevent.server.DatagramServer(("::1", 0), echo)
    with serving(server) as port:
        client.send(build_udp(UdpDatagram(me6, loop6, 4447, port, b"ping")))
        client.expect(lambda x: isinstance(x, UdpDatagram) and x.sport == port)
        (relay,) = gateway.udp_relays.values()
        assert relay.sock is not None
        _forge_icmp6(1, 1, relay.sock.getsockname()[1], port)
        err = client.expect(lambda x: isinstance(x, IcmpError))
        assert isinstance(err, IcmpError) and (err.type, err.code) == (1, 1)
        assert err.src == loop6 and err.dst == me6
        client.send(build_udp(UdpDatagram(me6, loop6, 4447, port, b"again")))
        reply = client.expect(lambda x: isinstance(x, UdpDatagram) and x.sport == port)
        assert isinstance(reply, UdpDatagram) and reply.payload == b"again"
        assert len(set(sources)) == 1 and list(gateway.udp_relays.values()) == [relay]


def test_send_on_a_full_socket_drops_and_counts_instead_of_blocking() -> None:
    """(Loopback never fills a UDP send buffer, so the full socket is simulated.)"""
    with Gateway(make_config()) as gw:
        from wgslirpy.net.udp_nat import UdpBinding

        relay = udp_forward.UdpBindingRelay(gw, UdpBinding(1, ME, 4446, 0.0, 0.0))
        assert relay.open()

        def full(*_args: object) -> int:
            raise BlockingIOError(errno.EAGAIN, "full")

        relay._sendto = full
        relay.send(LOOP, 9, b"z")
        assert gw.stack.drops[DropReason.UDP_HOST_SEND_FULL] == 1

        def too_big(*_args: object) -> int:
            raise OSError(errno.EMSGSIZE, "too big")

        relay._sendto = too_big
        relay.send(LOOP, 9, b"z")
        relay.close()
        assert gw.stack.drops[DropReason.UDP_HOST_SEND_FAILED] == 1


# --- TCP: a reset after the peer's FIN ---------------------------------------------------


def test_peer_reset_after_its_fin_resets_the_host_and_ends_the_flow(gateway: Gateway, client: TunnelClient) -> None:
    """The peer sends data + FIN (delivered: the host reads EOF), then RST. The flow sits
    in the host socket's recv (the host never writes); the RST must still close the host
    socket abortively and end the flow's greenlet."""
    outcome: gevent.queue.Queue[str] = gevent.queue.Queue()

    def host(sock: gsocket.socket, addr: object) -> None:
        while sock.recv(65536):
            pass
        outcome.put("eof")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # watch the state; never write (that would wake the flow)
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
            if state == 7:  # TCP_CLOSE: a RST arrived (CLOSE_WAIT, 8, while our side stays open)
                outcome.put("reset")
                return
            gevent.sleep(0.02)
        outcome.put(f"still open (state {state})")

    with serving(gevent.server.StreamServer(("127.0.0.1", 0), host)) as port:
        synack = client.open_tcp(40020, port)
        ack = synack.seq + 1
        client.send(
            build_tcp(TcpSegment(ME, LOOP, 40020, port, 101, ack, TcpFlags.ACK | TcpFlags.FIN, 65535, payload=b"bye"))
        )
        assert outcome.get(timeout=5) == "eof"
        (flow,) = gateway.tcp_flows.values()
        deadline = time.monotonic() + 5
        while not flow._writer_finished.is_set() and time.monotonic() < deadline:
            gevent.sleep(0.01)
        assert flow._writer_finished.is_set()
        client.send(build_tcp(TcpSegment(ME, LOOP, 40020, port, 105, 0, TcpFlags.RST, 0)))
        result = outcome.get(timeout=6)
        assert result.startswith("reset"), result
        deadline = time.monotonic() + 5
        while gateway.tcp_flows and time.monotonic() < deadline:
            gevent.sleep(0.01)
        assert not gateway.tcp_flows  # the greenlet ended and the socket is closed
        stats = gateway.stats()  # what SIGUSR1 prints: the stack's TCP totals outlive the flow
        assert isinstance(stats["tcp"], dict) and stats["tcp_flows_in_stack"] == 0
