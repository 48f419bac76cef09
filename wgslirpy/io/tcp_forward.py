"""One forwarded TCP connection: dial the destination, then pump bytes both ways.

A :class:`TcpFlow` owns the host socket of one :class:`~wgslirpy.net.tcp.TcpConnection`.
The dial is a non-blocking connect that the gateway starts (:meth:`TcpFlow.start_dial`) as
it dispatches the peer's SYN, so the host SYN leaves in the same turn of the central
greenlet; ``run`` (the flow's greenlet) then finds it done or waits for it, at most
``connect_timeout`` in all, and answers the peer's SYN (SYN-ACK, RST, or an ICMP unreachable
through the stack). Then it pumps host -> peer itself. Peer -> host: whatever the host socket
takes at once is written by ``wake`` itself (a short request and the peer's EOF need no
greenlet); only what is left, or a full socket, starts a child greenlet that writes with
waits. The child exits after ``WRITER_IDLE`` seconds without work and ``wake`` starts it
again when there is more, so an idle flow costs one greenlet. A pending dial blocks only
this greenlet, never another flow or the tunnel reader.

Backpressure both ways comes from the core: ``conn.send`` takes at most ``send_space``
bytes (we stop reading the host socket while the peer's window and our buffer are full),
and ``conn.read`` is called only after the previous ``sendall`` finished, so the window we
advertise to the peer shrinks while the host is slow.

The flow drives its connection only through the stack's host-side operations (wrapped
here as :meth:`TcpFlow.accept`, :meth:`~TcpFlow.refuse`, :meth:`~TcpFlow.send`,
:meth:`~TcpFlow.read`, :meth:`~TcpFlow.close_to_peer`, :meth:`~TcpFlow.abort`), each followed
by the gateway's flush, so whatever it made the connection say leaves at once. The gateway is
seen through :class:`~wgslirpy.io.host.FlowHost`.

Wake-ups: the central greenlet calls :meth:`wake` whenever the stack touched the
connection (new data, ACKs, FIN, RST, timers). Each pump waits on its own event with the
clear-check-wait pattern, which is race-free because greenlets switch only on waits.
"""

from __future__ import annotations

import errno
import logging
import os
import socket as _stdsocket
import struct
import threading
import time
from typing import TYPE_CHECKING

import gevent
import gevent.event
from gevent import socket as gsocket

from ..net.segments import Unreachable
from ..net.tcp import PeerFin, PeerReset, TcpConnection, TimedOut
from .conn import TcpConn
from .host import FlowClosed

if TYPE_CHECKING:
    from .conn import Address, TcpHandler
    from .host import FlowHost

log = logging.getLogger("wgslirpy.tcp")

#: largest single read from the host socket
HOST_READ_SIZE = 256 * 1024
#: seconds the peer -> host pump waits for work before its greenlet exits
WRITER_IDLE = 2.0

#: the host-read buffer, one per thread (one gevent hub each) and shared by its flows
_read_buffers = threading.local()


def _host_read_buffer() -> bytearray:
    """This thread's reusable buffer for host reads (``HOST_READ_SIZE`` bytes).

    Every flow's host -> peer pump reads into it and hands the bytes to the core, which
    copies them into its send buffer, before anything can switch greenlets; so no flow
    ever leaves its data there while another one reads (see ``_host_to_peer``).
    """
    buf: bytearray | None = getattr(_read_buffers, "buf", None)
    if buf is None or len(buf) != HOST_READ_SIZE:
        buf = _read_buffers.buf = bytearray(HOST_READ_SIZE)
    return buf


#: connect_ex results of a connect still in progress
_CONNECT_PENDING = frozenset((errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK))

_UNREACHABLE_BY_ERRNO = {
    errno.ENETUNREACH: Unreachable.NET,
    errno.EHOSTUNREACH: Unreachable.HOST,
    errno.EHOSTDOWN: Unreachable.HOST,
    errno.ETIMEDOUT: Unreachable.HOST,
    errno.EACCES: Unreachable.ADMIN,
    errno.EPERM: Unreachable.ADMIN,
    errno.EADDRNOTAVAIL: Unreachable.NET,
    errno.EAFNOSUPPORT: Unreachable.NET,
}


