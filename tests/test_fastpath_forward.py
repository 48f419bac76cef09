"""The host -> peer pump reads into one reusable buffer per thread, and never loses data.

Every flow of a thread reads its host socket into the same buffer (``recv_into``), so the
core must have copied the bytes out before the pump can switch greenlets. These tests run
real pumps (``TcpFlow._host_to_peer``) against fake sockets and cores on real greenlets:
two flows alternating through the shared buffer, and a core whose send space shrinks
while the pump waits in ``recv_into`` (the leftover must be copied out first).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from typing import Any

import gevent
import gevent.event
import pytest

from wgslirpy.io import tcp_forward
from wgslirpy.io.tcp_forward import TcpFlow


class FakeSock:
    """Gives ``chunks`` one ``recv_into`` at a time (a greenlet switch before each), then EOF."""

    def __init__(self, chunks: list[bytes], during_wait: Callable[[], None] | None = None) -> None:
        self.chunks = list(chunks)
        self.during_wait = during_wait

    def recv_into(self, buf: bytearray, nbytes: int) -> int:
        gevent.sleep(0)  # a real socket may wait here: other flows run meanwhile
        if self.during_wait is not None:
            self.during_wait()
        if not self.chunks:
            return 0
        chunk = self.chunks[0][:nbytes]
        self.chunks[0] = self.chunks[0][nbytes:]
        if not self.chunks[0]:
            self.chunks.pop(0)
        buf[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        pass


class FakeConn:
    """The parts of TcpConnection the pump uses; ``space`` is what send takes per call."""

    def __init__(self, port: int, space: list[int]) -> None:
        a = IPv4Address("10.0.0.2")
        self.key = (a, port, IPv4Address("192.0.2.1"), 80)
        self.space = list(space)  # successive send_space values; the last one sticks
        self.got = bytearray()
        self.closed_by_host = False
        self.is_closed = False

    @property
    def send_space(self) -> int:
        return self.space[0]

    def send(self, data: Any, *, now: float) -> int:
        n = min(len(data), self.space[0])
        self.got += bytes(data[:n])
        if len(self.space) > 1:
            self.space.pop(0)
        return n

    def close(self, *, now: float) -> None:
        self.closed_by_host = True


class FakeStack:
    def mark(self, conn: FakeConn) -> None:
        pass

    def tcp_send(self, conn: FakeConn, data: Any, *, now: float) -> int:
        return conn.send(data, now=now)

    def tcp_close(self, conn: FakeConn, *, now: float) -> None:
        conn.close(now=now)


class FakeGateway:
    def __init__(self) -> None:
        self.stack = FakeStack()

    def now(self) -> float:
        return 0.0

    def flush(self) -> None:
        gevent.sleep(0)  # sending may wait for the socket: a switch


def _flow(conn: FakeConn, sock: FakeSock) -> TcpFlow:
    flow = TcpFlow(FakeGateway(), conn)  # type: ignore[arg-type]
    flow.sock = sock  # type: ignore[assignment]
    return flow


@pytest.fixture(autouse=True)
def small_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(tcp_forward, "HOST_READ_SIZE", 64)
    yield


def test_flows_sharing_the_read_buffer_keep_their_own_bytes() -> None:
    a = bytes(range(256)) * 4
    b = bytes(255 - i for i in range(256)) * 4
    ca, cb = FakeConn(1, [10_000]), FakeConn(2, [10_000])
    fa = _flow(ca, FakeSock([a[i : i + 100] for i in range(0, len(a), 100)]))
    fb = _flow(cb, FakeSock([b[i : i + 37] for i in range(0, len(b), 37)]))
    gevent.joinall([gevent.spawn(fa._host_to_peer), gevent.spawn(fb._host_to_peer)], timeout=5, raise_error=True)
    assert bytes(ca.got) == a and bytes(cb.got) == b
    assert ca.closed_by_host and cb.closed_by_host


def test_leftover_is_copied_out_before_another_flow_reads() -> None:
    # Flow A asks for 64 bytes while its space is 1000, but the space shrinks to 10 while
    # recv_into waits (an ACK shrank cwnd): the other 54 bytes wait for the core while
    # flow B overwrites the shared buffer.
    a = b"A" * 64 + b"a" * 64
    b = bytes(range(200))
    ca = FakeConn(1, [1000])
    cb = FakeConn(2, [10_000])

    def shrink() -> None:
        ca.space = [10]

    fa = _flow(ca, FakeSock([a], during_wait=shrink))
    fb = _flow(cb, FakeSock([b]))

    def open_window() -> None:
        while len(ca.got) < len(a):
            fa._tx_event.set()
            gevent.sleep(0)

    gevent.joinall(
        [gevent.spawn(fa._host_to_peer), gevent.spawn(fb._host_to_peer), gevent.spawn(open_window)],
        timeout=5,
        raise_error=True,
    )
    assert bytes(ca.got) == a and bytes(cb.got) == b


def test_each_thread_has_its_own_buffer() -> None:
    mine = tcp_forward._host_read_buffer()
    assert tcp_forward._host_read_buffer() is mine
    other: list[bytearray] = []
    t = threading.Thread(target=lambda: other.append(tcp_forward._host_read_buffer()))
    t.start()
    t.join()
    assert other[0] is not mine and len(other[0]) == len(mine) == tcp_forward.HOST_READ_SIZE
