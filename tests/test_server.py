"""The gevent shell end to end, in process, on loopback only.

Our own WireGuard core plays the client (initiator) over a loopback UDP socket; the
gateway relays to gevent servers on 127.0.0.1 (``allow_loopback``). These are the only
unit tests with sockets (see *Testing* in docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator

import dns.message
import dns.rcode
import gevent
import gevent.queue
import gevent.server
import pytest
from gevent import socket as gsocket

from wgslirpy import Config, Gateway
from wgslirpy.errors import DropReason
from wgslirpy.io import tcp_forward
from wgslirpy.net.build import build_icmp_echo, build_tcp, build_udp
from wgslirpy.net.fragments import Reassembler
from wgslirpy.net.packet import decode_ip
from wgslirpy.net.segments import IcmpEcho, IcmpError, TcpFlags, TcpSegment, UdpDatagram
from wgslirpy.wg import crypto
from wgslirpy.wg.endpoint import PeerConfig, WireGuardEndpoint

CLIENT_PRIVATE = crypto.clamp(bytes(range(1, 33)))
GATEWAY_PRIVATE = crypto.clamp(bytes(range(101, 133)))
ME = ipaddress.ip_address("10.0.0.2")
PING = ipaddress.ip_address("10.0.0.1")
DNS = ipaddress.ip_address("10.0.0.53")
LOOP = ipaddress.ip_address("127.0.0.1")


class TunnelClient:
    """A WireGuard client made of our own core, on a loopback UDP socket."""

    def __init__(self, gateway_addr: tuple[str, int], port: int = 0) -> None:
        self.sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.ep = WireGuardEndpoint(
            CLIENT_PRIVATE,
            PeerConfig(crypto.public_key(GATEWAY_PRIVATE), endpoint=gateway_addr),
            now=time.monotonic(),
            wall_clock=time.time,
        )
        self.inbox: gevent.queue.Queue[object] = gevent.queue.Queue()
        self.reassembler = Reassembler()
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            try:
                with gevent.Timeout(0.05, False):
                    data, addr = self.sock.recvfrom(65535)
                    inner = self.ep.receive_datagram(data, addr, now=time.monotonic())
                    if inner is not None:
                        whole = self.reassembler.receive(inner, now=time.monotonic())
                        if isinstance(whole, bytes):
                            self.inbox.put(decode_ip(whole))
            except OSError:
                return
            self.ep.handle_timer(now=time.monotonic())
            self.flush()

    def flush(self) -> None:
        for data, addr in self.ep.datagrams_to_send():
            self.sock.sendto(data, addr)

    def send(self, packet: bytes) -> None:
        self.ep.send_ip(packet, now=time.monotonic())
        self.flush()

    def open_tcp(self, sport: int, port: int, seq: int = 100) -> TcpSegment:
        """A bare SYN from ME:``sport`` to 127.0.0.1:``port``; returns the gateway's SYN-ACK."""
        self.send(build_tcp(TcpSegment(ME, LOOP, sport, port, seq, 0, TcpFlags.SYN, 65535)))
        synack = self.expect(lambda x: isinstance(x, TcpSegment))
        assert isinstance(synack, TcpSegment) and synack.flags & TcpFlags.SYN, synack
        return synack

    def expect(self, pred: Callable[[object], bool], timeout: float = 5.0) -> object:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("nothing matching came back through the tunnel")
            try:
                item = self.inbox.get(timeout=left)
            except gevent.queue.Empty:
                continue
            if pred(item):
                return item

    def close(self) -> None:
        self.reader.kill()
        self.sock.close()


@contextlib.contextmanager
def serving(server: gevent.server.BaseServer) -> Iterator[int]:
    """Run a host-side test server for the with-block (stopped after it, whatever happens);
    yields its port."""
    server.start()
    try:
        yield server.server_port
    finally:
        server.stop()


def make_config(**kw: object) -> Config:
    fields: dict[str, object] = {"allow_loopback": True, **kw}
    return Config(
        private_key=GATEWAY_PRIVATE,
        peer_public_key=crypto.public_key(CLIENT_PRIVATE),
        bind=(LOOP, 0),
        pingable=(PING,),
        dns=((DNS, 53),),
        **fields,  # type: ignore[arg-type]
    )


def test_start_stop_repeatable() -> None:
    gw = Gateway(make_config())
    for _ in range(3):
        gw.start()
        assert gw.started and not gw.closed
        port = gw.server_port
        assert port > 0
        gw.stop()
        assert not gw.started and gw.closed


