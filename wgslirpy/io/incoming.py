"""The shell of the incoming forwards (``-t`` / ``-u``): host listeners into the tunnel.

:class:`IncomingForwards` binds one host socket per configured forward when the gateway
starts (a bind failure — a port in use, an address not on this host — is a
:class:`~wgslirpy.errors.ConfigError`, so the command line exits with status 2) and runs
one greenlet per listener in the gateway's group; ``close`` (the gateway's stop) closes
the listeners, and the gateway's stop aborts the flows and kills the greenlets.

* TCP: each accepted host connection becomes an active open in the stack
  (:meth:`~wgslirpy.net.stack.Stack.open_tcp`) and one :class:`IncomingTcpFlow` greenlet.
  That flow is a :class:`~wgslirpy.io.tcp_forward.TcpFlow` whose "dial" is waiting for the
  SYN-ACK; once established it runs the same relay pump (half-close and backpressure both
  ways). A RST, an ICMP unreachable or the SYN timing out resets the host socket
  (SO_LINGER 0): the host client sees its connection reset, never a clean EOF. (The host
  kernel completed the client's handshake before we accepted, so ECONNREFUSED itself
  cannot be produced from user space; the reset arrives before any data.)
* UDP: each datagram from a host client goes into the tunnel through the stack's
  incoming binding for that client (:class:`~wgslirpy.net.incoming.IncomingUdpTable`);
  replies come back as :class:`~wgslirpy.net.stack.IncomingUdpReply` events and leave
  the listener socket to the client without blocking (a full buffer drops and counts).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket as _stdsocket
from collections.abc import Callable
from typing import Any, Protocol

import gevent
from gevent import socket as gsocket

from ..errors import ConfigError, DropCounter, DropReason
from ..net.incoming import IncomingForward, tunnel_source
from ..net.segments import IPAddress
from ..net.stack import IncomingUdpClosed, IncomingUdpReply
from ..net.tcp import State, TcpConnection
from .host import FlowHost
from .tcp_forward import TcpFlow, close_host_socket

log = logging.getLogger("wgslirpy.incoming")

#: pending host connections per TCP listener
LISTEN_BACKLOG = 128
#: largest datagram a UDP listener reads (any UDP payload fits)
UDP_RECV_SIZE = 65535
#: socket buffers asked for on UDP listeners (bursts of large datagrams)
UDP_SOCKET_BUFFER = 1024 * 1024


def _client_address(addr: Any) -> tuple[IPAddress, int]:
    host = str(addr[0]).split("%", 1)[0]
    return (ipaddress.ip_address(host), int(addr[1]))


def _reset(sock: Any) -> None:
    """Close ``sock`` abortively (RST to the host client)."""
    close_host_socket(sock, abortive=True)


class IncomingHost(FlowHost, Protocol):
    """A :class:`~wgslirpy.io.host.FlowHost` that keeps the TCP flows (each accepted host
    connection adds one)."""

    @property
    def tcp_flows(self) -> dict[TcpConnection, TcpFlow]: ...


class IncomingTcpFlow(TcpFlow):
    """A forwarded host connection: the active open stands in for the dial."""

    def __init__(self, gateway: FlowHost, conn: TcpConnection, host_sock: gsocket.socket, client: str) -> None:
        super().__init__(gateway, conn)
        self.sock = host_sock
        self.label = f"{client} -> {self.label.split(' -> ')[0]} (incoming)"

    def _dial(self) -> bool:
        conn = self.conn
        while conn.state is State.SYN_SENT and not self._aborted:
            self._rx_event.clear()
            self._handle_events()
            if conn.state is not State.SYN_SENT or self._aborted:
                break
            self._rx_event.wait()
        self._handle_events()
        if conn.is_closed or self._aborted or self.sock is None:
            log.info("%s: the tunnel side refused or did not answer; host connection reset", self.label)
            self._aborted = True
            self._close_socket(abortive=True)
            return False
        try:
            self.sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        except OSError:
            pass
        return True


class IncomingForwards:
    """Listeners of every ``-t``/``-u`` forward of one gateway; see the module docstring."""

    def __init__(self, gateway: IncomingHost, forwards: tuple[IncomingForward, ...]) -> None:
        self.gw = gateway
        self.forwards = forwards
        #: listener socket per forward index (None before open / after close)
        self.sockets: list[Any] = [None] * len(forwards)
        #: non-blocking stdlib sendto of each UDP listener
        self._sendto: dict[int, Callable[..., int]] = {}
        self._loops: list[gevent.Greenlet] = []
        self.drops = DropCounter()
        self._next_log = 0.0

    def open(self) -> None:
        """Bind every listener; ConfigError (and nothing left bound) if one cannot be."""
        try:
            for i, f in enumerate(self.forwards):
                self.sockets[i] = self._bind(f)
        except ConfigError:
            self.close()
            raise

    def _bind(self, f: IncomingForward) -> gsocket.socket:
        host, port = f.host
        family = _stdsocket.AF_INET6 if host.version == 6 else _stdsocket.AF_INET
        kind = _stdsocket.SOCK_STREAM if f.proto == "tcp" else _stdsocket.SOCK_DGRAM
        sock = gsocket.socket(family, kind)
        try:
            if family == _stdsocket.AF_INET6 and host.is_unspecified:
                sock.setsockopt(_stdsocket.IPPROTO_IPV6, _stdsocket.IPV6_V6ONLY, 0)
            if f.proto == "tcp":
                sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
            else:
                for opt in (_stdsocket.SO_RCVBUF, _stdsocket.SO_SNDBUF):
                    try:
                        sock.setsockopt(_stdsocket.SOL_SOCKET, opt, UDP_SOCKET_BUFFER)
                    except OSError:
                        pass
            sock.bind((str(host), port))
            if f.proto == "tcp":
                sock.listen(LISTEN_BACKLOG)
        except OSError as e:
            sock.close()
            raise ConfigError(
                f"{f.option} {f.describe()[3:]}: cannot listen on the host address: {e.strerror or e}"
            ) from None
        return sock

    def start(self) -> None:
        for i, f in enumerate(self.forwards):
            sock = self.sockets[i]
            if sock is None:
                continue
            name = sock.getsockname()
            log.info("forwarding %s %s:%d -> %s", f.proto.upper(), name[0], name[1], f.describe())
            if f.proto == "tcp":
                self._loops.append(self.gw.spawn(self._accept_loop, i, f, sock))
            else:
                raw: Any = getattr(sock, "_sock", sock)
                self._sendto[i] = raw.sendto
                self._loops.append(self.gw.spawn(self._udp_loop, i, f, sock))

    def close(self) -> None:
        """Close every listener and forget the UDP bindings (flows are the gateway's)."""
        loops, self._loops = self._loops, []
        for i, sock in enumerate(self.sockets):
            self.sockets[i] = None
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
            if i < len(self.forwards) and self.forwards[i].proto == "udp":
                self.gw.stack.incoming_udp.close_forward(i)
        self._sendto.clear()
        gevent.killall([g for g in loops if g is not gevent.getcurrent()], block=True, timeout=1.0)

    def address(self, index: int) -> tuple[str, int]:
        """The bound host address of forward ``index`` (a host port of 0 gets one here)."""
        sock = self.sockets[index]
        if sock is None:
            raise RuntimeError("the forward is not listening")
        name = sock.getsockname()
        return (name[0], name[1])

    def _warn(self, msg: str, *args: object) -> None:
        """Rate-limited warning (one a second): a retrying client must not flood the log."""
        now = self.gw.now()
        if now >= self._next_log:
            self._next_log = now + 1.0
            log.warning(msg, *args)

    # --- TCP -------------------------------------------------------------------------------

    def _accept_loop(self, index: int, f: IncomingForward, sock: Any) -> None:
        while self.sockets[index] is sock:
            try:
                host_sock, addr = sock.accept()
            except OSError as e:
                if self.sockets[index] is not sock:
                    return
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._warn("%s: cannot accept: %s", f.describe(), e)
                    gevent.sleep(0.1)
                continue
            try:
                self._open_tcp(f, host_sock, addr)
            except Exception:
                log.exception("%s: internal error accepting a connection", f.describe())
                _reset(host_sock)

    def _open_tcp(self, f: IncomingForward, host_sock: gsocket.socket, addr: Any) -> None:
        gw = self.gw
        client = _client_address(addr)
        src = tunnel_source(f, client)
        if src is None:
            self._warn(
                "%s: a client from %s cannot be presented inside the tunnel (other address family); give SRC_ADDR",
                f.describe(),
                client[0],
            )
            _reset(host_sock)
            return
        conn = gw.stack.open_tcp(src[0], src[1], f.dst[0], f.dst[1], now=gw.now())
        if conn is None:
            self._warn(
                "%s: no free source for the client %s (4-tuple in use, ports exhausted or --max-tcp-flows reached)",
                f.describe(),
                client[0],
            )
            _reset(host_sock)
            return
        label = f"[{client[0]}]:{client[1]}" if client[0].version == 6 else f"{client[0]}:{client[1]}"
        flow = IncomingTcpFlow(gw, conn, host_sock, label)
        gw.tcp_flows[conn] = flow
        gw.flush()  # the SYN
        gw.spawn(flow.run)

    # --- UDP -------------------------------------------------------------------------------

    def _udp_loop(self, index: int, f: IncomingForward, sock: Any) -> None:
        gw = self.gw
        while self.sockets[index] is sock:
            try:
                data, addr = sock.recvfrom(UDP_RECV_SIZE)
            except OSError:
                if self.sockets[index] is not sock:
                    return
                continue  # e.g. an ICMP error reported on the socket
            client = _client_address(addr)
            src = tunnel_source(f, client)
            if src is None:
                self.drops.add(DropReason.UDP_FAMILY_MISMATCH)
                continue
            if gw.stack.incoming_udp_send(index, client, src, f.dst, data, now=gw.now()) is not None:
                gw.flush()

    def handle_event(self, ev: IncomingUdpReply | IncomingUdpClosed) -> None:
        """A stack event about an incoming UDP binding (called by the gateway's dispatch)."""
        if isinstance(ev, IncomingUdpClosed):
            log.debug("incoming UDP binding for %s expired", ev.binding.client)
            return
        b = ev.binding
        sendto = self._sendto.get(b.forward)
        if sendto is None:
            return
        try:
            sendto(ev.payload, _stdsocket.MSG_DONTWAIT, (str(b.client[0]), b.client[1]))
        except (BlockingIOError, InterruptedError):
            self.drops.add(DropReason.UDP_HOST_SEND_FULL)
        except OSError as e:
            log.debug("incoming UDP reply to %s failed: %s", b.client, e)
            self.drops.add(DropReason.UDP_HOST_SEND_FAILED)