class TcpFlow:
    """The shell side of one TCP connection; see the module docstring."""

    def __init__(self, gateway: FlowHost, conn: TcpConnection) -> None:
        self.gw = gateway
        self.conn = conn
        self.sock: gsocket.socket | None = None
        #: set when the peer may have sent data, FIN or RST (peer -> host pump waits on it)
        self._rx_event = gevent.event.Event()
        #: set when send space may have opened (host -> peer pump waits on it)
        self._tx_event = gevent.event.Event()
        #: the peer reset or the core gave up: the host socket gets an abortive close
        self._aborted = False
        #: the peer -> host pump's greenlet while it runs; it exits after WRITER_IDLE seconds
        #: without work (an idle flow keeps one greenlet) and ``wake`` starts it again
        self._writer: gevent.Greenlet | None = None
        #: true from the handshake until the peer -> host direction is over
        self._pumping = False
        #: set when the peer -> host direction is over (EOF delivered, reset or failure)
        self._writer_finished = gevent.event.Event()
        #: peer bytes read from the core that the host socket did not take at once; only
        #: while a writer greenlet exists (it sends them first)
        self._unsent: memoryview | None = None
        #: the connect started by start_dial: connect_ex's result (0, pending or an errno),
        #: or the OSError it raised; and its deadline (time.monotonic)
        self._connect_result: int | OSError = 0
        self._connect_deadline = 0.0
        self._connect_addr: tuple[str, int] = ("", 0)
        #: the io watcher a dial waits on while the connect is in progress
        self._connect_watch: object | None = None
        #: the host accepted and the peer's SYN was answered (by start_dial or _dial)
        self._dialled = False
        self._label: str | None = None

    @property
    def label(self) -> str:
        """``peer:port -> destination:port``, for log lines (made on first use)."""
        label = self._label
        if label is None:
            key = self.conn.key
            label = self._label = f"{key[0]}:{key[1]} -> {key[2]}:{key[3]}"
        return label

    @label.setter
    def label(self, value: str) -> None:
        self._label = value

    # --- driven by the central greenlet ------------------------------------------------

    def wake(self) -> None:
        self._rx_event.set()
        self._tx_event.set()
        if self._pumping and self._writer is None:
            if not self._writer_finished.is_set() and self._writer_has_work():
                if not self._write_without_waiting():
                    self._writer = gevent.spawn(self._peer_to_host)
            else:
                # No writer is reading the connection's events (none is needed yet, or the
                # peer's FIN was delivered), and the host -> peer pump may sit in recv(): a
                # reset or a give-up must close the host socket (abortively) from here.
                self._handle_events()

    def _writer_has_work(self) -> bool:
        """Data, EOF or the end for the peer -> host pump. An idle flow gets no writer
        greenlet at all: the ACKs and window updates of an idle connection wake the flow
        but give a writer nothing to do (and a greenlet costs ~10 KB while it lives)."""
        conn = self.conn
        return bool(conn.readable) or conn.peer_eof or conn.is_closed or self._aborted

    def _write_without_waiting(self) -> bool:
        """Deliver the peer's data, then its EOF, to the host from the calling greenlet (the
        central one, mostly) as far as the host socket takes them without waiting; True if
        nothing is left for a writer greenlet. A short request is one ``send`` from here,
        not a greenlet spawned to make it. Data the socket did not take waits in
        ``_unsent`` for the writer (False); a reset, a give-up or an error is the writer's
        to handle as before (False, or the direction ends here on a host error)."""
        sock = self.sock
        if sock is None:
            return False
        self._handle_events()
        conn = self.conn
        if conn.is_closed or self._aborted:
            return False
        try:
            data = self.read()
            if data:
                try:
                    n = sock.send(data, 0, timeout=0.0)
                except BlockingIOError:
                    n = 0
                if n < len(data):
                    self._unsent = memoryview(data)[n:]
                    return False
            if conn.peer_eof:
                sock.shutdown(_stdsocket.SHUT_WR)
                self._writer_finished.set()
        except OSError as e:
            self._writer_finished.set()
            self._host_failed(e)
        return True

    def abort(self) -> None:
        """Reset the peer side (the RST leaves at once) and close the host socket abortively."""
        self.gw.stack.tcp_abort(self.conn)
        self.gw.flush()
        self._aborted = True
        self._close_socket(abortive=True)
        self.wake()

    def describe(self) -> dict[str, object]:
        """The flow's state for the stats line (debugging a stalled connection)."""
        c = self.conn
        return {
            "flow": self.label,
            "state": c.state.name,
            "snd_una": c.snd_una,
            "snd_nxt": c.snd_nxt,
            "unacked_or_unsent": len(c.tx),
            "peer_window": c.snd_wnd,
            "cwnd": c.cwnd,
            "recovery": c.recovery.value,
            "congestion": repr(c.cc),
            "srtt": c.rtt.srtt,
            "min_rtt": c.rtt.min_rtt,
            "tcp": c.counters.as_dict(),
            "rcv_nxt": c.rcv_nxt,
            "unread": c.readable,
            "peer_eof": c.peer_eof,
            "deadline": c.next_deadline(),
            "writer": self._writer is not None,
            "writer_finished": self._writer_finished.is_set(),
            "received": (c.rcv_nxt - c.syn.seq - 1) & 0xFFFFFFFF,
            "acked": (c.snd_una - c.iss - 1) & 0xFFFFFFFF,
            "drops": c.drops.as_dict(),
        }

    # --- host-side operations: the stack's, each flushed (pumps, TcpConn, DNS over TCP) ---

    def accept(self) -> None:
        """Answer the peer's SYN with SYN-ACK."""
        self.gw.stack.tcp_accept(self.conn, now=self.gw.now())
        self.gw.flush()

    def refuse(self, icmp: Unreachable | None = None) -> None:
        """Answer the peer's SYN with RST, or with an ICMP destination unreachable of kind ``icmp``."""
        stack = self.gw.stack
        if icmp is None:
            stack.tcp_refuse(self.conn)
        else:
            stack.tcp_unreachable(self.conn, icmp)
        self.gw.flush()

    def send(self, data: bytes | memoryview) -> int:
        """Queue bytes for the peer without waiting; how many the connection took."""
        n = self.gw.stack.tcp_send(self.conn, data, now=self.gw.now())
        if n:
            self.gw.flush()
        return n

    def read(self, max_bytes: int | None = None) -> bytes:
        """The peer's in-order bytes available now (``b""``: none); the window opens."""
        data = self.gw.stack.tcp_read(self.conn, max_bytes)
        if data:
            self.gw.flush()  # a window update, if the peer needs one
        return data

    def poll_peer(self, max_bytes: int | None = None) -> bytes | None:
        """Without waiting: the peer's data, ``b""`` at its EOF, None if nothing yet;
        FlowClosed once the connection was reset or given up."""
        self._handle_events()
        data = self.read(max_bytes)
        if data:
            return data
        conn = self.conn
        if conn.peer_eof:
            return b""
        if conn.is_closed or self._aborted:
            raise FlowClosed()
        return None

    def recv_from_peer(self, idle_timeout: float | None = None) -> bytes | None:
        """Block until the peer sent data (returned) or EOF (``b""``); FlowClosed on reset;
        None if nothing happened for ``idle_timeout`` seconds."""
        while (data := self.poll_peer()) is None:
            self._rx_event.clear()
            if not self._rx_event.wait(idle_timeout):
                return None
        return data

    def send_to_peer(self, data: bytes | memoryview) -> None:
        """Block until the core took all of ``data``; FlowClosed if the connection died."""
        conn = self.conn
        view = memoryview(data)
        while view:
            if conn.is_closed or self._aborted:
                raise FlowClosed()
            n = self.send(view) if conn.send_space > 0 else 0
            if n:
                view = view[n:]
                continue
            self._tx_event.clear()
            if conn.send_space > 0 or conn.is_closed:
                continue
            self._tx_event.wait()

    def close_to_peer(self) -> None:
        """Our side is done sending (shutdown of the write side): FIN after the queued data."""
        self.gw.stack.tcp_close(self.conn, now=self.gw.now())
        self.gw.flush()

    def _handle_events(self) -> None:
        while (ev := self.conn.next_event()) is not None:
            if isinstance(ev, (PeerReset, TimedOut)):
                if isinstance(ev, TimedOut):
                    log.debug("%s: peer stopped answering; aborting", self.label)
                self._aborted = True
                self._close_socket(abortive=True)
            elif isinstance(ev, PeerFin):
                pass  # seen through conn.peer_eof once all data before it was read

    # --- the flow's greenlet -----------------------------------------------------------

    def run(self, handler: TcpHandler | None = None) -> None:
        """The flow's greenlet: ``handler(conn, src, dst)`` (default :func:`forward_tcp`).

        The handler returning closes the connection gracefully; an exception resets it and
        is logged (a handler's bug never reaches the gateway)."""
        try:
            if handler is None:
                self.forward()  # what forward_tcp does, without a TcpConn to hand it
            else:
                key = self.conn.key
                tcp = TcpConn(self, (str(key[0]), key[1]), (str(key[2]), key[3]))
                handler(tcp, tcp.getpeername(), tcp.getsockname())
                tcp._finish()
        except Exception as e:
            if isinstance(e, OSError) and (self._aborted or self.conn.is_closed):
                # the flow was reset under the handler (peer RST, stop()): its own business
                log.debug("%s: handler ended by %r", self.label, e)
            else:
                what = "internal error" if handler is None or handler is forward_tcp else "handler raised"
                log.exception("%s: %s; resetting the flow", self.label, what)
            self.abort()
        finally:
            self._close_socket(abortive=self._aborted)
            self.gw.flow_finished(self.conn)

    def forward(self) -> None:
        """Today's forwarding: dial the destination, answer the SYN, relay both ways."""
        if self._dial():
            self._pump()

    def start_dial(self) -> None:
        """Make the host socket and start a non-blocking connect to the destination.

        The gateway calls it for a forwarded flow as it dispatches the peer's SYN: the host
        SYN leaves at once, and by the time the flow's greenlet runs the host has often
        answered: then the SYN-ACK is queued here and leaves with the caller's flush, in
        the same turn (a nearby host completes the handshake within the connect call,
        in the kernel's softirq, so one more non-waiting ``connect_ex`` tells). A socket
        that cannot be made (EMFILE) is left for ``_dial`` to report, in the flow's
        greenlet: nothing here may raise into the central one."""
        if self.sock is not None:
            return
        try:
            self._begin_connect()
            sock = self.sock
            assert sock is not None
            result = self._connect_result
            if result in _CONNECT_PENDING:
                result = self._connect_result = sock.connect_ex(self._connect_addr)
            if result == 0 or result == errno.EISCONN:
                self._connected(sock, flush=False)
            # else still connecting, or failed: the flow's greenlet waits or reports it
        except Exception:
            if self.sock is not None and not self._dialled:
                self._close_socket(abortive=False)

    def _begin_connect(self) -> None:
        key = self.conn.key
        family = _stdsocket.AF_INET6 if key[2].version == 6 else _stdsocket.AF_INET
        sock = gsocket.socket(family, _stdsocket.SOCK_STREAM)
        try:
            sock.setblocking(False)
        except BaseException:
            close_host_socket(sock, abortive=False)
            raise
        self.sock = sock
        self._connect_deadline = time.monotonic() + self.gw.config.connect_timeout
        addr = self._connect_addr = (str(key[2]), key[3])
        try:
            self._connect_result = sock.connect_ex(addr)
        except OSError as e:
            self._connect_result = e

    def _finish_connect(self, sock: gsocket.socket) -> None:
        """Wait (this greenlet only) until the connect started by ``_begin_connect`` is done;
        raises its error as the socket module would (ConnectionRefusedError, TimeoutError
        after ``connect_timeout``, ...)."""
        result = self._connect_result
        if isinstance(result, OSError):
            raise result
        if result in _CONNECT_PENDING:
            addr = self._connect_addr
            result = sock.connect_ex(addr)  # done meanwhile? 0 (or EISCONN); else EALREADY
            while result in _CONNECT_PENDING:
                left = self._connect_deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                self._wait_connect(sock, left)
                result = sock.connect_ex(addr)
        if result and result != errno.EISCONN:
            raise OSError(result, os.strerror(result))  # the errno's own subclass

    def _wait_connect(self, sock: gsocket.socket, timeout: float) -> None:
        """Wait until ``sock`` is writable (its connect done), at most ``timeout`` seconds;
        closing the socket meanwhile (abort, stop()) ends the wait with EBADF, as it ends
        gevent's own waits on a socket."""
        watcher = self._connect_watch = gevent.get_hub().loop.io(sock.fileno(), 2)
        try:
            gsocket.wait(watcher, timeout=timeout, timeout_exc=TimeoutError("timed out"))
        finally:
            self._connect_watch = None
            watcher.close()

    def _dial(self) -> bool:
        if self._dialled:  # start_dial found the host connected and answered the SYN
            self._handle_events()  # a reset since then (or stop()) closed the socket
            return self.sock is not None and not self._aborted and not self.conn.is_closed
        if self.sock is None:
            self._begin_connect()  # a socket that cannot be made raises, as it always did
        sock = self.sock
        assert sock is not None
        try:
            self._finish_connect(sock)
        except ConnectionRefusedError:
            log.debug("%s: refused", self.label)
            self.refuse()
            return False
        except (TimeoutError, OSError) as e:
            err = getattr(e, "errno", None)
            kind = _UNREACHABLE_BY_ERRNO.get(err or errno.ETIMEDOUT, Unreachable.HOST)
            log.info("%s: cannot connect: %s", self.label, e if str(e) else "timed out")
            self.refuse(kind)
            return False
        return self._connected(sock, flush=True)

    def _connected(self, sock: gsocket.socket, *, flush: bool) -> bool:
        """The host accepted: answer the peer's SYN (SYN-ACK), unless it gave up meanwhile.
        ``flush``: send it now (else it leaves with the caller's flush)."""
        if self.conn.is_closed:  # the peer gave up while we dialled
            return False
        sock.settimeout(None)  # the pumps block (their greenlets only)
        try:
            sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        except OSError:
            pass
        self._dialled = True
        self.gw.stack.tcp_accept(self.conn, now=self.gw.now())
        if flush:
            self.gw.flush()
        return True

    def _pump(self) -> None:
        self._pumping = True
        self.wake()  # starts the writer if the peer sent something during the dial
        try:
            self._host_to_peer()
        finally:
            # The peer may still be sending (half-close): wait until that direction ends too.
            # The writer may come and go meanwhile; the bounded waits recheck the exit test.
            conn = self.conn
            while not (self._writer_finished.is_set() or self._aborted):
                if conn.is_closed and self._writer is None and not conn.readable:
                    break
                self._writer_finished.wait(1.0)
            self._pumping = False
            writer = self._writer
            if writer is not None:
                writer.join()

    def _host_to_peer(self) -> None:
        sock = self.sock
        assert sock is not None
        conn = self.conn
        buf = _host_read_buffer()
        view = memoryview(buf)
        try:
            while True:
                space = conn.send_space
                if space <= 0:
                    self._tx_event.clear()
                    if conn.is_closed or self._aborted:
                        return
                    if conn.send_space <= 0:
                        self._tx_event.wait()
                    continue
                n = sock.recv_into(buf, min(space, len(buf)))
                if self._aborted or conn.is_closed:
                    return
                if not n:
                    self.close_to_peer()
                    return
                # The buffer is shared: pass it on only when the core takes all of it in
                # its first send (no greenlet switch before that); else copy it out first.
                # (The send space can have shrunk while recv_into waited.)
                self.send_to_peer(view[:n] if n <= conn.send_space else bytes(view[:n]))
        except FlowClosed:
            return
        except OSError as e:
            self._host_failed(e)

    def _peer_to_host(self) -> None:
        sock = self.sock
        finished = True
        try:
            if sock is None:
                return
            unsent, self._unsent = self._unsent, None
            if unsent is not None:  # what wake() could not write without waiting
                sock.sendall(unsent)
            while True:
                data = self.recv_from_peer(WRITER_IDLE)
                if data is None:
                    finished = False  # idle: let the greenlet go; wake() brings it back
                    return
                if not data:
                    sock.shutdown(_stdsocket.SHUT_WR)
                    return
                sock.sendall(data)
        except FlowClosed:
            return
        except OSError as e:
            self._host_failed(e)
        finally:
            if self._writer is gevent.getcurrent():
                self._writer = None
            if finished:
                self._writer_finished.set()
            self._tx_event.set()

    def _host_failed(self, e: OSError) -> None:
        """The host reset the connection or the socket broke: reset the peer too."""
        if self._aborted:
            return  # we closed the socket ourselves
        log.debug("%s: host socket error: %s", self.label, e)
        self.abort()

    def _close_socket(self, *, abortive: bool) -> None:
        watcher = self._connect_watch
        if watcher is not None:
            gsocket.cancel_wait(watcher)  # the dial waiting on this socket ends (EBADF)
        sock, self.sock = self.sock, None
        if sock is not None:
            close_host_socket(sock, abortive=abortive)


def close_host_socket(sock: gsocket.socket, *, abortive: bool) -> None:
    """Close a host TCP socket; ``abortive``: with SO_LINGER 0, so the host side sees RST."""
    if abortive:
        try:
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    try:
        sock.close()
    except OSError:
        pass


def forward_tcp(conn: TcpConn, src: Address, dst: Address) -> None:
    """The default ``handle_tcp``: dial ``dst`` from this host, then relay both ways.

    The SYN is answered only once the dial succeeded: a refused dial becomes a RST to the
    peer, an unreachable or timed-out one an ICMP unreachable. Call it with a connection the
    handler has not used yet (``RuntimeError`` otherwise); it returns when the connection
    is over. It relays on the flow's own greenlets, with no copy beyond today's."""
    if conn._accepted or conn._refused or conn._closed:
        raise RuntimeError("forward_tcp() needs a connection the handler has not used yet")
    conn._detached = True
    conn._flow.forward()