def test_serve_forever_returns_on_request_stop() -> None:
    gw = Gateway(make_config())
    g = gevent.spawn(gw.serve_forever)
    gevent.sleep(0.1)
    assert gw.started
    gw.request_stop()
    g.join(timeout=5)
    assert g.dead and gw.closed


def test_context_manager() -> None:
    with Gateway(make_config()) as gw:
        assert gw.started
    assert gw.closed


def test_ping_through_the_tunnel(gateway: Gateway, client: TunnelClient) -> None:
    for seq in range(3):
        client.send(build_icmp_echo(IcmpEcho(ME, PING, True, 99, seq, b"p" * 1000)))
        reply = client.expect(lambda x: isinstance(x, IcmpEcho))
        assert reply == IcmpEcho(PING, ME, False, 99, seq, b"p" * 1000)
    assert gateway.stats()["has_session"]


def test_udp_echo_and_dns(gateway: Gateway, client: TunnelClient) -> None:
    def reverse(data: bytes, addr: tuple[str, int]) -> None:
        server.sendto(data[::-1], addr)

    server = gevent.server.DatagramServer(("127.0.0.1", 0), reverse)
    with serving(server) as port:
        payload = bytes(range(256)) * 16  # 4096 bytes: the reply is fragmented to the MTU
        client.send(build_udp(UdpDatagram(ME, LOOP, 4444, port, payload)))
        reply = client.expect(lambda x: isinstance(x, UdpDatagram) and x.sport == port, timeout=5)
        assert isinstance(reply, UdpDatagram) and reply.payload == payload[::-1] and reply.dport == 4444
    q = dns.message.make_query("localhost", "A")
    client.send(build_udp(UdpDatagram(ME, DNS, 5353, 53, q.to_wire())))
    r = client.expect(lambda x: isinstance(x, UdpDatagram) and x.sport == 53)
    assert isinstance(r, UdpDatagram)
    assert dns.message.from_wire(r.payload).answer[0][0].address == "127.0.0.1"


def test_tcp_echo_and_close(gateway: Gateway, client: TunnelClient) -> None:
    def echo(sock: gsocket.socket, addr: object) -> None:
        while data := sock.recv(65536):
            sock.sendall(data.upper())

    with serving(gevent.server.StreamServer(("127.0.0.1", 0), echo)) as port:
        iss = 5000
        client.send(build_tcp(TcpSegment(ME, LOOP, 40001, port, iss, 0, TcpFlags.SYN, 65535, mss=1360)))
        synack = client.expect(lambda x: isinstance(x, TcpSegment))
        assert isinstance(synack, TcpSegment) and synack.flags == TcpFlags.SYN | TcpFlags.ACK
        assert synack.ack == iss + 1
        seq, ack = iss + 1, synack.seq + 1
        client.send(
            build_tcp(
                TcpSegment(
                    ME, LOOP, 40001, port, seq, ack, TcpFlags.ACK | TcpFlags.PSH, 65535, payload=b"hello gateway"
                )
            )
        )
        got = b""
        while got != b"HELLO GATEWAY":
            seg = client.expect(lambda x: isinstance(x, TcpSegment))
            assert isinstance(seg, TcpSegment)
            got += seg.payload
        seq += len(b"hello gateway")
        ack += len(got)
        client.send(build_tcp(TcpSegment(ME, LOOP, 40001, port, seq, ack, TcpFlags.ACK | TcpFlags.FIN, 65535)))
        fin = client.expect(lambda x: isinstance(x, TcpSegment) and bool(x.flags & TcpFlags.FIN))
        assert isinstance(fin, TcpSegment)
        client.send(build_tcp(TcpSegment(ME, LOOP, 40001, port, seq + 1, fin.seq + 1, TcpFlags.ACK, 65535)))
        deadline = time.monotonic() + 5
        while gateway.stats()["tcp_flows"] and time.monotonic() < deadline:
            gevent.sleep(0.05)
        assert gateway.stats()["tcp_flows"] == 0


def test_refused_port_gets_rst(gateway: Gateway, client: TunnelClient) -> None:
    s = gsocket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    client.send(build_tcp(TcpSegment(ME, LOOP, 40002, port, 1, 0, TcpFlags.SYN, 65535)))
    rst = client.expect(lambda x: isinstance(x, TcpSegment))
    assert isinstance(rst, TcpSegment) and rst.flags & TcpFlags.RST and rst.ack == 2


