"""The gevent shell: owns the WireGuard UDP socket, the clock and every greenlet.

:class:`Gateway` is shaped like gevent's ``BaseServer`` (``start``, ``stop(timeout)``,
``serve_forever``, ``close``, ``started``/``closed``, ``address``, context manager) without
subclassing ``DatagramServer``, which would spawn a greenlet per datagram.

One central greenlet reads the WireGuard socket. Each turn it waits for readability at most
until the cores' next deadline (capped by ``max_tick``), drains the socket in a burst
(``max_burst`` datagrams) and classifies each by its type byte before any crypto: transport
data goes through the WireGuard endpoint at once and the burst's inner packets into the IP
stack in one call (``Stack.receive_ips``, where redundant pure ACKs are absorbed); handshake
messages wait
in a bounded queue (``wg/intake.py``, overflow dropped and counted) of which a budget is
processed after the burst, under load (the queue's depth) demanding cookies. It then runs due
timers, flushes every outbox through the socket, dispatches the stack's
events (spawning flow greenlets into one ``gevent.pool.Group``) and wakes the flow greenlets
whose TCP connection moved. Cores never block, so each call into them is atomic under
gevent and no locks guard them; only sending is serialised, because a full socket
buffer makes it wait — at most ``send_wait`` per batch, then the rest of the batch is
dropped and counted (WG_SEND_BLOCKED), so the reader never stalls on it.

The WireGuard socket is batched where Linux allows (``io/udp_batch.py``): runs of equal-sized
datagrams leave in one UDP GSO ``sendmsg``, and a UDP GRO read may carry several datagrams,
split before classification, so intake, budgets and the endpoint see each datagram as if it
had come alone; ``max_burst`` counts datagrams, not reads (a GRO read may overshoot it by at
most 63). Without kernel support (or with ``udp_batching = False``) it is one ``sendto`` and
one ``recvfrom`` per datagram.

Importing this module never monkey-patches; it uses ``gevent.socket`` explicitly.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket as _stdsocket
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.pool
from gevent import socket as gsocket

from ..config import Config
from ..constants import (
    HANDSHAKE_TURN_BUDGET_UNDER_LOAD,
    MESSAGE_TRANSPORT_TYPE,
    WG_SEND_WAIT_PER_BATCH,
)
from ..errors import ConfigError, DropCounter, DropReason
from ..net.packet import preload_decoder
from ..net.stack import (
    DnsLookup,
    DnsTcpRequested,
    FlowRefused,
    IncomingUdpClosed,
    IncomingUdpReply,
    Stack,
    TcpConnectRequested,
    UdpSend,
)
from ..net.tcp import TcpConnection
from ..net.udp_nat import BindingClosed, BindingOpened
from ..wg import crypto
from ..wg.endpoint import EndpointChanged, HandshakeCompleted, PeerKeysZeroed
from ..wg.intake import HandshakeIntake, is_handshake
from .conn import TcpHandler, UdpEndpoint, UdpHandler
from .dns_server import serve_dns_tcp, serve_dns_udp_lookup
from .endpoint_file import EndpointFile
from .incoming import IncomingForwards
from .tcp_forward import TcpFlow, forward_tcp
from .udp_batch import BatchReceiver, BatchSender, batching_allowed
from .udp_forward import UdpBindingRelay, forward_udp

log = logging.getLogger("wgslirpy")

#: socket buffer size we ask for on the WireGuard socket (bulk bursts overflow the default)
WG_SOCKET_BUFFER = 4 * 1024 * 1024


class Gateway:
    """A running wgslirpy gateway. See the module docstring.

    ``listener`` overrides ``config.bind`` and may be an ``(host, port)`` tuple or an
    already bound UDP socket (gevent or stdlib); ``config`` holds everything else.

    ``handle_tcp(conn, src, dst)`` serves each TCP connection of the peer in its own
    greenlet (default :func:`~wgslirpy.io.tcp_forward.forward_tcp`: dial and relay);
    ``handle_udp(endpoint, src, dst)`` each UDP binding (default
    :func:`~wgslirpy.io.udp_forward.forward_udp`). See :mod:`wgslirpy.io.conn`. DNS at
    ``config.dns`` and ping at ``config.pingable`` are answered before any handler.
    """

    #: longest wait between turns of the central loop, in seconds; bounds how late a
    #: deadline set by a flow greenlet (retransmit, delayed ACK) can be noticed
    max_tick: float = 0.05
    #: datagrams read per burst before timers and flushing run
    max_burst: int = 1024
    #: seconds ``stop()`` waits for flow greenlets before killing them
    stop_timeout: float = 1.0
    #: size of one read from the WireGuard socket (a datagram never exceeds it)
    recv_size: int = 65535
    #: TCP flows described one by one in ``stats()`` (the first ones)
    stats_flow_detail: int = 16
    #: DNS lookups in progress at most; queries beyond it are answered SERVFAIL at once
    max_dns_lookups: int = 256
    #: longest wait for a full WireGuard socket per batch of datagrams sent, in seconds
    send_wait: float = WG_SEND_WAIT_PER_BATCH
    #: use UDP GSO/GRO on the WireGuard socket when the kernel has them (False, or the
    #: environment's WGSLIRPY_UDP_BATCH=0: one system call per datagram)
    udp_batching: bool = True

    def __init__(
        self,
        config: Config,
        listener: tuple[str, int] | Any | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        handle_tcp: TcpHandler | None = None,
        handle_udp: UdpHandler | None = None,
    ) -> None:
        self.config = config
        #: per-flow handlers; None (or forward_tcp/forward_udp) is today's forwarding
        self._handle_tcp: TcpHandler | None = None if handle_tcp is forward_tcp else handle_tcp
        self._handle_udp: UdpHandler | None = None if handle_udp is forward_udp else handle_udp
        #: UDP bindings served by handle_udp, by binding id; entries leave when it closes
        self.udp_endpoints: dict[int, UdpEndpoint] = {}
        self._clock = clock
        self._listener = listener
        self.socket: _stdsocket.socket | None = None
        #: the socket is AF_INET6 (IPv4 peers must be addressed as ::ffff:a.b.c.d); cached
        #: because ``socket.family`` builds an enum on every access
        self._ipv6_socket = False
        self._send_lock = gevent.lock.Semaphore()
        #: batched send/receive on ``socket`` (made with it in init_socket)
        self._sender: BatchSender | None = None
        self._receiver: BatchReceiver | None = None
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
        #: handshake messages waiting for the reader's per-turn budget
        self.intake = HandshakeIntake()
        #: the shell's own drops (WG_SEND_BLOCKED)
        self.drops = DropCounter()
        now = clock()
        #: the peer's last endpoint on disk (--endpoint-file); None when not configured
        self.endpoint_file = EndpointFile(config.endpoint_file) if config.endpoint_file else None
        self.endpoint = config.wireguard_endpoint(self._initial_peer_endpoint(), now=now, wall_clock=wall_clock)
        self.stack = Stack(config.stack_config())
        #: the -t/-u listeners (io/incoming.py); bound in start(), closed in stop()
        self.incoming = IncomingForwards(self, config.incoming)
        self.max_dns_lookups = config.max_dns_lookups

    def _initial_peer_endpoint(self) -> tuple[str, int] | None:
        """``-p`` if given, else the endpoint remembered in the endpoint file (if usable)."""
        config = self.config
        if config.peer_endpoint:
            if self.endpoint_file is not None:
                self.endpoint_file.remembered()  # known content: an unchanged endpoint is not rewritten
            return (str(config.peer_endpoint[0]), config.peer_endpoint[1])
        if self.endpoint_file is None:
            return None
        remembered = self.endpoint_file.remembered()
        if remembered is None:
            return None
        if ":" in remembered[0] and config.bind[0].version == 4:
            log.warning("--endpoint-file: the remembered peer %s:%d is IPv6 and we bind IPv4; not used", *remembered)
            return None
        log.info("initiating to the peer's last known endpoint %s:%d (from %s)", *remembered, self.endpoint_file.path)
        return remembered

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
        granted = []
        for opt in (_stdsocket.SO_RCVBUF, _stdsocket.SO_SNDBUF):
            try:
                sock.setsockopt(_stdsocket.SOL_SOCKET, opt, WG_SOCKET_BUFFER)
            except OSError:
                pass
            granted.append(sock.getsockopt(_stdsocket.SOL_SOCKET, opt))
        # Linux reports twice what it accounts for, capped by net.core.[rw]mem_max.
        log.info(
            "WireGuard socket buffers granted: receive %d, send %d bytes (asked for %d; "
            "raise net.core.rmem_max/wmem_max for more)",
            granted[0],
            granted[1],
            WG_SOCKET_BUFFER,
        )
        sock.setblocking(False)
        self._ipv6_socket = sock.family == _stdsocket.AF_INET6
        batch = self.udp_batching and batching_allowed()
        self._sender = BatchSender(sock, gso=batch, mapped=self._ipv6_socket)
        self._receiver = BatchReceiver(sock, gro=batch, size=self.recv_size)
        log.info(
            "WireGuard socket: UDP GSO %s, UDP GRO %s",
            "on" if self._sender.gso else "off",
            "on" if self._receiver.gro else "off",
        )
        self.socket = sock

    def start(self) -> None:
        if self.started:
            return
        self.init_socket()
        self.incoming.open()  # ConfigError if a host port is taken
        preload_decoder()
        self._stopped = False
        self._stop_event.clear()
        log.info("listening on %s:%d", *self.address)
        log.debug("transport AEAD backend: %s", crypto.BACKEND)
        if self.endpoint.endpoint is not None:
            self.endpoint.initiate_handshake(now=self.now())
        self._reader = gevent.spawn(self._run_reader)
        self.incoming.start()

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
        self.incoming.close()
        for flow in list(self.tcp_flows.values()):
            flow.abort()
        for ep in list(self.udp_endpoints.values()):
            ep._expired()
        self.flush()
        if self.endpoint_file is not None:
            self.endpoint_file.poll(now=self.now(), force=True)
        self._group.join(timeout=self.stop_timeout if timeout is None else timeout)
        self._group.kill(block=True, timeout=1.0)
        for relay in list(self.udp_relays.values()):
            relay.close()
        self.udp_relays.clear()
        for ep in list(self.udp_endpoints.values()):
            ep._expired()
        self.udp_endpoints.clear()
        self.tcp_flows.clear()
        self.close()

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the central greenlet ----------------------------------------------------------

    def _wait_time(self) -> float:
        if self.intake.pending:
            return 0.0
        deadlines = [d for d in (self.endpoint.next_deadline(), self.stack.next_deadline()) if d is not None]
        if not deadlines:
            return self.max_tick
        return max(0.0, min(min(deadlines) - self.now(), self.max_tick))

    def _run_reader(self) -> None:
        sock = self.socket
        assert sock is not None
        fd = sock.fileno()
        endpoint, stack = self.endpoint, self.stack
        receiver = self._receiver
        if receiver is None or receiver.sock is not sock:
            receiver = self._receiver = BatchReceiver(sock, gro=False, size=self.recv_size)
        recv = receiver.recv
        burst = self.max_burst
        offer = self.intake.offer
        # one read watcher for the reader's life (wait_read would make one every turn)
        watcher = gevent.get_hub().loop.io(fd, 1)
        try:
            while not self._stopped:
                try:
                    gsocket.wait(watcher, timeout=self._wait_time(), timeout_exc=_Timeout)
                except _Timeout:
                    pass
                except OSError as e:  # the socket was closed under us
                    self._fatal(e)
                    return
                now = self.now()
                left = burst  # datagrams this turn (a GRO read carries up to 64)
                inner_packets: list[tuple[bytes, float]] = []  # for the stack, once the burst is read
                while left > 0:
                    try:
                        datagrams, addr = recv()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        if e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                            left -= 1
                            continue  # an ICMP error about an earlier send: not fatal
                        self._fatal(e)
                        return
                    left -= len(datagrams)
                    for data in datagrams:
                        if data and data[0] != MESSAGE_TRANSPORT_TYPE and is_handshake(data):
                            # Before any crypto: queued (or dropped and counted when the queue is full).
                            ep = endpoint.endpoint
                            offer(data, addr, from_peer=ep is not None and addr[1] == ep[1] and addr[0] == ep[0])
                            continue
                        try:
                            # the clock per datagram: a burst takes ms, and TCP's RTT samples
                            # (min_rtt, RACK, BBR's BDP) must not see a stale arrival time
                            inner = endpoint.receive_datagram(data, addr, now=(now := self.now()))
                            if inner is not None:
                                inner_packets.append((inner, now))
                        except Exception:  # a bug in a core must not kill the gateway
                            log.exception("internal error while handling a datagram from %s", addr)
                if inner_packets:
                    try:
                        stack.receive_ips(inner_packets)
                    except Exception:  # a bug in a core must not kill the gateway
                        log.exception("internal error while handling %d packets from the tunnel", len(inner_packets))
                self._handshake_turn(now)
                self._after_turn()
        finally:
            watcher.close()

    def _handshake_turn(self, now: float) -> None:
        """Process this turn's budget of queued handshake messages (after the transport data)."""
        intake = self.intake
        if not intake.pending:
            return
        endpoint = self.endpoint
        loaded = endpoint.under_load = intake.under_load(now=now)
        for data, addr in intake.take(HANDSHAKE_TURN_BUDGET_UNDER_LOAD if loaded else None):
            try:
                endpoint.receive_datagram(data, addr, now=now)
            except Exception:  # a bug in a core must not kill the gateway
                log.exception("internal error while handling a handshake from %s", addr)

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
        if self.endpoint_file is not None:
            self.endpoint_file.poll(now=now)
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
        endpoint.send_ips(self.stack.packets_to_send(now=now), now=now)
        out = endpoint.datagrams_to_send()
        if not out:
            return
        with self._send_lock:
            self._send_batch(sock, out)

    def _send_batch(self, sock: _stdsocket.socket, out: list[tuple[bytes, tuple[str, int]]]) -> None:
        """Send ``out`` (batched by ``io/udp_batch.py``), waiting for a full socket at most
        ``send_wait`` seconds in all; what is left after that is dropped and counted
        (WG_SEND_BLOCKED)."""
        sender = self._sender
        if sender is None or sender.sock is not sock:
            sender = self._sender = BatchSender(sock, gso=False, mapped=self._ipv6_socket)
        wait_left = self.send_wait
        n = len(out)
        i = 0
        while (i := sender.send(out, i)) < n:  # stopped at out[i]: the socket is full
            if wait_left <= 0:
                self.drops.add(DropReason.WG_SEND_BLOCKED, n - i)
                return
            t0 = self.now()
            try:
                gsocket.wait_write(sock.fileno(), timeout=wait_left, timeout_exc=_Timeout)
            except _Timeout:
                wait_left = 0.0
            except OSError:
                return  # the socket was closed under us
            else:
                # Never wait again without a bound, even if the clock stands still.
                wait_left -= max(self.now() - t0, wait_left / 8)

    def _log_endpoint_events(self) -> None:
        while (ev := self.endpoint.next_event()) is not None:
            if isinstance(ev, HandshakeCompleted):
                log.info("handshake completed with the peer at %s:%d", *ev.endpoint)
                if self.endpoint_file is not None:
                    self.endpoint_file.changed(ev.endpoint)
            elif isinstance(ev, EndpointChanged):
                log.info("the peer moved to %s:%d", *ev.new)
                if self.endpoint_file is not None:
                    self.endpoint_file.changed(ev.new)
            elif isinstance(ev, PeerKeysZeroed):
                log.info("no traffic for a long time: session keys erased")

    def _dispatch_events(self) -> None:
        stack = self.stack
        while (ev := stack.next_event()) is not None:
            if isinstance(ev, TcpConnectRequested):
                flow = self._new_flow(ev.conn)
                if self._handle_tcp is None:
                    flow.start_dial()  # forwarded: the host SYN leaves in this turn
                self._group.spawn(flow.run, self._handle_tcp)
            elif isinstance(ev, DnsTcpRequested):
                self._group.spawn(serve_dns_tcp, self, self._new_flow(ev.conn))
            elif isinstance(ev, UdpSend):
                relay = self.udp_relays.get(ev.binding.id)
                if relay is None and self._handle_udp is not None:
                    self._to_udp_handler(ev)
                    continue
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
                ep = self.udp_endpoints.pop(ev.binding.id, None)
                if ep is not None:
                    ep._expired()
            elif isinstance(ev, BindingOpened):
                pass  # the relay opens lazily on its first UdpSend
            elif isinstance(ev, DnsLookup):
                if self._dns_lookups >= self.max_dns_lookups:
                    # A query flood must not pile up greenlets: answer at once.
                    stack.dns_udp_reply(ev.client, ev.server, stack.dns.servfail(ev.question))
                    stack.drops.add(DropReason.DNS_LOOKUP_LIMIT)
                    self._warn_rate_limited(
                        "DNS query from %s answered SERVFAIL: %d lookups in progress (--max-dns-lookups)",
                        ev.client[0],
                        self.max_dns_lookups,
                    )
                    continue
                self._dns_lookups += 1
                self._group.spawn(self._dns_lookup, ev)
            elif isinstance(ev, FlowRefused):
                self._log_refusal(ev)
            elif isinstance(ev, (IncomingUdpReply, IncomingUdpClosed)):
                self.incoming.handle_event(ev)

    def _to_udp_handler(self, ev: UdpSend) -> None:
        """A datagram of a binding ``handle_udp`` serves (its first one spawns the handler)."""
        b = ev.binding
        dst = (str(ev.dst), ev.dport)
        ep = self.udp_endpoints.get(b.id)
        if ep is None:
            ep = self.udp_endpoints[b.id] = UdpEndpoint(self, b, (str(b.client_addr), b.client_port), dst)
            self._group.spawn(self._run_udp_handler, ep)
        ep._deliver(ev.payload, dst)

    def _run_udp_handler(self, ep: UdpEndpoint) -> None:
        handler = self._handle_udp
        assert handler is not None
        try:
            handler(ep, ep.getpeername(), ep.getsockname())
        except Exception:
            log.exception("UDP handler for %s:%d raised; its binding is closed", *ep.getpeername())
        finally:
            if not ep._detached:
                ep.close()

    def _log_refusal(self, ev: FlowRefused) -> None:
        """One log line per refused flow (rate-limited); every refusal is counted."""
        self._warn_rate_limited(
            "refused %s %s:%d -> %s:%d: %s", ev.proto.name, ev.src[0], ev.src[1], ev.dst[0], ev.dst[1], ev.why
        )

    def _warn_rate_limited(self, msg: str, *args: object) -> None:
        """A warning about refused or limited traffic, at most one a second (a retrying or
        flooding client must not flood the log); the drop counters hold the full count."""
        now = self.now()
        if now < self._next_refusal_log:
            return
        self._next_refusal_log = now + 1.0
        log.warning(msg, *args)

    def _dns_lookup(self, ev: DnsLookup) -> None:
        try:
            serve_dns_udp_lookup(self, ev)
        finally:
            self._dns_lookups -= 1

    def _new_flow(self, conn: TcpConnection) -> TcpFlow:
        flow = self.tcp_flows[conn] = TcpFlow(self, conn)
        return flow

    def spawn(self, fn: Callable[..., Any], *args: Any) -> gevent.Greenlet:
        """Run ``fn(*args)`` in a greenlet of the gateway's group (killed by stop())."""
        return self._group.spawn(fn, *args)

    def flow_finished(self, conn: TcpConnection) -> None:
        """Called by a flow greenlet as it ends."""
        self.tcp_flows.pop(conn, None)

    # --- introspection -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        drops = DropCounter.combined(
            self.endpoint.drops, self.intake.drops, self.drops, self.stack.all_drops()
        ).as_dict()
        return {
            "tcp_flows": len(self.tcp_flows),
            "tcp_flows_in_stack": self.stack.open_flow_count(),
            "udp_bindings": len(self.udp_relays.keys() | self.udp_endpoints.keys()),
            "greenlets": len(self._group),
            "has_session": self.endpoint.has_session,
            "handshake_queue": self.intake.pending,
            "under_load": self.endpoint.under_load,
            "peer_endpoint": self.endpoint.endpoint,
            "stack": self.stack.stats.as_dict(),
            "drops": drops,
            "tcp": self.stack.tcp_counters(),
            "flows": [flow.describe() for flow in list(self.tcp_flows.values())[: self.stats_flow_detail]],
            "udp_batch": self._batch_stats(),
        }

    def _batch_stats(self) -> dict[str, Any]:
        """UDP GSO/GRO on the WireGuard socket: on or off, and how much each carried."""
        tx, rx = self._sender, self._receiver
        return {
            "gso": tx is not None and tx.gso,
            "gso_sends": tx.gso_sends if tx is not None else 0,
            "gso_datagrams": tx.gso_datagrams if tx is not None else 0,
            "gro": rx is not None and rx.gro,
            "gro_reads": rx.gro_reads if rx is not None else 0,
            "gro_datagrams": rx.gro_datagrams if rx is not None else 0,
        }

    def stats_line(self) -> str:
        """One line for logs and the SIGUSR1 handler: ``wgslirpy stats: {json}``."""
        return "wgslirpy stats: " + json.dumps(self.stats(), default=str, sort_keys=True)


class _Timeout(Exception):
    """Raised by wait_read/wait_write when the wait ends without readiness."""
