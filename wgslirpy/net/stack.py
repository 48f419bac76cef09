"""The userspace IP stack facing the WireGuard peer: pure dispatch, no I/O.

Contract (the vocabulary of *The sans-IO contract* in docs/ARCHITECTURE.md):

* ``receive_ip(packet, now=)`` takes one decrypted inner packet from the tunnel. Fragments
  are reassembled, then the packet is decoded and dispatched: TCP to its
  :class:`~wgslirpy.net.tcp.TcpConnection` (a bare SYN for a new 4-tuple creates one and
  emits :class:`TcpConnectRequested`), UDP to the NAT table (emitting :class:`UdpSend`) or
  to the DNS responder, ICMP echo to the ``-P`` addresses. Malformed or unwanted input is
  dropped and counted in ``drops``; nothing raises. ``receive_ips(burst)`` does the same for
  each ``(packet, now)`` of a burst read at once, and lets a pure ACK be absorbed by the next
  ACK of its flow when that one acknowledges strictly more (no data, SACK blocks or flags
  but ACK in either; counted in ``stats.tcp_acks_absorbed``).
* ``packets_to_send(now=)`` drains IP packets for the tunnel: replies queued by the stack
  plus every segment the touched TCP connections want to send. Packets larger than the
  MTU are fragmented here.
* ``next_event()`` pops shell events; ``touched_flows()`` drains the TCP connections whose
  state moved since the last call (the shell wakes their greenlets).
* ``next_deadline()`` / ``handle_timer(now=)``: the minimum over reassembly, the NAT table
  and every TCP connection (a lazy heap, so idle flows cost nothing per turn).
* Host-side operations on a TCP flow: ``tcp_accept``, ``tcp_refuse``, ``tcp_unreachable``,
  ``tcp_send``, ``tcp_read``, ``tcp_close`` (shut our write side: FIN), ``tcp_abort`` (RST).
  The shell drives a :class:`~wgslirpy.net.tcp.TcpConnection` only through them; each marks
  the flow, so what it produced leaves with the next ``packets_to_send`` (the gateway's one
  flush) without the shell remembering to. Other shell callbacks: ``udp_reply``,
  ``udp_icmp_error``, ``udp_port_unreachable``, ``udp_binding_failed``, ``dns_udp_reply``.
* Incoming forwards (``-t``/``-u``, net/incoming.py): ``open_tcp`` makes an active open
  (an ICMP unreachable quoting its SYN fails it, RFC 1122 §4.2.3.9); ``incoming_udp_send``
  sends a host client's datagram through its binding, whose replies come back as
  :class:`IncomingUdpReply` (before the NAT and the policy: the user asked for them) and
  which expires after ``udp_idle_timeout`` (:class:`IncomingUdpClosed`).

Policy decided here, not in the shell: each new TCP flow and each UDP datagram is judged
by the destination :class:`~wgslirpy.net.policy.Policy` (``--allow``/``--deny``; loopback,
link-local, multicast and broadcast denied by default): a denied TCP SYN gets a RST, a
denied UDP datagram an ICMP administratively prohibited (multicast and broadcast ones are
only counted: no ICMP error, RFC 1122 §3.2.2, and no log line, as clients send them in
normal use). Limits: past ``max_tcp_flows`` open flows or
``max_pending_connects`` dials in progress a SYN gets a RST. Every refusal is counted
and queued as :class:`FlowRefused` (the shell logs it, rate-limited). Only bare SYNs create
flows (any other segment for an unknown flow is answered with RST, as RFC 9293 §3.10.7.1
says); the ``-P`` and ``-D`` addresses are served by us and never forwarded.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .. import constants as C
from ..errors import DropCounter, DropReason
from .build import build_icmp_echo, build_icmp_error, build_icmp_unreachable, build_tcp, build_udp
from .dns import DnsQuestion, DnsResponder
from .fragments import Reassembler, fragment_ip
from .incoming import DEFAULT_PORT_RANGE, IncomingUdpBinding, IncomingUdpTable, PortAllocator, quoted_tcp
from .packet import decode_ip
from .policy import Policy, Rule
from .segments import (
    Decoded,
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
from .tcp import State, TcpConfig, TcpConnection
from .udp_nat import BindingClosed, BindingOpened, UdpBinding, UdpNatTable, reply_source

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
    max_tcp_flows: int = C.DEFAULT_MAX_TCP_FLOWS
    #: new TCP flows while this many dials are in progress are refused with RST
    max_pending_connects: int = C.DEFAULT_MAX_PENDING_CONNECTS
    #: bytes of fragments held for reassembly at most
    max_reassembly_bytes: int = C.DEFAULT_MAX_REASSEMBLY_BYTES
    #: the user's destination rules (--allow/--deny, first match wins), before the defaults
    rules: tuple[Rule, ...] = ()
    #: source ports for incoming forwards whose SRC_ADDR has port 0 (round-robin)
    incoming_ports: tuple[int, int] = DEFAULT_PORT_RANGE


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

    proto: IpProto  # IpProto.TCP or IpProto.UDP (the log line writes its name)
    src: tuple[IPAddress, int]
    dst: tuple[IPAddress, int]
    reason: DropReason
    #: why, for the log line (names the option that changes it)
    why: str = ""


@dataclass(frozen=True, slots=True)
class IncomingUdpReply:
    """A datagram from the tunnel for an incoming ``-u`` binding: send ``payload`` to
    ``binding.client`` from the listener of forward ``binding.forward``."""

    binding: IncomingUdpBinding
    payload: bytes


@dataclass(frozen=True, slots=True)
class IncomingUdpClosed:
    """An incoming ``-u`` binding expired (idle for ``udp_idle_timeout``)."""

    binding: IncomingUdpBinding


@dataclass(slots=True)
class StackStats:
    """The stack's counters (``Gateway.stats()["stack"]``); each only grows."""

    rx_packets: int = 0
    tx_packets: int = 0
    tcp_flows_opened: int = 0
    icmp_echo_replies: int = 0
    dns_queries: int = 0
    tcp_time_wait_reopened: int = 0
    udp_icmp_errors_relayed: int = 0
    #: active opens of -t forwards, and those an ICMP unreachable failed; reported only once
    #: non-zero (a gateway without -t never shows them)
    tcp_incoming_opened: int = 0
    tcp_incoming_unreachable: int = 0
    #: pure ACKs of a burst that the next ACK of their flow made redundant (receive_ips)
    tcp_acks_absorbed: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name, as the stats line and ``--stats-json`` show them."""
        out = {name: getattr(self, name) for name in _ALWAYS_REPORTED}
        for name in _REPORTED_ONCE_USED:
            if n := getattr(self, name):
                out[name] = n
        return out


#: TcpFlags.SYN as a plain int: the per-segment test on an existing flow skips IntFlag's
#: Python-level ``&`` (~0.4 us a segment).
_SYN = int(TcpFlags.SYN)
_ACK_ONLY = int(TcpFlags.ACK)


def _is_pure_ack(seg: TcpSegment) -> bool:
    """ACK alone: no data, no SYN/FIN/RST/PSH/URG, no SACK blocks (see Stack.receive_ips)."""
    return int(seg.flags) == _ACK_ONLY and not seg.payload and not seg.sack_blocks


def _absorbs(later: TcpSegment, earlier: TcpSegment) -> bool:
    """Two pure ACKs of one flow (the very address objects: decoding memoises them), the
    later from the same sequence number acknowledging strictly more, its timestamp not
    older: processing the later alone loses nothing."""
    if (
        later.sport != earlier.sport
        or later.dport != earlier.dport
        or later.src is not earlier.src
        or later.dst is not earlier.dst
        or later.seq != earlier.seq
    ):
        return False
    if not 0 < ((later.ack - earlier.ack) & 0xFFFFFFFF) < 0x80000000:
        return False
    ts = earlier.ts_val
    return ts is None or (later.ts_val is not None and ((later.ts_val - ts) & 0xFFFFFFFF) < 0x80000000)


_REPORTED_ONCE_USED = ("tcp_incoming_opened", "tcp_incoming_unreachable", "tcp_acks_absorbed")
_ALWAYS_REPORTED = tuple(n for n in StackStats.__dataclass_fields__ if n not in _REPORTED_ONCE_USED)

#: BindingOpened/BindingClosed come straight from the NAT table (net/udp_nat.py).
StackEvent = (
    TcpConnectRequested
    | DnsTcpRequested
    | UdpSend
    | BindingOpened
    | BindingClosed
    | DnsLookup
    | FlowRefused
    | IncomingUdpReply
    | IncomingUdpClosed
)


@dataclass(frozen=True, slots=True)
class HostIcmpError:
    """An ICMP error the host received about one of a binding's datagrams (as the kernel
    reports it: ``sock_extended_err`` ee_origin ICMP/ICMP6, ee_type, ee_code, ee_info)."""

    icmp6: bool
    type: int
    code: int
    #: IPv4 frag needed / ICMPv6 packet too big: the MTU; parameter problem: the pointer
    info: int = 0


#: RFC 7915 §4.2: ICMPv4 destination-unreachable codes as ICMPv6 (type, code)
_UNREACH_4TO6 = {
    0: (1, 0),
    1: (1, 0),
    2: (4, 1),
    3: (1, 4),
    5: (1, 0),
    6: (1, 0),
    7: (1, 0),
    8: (1, 0),
    9: (1, 1),
    10: (1, 1),
    11: (1, 0),
    12: (1, 0),
    13: (1, 1),
    15: (1, 1),
}


def relay_icmp_error(err: HostIcmpError, client_v6: bool) -> tuple[int, int, int] | None:
    """(type, code, rest-of-header word) of the error to send a client of that family, or
    None for a message that is not a relayable error. Same family: unreachable, time
    exceeded, parameter problem and packet too big pass through as they are; an ICMPv4
    error for an IPv6 client (an IPv4-mapped remote) is translated per RFC 7915 §4.2."""
    t, c, info = err.type, err.code, err.info & 0xFFFFFFFF
    if err.icmp6:
        if not client_v6:
            return None
        if t == 1 or t == 3:
            return (t, c, 0)
        if t == 2:
            return (2, 0, max(info, 1280))
        if t == 4:
            return (4, c, info)
        return None
    if not client_v6:
        if t == 3:
            return (3, c, info & 0xFFFF if c == 4 else 0)
        if t == 11:
            return (11, c, 0)
        if t == 12:
            return (12, c, (info & 0xFF) << 24)
        return None
    if t == 3:
        if c == 4:
            return (2, 0, max(info + 20, 1280))
        mapped = _UNREACH_4TO6.get(c)
        if mapped is None:
            return None
        return (*mapped, 6 if mapped[0] == 4 else 0)
    if t == 11:
        return (3, c, 0)
    if t == 12:
        return (4, 0, 0)
    return None


def _unforwardable(addr: IPAddress) -> bool:
    """Multicast and broadcast destinations (IPv4-mapped included): denied by default, and
    never answered with an ICMP error (RFC 1122 §3.2.2)."""
    mapped = getattr(addr, "ipv4_mapped", None) or addr
    return mapped.is_multicast or (mapped.version == 4 and int(mapped) == 0xFFFFFFFF)


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
        self.reassembler = Reassembler(max_bytes=config.max_reassembly_bytes)
        self.policy = Policy(config.rules, allow_loopback=config.allow_loopback)
        self.nat = UdpNatTable(idle_timeout=config.udp_idle_timeout, max_bindings=config.max_udp_bindings)
        self.dns = DnsResponder(ttl=config.dns_ttl)
        #: incoming -u bindings (net/incoming.py) and source ports for -t/-u with port 0
        self.incoming_udp = IncomingUdpTable(idle_timeout=config.udp_idle_timeout)
        self._incoming_ports = {p: PortAllocator(*config.incoming_ports) for p in ("tcp", "udp")}
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
        #: lazy heap of (time, tiebreak, flow). A flow's live entry is the one whose time is
        #: ``_queued[flow]``; every other entry of it is stale and skipped on pop. An entry is
        #: pushed only when a deadline moves *earlier* than the live entry (a later deadline
        #: is noticed when the live entry pops and is re-pushed then), and the heap is rebuilt
        #: when stale entries outnumber live ones, so len(_timers) <= 2 * len(_queued) + 64.
        self._timers: list[tuple[float, int, TcpConnection]] = []
        self._tiebreak = itertools.count()
        #: each flow's current deadline (absent: none); always >= ``_queued[flow]``
        self._armed: dict[TcpConnection, float] = {}
        #: flows handed to the shell to dial and not yet accepted, refused or closed
        self._dialing: dict[TcpConnection, None] = {}
        #: time of each flow's live heap entry; a flow in ``_armed`` is always in here
        self._queued: dict[TcpConnection, float] = {}
        #: drop reasons and counters of the TCP flows already forgotten (live ones are
        #: added when asked: ``all_drops``, ``tcp_counters``)
        self._retired_tcp_drops = DropCounter()
        self._retired_tcp_counters: dict[str, int] = {}
        self.stats = StackStats()

    # --- input from the tunnel ---------------------------------------------------------

    def receive_ip(self, packet: bytes, *, now: float) -> None:
        self.stats.rx_packets += 1
        whole = self.reassembler.receive(packet, now=now)
        if whole is None:
            return
        if isinstance(whole, DropReason):
            self.drops.add(whole)
            return
        self._dispatch(decode_ip(whole), whole, now)

    def receive_ips(self, packets: Iterable[tuple[bytes, float]]) -> None:
        """:meth:`receive_ip` for each ``(packet, now)`` of one burst, in order, except that
        a pure ACK directly followed by a newer pure ACK of the same flow is absorbed by it.

        A cumulative ACK carries everything the one before it did when neither has data,
        SYN, FIN, RST or SACK blocks and the later one acknowledges more from the same
        sequence number (duplicate ACKs are never absorbed: without SACK, loss recovery
        counts them). The later one's window and timestamp are the newer ones. Processing
        one instead of a run of them is what a burst read from the socket allows, as
        Linux's GRO does for the segments it merges (counted: ``tcp_acks_absorbed``).
        """
        stats = self.stats
        reassemble = self.reassembler.receive
        held: TcpSegment | None = None  # a pure ACK waiting to see whether the next absorbs it
        held_now = 0.0
        for packet, now in packets:
            stats.rx_packets += 1
            whole = reassemble(packet, now=now)
            if whole is None:
                continue
            if isinstance(whole, DropReason):
                self.drops.add(whole)
                continue
            decoded = decode_ip(whole)
            ack = decoded if type(decoded) is TcpSegment and _is_pure_ack(decoded) else None
            if held is not None:
                if ack is not None and _absorbs(ack, held):
                    stats.tcp_acks_absorbed += 1
                else:
                    self._receive_tcp(held, held_now)
                held = None
            if ack is not None:
                held, held_now = ack, now
            else:
                self._dispatch(decoded, whole, now)
        if held is not None:
            self._receive_tcp(held, held_now)

    def _dispatch(self, decoded: Decoded | DropReason, whole: bytes, now: float) -> None:
        if isinstance(decoded, TcpSegment):
            self._receive_tcp(decoded, now)
        elif isinstance(decoded, UdpDatagram):
            self._receive_udp(decoded, whole, now)
        elif isinstance(decoded, IcmpEcho):
            self._receive_echo(decoded)
        elif isinstance(decoded, DropReason):
            self.drops.add(decoded)
        elif isinstance(decoded, IcmpError) and self._icmp_fails_connect(decoded, now):
            pass  # an unreachable about the SYN of one of our active opens (-t) failed it
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
            if int(seg.flags) & _SYN and conn.state is State.TIME_WAIT and conn.can_reopen(seg):
                # RFC 6191 / RFC 1122 4.2.2.13: a SYN beyond the old incarnation (by
                # timestamp, else by sequence number) reopens at once, no challenge ACK.
                self.forget(conn)
                self.stats.tcp_time_wait_reopened += 1
                self._open_flow(seg, key, now)
                return
            conn.handle_segment(seg, now=now)
            self.mark(conn)
            if not conn.is_closed:
                return
            # A closed flow (e.g. after TIME-WAIT or an abort) gives way to a new SYN.
            if not (seg.flags & TcpFlags.SYN and not seg.flags & TcpFlags.ACK):
                return
            self.forget(conn)
            self._dirty[conn] = None  # still drain what it answered
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
        if dst in self._served:
            self.drops.add(DropReason.NOT_FOR_US)
            self._reset_for(syn)
            return
        decision = self.policy.decide(dst, syn.dport)
        if not decision.allowed:
            reason = DropReason.TCP_LOOPBACK_REFUSED if decision.category == "loopback" else DropReason.TCP_DENIED
            self._refuse(IpProto.TCP, syn.src, syn.sport, dst, syn.dport, reason, decision.explain())
            self._reset_for(syn)
            return
        if len(self.flows) >= self.config.max_tcp_flows:
            why = f"{self.config.max_tcp_flows} TCP flows are open (--max-tcp-flows)"
            self._refuse(IpProto.TCP, syn.src, syn.sport, dst, syn.dport, DropReason.TCP_FLOW_LIMIT, why)
            self._reset_for(syn)
            return
        if len(self._dialing) >= self.config.max_pending_connects:
            why = f"{self.config.max_pending_connects} connects are in progress (--max-pending-connects)"
            self._refuse(IpProto.TCP, syn.src, syn.sport, dst, syn.dport, DropReason.TCP_CONNECT_LIMIT, why)
            self._reset_for(syn)
            return
        conn = self._new_flow(syn, key, now)
        self._dialing[conn] = None
        self._events.append(TcpConnectRequested(conn))

    def _new_flow(self, syn: TcpSegment, key: FlowKey, now: float) -> TcpConnection:
        conn = TcpConnection(syn, self.config.tcp, now=now, rng=self._rng)
        self.flows[key] = conn
        self.stats.tcp_flows_opened += 1
        return conn

    def _refuse(
        self, proto: IpProto, src: IPAddress, sport: int, dst: IPAddress, dport: int, reason: DropReason, why: str
    ) -> None:
        self.drops.add(reason)
        self._events.append(FlowRefused(proto, (src, sport), (dst, dport), reason, why))

    def _reset_for(self, seg: TcpSegment) -> None:
        """RST answering ``seg`` (RFC 9293 §3.10.7.1: seq from its ACK, else ACK its span)."""
        if seg.flags & TcpFlags.ACK:
            seq, ack, flags = seg.ack, 0, TcpFlags.RST
        else:
            seq, ack, flags = 0, (seg.seq + seg.seg_len) & 0xFFFFFFFF, TcpFlags.RST | TcpFlags.ACK
        rst = TcpSegment(seg.dst, seg.src, seg.dport, seg.sport, seq, ack, flags, 0)
        self._out.append(build_tcp(rst))

    def _receive_udp(self, d: UdpDatagram, raw: bytes, now: float) -> None:
        if self.incoming_udp and (b := self.incoming_udp.match(d.src, d.sport, d.dst, d.dport)) is not None:
            self.incoming_udp.touch(b, now=now, outbound=False)
            self._events.append(IncomingUdpReply(b, d.payload))
            return
        if (d.dst, d.dport) in self.config.dns:
            self._receive_dns(d)
            return
        dst = d.dst
        if dst in self._served:
            self._out.append(build_icmp_unreachable(d.dst, d.src, Unreachable.PORT, raw))
            self.drops.add(DropReason.NOT_FOR_US)
            return
        if d.dport == 0:
            self.drops.add(DropReason.NOT_FOR_US)
            return
        decision = self.policy.decide(dst, d.dport)
        if not decision.allowed:
            if _unforwardable(dst):
                # mDNS, SSDP, router solicitations: what clients send in normal use; counted,
                # not logged, and never answered with an ICMP error
                self.drops.add(DropReason.UDP_DENIED)
                return
            reason = DropReason.UDP_LOOPBACK_REFUSED if decision.category == "loopback" else DropReason.UDP_DENIED
            self._refuse(IpProto.UDP, d.src, d.sport, dst, d.dport, reason, decision.explain())
            self._out.append(build_icmp_unreachable(d.dst, d.src, Unreachable.ADMIN, raw))
            return
        binding = self.nat.outbound(d, now=now)
        self._pull_nat_events()
        self._events.append(UdpSend(binding, d.dst, d.dport, d.payload))

    def _receive_dns(self, d: UdpDatagram) -> None:
        self.stats.dns_queries += 1
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
        self.stats.icmp_echo_replies += 1

    def _pull_nat_events(self) -> None:
        while (ev := self.nat.next_event()) is not None:
            self._events.append(ev)

    # --- host-side operations on a TCP flow ------------------------------------------
    # The shell drives a connection only through these: each marks the flow, so its
    # output goes out with the next ``packets_to_send`` (the gateway's flush) and its new
    # deadline is armed. Reading the connection's state (``send_space``, ``peer_eof``,
    # ``next_event``, ...) needs no operation.

    def tcp_accept(self, conn: TcpConnection, *, now: float) -> None:
        """The dial succeeded: answer the peer's SYN with SYN-ACK."""
        conn.accept(now=now)
        self.mark(conn)

    def tcp_refuse(self, conn: TcpConnection) -> None:
        """The destination refused: answer the peer's SYN with RST (and forget the flow)."""
        conn.refuse()
        self.mark(conn)

    def tcp_send(self, conn: TcpConnection, data: bytes | memoryview, *, now: float) -> int:
        """Queue host bytes for the peer; returns how many the connection took (at most
        ``conn.send_space``: the backpressure)."""
        n = conn.send(data, now=now)
        if n:
            self.mark(conn)
        return n

    def tcp_read(self, conn: TcpConnection, max_bytes: int | None = None) -> bytes:
        """Take in-order peer bytes for the host (``b""``: none now); the window that opens
        goes out as a window update when it is worth one."""
        data = conn.read(max_bytes)
        if data:
            self.mark(conn)
        return data

    def tcp_close(self, conn: TcpConnection, *, now: float) -> None:
        """Host EOF (shutdown of our write side): FIN after the queued data."""
        conn.close(now=now)
        self.mark(conn)

    def tcp_abort(self, conn: TcpConnection) -> None:
        """Reset the flow (RST to the peer) and close it; a no-op once closed."""
        conn.abort()
        self.mark(conn)

    def tcp_unreachable(self, conn: TcpConnection, kind: Unreachable) -> None:
        """The dial for ``conn`` failed (no route, timeout): ICMP error quoting its SYN; forget it."""
        syn = conn.syn
        self._emit(build_icmp_unreachable(syn.dst, syn.src, kind, build_tcp(syn)))
        self.forget(conn)

    def mark(self, conn: TcpConnection) -> None:
        """Note that ``conn`` may have output, a new deadline or news for its greenlet.
        The stack's own paths and the ``tcp_*`` operations call it; the shell never does."""
        self._dirty[conn] = None
        self._touched[conn] = None

    # --- shell callbacks ---------------------------------------------------------------

    def udp_reply(self, binding_id: int, remote: IPAddress, remote_port: int, payload: bytes, *, now: float) -> None:
        d = self.nat.inbound(binding_id, remote, remote_port, payload, now=now)
        if d is not None:
            self._emit(build_udp(d))

    def udp_port_unreachable(
        self, binding_id: int, remote: IPAddress, remote_port: int, payload_len: int = 0, *, now: float
    ) -> None:
        """The host's network refused a datagram from ``binding`` to ``remote``: tell the client."""
        icmp6 = remote.version == 6
        port_unreachable = HostIcmpError(icmp6, 1, 4) if icmp6 else HostIcmpError(False, 3, 3)
        self.udp_icmp_error(binding_id, remote, remote_port, payload_len, port_unreachable, now=now)

    def udp_icmp_error(
        self,
        binding_id: int,
        remote: IPAddress,
        remote_port: int,
        payload_len: int,
        error: HostIcmpError,
        *,
        offender: IPAddress | None = None,
        now: float,
    ) -> None:
        """The host's socket for ``binding`` got ``error`` about a datagram to ``remote``:
        relay the same ICMP type and code to the client (translated to its family per
        RFC 7915 §4.2 when needed). The binding stays.

        The quoted packet is rebuilt from the binding (addresses, ports, length); a client
        matches the error to its socket by exactly those fields. The error comes from
        ``offender`` (the router that sent it) when the client's family can carry it.
        """
        b = self.nat.get(binding_id)
        if b is None:
            return
        dst = reply_source(b, remote)
        relayed = relay_icmp_error(error, b.client_addr.version == 6)
        if dst is None or relayed is None:
            self.drops.add(DropReason.UDP_FAMILY_MISMATCH if dst is None else DropReason.UNSUPPORTED_PROTOCOL)
            return
        src = reply_source(b, offender) if offender is not None else None
        if src is None or src.version != dst.version:
            src = dst
        original = build_udp(UdpDatagram(b.client_addr, dst, b.client_port, remote_port, bytes(min(payload_len, 8))))
        self.stats.udp_icmp_errors_relayed += 1
        self._emit(build_icmp_error(src, b.client_addr, *relayed, original))

    def udp_binding_failed(self, binding_id: int) -> None:
        """The shell could not keep the binding's socket: forget the binding."""
        self.nat.close(binding_id)
        self._pull_nat_events()

    def dns_udp_reply(self, client: tuple[IPAddress, int], server: tuple[IPAddress, int], wire: bytes) -> None:
        self._emit(build_udp(UdpDatagram(server[0], client[0], server[1], client[1], wire)))

    def forget(self, conn: TcpConnection) -> None:
        """Drop ``conn`` from the tables without sending anything; its drop reasons and
        counters are folded into the stack's totals (once)."""
        if self.flows.get(conn.key) is conn:
            del self.flows[conn.key]
            for reason, n in conn.drops.counts.items():
                self._retired_tcp_drops.add(reason, n)
            _add_counts(self._retired_tcp_counters, _tcp_counters(conn))
        self._dirty.pop(conn, None)
        self._armed.pop(conn, None)
        self._queued.pop(conn, None)
        self._dialing.pop(conn, None)

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
            dialing = self._dialing
            for conn in dirty:
                if dialing and conn in dialing and (conn.accepted or conn.is_closed):
                    del dialing[conn]
                for seg in conn.segments_to_send(now=now):
                    out.append(build_tcp(seg))
                if conn.is_closed or self.flows.get(conn.key) is not conn:
                    self.forget(conn)  # closed, or already forgotten: no timers
                else:
                    self._arm(conn)
        out, self._out = self._out, []
        self.stats.tx_packets += len(out)
        return out

    def _arm(self, conn: TcpConnection) -> None:
        deadline = conn.next_deadline()
        if deadline is None:
            self._armed.pop(conn, None)
            return
        self._armed[conn] = deadline
        queued = self._queued.get(conn)
        if queued is not None and queued <= deadline:
            return  # the live entry pops first and re-pushes the later deadline
        self._push(conn, deadline)

    def _push(self, conn: TcpConnection, deadline: float) -> None:
        self._queued[conn] = deadline
        timers = self._timers
        heapq.heappush(timers, (deadline, next(self._tiebreak), conn))
        if len(timers) > 2 * len(self._queued) + 64:
            queued = self._queued
            self._timers = [e for e in timers if queued.get(e[2]) == e[0]]
            heapq.heapify(self._timers)

    def timer_entries(self) -> int:
        """Entries in the deadline heap, stale ones included (bounded; for tests and stats)."""
        return len(self._timers)

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
        queued, armed = self._queued, self._armed
        while timers:
            t, _, conn = timers[0]
            if queued.get(conn) == t:
                deadline = armed.get(conn)
                if deadline == t:
                    break
                # The deadline moved later (or went away): move the live entry along.
                heapq.heappop(timers)
                del queued[conn]
                if deadline is not None:
                    self._push(conn, deadline)
                timers = self._timers
                continue
            heapq.heappop(timers)  # stale entry
        candidates = [
            d
            for d in (self.reassembler.next_deadline(), self.nat.next_deadline(), self.incoming_udp.next_deadline())
            if d is not None
        ]
        if timers:
            candidates.append(timers[0][0])
        return min(candidates) if candidates else None

    def handle_timer(self, *, now: float) -> None:
        self.reassembler.handle_timer(now=now)
        self.nat.handle_timer(now=now)
        self._pull_nat_events()
        if self.incoming_udp:
            for b in self.incoming_udp.expire(now=now):
                self._events.append(IncomingUdpClosed(b))
        queued, armed = self._queued, self._armed
        while self._timers and self._timers[0][0] <= now:
            t, _, conn = heapq.heappop(self._timers)
            if queued.get(conn) != t:
                continue  # stale entry
            del queued[conn]
            deadline = armed.get(conn)
            if deadline is None:
                continue
            if deadline > now:
                self._push(conn, deadline)  # moved later since this entry was pushed
                continue
            del armed[conn]
            conn.handle_timer(now=now)
            self.mark(conn)

    # --- incoming forwards (-t / -u; net/incoming.py) ---------------------------------

    def open_tcp(self, src: IPAddress, sport: int, dst: IPAddress, dport: int, *, now: float) -> TcpConnection | None:
        """Active open from ``src``:``sport`` (0: a port from the incoming range) to the
        tunnel's ``dst``:``dport``; the SYN goes out with the next ``packets_to_send``.
        None if the 4-tuple is in use, no port is free or ``max_tcp_flows`` are open."""
        if len(self.flows) >= self.config.max_tcp_flows:
            self.drops.add(DropReason.TCP_FLOW_LIMIT)
            return None
        if sport == 0:
            port = self._incoming_ports["tcp"].allocate(lambda p: (dst, dport, src, p) in self.flows)
            if port is None:
                self.drops.add(DropReason.INCOMING_NO_PORT)
                return None
            sport = port
        key = (dst, dport, src, sport)
        if key in self.flows:
            self.drops.add(DropReason.INCOMING_TUPLE_IN_USE)
            return None
        conn = TcpConnection.connect(
            local=src, lport=sport, peer=dst, pport=dport, config=self.config.tcp, now=now, rng=self._rng
        )
        self.flows[key] = conn
        self.stats.tcp_flows_opened += 1
        self.stats.tcp_incoming_opened += 1
        self.mark(conn)
        return conn

    def _icmp_fails_connect(self, err: IcmpError, now: float) -> bool:
        """An ICMP(v6) destination unreachable (not "fragmentation needed") quoting the SYN
        of a flow in SYN-SENT (same 4-tuple and sequence number) fails it: True."""
        v6 = err.src.version == 6
        if not ((v6 and err.type == 1) or (not v6 and err.type == 3 and err.code != 4)):
            return False
        q = quoted_tcp(err.quoted)
        if q is None:
            return False
        src, sport, dst, dport, seq = q
        conn = self.flows.get((dst, dport, src, sport))
        if conn is None or seq != conn.iss or not conn.peer_unreachable():
            return False
        self.stats.tcp_incoming_unreachable += 1
        self.mark(conn)
        return True

    def incoming_udp_send(
        self,
        forward: int,
        client: tuple[IPAddress, int],
        src: tuple[IPAddress, int],
        dst: tuple[IPAddress, int],
        payload: bytes,
        *,
        now: float,
    ) -> IncomingUdpBinding | None:
        """A datagram from host ``client`` of ``-u`` forward ``forward``: send it from
        ``src`` (port 0: allocated when the binding opens) to the tunnel's ``dst``,
        fragmented to the MTU. None (counted) if no binding could be made."""
        table = self.incoming_udp
        b = table.get(forward, client)
        if b is None:
            if src[1] == 0:
                port = self._incoming_ports["udp"].allocate(lambda p: table.uses((src[0], p), dst))
                if port is None:
                    self.drops.add(DropReason.INCOMING_NO_PORT)
                    return None
                src = (src[0], port)
            b = table.open(forward, client, src, dst, now=now)
            if b is None:
                self.drops.add(DropReason.INCOMING_TUPLE_IN_USE)
                return None
        table.touch(b, now=now, outbound=True)
        self._emit(build_udp(UdpDatagram(b.src[0], b.dst[0], b.src[1], b.dst[1], payload)))
        return b

    def open_flow_count(self) -> int:
        return len(self.flows)

    def pending_connect_count(self) -> int:
        """Dials handed to the shell and not yet answered (bounded by max_pending_connects)."""
        return len(self._dialing)

    def all_drops(self) -> DropCounter:
        """Drops counted here and in the sub-cores (reassembly, NAT, DNS, every TCP flow,
        live or forgotten), merged."""
        return DropCounter.combined(
            self.drops,
            self.reassembler.drops,
            self.nat.drops,
            self.dns.drops,
            self._retired_tcp_drops,
            *(conn.drops for conn in self.flows.values()),
        )

    def tcp_counters(self) -> dict[str, int]:
        """Sums of the TCP flows' event counters (RTOs, recoveries, ...), live or forgotten."""
        total = dict(self._retired_tcp_counters)
        for conn in self.flows.values():
            _add_counts(total, _tcp_counters(conn))
        return total


def _tcp_counters(conn: TcpConnection) -> dict[str, int]:
    return conn.counters.as_dict()


def _add_counts(total: dict[str, int], counts: dict[str, int]) -> None:
    for name, n in counts.items():
        total[name] = total.get(name, 0) + n
