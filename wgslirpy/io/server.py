"""The gevent shell: owns the WireGuard UDP socket, the clock and every greenlet.

:class:`Gateway` is shaped like gevent's ``BaseServer`` (``start``, ``stop(timeout)``,
``serve_forever``, ``close``, ``started``/``closed``, ``address``, context manager) without
subclassing ``DatagramServer``, which would spawn a greenlet per datagram.

One central greenlet reads the WireGuard socket. Each turn it waits for readability at most
until the cores' next deadline (capped by ``max_tick``), drains the socket in a burst
(``max_burst`` datagrams), feeds each datagram through the WireGuard endpoint into the IP
stack, runs due timers, flushes every outbox through the socket, dispatches the stack's
events (spawning flow greenlets into one ``gevent.pool.Group``) and wakes the flow greenlets
whose TCP connection moved. Cores never block, so each call into them is atomic under
gevent and no locks guard them; only ``sendto`` is serialised, because a full socket
buffer makes it wait.

Importing this module never monkey-patches; it uses ``gevent.socket`` explicitly.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket as _stdsocket
import time
from typing import Any, Callable

import gevent
import gevent.event
import gevent.lock
import gevent.pool
from gevent import socket as gsocket

from ..config import Config
from ..errors import ConfigError, DropCounter
from ..net.packet import preload_decoder
from ..net.stack import (
    DnsLookup,
    DnsTcpRequested,
    FlowRefused,
    Stack,
    StackConfig,
    TcpConnectRequested,
    UdpSend,
)
from ..net.tcp import TcpConfig, TcpConnection
from ..net.udp_nat import BindingClosed, BindingOpened
from ..wg.endpoint import EndpointChanged, HandshakeCompleted, PeerConfig, PeerKeysZeroed, WireGuardEndpoint
from .dns_server import serve_dns_tcp, serve_dns_udp_lookup
from .tcp_forward import TcpFlow
from .udp_forward import UdpBindingRelay

log = logging.getLogger("wgslirpy")

#: socket buffer size we ask for on the WireGuard socket (bulk bursts overflow the default)
WG_SOCKET_BUFFER = 4 * 1024 * 1024


class Gateway:
    """A running wgslirpy gateway. See the module docstring.

    ``listener`` overrides ``config.bind`` and may be an ``(host, port)`` tuple or an
    already bound UDP socket (gevent or stdlib); ``config`` holds everything else.
    """

    #: longest wait between turns of the central loop, in seconds; bounds how late a
    #: deadline set by a flow greenlet (retransmit, delayed ACK) can be noticed
    max_tick: float = 0.05
    #: datagrams read per burst before timers and flushing run
    max_burst: int = 256
    #: seconds ``stop()`` waits for flow greenlets before killing them
    stop_timeout: float = 1.0
    #: size of one read from the WireGuard socket (a datagram never exceeds it)
    recv_size: int = 65535
    #: TCP flows described one by one in ``stats()`` (the first ones)
    stats_flow_detail: int = 16
    #: DNS lookups in progress at most; queries beyond it are answered SERVFAIL at once
    max_dns_lookups: int = 256

    def __init__(
        self,
        config: Config,
        listener: tuple[str, int] | Any | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        self._listener = listener
        self.socket: _stdsocket.socket | None = None
        #: the socket is AF_INET6 (IPv4 peers must be addressed as ::ffff:a.b.c.d); cached
        #: because ``socket.family`` builds an enum on every access
        self._ipv6_socket = False
        self._send_lock = gevent.lock.Semaphore()
        self._group = gevent.pool.Group()
        self._reader: gevent.Greenlet | None = None
        self._stop_event = gevent.event.Event()
        self._stopped = True
        #: TCP flow greenlet handles by connection; entries leave when the flow ends
        self.tcp_flows: dict[TcpConnection, TcpFlow] = {}
        #: DNS lookup greenlets running; never above max_dns_lookups
        self._dns_lookups = 0
        #: earliest time the next policy refusal may be logged
        self._next_refusal_log = 0.0
        #: UDP relays by binding id; entries leave when the binding closes
        self.udp_relays: dict[int, UdpBindingRelay] = {}
        now = clock()
        peer = PeerConfig(
            public_key=config.peer_public_key,
            preshared_key=config.preshared_key,
            endpoint=(str(config.peer_endpoint[0]), config.peer_endpoint[1]) if config.peer_endpoint else None,
            persistent_keepalive=config.keepalive_interval,
            allowed_ips=config.allowed_ips,
        )
        self.endpoint = WireGuardEndpoint(
            config.private_key,
            peer,
            now=now,
            wall_clock=wall_clock,
            queue_capacity=config.transmit_queue_capacity,
            mtu=config.mtu,
        )
        tcp = TcpConfig(
            mtu=config.mtu,
            rcv_buffer=config.tcp_buffer_size,
            snd_buffer=config.tcp_buffer_size,
            idle_timeout=config.tcp_idle_timeout,
        )
        self.stack = Stack(
            StackConfig(
                mtu=config.mtu,
                tcp=tcp,
                pingable=frozenset(config.pingable),
                dns=frozenset(config.dns),
                allow_loopback=config.allow_loopback,
                udp_idle_timeout=config.udp_idle_timeout,
                max_udp_bindings=config.max_udp_bindings,
                dns_ttl=config.dns_ttl,
                max_tcp_flows=config.max_tcp_flows,
                max_pending_connects=config.max_pending_connects,
                max_reassembly_bytes=config.max_reassembly_bytes,
                rules=config.destination_rules,
            )
        )
        self.max_dns_lookups = config.max_dns_lookups

    # --- BaseServer-shaped surface -----------------------------------------------------

    def now(self) -> float:
        return self._clock()

    @property
    def started(self) -> bool:
        return not self._stopped

    @property
    def closed(self) -> bool:
        return self.socket is None

    @property
    def address(self) -> tuple[str, int]:
        if self.socket is None:
            raise RuntimeError("the gateway has no socket yet: call start() first")
        name = self.socket.getsockname()
        return (name[0], name[1])

    @property
    def server_port(self) -> int:
        return self.address[1]

    def init_socket(self) -> None:
        if self.socket is not None:
            return
        listener = self._listener
        if listener is not None and not isinstance(listener, tuple):
            sock = _stdsocket.socket(fileno=os.dup(listener.fileno()))
        else:
            host, port = listener if listener is not None else (str(self.config.bind[0]), self.config.bind[1])
            family = _stdsocket.AF_INET6 if ":" in host else _stdsocket.AF_INET
            sock = _stdsocket.socket(family, _stdsocket.SOCK_DGRAM)
            if family == _stdsocket.AF_INET6:
                # "[::]:port" serves IPv4 peers too, as mapped addresses.
                sock.setsockopt(_stdsocket.IPPROTO_IPV6, _stdsocket.IPV6_V6ONLY, 0)
            try:
                sock.bind((host, port))
            except OSError as e:
                sock.close()
                raise ConfigError(f"--bind-ip-port: cannot bind {host}:{port}: {e.strerror or e}") from None
        for opt in (_stdsocket.SO_RCVBUF, _stdsocket.SO_SNDBUF):
            try:
                sock.setsockopt(_stdsocket.SOL_SOCKET, opt, WG_SOCKET_BUFFER)
            except OSError:
                pass
        sock.setblocking(False)
        self._ipv6_socket = sock.family == _stdsocket.AF_INET6
        self.socket = sock

    def start(self) -> None:
        if self.started:
            return
        self.init_socket()
        preload_decoder()
        self._stopped = False
        self._stop_event.clear()
        log.info("listening on %s:%d", *self.address)
        if self.endpoint.endpoint is not None:
            self.endpoint.initiate_handshake(now=self.now())
        self._reader = gevent.spawn(self._run_reader)

    def serve_forever(self, stop_timeout: float | None = None) -> None:
        if not self.started:
            self.start()
        try:
            self._stop_event.wait()
        finally:
            gevent.spawn(self.stop, timeout=stop_timeout).join()

    def request_stop(self) -> None:
        """Make ``serve_forever`` return (it then stops the gateway). Safe from a signal handler."""
        self._stop_event.set()

    def close(self) -> None:
        sock, self.socket = self.socket, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def stop(self, timeout: float | None = None) -> None:
        """Stop reading, close every flow (RST to the peer), then close the socket."""
        if self._stopped:
            self.close()
            return
        self._stopped = True
        self._stop_event.set()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=True, timeout=1.0)
        for flow in list(self.tcp_flows.values()):
            flow.abort()
        self.flush()
        self._group.join(timeout=self.stop_timeout if timeout is None else timeout)
        self._group.kill(block=True, timeout=1.0)
        for relay in list(self.udp_relays.values()):
            relay.close()
        self.udp_relays.clear()
        self.tcp_flows.clear()
        self.close()

    def __enter__(self) -> "Gateway":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the central greenlet ----------------------------------------------------------

    def _wait_time(self) -> float:
        deadlines = [d for d in (self.endpoint.next_deadline(), self.stack.next_deadline()) if d is not None]
        if not deadlines:
            return self.max_tick
        return max(0.0, min(min(deadlines) - self.now(), self.max_tick))

    def _run_reader(self) -> None:
        sock = self.socket
        assert sock is not None
        fd = sock.fileno()
        endpoint, stack = self.endpoint, self.stack
        recv = sock.recvfrom
        size = self.recv_size
        burst = self.max_burst
        while not self._stopped:
            try:
                gsocket.wait_read(fd, timeout=self._wait_time(), timeout_exc=_Timeout)
            except _Timeout:
                pass
            except OSError as e:  # the socket was closed under us
                self._fatal(e)
                return
            now = self.now()
            for _ in range(burst):
                try:
                    data, addr = recv(size)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    if e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                        continue  # an ICMP error about an earlier send: not fatal
                    self._fatal(e)
                    return
                try:
                    inner = endpoint.receive_datagram(data, addr, now=now)
                    if inner is not None:
                        stack.receive_ip(inner, now=now)
                except Exception:  # a bug in a core must not kill the gateway
                    log.exception("internal error while handling a datagram from %s", addr)
            self._after_turn()

    def _fatal(self, e: OSError) -> None:
        """The WireGuard socket broke: make serve_forever stop (unless we are stopping anyway)."""
        if not self._stopped:
            log.error("WireGuard socket failed: %s; stopping", e)
            self._stop_event.set()

    def _after_turn(self) -> None:
        now = self.now()
        try:
            self.endpoint.handle_timer(now=now)
            self.stack.handle_timer(now=now)
        except Exception:
            log.exception("internal error in timers")
        self._log_endpoint_events()
        self._dispatch_events()
        self.flush()
        for conn in self.stack.touched_flows():
            flow = self.tcp_flows.get(conn)
            if flow is not None:
                flow.wake()

    def flush(self) -> None:
        """Send everything the cores have queued. Safe from any greenlet."""
        sock = self.socket
        if sock is None:
            return
        now = self.now()
        endpoint = self.endpoint
        for packet in self.stack.packets_to_send(now=now):
            endpoint.send_ip(packet, now=now)
        out = endpoint.datagrams_to_send()
        if not out:
            return
        with self._send_lock:
            for data, addr in out:
                self._sendto(sock, data, addr)

    def _sendto(self, sock: _stdsocket.socket, data: bytes, addr: tuple[str, int]) -> None:
        if self._ipv6_socket and ":" not in addr[0]:
            addr = ("::ffff:" + addr[0], addr[1])  # an IPv4 peer on a dual-stack socket
        for _ in range(100):
            try:
                sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                try:
                    gsocket.wait_write(sock.fileno(), timeout=1.0, timeout_exc=_Timeout)
                except (_Timeout, OSError):
                    return
            except OSError as e:
                log.debug("sendto %s failed: %s", addr, e)
                return

    def _log_endpoint_events(self) -> None:
        while (ev := self.endpoint.next_event()) is not None:
            if isinstance(ev, HandshakeCompleted):
                log.info("handshake completed with the peer at %s:%d", *ev.endpoint)
            elif isinstance(ev, EndpointChanged):
                log.info("the peer moved to %s:%d", *ev.new)
            elif isinstance(ev, PeerKeysZeroed):
                log.info("no traffic for a long time: session keys erased")

    def _dispatch_events(self) -> None:
        stack = self.stack
        while (ev := stack.next_event()) is not None:
            if isinstance(ev, TcpConnectRequested):
                self._group.spawn(self._new_flow(ev.conn).run)
            elif isinstance(ev, DnsTcpRequested):
                self._group.spawn(serve_dns_tcp, self, self._new_flow(ev.conn))
            elif isinstance(ev, UdpSend):
                relay = self.udp_relays.get(ev.binding.id)
                if relay is None:
                    relay = UdpBindingRelay(self, ev.binding)
                    if not relay.open():
                        continue
                    self.udp_relays[ev.binding.id] = relay
                    self._group.spawn(relay.run)
                relay.send(ev.dst, ev.dport, ev.payload)
            elif isinstance(ev, BindingClosed):
                relay = self.udp_relays.pop(ev.binding.id, None)
                if relay is not None:
                    relay.close()
            elif isinstance(ev, BindingOpened):
                pass  # the relay opens lazily on its first UdpSend
            elif isinstance(ev, DnsLookup):
                if self._dns_lookups >= self.max_dns_lookups:
                    # A query flood must not pile up greenlets: answer at once.
                    stack.dns_udp_reply(ev.client, ev.server, stack.dns.servfail(ev.question))
                    continue
                self._dns_lookups += 1
                self._group.spawn(self._dns_lookup, ev)
            elif isinstance(ev, FlowRefused):
                self._log_refusal(ev)

    def _log_refusal(self, ev: FlowRefused) -> None:
        """One log line per refused flow, at most one a second (a retrying client must not
        flood the log); the rest are counted in the drop stats."""
        now = self.now()
        if now < self._next_refusal_log:
            return
        self._next_refusal_log = now + 1.0
        log.warning("refused %s %s:%d -> %s:%d: %s", ev.proto, ev.src[0], ev.src[1], ev.dst[0], ev.dst[1], ev.why)

    def _dns_lookup(self, ev: DnsLookup) -> None:
        try:
            serve_dns_udp_lookup(self, ev)
        finally:
            self._dns_lookups -= 1

    def _new_flow(self, conn: TcpConnection) -> TcpFlow:
        flow = self.tcp_flows[conn] = TcpFlow(self, conn)
        return flow

    def flow_finished(self, conn: TcpConnection) -> None:
        """Called by a flow greenlet as it ends."""
        self.tcp_flows.pop(conn, None)

    # --- introspection -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        drops = DropCounter.combined(self.endpoint.drops, self.stack.all_drops()).as_dict()
        return {
            "tcp_flows": len(self.tcp_flows),
            "tcp_flows_in_stack": self.stack.open_flow_count(),
            "udp_bindings": len(self.udp_relays),
            "greenlets": len(self._group),
            "has_session": self.endpoint.has_session,
            "peer_endpoint": self.endpoint.endpoint,
            "stack": dict(self.stack.stats),
            "drops": drops,
            "tcp": self.stack.tcp_counters(),
            "flows": [flow.describe() for flow in list(self.tcp_flows.values())[: self.stats_flow_detail]],
        }

    def stats_line(self) -> str:
        """One line for logs and the SIGUSR1 handler: ``wgslirpy stats: {json}``."""
        return "wgslirpy stats: " + json.dumps(self.stats(), default=str, sort_keys=True)


class _Timeout(Exception):
    """Raised by wait_read/wait_write when the wait ends without readiness."""