@pytest.mark.parametrize(
    "err, later, code",
    [
        (errno.ENETUNREACH, None, 0),  # the connect fails at once
        (errno.EINPROGRESS, errno.EHOSTUNREACH, 1),  # ... or once it is done
        (errno.EINPROGRESS, errno.ETIMEDOUT, 1),  # the host's SYN retries ran out
        (errno.EINPROGRESS, None, 1),  # no answer within --connect-timeout
    ],
)
def test_failed_dial_gets_icmp_unreachable(
    monkeypatch: pytest.MonkeyPatch, err: int, later: int | None, code: int
) -> None:
    """No route / timeout while dialling: ICMP unreachable quoting the SYN, no RST.

    The dial error is injected (no packet may leave loopback); the interop tests do the
    same with real unroutable destinations inside their namespaces. The fake socket is
    "connecting" until its descriptor is writable: a UDP socket's at once, a listening
    socket's never (so the connect times out).
    """
    fds: list[gsocket.socket] = []
    real_socket = gsocket.socket

    class FailingSocket:
        def __init__(self, *a: object) -> None:
            self.calls = 0
            self.fd = real_socket(gsocket.AF_INET, gsocket.SOCK_DGRAM if later else gsocket.SOCK_STREAM)
            if not later:
                self.fd.bind(("127.0.0.1", 0))
                self.fd.listen(1)
            fds.append(self.fd)

        def setblocking(self, flag: bool) -> None:
            pass

        def connect_ex(self, addr: object) -> int:
            self.calls += 1
            return err if self.calls == 1 else (later or errno.EALREADY)

        def fileno(self) -> int:
            return int(self.fd.fileno())

        def settimeout(self, t: object) -> None:
            pass

        def setsockopt(self, *a: object) -> None:
            pass

        def close(self) -> None:
            pass

    with Gateway(make_config(connect_timeout=0.3)) as gw:
        client = TunnelClient(gw.address)
        monkeypatch.setattr("wgslirpy.io.tcp_forward.gsocket.socket", FailingSocket)
        try:
            client.send(build_tcp(TcpSegment(ME, LOOP, 40003, 80, 1, 0, TcpFlags.SYN, 65535)))
            icmp = client.expect(lambda x: isinstance(x, (IcmpError, TcpSegment)), timeout=3)
            assert isinstance(icmp, IcmpError) and (icmp.type, icmp.code) == (3, code)
            assert gw.stats()["tcp_flows_in_stack"] == 0
        finally:
            client.close()
            for fd in fds:
                fd.close()


