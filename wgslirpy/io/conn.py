"""Socket-like handles for flows an application serves in-process (``handle_tcp``/``handle_udp``).

:class:`TcpConn` wraps one TCP connection from the peer (its :class:`~.tcp_forward.TcpFlow`)
in the surface of a connected stream socket, with real-socket semantics:

* the peer's SYN is answered when the handler first uses the connection (or calls
  :meth:`TcpConn.accept`); :meth:`TcpConn.refuse` answers it with RST, or with an ICMP
  destination unreachable of a given :class:`~wgslirpy.net.segments.Unreachable` kind;
* ``recv`` returns ``b""`` once the peer's FIN arrived; ``recv``/``send`` raise
  ``ConnectionResetError`` after the peer's RST (or when the core gave up on the peer),
  ``TimeoutError`` (``socket.timeout``) after ``settimeout(t)`` expired, ``BlockingIOError``
  when non-blocking; ``BrokenPipeError`` on ``send`` after ``shutdown(SHUT_WR)``;
* backpressure both ways comes from the TCP core: bytes the handler has not read keep the
  peer's window closed, and ``send`` takes only what the send buffer has room for
  (``sendall`` waits while a slow peer does not acknowledge);
* ``makefile`` gives buffered file objects as the stdlib socket does (the connection closes
  when the last of them and the connection itself are closed).

There is no file descriptor: ``fileno()`` raises ``io.UnsupportedOperation``, so the object
cannot go to ``select``/``selectors``; it cooperates with gevent instead (each call blocks
only the calling greenlet). ``ssl`` over it works through ``SSLContext.wrap_bio`` with
``ssl.MemoryBIO`` pairs, not ``wrap_socket``.

:class:`UdpEndpoint` is one UDP binding of the peer (one source address and port) served in
process: ``recv``/``recvfrom`` return whole datagrams the peer sent (to any destination),
``send``/``sendto`` send whole datagrams to the peer from a given address.

Every call must come from a greenlet of the gateway's hub (the handler's own greenlet or
one it spawned); none of this is thread-safe, as the gateway itself is not.
"""

from __future__ import annotations

import errno
import io
import logging
import socket as _stdsocket
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import gevent.event

from ..errors import DropReason
from ..net.segments import IPAddress, Unreachable
from ..net.udp_nat import UdpBinding
from .host import FlowClosed
from .udp_forward import RelayHost, parse_remote

if TYPE_CHECKING:
    from .tcp_forward import TcpFlow

log = logging.getLogger("wgslirpy.conn")

#: ``(host, port)`` as the socket module writes an address (host a string)
Address = tuple[str, int]

#: seconds a connection the handler closed keeps reading (and discarding) until the peer's
#: FIN, so the peer is never left with a closed window; then it is reset
CLOSE_LINGER = 30.0


def _reset() -> ConnectionResetError:
    return ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


def _wait(event: gevent.event.Event, deadline: float | None) -> None:
    """Wait for ``event`` until ``deadline`` (monotonic; None: forever, 0: never wait)."""
    if deadline is None:
        event.wait()
        return
    if deadline == 0.0:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
    left = deadline - time.monotonic()
    if left <= 0 or not event.wait(left):
        raise TimeoutError("timed out")


