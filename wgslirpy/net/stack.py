"""The userspace IP stack facing the WireGuard peer: pure dispatch, no I/O.

Contract (the vocabulary of *The sans-IO contract* in docs/ARCHITECTURE.md):

* ``receive_ip(packet, now=)`` takes one decrypted inner packet from the tunnel. Fragments
  are reassembled, then the packet is decoded and dispatched: TCP to its
  :class:`~wgslirpy.net.tcp.TcpConnection` (a bare SYN for a new 4-tuple creates one and
  emits :class:`TcpConnectRequested`), UDP to the NAT table (emitting :class:`UdpSend`) or
  to the DNS responder, ICMP echo to the ``-P`` addresses. Malformed or unwanted input is
  dropped and counted in ``drops``; nothing raises.
* ``packets_to_send(now=)`` drains IP packets for the tunnel: replies queued by the stack
  plus every segment the touched TCP connections want to send. Packets larger than the
  MTU are fragmented here.
* ``next_event()`` pops shell events; ``touched_flows()`` drains the TCP connections whose
  state moved since the last call (the shell wakes their greenlets).
* ``next_deadline()`` / ``handle_timer(now=)``: the minimum over reassembly, the NAT table
  and every TCP connection (a lazy heap, so idle flows cost nothing per turn).
* Shell callbacks: ``udp_reply``, ``udp_port_unreachable``, ``dns_udp_reply``,
  ``tcp_unreachable`` and ``mark`` (call after driving a connection from a flow greenlet).

Policy decided here, not in the shell: flows towards the host's loopback are refused
unless ``allow_loopback``; only bare SYNs create flows (any other segment for an unknown
flow is answered with RST, as RFC 9293 §3.10.7.1 says); the ``-P`` and ``-D`` addresses
are served by us and never forwarded.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Union

from .. import constants as C
from ..errors import DropCounter, DropReason
from .build import build_icmp_echo, build_icmp_unreachable, build_tcp, build_udp
from .dns import DnsQuestion, DnsResponder
from .fragments import Reassembler, fragment_ip
from .packet import decode_ip
from .segments import (
    IcmpEcho,
    IcmpError,
    IPAddress,
    IpProto,
    OtherIp,
    TcpFlags,
    TcpSegment,
    UdpDatagram,
    Unreachable,
)
from .tcp import TcpConfig, TcpConnection
from .udp_nat import BindingClosed, BindingOpened, UdpBinding, UdpNatTable

FlowKey = tuple[IPAddress, int, IPAddress, int]


@dataclass(frozen=True)
class StackConfig:
    mtu: int = C.DEFAULT_MTU
    tcp: TcpConfig = field(default_factory=TcpConfig)
    #: tunnel addresses that answer ICMP echo
    pingable: frozenset[IPAddress] = frozenset()
    #: tunnel (address, port) pairs served by the DNS responder
    dns: frozenset[tuple[IPAddress, int]] = frozenset()
    allow_loopback: bool = False
    udp_idle_timeout: float = C.DEFAULT_UDP_IDLE_TIMEOUT
    max_udp_bindings: int = C.DEFAULT_MAX_UDP_BINDINGS
    dns_ttl: int = C.DEFAULT_DNS_TTL
    #: new TCP flows past this many open ones are refused with RST
    max_tcp_flows: int = 65536


# --- events for the shell -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TcpConnectRequested:
    """A bare SYN opened ``conn``: dial ``conn.key[2]:conn.key[3]``, then accept or refuse."""

    conn: TcpConnection


@dataclass(frozen=True, slots=True)
class DnsTcpRequested:
    """A TCP flow to a ``-D`` address: serve DNS over TCP on ``conn`` (accept it at once)."""

    conn: TcpConnection


@dataclass(frozen=True, slots=True)
class UdpSend:
    """Send ``payload`` from ``binding``'s socket to ``dst``:``dport``."""

    binding: UdpBinding
    dst: IPAddress
    dport: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class DnsLookup:
    """Resolve ``question`` and give the answer to :meth:`Stack.dns_udp_reply`."""

    question: DnsQuestion
    client: tuple[IPAddress, int]
    server: tuple[IPAddress, int]


@dataclass(frozen=True, slots=True)
class FlowRefused:
    """A flow was refused by policy (e.g. a loopback destination); the shell logs it."""

    proto: str  # "TCP" or "UDP"
    src: tuple[IPAddress, int]
    dst: tuple[IPAddress, int]
    reason: DropReason


