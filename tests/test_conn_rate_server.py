"""Short connections through the gevent shell: the dial starts in the SYN's turn, a short
request reaches the host without a writer greenlet, and the end is one FIN|ACK.

In process, on loopback only, with the TunnelClient of tests/test_server.py as the peer.
No timing is asserted: each test checks which work happened, not how fast.
"""

from __future__ import annotations

import errno
import logging
import socket as _stdsocket
import time
from typing import ClassVar

import gevent
import gevent.server
import pytest
from gevent import socket as gsocket

from wgslirpy import Gateway
from wgslirpy.io.tcp_forward import TcpFlow
from wgslirpy.net.build import build_tcp
from wgslirpy.net.packet import decode_ip
from wgslirpy.net.segments import TcpFlags, TcpSegment

from .test_server import LOOP, ME, TunnelClient, make_config, serving
from .wg_helpers import record_calls

A, F, P = TcpFlags.ACK, TcpFlags.FIN, TcpFlags.PSH


def _seg(sport: int, port: int, seq: int, ack: int, flags: TcpFlags, payload: bytes = b"") -> bytes:
    return build_tcp(TcpSegment(ME, LOOP, sport, port, seq, ack, flags, 65535, payload=payload))


def _tcp(client: TunnelClient, timeout: float = 5.0) -> TcpSegment:
    seg = client.expect(lambda x: isinstance(x, TcpSegment), timeout=timeout)
    assert isinstance(seg, TcpSegment)
    return seg


def _wait(pred: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0.01)