class TcpConn:
    """One TCP connection of the peer, as a connected stream socket; see the module docstring.

    ``getpeername()`` is the peer's address in the tunnel (``src``), ``getsockname()`` the
    destination it dialled (``dst``).
    """

    family: int
    type: int = _stdsocket.SOCK_STREAM
    proto: int = _stdsocket.IPPROTO_TCP

    def __init__(self, flow: TcpFlow, src: Address, dst: Address) -> None:
        self._flow = flow
        self._src = src
        self._dst = dst
        self.family = _stdsocket.AF_INET6 if ":" in dst[0] else _stdsocket.AF_INET
        #: socket-style timeout: None blocks, 0.0 is non-blocking, else seconds per call
        self._timeout: float | None = None
        #: the SYN was answered with SYN-ACK (accept) / with RST or ICMP (refuse)
        self._accepted = False
        self._refused = False
        #: close() was called (the connection itself is released when _io_refs is 0 too)
        self._closed = False
        self._io_refs = 0
        self._rd_shut = False
        self._wr_shut = False
        #: forward_tcp took the flow over: the handler wrapper leaves its ending alone
        self._detached = False

    def __repr__(self) -> str:
        return f"<TcpConn {self._src[0]}:{self._src[1]} -> {self._dst[0]}:{self._dst[1]}>"

    # --- answering the SYN ---------------------------------------------------------------

    def accept(self) -> None:
        """Answer the peer's SYN (SYN-ACK). Implicit on first use; idempotent.

        ``ConnectionResetError`` if the peer gave up meanwhile; ``OSError`` after refuse()."""
        if self._accepted:
            return
        if self._refused:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "the connection was refused")
        flow = self._flow
        flow._handle_events()
        if flow.conn.is_closed or flow._aborted:
            raise _reset()
        self._accepted = True
        flow.accept()

    def refuse(self, icmp: Unreachable | None = None) -> None:
        """Answer the SYN with RST (the peer sees "connection refused"), or with an ICMP
        destination unreachable of kind ``icmp`` (e.g. ``Unreachable.HOST``: the peer sees
        "no route to host"). Only before the connection was used; afterwards use close()."""
        if self._accepted:
            raise OSError(errno.EISCONN, "refuse() after the connection was accepted")
        if self._refused:
            return
        self._refused = True
        self._closed = True
        flow = self._flow
        if flow.conn.is_closed:
            return
        flow.refuse(icmp)

    def _ready(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if not self._accepted:
            self.accept()

    def _deadline(self) -> float | None:
        t = self._timeout
        if t is None or t == 0.0:
            return t
        return time.monotonic() + t

    # --- receiving -----------------------------------------------------------------------

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes the peer sent; ``b""`` at the peer's FIN (or after SHUT_RD)."""
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if flags:
            raise OSError(errno.EOPNOTSUPP, "recv flags are not supported")
        self._ready()
        if self._rd_shut or bufsize == 0:
            return b""
        flow = self._flow
        event = flow._rx_event
        deadline = self._deadline()
        while True:
            event.clear()
            try:
                data = flow.poll_peer(bufsize)
            except FlowClosed:
                raise _reset() from None
            if data is not None:
                return data
            _wait(event, deadline)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """As ``socket.recv_into``: fill ``buffer`` (at most ``nbytes`` if given)."""
        view = memoryview(buffer).cast("B")
        n = len(view) if nbytes == 0 else min(nbytes, len(view))
        data = self.recv(n, flags)
        view[: len(data)] = data
        return len(data)

    # --- sending -------------------------------------------------------------------------

    def _send(self, data: Any, deadline: float | None) -> int:
        self._ready()
        if self._wr_shut:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        view = memoryview(data).cast("B")
        if not view:
            return 0
        flow = self._flow
        conn = flow.conn
        event = flow._tx_event
        while True:
            event.clear()
            flow._handle_events()
            if conn.is_closed or flow._aborted:
                raise _reset()
            if conn.send_space > 0:
                n = flow.send(view)
                if n:
                    return n
            _wait(event, deadline)

    def send(self, data: Any, flags: int = 0) -> int:
        """Queue bytes for the peer; returns how many the send buffer took (at least 1,
        waiting for room as a blocking socket does)."""
        if flags:
            raise OSError(errno.EOPNOTSUPP, "send flags are not supported")
        return self._send(data, self._deadline())

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Queue all of ``data``; waits while the peer's window and our buffer are full (the
        timeout, if set, bounds the whole call, as for a socket)."""
        if flags:
            raise OSError(errno.EOPNOTSUPP, "send flags are not supported")
        view = memoryview(data).cast("B")
        deadline = self._deadline()
        while view:
            n = self._send(view, deadline)
            view = view[n:]

    # --- ending --------------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        """``SHUT_WR``: FIN after the queued data (the peer may go on sending); ``SHUT_RD``:
        recv returns ``b""`` from now on; ``SHUT_RDWR``: both."""
        if how not in (_stdsocket.SHUT_RD, _stdsocket.SHUT_WR, _stdsocket.SHUT_RDWR):
            raise ValueError(f"invalid shutdown how: {how}")
        self._ready()
        if how in (_stdsocket.SHUT_RD, _stdsocket.SHUT_RDWR):
            self._rd_shut = True
        if how in (_stdsocket.SHUT_WR, _stdsocket.SHUT_RDWR) and not self._wr_shut:
            self._wr_shut = True
            flow = self._flow
            if not flow.conn.is_closed:
                flow.close_to_peer()

    def close(self) -> None:
        """Close gracefully: FIN after the queued data (once every makefile() object is
        closed too). A connection never used is accepted first, so the peer sees EOF."""
        if self._closed:
            return
        self._closed = True
        if self._io_refs <= 0:
            self._release()

    def _decref_socketios(self) -> None:  # called by socket.SocketIO.close
        self._io_refs -= 1
        if self._closed and self._io_refs <= 0:
            self._release()

    def _release(self) -> None:
        if self._detached or self._refused or self._wr_shut:
            return
        flow = self._flow
        self._wr_shut = True
        try:
            if not self._accepted:
                self._closed = False  # accept() below must not see a closed handle
                try:
                    self.accept()
                finally:
                    self._closed = True
            if not flow.conn.is_closed:
                flow.close_to_peer()
        except ConnectionResetError:
            pass

    def _finish(self) -> None:
        """The handler returned: close, then read and discard until the peer's FIN (at most
        ``CLOSE_LINGER`` seconds, then RST), so the flow's end is the peer's too."""
        if self._detached or self._refused:
            return
        self.close()
        flow = self._flow
        conn = flow.conn
        event = flow._rx_event
        deadline = time.monotonic() + CLOSE_LINGER
        while True:
            event.clear()
            flow._handle_events()
            if flow.read():
                continue
            if conn.peer_eof or conn.is_closed or flow._aborted:
                return
            if not event.wait(max(0.0, deadline - time.monotonic())):
                log.debug("%s: the peer did not close within %.0f s; resetting", flow.label, CLOSE_LINGER)
                flow.abort()
                return

    def __enter__(self) -> TcpConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the rest of the socket surface --------------------------------------------------

    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def getpeername(self) -> Address:
        """The peer's address inside the tunnel (the ``src`` given to the handler)."""
        return self._src

    def getsockname(self) -> Address:
        """The destination the peer dialled (the ``dst`` given to the handler)."""
        return self._dst

    def fileno(self) -> int:
        """There is no file descriptor: always raises ``io.UnsupportedOperation``."""
        raise io.UnsupportedOperation("a tunnel connection has no file descriptor")

    def setsockopt(self, *args: Any) -> None:
        """Accepted and ignored (TCP_NODELAY and the like have no meaning here)."""

    def makefile(
        self,
        mode: str = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        """Buffered file objects over the connection, as ``socket.makefile`` makes them."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        reading, writing, binary = "r" in mode, "w" in mode, "b" in mode
        if not reading and not writing:
            reading = True
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = _stdsocket.SocketIO(self, rawmode)  # type: ignore[arg-type]
        self._io_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: Any
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        text = io.TextIOWrapper(buffer, encoding, errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text


class UdpEndpoint:
    """One UDP binding of the peer (its source address and port), served in process.

    ``recvfrom()`` returns ``(payload, (dst_host, dst_port))``: a whole datagram the peer
    sent and the address it sent it to. ``sendto(payload, (host, port))`` sends a datagram to
    the peer that appears to come from ``(host, port)``. ``recv``/``send`` do the same with
    the destination of the binding's first datagram (``dst`` of the handler). Datagrams the
    handler has not read wait in a bounded queue (``max_queue``; beyond it the oldest is
    dropped and counted, ``udp_handler_queue_full``). The binding is full cone, as forwarded
    UDP is: the handler sees every datagram from its source port, whatever the destination.
    It expires after ``--udp-idle-timeout`` without traffic, as for forwarded UDP: then
    ``recv`` returns ``b""`` (after the queued datagrams), so a ``while data := recv()``
    loop ends.
    """

    #: datagrams from the peer held for the handler at most
    max_queue: int = 256

    def __init__(self, gateway: RelayHost, binding: UdpBinding, src: Address, dst: Address) -> None:
        self._gw = gateway
        self._binding = binding
        self._id = binding.id
        #: forward_udp took the binding over (its relay gets the datagrams now)
        self._detached = False
        self._src = src
        self._dst = dst
        self._queue: deque[tuple[bytes, Address]] = deque()
        self._event = gevent.event.Event()
        self._timeout: float | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"<UdpEndpoint {self._src[0]}:{self._src[1]}>"

    # driven by the gateway
    def _deliver(self, payload: bytes, dst: Address) -> None:
        if self.closed:
            return
        if len(self._queue) >= self.max_queue:
            self._queue.popleft()
            self._gw.drops.add(DropReason.UDP_HANDLER_QUEUE_FULL)
        self._queue.append((payload, dst))
        self._event.set()

    def _expired(self) -> None:
        self.closed = True
        self._event.set()

    # the handler's surface
    def recvfrom(self, bufsize: int = 65535) -> tuple[bytes, Address]:
        """The next datagram the peer sent and its destination; ``(b"", dst)`` once closed."""
        t = self._timeout
        deadline = t if t is None or t == 0.0 else time.monotonic() + t
        while True:
            self._event.clear()
            if self._queue:
                payload, dst = self._queue.popleft()
                return payload[:bufsize], dst
            if self.closed:
                return b"", self._dst
            _wait(self._event, deadline)

    def recv(self, bufsize: int = 65535) -> bytes:
        return self.recvfrom(bufsize)[0]

    def sendto(self, payload: bytes, address: Address) -> int:
        """Send ``payload`` to the peer as a datagram from ``address`` (an IP string, port)."""
        if self.closed:
            raise OSError(errno.EBADF, "the UDP binding is closed")
        remote = parse_remote(address[0])
        if remote is None:
            raise ValueError(f"not an IP address: {address[0]!r}")
        gw = self._gw
        gw.stack.udp_reply(self._id, remote, int(address[1]), bytes(payload), now=gw.now())
        gw.flush()
        return len(payload)

    def send(self, payload: bytes) -> int:
        return self.sendto(payload, self._dst)

    def settimeout(self, value: float | None) -> None:
        self._timeout = None if value is None else float(value)

    def gettimeout(self) -> float | None:
        return self._timeout

    def getpeername(self) -> Address:
        """The peer's source address and port inside the tunnel."""
        return self._src

    def getsockname(self) -> Address:
        """The destination of the binding's first datagram."""
        return self._dst

    def close(self) -> None:
        """Stop serving: later datagrams from the peer are dropped until the binding
        expires (the stack keeps it for ``--udp-idle-timeout``)."""
        self.closed = True
        self._queue.clear()
        self._event.set()

    def __enter__(self) -> UdpEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TcpHandler(Protocol):
    """``handle_tcp(conn, src, dst)``: serve one TCP connection of the peer."""

    def __call__(self, conn: TcpConn, src: Address, dst: Address, /) -> object: ...


class UdpHandler(Protocol):
    """``handle_udp(endpoint, src, dst)``: serve one UDP binding of the peer."""

    def __call__(self, endpoint: UdpEndpoint, src: Address, dst: Address, /) -> object: ...


def address_of(ip: IPAddress, port: int) -> Address:
    return (str(ip), port)


__all__ = ["Address", "TcpConn", "TcpHandler", "UdpEndpoint", "UdpHandler", "address_of"]