#: BindingOpened/BindingClosed come straight from the NAT table (net/udp_nat.py).
StackEvent = Union[
    TcpConnectRequested, DnsTcpRequested, UdpSend, BindingOpened, BindingClosed, DnsLookup, FlowRefused
]


def is_loopback(addr: IPAddress) -> bool:
    """Addresses that reach the gateway host itself (incl. ::ffff:127.0.0.1 and 0.0.0.0)."""
    if addr.is_loopback or addr.is_unspecified:
        return True
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped is not None and (mapped.is_loopback or mapped.is_unspecified)


def _unforwardable(addr: IPAddress) -> bool:
    """Destinations no flow may target: multicast, broadcast."""
    return addr.is_multicast or (addr.version == 4 and int(addr) == 0xFFFFFFFF)


def _other_ip_reason(d: OtherIp) -> DropReason:
    """Name the drop of a packet no handler takes by what a user would call it."""
    if _unforwardable(d.dst):
        return DropReason.MULTICAST  # IPv6 router solicitation, MLD report, ...
    if d.proto in (IpProto.ICMP, IpProto.ICMPV6):
        return DropReason.ICMP_OTHER_TYPE
    return DropReason.UNSUPPORTED_PROTOCOL


class Stack:
    """Pure userspace IP stack; see the module docstring for the contract."""

    def __init__(self, config: StackConfig, *, rng: Callable[[int], bytes] = os.urandom) -> None:
        self.config = config
        self._rng = rng
        self.drops = DropCounter()
        self.reassembler = Reassembler()
        self.nat = UdpNatTable(idle_timeout=config.udp_idle_timeout, max_bindings=config.max_udp_bindings)
        self.dns = DnsResponder(ttl=config.dns_ttl)
        #: tunnel addresses we answer for ourselves (-P, -D): never forwarded to the host
        self._served: frozenset[IPAddress] = config.pingable | {a for a, _ in config.dns}
        #: open TCP flows by (peer addr, peer port, our addr, our port); a closed flow is removed
        #: as soon as the stack notices it, so a new SYN for the same tuple starts afresh.
        self.flows: dict[FlowKey, TcpConnection] = {}
        #: packets ready for the tunnel, in order
        self._out: list[bytes] = []
        self._events: deque[StackEvent] = deque()
        #: flows to poll for segments / wake in the shell; insertion-ordered set
        self._dirty: dict[TcpConnection, None] = {}
        self._touched: dict[TcpConnection, None] = {}
        #: lazy heap of (deadline, tiebreak, flow); stale entries are skipped on pop
        self._timers: list[tuple[float, int, TcpConnection]] = []
        self._tiebreak = itertools.count()
        self._armed: dict[TcpConnection, float] = {}
        self.stats: dict[str, int] = {
            "rx_packets": 0,
            "tx_packets": 0,
            "tcp_flows_opened": 0,
            "icmp_echo_replies": 0,
            "dns_queries": 0,
        }

    # --- input from the tunnel ---------------------------------------------------------

    def receive_ip(self, packet: bytes, *, now: float) -> None:
        self.stats["rx_packets"] += 1
        whole = self.reassembler.receive(packet, now=now)
        if whole is None:
            return
        if isinstance(whole, DropReason):
            self.drops.add(whole)
            return
        decoded = decode_ip(whole)
        if isinstance(decoded, TcpSegment):
            self._receive_tcp(decoded, now)
        elif isinstance(decoded, UdpDatagram):
            self._receive_udp(decoded, whole, now)
        elif isinstance(decoded, IcmpEcho):
            self._receive_echo(decoded)
        elif isinstance(decoded, DropReason):
            self.drops.add(decoded)
        elif isinstance(decoded, IcmpError):
            # Errors about our own replies (e.g. the client's port unreachable for a UDP
            # reply) carry nothing we can act on safely; count and move on.
            self.drops.add(DropReason.ICMP_ERROR_FROM_PEER)
        else:
            self.drops.add(_other_ip_reason(decoded))

    def _receive_tcp(self, seg: TcpSegment, now: float) -> None:
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        conn = self.flows.get(key)
        if conn is not None:
            conn.handle_segment(seg, now=now)
            self.mark(conn)
            if not conn.is_closed:
                return
            # A closed flow (e.g. after TIME-WAIT or an abort) gives way to a new SYN.
            if not (seg.flags & TcpFlags.SYN and not seg.flags & TcpFlags.ACK):
                return
            self.flows.pop(key, None)
        flags = seg.flags
        if not flags & TcpFlags.SYN or flags & (TcpFlags.ACK | TcpFlags.RST | TcpFlags.FIN):
            self.drops.add(DropReason.TCP_NO_FLOW)
            if not flags & TcpFlags.RST:
                self._reset_for(seg)
            return
        self._open_flow(seg, key, now)

    def _open_flow(self, syn: TcpSegment, key: FlowKey, now: float) -> None:
        dst = syn.dst
        if (dst, syn.dport) in self.config.dns:
            self._events.append(DnsTcpRequested(self._new_flow(syn, key, now)))
            return
        if dst in self._served or _unforwardable(dst):
            self.drops.add(DropReason.NOT_FOR_US)
            self._reset_for(syn)
            return
        if not self.config.allow_loopback and is_loopback(dst):
            self._refuse("TCP", syn.src, syn.sport, dst, syn.dport, DropReason.TCP_LOOPBACK_REFUSED)
            self._reset_for(syn)
            return
        if len(self.flows) >= self.config.max_tcp_flows:
            self.drops.add(DropReason.TCP_FLOW_LIMIT)
            self._reset_for(syn)
            return
        self._events.append(TcpConnectRequested(self._new_flow(syn, key, now)))

    def _new_flow(self, syn: TcpSegment, key: FlowKey, now: float) -> TcpConnection:
        conn = TcpConnection(syn, self.config.tcp, now=now, rng=self._rng)
        self.flows[key] = conn
        self.stats["tcp_flows_opened"] += 1
        return conn

    def _refuse(self, proto: str, src: IPAddress, sport: int, dst: IPAddress, dport: int, reason: DropReason) -> None:
        self.drops.add(reason)
        self._events.append(FlowRefused(proto, (src, sport), (dst, dport), reason))

    def _reset_for(self, seg: TcpSegment) -> None:
        """RST answering ``seg`` (RFC 9293 §3.10.7.1: seq from its ACK, else ACK its span)."""
        if seg.flags & TcpFlags.ACK:
            seq, ack, flags = seg.ack, 0, TcpFlags.RST
        else:
            seq, ack, flags = 0, (seg.seq + seg.seg_len) & 0xFFFFFFFF, TcpFlags.RST | TcpFlags.ACK
        rst = TcpSegment(seg.dst, seg.src, seg.dport, seg.sport, seq, ack, flags, 0)
        self._out.append(build_tcp(rst))

    def _receive_udp(self, d: UdpDatagram, raw: bytes, now: float) -> None:
        if (d.dst, d.dport) in self.config.dns:
            self._receive_dns(d)
            return
        dst = d.dst
        if dst in self._served:
            self._out.append(build_icmp_unreachable(d.dst, d.src, Unreachable.PORT, raw))
            self.drops.add(DropReason.NOT_FOR_US)
            return
        if _unforwardable(dst) or d.dport == 0:
            self.drops.add(DropReason.MULTICAST if _unforwardable(dst) else DropReason.NOT_FOR_US)
            return
        if not self.config.allow_loopback and is_loopback(dst):
            self._refuse("UDP", d.src, d.sport, dst, d.dport, DropReason.UDP_LOOPBACK_REFUSED)
            self._out.append(build_icmp_unreachable(d.dst, d.src, Unreachable.PORT, raw))
            return
        binding = self.nat.outbound(d, now=now)
        self._pull_nat_events()
        self._events.append(UdpSend(binding, d.dst, d.dport, d.payload))

    def _receive_dns(self, d: UdpDatagram) -> None:
        self.stats["dns_queries"] += 1
        result = self.dns.handle_query(d.payload)
        if result is None:
            return  # counted in self.dns.drops
        if isinstance(result, bytes):
            self.dns_udp_reply((d.src, d.sport), (d.dst, d.dport), result)
        else:
            self._events.append(DnsLookup(result, (d.src, d.sport), (d.dst, d.dport)))

    def _receive_echo(self, e: IcmpEcho) -> None:
        if not e.is_request or e.dst not in self.config.pingable:
            self.drops.add(DropReason.NOT_FOR_US)
            return
        reply = IcmpEcho(e.dst, e.src, False, e.ident, e.seq, e.payload)
        self._emit(build_icmp_echo(reply))
        self.stats["icmp_echo_replies"] += 1

    def _pull_nat_events(self) -> None:
        while (ev := self.nat.next_event()) is not None:
            self._events.append(ev)

    # --- shell callbacks ---------------------------------------------------------------

    def mark(self, conn: TcpConnection) -> None:
        """Note that ``conn`` may have output, a new deadline or news for its greenlet."""
        self._dirty[conn] = None
        self._touched[conn] = None

    def udp_reply(self, binding_id: int, remote: IPAddress, remote_port: int, payload: bytes, *, now: float) -> None:
        d = self.nat.inbound(binding_id, remote, remote_port, payload, now=now)
        if d is not None:
            self._emit(build_udp(d))

    def udp_port_unreachable(
        self, binding_id: int, remote: IPAddress, remote_port: int, payload_len: int = 0, *, now: float
    ) -> None:
        """The host's network refused a datagram from ``binding`` to ``remote``: tell the client.

        The quoted packet is rebuilt from the binding (addresses, ports, length); a client
        matches the error to its socket by exactly those fields.
        """
        b = self.nat.get(binding_id)
        if b is None:
            return
        original = build_udp(UdpDatagram(b.client_addr, remote, b.client_port, remote_port, bytes(min(payload_len, 8))))
        self._emit(build_icmp_unreachable(remote, b.client_addr, Unreachable.PORT, original))

    def udp_binding_failed(self, binding_id: int) -> None:
        """The shell could not keep the binding's socket: forget the binding."""
        self.nat.close(binding_id)
        self._pull_nat_events()

    def dns_udp_reply(self, client: tuple[IPAddress, int], server: tuple[IPAddress, int], wire: bytes) -> None:
        self._emit(build_udp(UdpDatagram(server[0], client[0], server[1], client[1], wire)))

    def tcp_unreachable(self, conn: TcpConnection, kind: Unreachable) -> None:
        """The dial for ``conn`` failed (no route, timeout): ICMP error quoting its SYN; forget it."""
        syn = conn.syn
        self._emit(build_icmp_unreachable(syn.dst, syn.src, kind, build_tcp(syn)))
        self.forget(conn)

    def forget(self, conn: TcpConnection) -> None:
        """Drop ``conn`` from the tables without sending anything."""
        if self.flows.get(conn.key) is conn:
            del self.flows[conn.key]
        self._dirty.pop(conn, None)
        self._armed.pop(conn, None)

    # --- output ------------------------------------------------------------------------

    def _emit(self, packet: bytes) -> None:
        if len(packet) > self.config.mtu:
            self._out.extend(fragment_ip(packet, self.config.mtu))
        else:
            self._out.append(packet)

    def packets_to_send(self, *, now: float) -> list[bytes]:
        if self._dirty:
            dirty = self._dirty
            self._dirty = {}
            out = self._out
            for conn in dirty:
                for seg in conn.segments_to_send(now=now):
                    out.append(build_tcp(seg))
                self._arm(conn)
                if conn.is_closed:
                    self.forget(conn)
        out, self._out = self._out, []
        self.stats["tx_packets"] += len(out)
        return out

    def _arm(self, conn: TcpConnection) -> None:
        deadline = conn.next_deadline()
        if deadline is None:
            self._armed.pop(conn, None)
            return
        if self._armed.get(conn) == deadline:
            return
        self._armed[conn] = deadline
        heapq.heappush(self._timers, (deadline, next(self._tiebreak), conn))

    def next_event(self) -> StackEvent | None:
        return self._events.popleft() if self._events else None

    def touched_flows(self) -> list[TcpConnection]:
        touched = list(self._touched)
        self._touched.clear()
        return touched

    # --- timers ------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if self._dirty:
            return float("-inf")  # output pending: flush now
        timers = self._timers
        while timers:
            deadline, _, conn = timers[0]
            if self._armed.get(conn) == deadline:
                break
            heapq.heappop(timers)  # stale entry
        candidates = [d for d in (self.reassembler.next_deadline(), self.nat.next_deadline()) if d is not None]
        if timers:
            candidates.append(timers[0][0])
        return min(candidates) if candidates else None

    def handle_timer(self, *, now: float) -> None:
        self.reassembler.handle_timer(now=now)
        self.nat.handle_timer(now=now)
        self._pull_nat_events()
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, conn = heapq.heappop(timers)
            if self._armed.get(conn) != deadline:
                continue
            del self._armed[conn]
            conn.handle_timer(now=now)
            self.mark(conn)

    def open_flow_count(self) -> int:
        return len(self.flows)

    def all_drops(self) -> DropCounter:
        """Drops counted here and in the sub-cores (reassembly, NAT, DNS), merged."""
        return DropCounter.combined(self.drops, self.reassembler.drops, self.nat.drops, self.dns.drops)