def test_garbage_does_not_stop_the_gateway(gateway: Gateway, client: TunnelClient) -> None:
    s = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
    for n in range(0, 300, 7):
        s.sendto(bytes([1, 2, 3, 4]) * (n // 4) + b"\x04" * (n % 4), gateway.address)
    s.close()
    client.send(build_icmp_echo(IcmpEcho(ME, PING, True, 1, 1, b"still there?")))
    assert isinstance(client.expect(lambda x: isinstance(x, IcmpEcho)), IcmpEcho)
    assert sum(gateway.stats()["drops"].values()) > 0


def test_loopback_refused_by_default_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with Gateway(make_config(allow_loopback=False)) as gw:
        c = TunnelClient(gw.address)
        try:
            with caplog.at_level("WARNING", logger="wgslirpy"):
                for sport in (41000, 41001):  # two refusals within a second: one line
                    c.send(build_tcp(TcpSegment(ME, LOOP, sport, 22, 1, 0, TcpFlags.SYN, 65535)))
                    rst = c.expect(lambda x: isinstance(x, TcpSegment))
                    assert isinstance(rst, TcpSegment) and rst.flags & TcpFlags.RST
            lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
            assert len(lines) == 1 and "127.0.0.1:22" in lines[0] and "--allow-loopback" in lines[0]
            assert lines[0].startswith(f"refused TCP {ME}:41000 -> 127.0.0.1:22: ")  # the protocol by name
        finally:
            c.close()


def test_half_close_survives_idle_writer_exit(
    gateway: Gateway, client: TunnelClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Peer FIN first, host answers much later: the peer->host greenlet delivers EOF once,
    is not restarted for a second shutdown, and the reply still arrives with a FIN."""
    monkeypatch.setattr(tcp_forward, "WRITER_IDLE", 0.05)

    def late_reply(sock: gsocket.socket, addr: object) -> None:
        got = b""
        while data := sock.recv(65536):
            got += data
        gevent.sleep(0.3)  # several WRITER_IDLE periods with wake-ups from our own sends
        sock.sendall(b"got %d bytes" % len(got))
        sock.close()

    with serving(gevent.server.StreamServer(("127.0.0.1", 0), late_reply)) as port:
        synack = client.open_tcp(40010, port)
        ack = synack.seq + 1
        client.send(
            build_tcp(
                TcpSegment(ME, LOOP, 40010, port, 101, ack, TcpFlags.ACK | TcpFlags.FIN, 65535, payload=b"x" * 1000)
            )
        )
        gevent.sleep(0.15)  # the host has our data and EOF; it answers later
        (flow,) = gateway.tcp_flows.values()
        assert flow._writer_finished.is_set() and flow._writer is None
        flow.wake()  # e.g. an ACK from the peer: the finished direction must not restart
        assert flow._writer is None
        reply = b""
        fin = False
        while not fin:
            seg = client.expect(lambda x: isinstance(x, TcpSegment), timeout=5)
            assert isinstance(seg, TcpSegment)
            assert not seg.flags & TcpFlags.RST
            reply += seg.payload
            fin = bool(seg.flags & TcpFlags.FIN)
            client.send(
                build_tcp(
                    TcpSegment(ME, LOOP, 40010, port, 1102, (seg.seq + seg.seg_len) & 0xFFFFFFFF, TcpFlags.ACK, 65535)
                )
            )
        assert reply == b"got 1000 bytes"


def test_idle_flow_has_no_writer_greenlet_until_the_peer_sends(
    gateway: Gateway, client: TunnelClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle-flow memory: after the handshake and ACKs an idle flow keeps only its own
    greenlet (a writer greenlet costs ~10 KB while it lives); data from the peer is
    delivered by wake() itself when the host takes it at once (else by a writer, which
    exits after WRITER_IDLE), so none is left running."""
    monkeypatch.setattr(tcp_forward, "WRITER_IDLE", 0.05)
    got: list[bytes] = []

    def reader(sock: gsocket.socket, addr: object) -> None:
        while data := sock.recv(65536):
            got.append(data)

    with serving(gevent.server.StreamServer(("127.0.0.1", 0), reader)) as port:
        synack = client.open_tcp(40011, port)
        ack = synack.seq + 1
        for _ in range(3):  # the handshake's ACK and two window updates: no work for a writer
            client.send(build_tcp(TcpSegment(ME, LOOP, 40011, port, 101, ack, TcpFlags.ACK, 65535)))
            gevent.sleep(0.02)
        (flow,) = gateway.tcp_flows.values()
        assert flow._pumping and flow._writer is None and not flow._writer_finished.is_set()
        client.send(build_tcp(TcpSegment(ME, LOOP, 40011, port, 101, ack, TcpFlags.ACK, 65535, payload=b"hello")))
        with gevent.Timeout(5):
            while not got:
                gevent.sleep(0.01)
        assert got == [b"hello"]
        with gevent.Timeout(5):
            while flow._writer is not None:  # idle again: the writer goes after WRITER_IDLE
                gevent.sleep(0.02)
        assert not flow._writer_finished.is_set()


def test_dual_stack_bind_initiates_to_an_ipv4_peer() -> None:
    """-b [::]:port with -p 127.0.0.1:port: the gateway's own handshake reaches the peer."""
    probe = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    client_port = probe.getsockname()[1]
    probe.close()
    config = make_config()
    config = Config(
        **{**config.__dict__, "bind": (ipaddress.ip_address("::"), 0), "peer_endpoint": (LOOP, client_port)}
    )
    gw = Gateway(config)
    gw.init_socket()
    c = TunnelClient(("127.0.0.1", gw.server_port), port=client_port)
    try:
        gw.start()  # initiates: the client answers without having sent anything
        deadline = time.monotonic() + 5
        while not c.ep.has_session and time.monotonic() < deadline:
            gevent.sleep(0.05)
        assert c.ep.has_session
    finally:
        c.close()
        gw.stop()


def test_dns_lookups_beyond_the_bound_get_servfail_at_once(
    gateway: Gateway, client: TunnelClient, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.max_dns_lookups = 0  # every lookup is "one too many": nothing is resolved
    caplog.set_level(logging.WARNING, logger="wgslirpy")
    for i in range(3):
        q = dns.message.make_query(f"needs-a-lookup-{i}.test", "A")
        client.send(build_udp(UdpDatagram(ME, DNS, 5353, 53, q.to_wire())))
        r = client.expect(lambda x: isinstance(x, UdpDatagram) and x.sport == 53)
        assert isinstance(r, UdpDatagram)
        answer = dns.message.from_wire(r.payload)
        assert answer.id == q.id and answer.rcode() == dns.rcode.SERVFAIL
    # Counted every time, logged once (rate-limited to one line a second).
    assert gateway.stack.drops[DropReason.DNS_LOOKUP_LIMIT] == 3
    assert sum("--max-dns-lookups" in r.getMessage() for r in caplog.records) == 1