def test_short_connection_end_to_end(gateway: Gateway, client: TunnelClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connect, one request, one answer, close: the request and the peer's EOF reach the
    host without a writer greenlet, and our FIN carries the ACK of the peer's FIN."""
    writers = record_calls(monkeypatch, TcpFlow, "_peer_to_host")  # one per writer greenlet

    def echo_until_eof(sock: gsocket.socket, addr: object) -> None:
        while data := sock.recv(65536):
            sock.sendall(data[::-1])
        sock.close()

    with serving(gevent.server.StreamServer(("127.0.0.1", 0), echo_until_eof)) as port:
        for i, sport in enumerate((40100, 40101, 40102)):
            synack = client.open_tcp(sport, port)
            ack = (synack.seq + 1) & 0xFFFFFFFF
            request = b"request %d" % i
            client.send(_seg(sport, port, 101, ack, A | P, request))
            answer = _tcp(client)
            assert answer.payload == request[::-1] and answer.ack == 101 + len(request)
            ack = (ack + len(answer.payload)) & 0xFFFFFFFF
            seq = 101 + len(request)
            client.send(_seg(sport, port, seq, ack, A))
            client.send(_seg(sport, port, seq, ack, A | F))
            fin = _tcp(client)
            # one segment: our FIN, acknowledging the peer's FIN (no separate ACK before it)
            assert fin.flags & (F | A) == F | A and fin.ack == seq + 1 and not fin.payload
            client.send(_seg(sport, port, seq + 1, (fin.seq + 1) & 0xFFFFFFFF, A))
        _wait(lambda: not gateway.tcp_flows and not gateway.stack.flows)
        assert writers == []


def test_request_the_host_cannot_take_at_once_goes_through_the_writer(
    gateway: Gateway, client: TunnelClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that does not read: what its socket does not take stays queued (in order)
    for the writer greenlet, and all of it arrives once the host reads."""
    writers = record_calls(monkeypatch, TcpFlow, "_peer_to_host")  # one per writer greenlet
    got: list[bytes] = []
    reading = gevent.event.Event()

    def slow_reader(sock: gsocket.socket, addr: object) -> None:
        reading.wait(10)
        while data := sock.recv(65536):
            got.append(data)
        sock.close()

    lst = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
    lst.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_RCVBUF, 4096)  # inherited by accepted sockets
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    with serving(gevent.server.StreamServer(lst, slow_reader)) as port:
        sport = 40110
        synack = client.open_tcp(sport, port)
        ack = (synack.seq + 1) & 0xFFFFFFFF
        (flow,) = gateway.tcp_flows.values()
        flow.sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_SNDBUF, 4096)  # type: ignore[union-attr]
        chunk = 1200
        total = bytearray()
        seq = 101
        for i in range(40):  # 48 KB: within our window, more than the small socket buffers hold
            data = bytes([i]) * chunk
            client.send(_seg(sport, port, seq, ack, A | P, data))
            total += data
            seq += chunk
            if i % 10 == 9:
                gevent.sleep(0.01)
        _wait(lambda: bool(writers))  # the socket filled up: the rest went to a writer
        client.send(_seg(sport, port, seq, ack, A | F))
        reading.set()
        _wait(lambda: sum(map(len, got)) >= len(total), timeout=10)
        assert b"".join(got) == bytes(total)


def test_forwarded_flow_dials_before_its_greenlet_runs() -> None:
    """The host SYN leaves in the turn that dispatched the peer's SYN: the host has the
    connection queued before the flow's greenlet ran at all."""
    lst = _stdsocket.socket(_stdsocket.AF_INET, _stdsocket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    port = lst.getsockname()[1]
    gw = Gateway(make_config())
    gw.start()  # nothing below yields, so neither the reader nor a flow greenlet runs
    try:
        gw.stack.receive_ip(_seg(40120, port, 100, 0, TcpFlags.SYN), now=gw.now())
        gw._dispatch_events()  # the central greenlet's dispatch, without the loop around it
        (flow,) = gw.tcp_flows.values()
        assert flow.sock is not None and not flow._pumping  # dialled, greenlet not run yet
        lst.settimeout(5)
        host_side, _ = lst.accept()  # the kernel finished the handshake meanwhile
        host_side.close()
    finally:
        gw.stop()
        lst.close()
    assert flow.sock is None  # stop() closed it, though the greenlet never ran


class _ConnectedAtSecondLook:
    """A host socket whose connect is done by the second look (as a nearby host's is:
    the kernel finishes the handshake within the connect call)."""

    made: ClassVar[list[_ConnectedAtSecondLook]] = []

    def __init__(self, *a: object) -> None:
        self.looks = 0
        self.closed = False
        self.linger = False
        self.made.append(self)

    def setblocking(self, flag: bool) -> None:
        pass

    def settimeout(self, t: object) -> None:
        pass

    def connect_ex(self, addr: object) -> int:
        self.looks += 1
        return errno.EINPROGRESS if self.looks == 1 else 0

    def setsockopt(self, level: int, opt: int, value: object) -> None:
        if opt == _stdsocket.SO_LINGER:
            self.linger = True

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("then", ["stop", "peer_rst"])
def test_synack_leaves_in_the_turn_of_the_syn(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, then: str
) -> None:
    """A dial done by the dispatch's second look answers the SYN in that turn (no greenlet
    has run); a reset or stop() before the flow's greenlet runs then ends it cleanly."""
    _ConnectedAtSecondLook.made.clear()
    monkeypatch.setattr("wgslirpy.io.tcp_forward.gsocket.socket", _ConnectedAtSecondLook)
    gw = Gateway(make_config())
    gw.start()  # nothing below yields until the end, so no greenlet runs
    try:
        gw.stack.receive_ip(_seg(40125, 80, 100, 0, TcpFlags.SYN), now=gw.now())
        gw._dispatch_events()
        (flow,) = gw.tcp_flows.values()
        (sock,) = _ConnectedAtSecondLook.made
        assert sock.looks == 2 and flow.conn.accepted and not flow._pumping
        out = [decode_ip(p) for p in gw.stack.packets_to_send(now=gw.now())]
        assert [s.flags for s in out if isinstance(s, TcpSegment)] == [TcpFlags.SYN | TcpFlags.ACK]
        if then == "peer_rst":
            synack = out[0]
            assert isinstance(synack, TcpSegment)
            gw.stack.receive_ip(_seg(40125, 80, 101, 0, TcpFlags.RST), now=gw.now())
            with caplog.at_level(logging.DEBUG, logger="wgslirpy"):
                _wait(lambda: not gw.tcp_flows)  # the flow's greenlet runs and ends
            assert sock.closed and sock.linger  # the host side is reset too
    finally:
        with caplog.at_level(logging.DEBUG, logger="wgslirpy"):
            gw.stop()
    assert sock.closed
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records


def test_custom_handler_flows_do_not_dial_early() -> None:
    """A handle_tcp handler decides itself whether to dial (forward_tcp): no early connect."""
    gw = Gateway(make_config(), handle_tcp=lambda conn, src, dst: conn.close())
    try:
        gw.stack.receive_ip(_seg(40121, 9, 100, 0, TcpFlags.SYN), now=gw.now())
        gw._dispatch_events()
        (flow,) = gw.tcp_flows.values()
        assert flow.sock is None
    finally:
        gw.stop()


def test_dial_that_cannot_make_a_socket_resets_in_the_flow(
    gateway: Gateway, client: TunnelClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket() failure (EMFILE) in the early dial must not reach the central greenlet:
    the flow's greenlet meets it again and resets the flow; the gateway keeps working."""

    def no_socket(*a: object) -> object:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr("wgslirpy.io.tcp_forward.gsocket.socket", no_socket)
    client.send(_seg(40130, 9, 100, 0, TcpFlags.SYN))
    rst = _tcp(client)
    assert rst.flags & TcpFlags.RST
    monkeypatch.undo()
    assert gateway._reader is not None and not gateway._reader.dead
    _wait(lambda: not gateway.tcp_flows)


def test_abort_ends_a_dial_in_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow reset while its connect is in progress (stop(), or the peer giving up and
    the flow aborted) does not wait out --connect-timeout: closing the socket ends the
    dial's wait, which answers as a failed dial."""
    lst = _stdsocket.socket(_stdsocket.AF_INET, _stdsocket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)  # a listening socket never becomes writable: the connect stays pending

    class Pending(_ConnectedAtSecondLook):
        def connect_ex(self, addr: object) -> int:
            self.looks += 1
            return errno.EINPROGRESS if self.looks == 1 else errno.EALREADY

        def fileno(self) -> int:
            return lst.fileno()

    gw = Gateway(make_config(connect_timeout=60))
    gw.start()
    try:
        monkeypatch.setattr("wgslirpy.io.tcp_forward.gsocket.socket", Pending)
        gw.stack.receive_ip(_seg(40140, 80, 100, 0, TcpFlags.SYN), now=gw.now())
        gw._dispatch_events()
        (flow,) = gw.tcp_flows.values()
        (greenlet,) = list(gw._group)
        _wait(lambda: flow._connect_watch is not None)  # the flow's greenlet waits for the connect
        flow.abort()
        greenlet.join(5)
        assert greenlet.dead and not gw.tcp_flows
    finally:
        gw.stop()
        lst.close()
