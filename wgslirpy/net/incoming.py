"""Incoming forwards (``-t`` / ``-u``): host ports carried into the tunnel. Pure parts.

A forward listens on a host address (``HOST_ADDR``) and carries what arrives there to a
service inside the tunnel (``DST_ADDR``), presenting ``SRC_ADDR`` as the source — the
host client's own address and port when it is omitted, or ports chosen round-robin from
``--incoming-port-range`` when its port is 0 (the Rust wgslirpy v0.2 syntax
``HOST_ADDR,[SRC_ADDR],DST_ADDR``). This module holds what needs no socket:

* :class:`IncomingForward`: one validated forward (the record ``Config`` keeps).
* :class:`PortAllocator`: round-robin source ports that never collide with a live flow
  (the caller says which ports are taken for the 4-tuple it is about to use).
* :func:`tunnel_source`: the source a host client is presented as.
* :func:`quoted_tcp`: the TCP 4-tuple and sequence number an ICMP error quotes
  (RFC 792 / RFC 4443: the offending IP header plus at least 8 bytes of it), so the stack
  can fail an active open the peer's host reports unreachable (RFC 1122 §4.2.3.9,
  RFC 5927 §4.1: the quoted sequence number must be our SYN's).
* :class:`IncomingUdpTable`: one binding per (forward, host client address); replies
  from the binding's tunnel destination go back to that client; idle expiry.

The TCP side of a forward is an ordinary :class:`~wgslirpy.net.tcp.TcpConnection` made
by :meth:`TcpConnection.connect` and kept in the stack's flow table (the stack's
``open_tcp``); the gevent shell is ``io/incoming.py``.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from wgslirpy.errors import ConfigError
from wgslirpy.net.segments import IPAddress

__all__ = [
    "DEFAULT_PORT_RANGE",
    "IncomingForward",
    "IncomingUdpBinding",
    "IncomingUdpTable",
    "PortAllocator",
    "quoted_tcp",
    "tunnel_source",
]

#: source ports chosen for a SRC_ADDR with port 0 (Linux's ip_local_port_range)
DEFAULT_PORT_RANGE = (32768, 60999)

Proto = Literal["tcp", "udp"]
SocketAddress = tuple[IPAddress, int]


def _unmapped(addr: IPAddress) -> IPAddress:
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped if mapped is not None else addr


@dataclass(frozen=True)
class IncomingForward:
    """One ``-t``/``-u`` forward; validated on construction (ConfigError).

    Invariants: ``dst`` has a non-zero port; ``src``, when given, is of ``dst``'s family;
    without ``src`` the host address is of ``dst``'s family too (the host client's own
    address is then presented inside the tunnel), unless it is the IPv6 wildcard whose
    IPv4-mapped clients are unmapped (then clients of the other family are refused).
    """

    proto: Proto
    #: where we listen on the host
    host: SocketAddress
    #: the tunnel destination we connect / send to
    dst: SocketAddress
    #: the source presented inside the tunnel; None: the host client's address and port;
    #: port 0: a port from the allocator
    src: SocketAddress | None = None

    def __post_init__(self) -> None:
        opt = "--incoming-tcp" if self.proto == "tcp" else "--incoming-udp"
        if self.proto not in ("tcp", "udp"):
            raise ConfigError(f"incoming forward: protocol must be 'tcp' or 'udp', not {self.proto!r}")
        if self.dst[1] == 0:
            raise ConfigError(f"{opt}: the destination {_fmt(self.dst)} needs a port")
        if self.dst[0].is_unspecified or self.dst[0].is_multicast:
            raise ConfigError(f"{opt}: the destination {_fmt(self.dst)} must be a unicast address")
        if self.src is not None:
            if self.src[0].version != self.dst[0].version:
                raise ConfigError(
                    f"{opt}: source {_fmt(self.src)} and destination {_fmt(self.dst)} are of different address families"
                )
            if self.src[0].is_unspecified or self.src[0].is_multicast:
                raise ConfigError(f"{opt}: the source {_fmt(self.src)} must be a unicast address")
        elif self.host[0].version != self.dst[0].version and not (
            self.host[0].version == 6 and self.host[0].is_unspecified
        ):
            raise ConfigError(
                f"{opt}: listening on {_fmt(self.host)} for destination {_fmt(self.dst)} mixes address "
                "families: give a source address of the destination's family (HOST,SRC,DST)"
            )

    @property
    def option(self) -> str:
        return "-t" if self.proto == "tcp" else "-u"

    def describe(self) -> str:
        src = "client" if self.src is None else _fmt(self.src)
        return f"{self.option} {_fmt(self.host)},{src},{_fmt(self.dst)}"


def _fmt(a: SocketAddress) -> str:
    return f"[{a[0]}]:{a[1]}" if a[0].version == 6 else f"{a[0]}:{a[1]}"


def tunnel_source(forward: IncomingForward, client: SocketAddress) -> SocketAddress | None:
    """The source a host ``client`` is presented as inside the tunnel (port 0: allocate);
    None when the client's own address cannot be used (other address family)."""
    if forward.src is not None:
        return forward.src
    addr = _unmapped(client[0])
    if addr.version != forward.dst[0].version:
        return None
    return (addr, client[1])


def parse_port_range(text: str, what: str = "--incoming-port-range") -> tuple[int, int]:
    """``LOW-HIGH`` (inclusive, 1-65535, LOW <= HIGH)."""
    lo_s, sep, hi_s = text.strip().partition("-")
    try:
        lo, hi = int(lo_s, 10), int(hi_s if sep else lo_s, 10)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not a port range LOW-HIGH") from None
    check_port_range((lo, hi), what)
    return (lo, hi)


def check_port_range(r: tuple[int, int], what: str = "--incoming-port-range") -> None:
    lo, hi = r
    if not 1 <= lo <= hi <= 65535:
        raise ConfigError(f"{what}: {lo}-{hi} is not a port range within 1-65535 (LOW <= HIGH)")


class PortAllocator:
    """Round-robin ports from ``[low, high]``.

    Invariant: ``_next`` is in the range; each call starts after the last port handed out,
    so a port just released is the last to be reused (a late segment of an old flow is
    unlikely to meet a new one)."""

    def __init__(self, low: int, high: int) -> None:
        check_port_range((low, high))
        self.low = low
        self.high = high
        self._next = low

    def allocate(self, taken: Callable[[int], bool]) -> int | None:
        """The next port for which ``taken(port)`` is false; None if all are taken."""
        span = self.high - self.low + 1
        port = self._next
        for _ in range(span):
            candidate = port
            port = port + 1 if port < self.high else self.low
            if not taken(candidate):
                self._next = port
                return candidate
        return None


def quoted_tcp(quoted: bytes) -> tuple[IPAddress, int, IPAddress, int, int] | None:
    """(src, sport, dst, dport, seq) of the TCP segment an ICMP error quotes, or None if it
    quotes something else or too little."""
    if len(quoted) < 20:
        return None
    version = quoted[0] >> 4
    if version == 4:
        ihl = (quoted[0] & 0x0F) * 4
        if ihl < 20 or quoted[9] != 6 or len(quoted) < ihl + 8:
            return None
        if struct.unpack_from("!H", quoted, 6)[0] & 0x1FFF:
            return None  # not the first fragment: no TCP header
        src: IPAddress = ipaddress.IPv4Address(quoted[12:16])
        dst: IPAddress = ipaddress.IPv4Address(quoted[16:20])
        off = ihl
    elif version == 6:
        if len(quoted) < 48 or quoted[6] != 6:
            return None  # extension headers before TCP are not followed
        src = ipaddress.IPv6Address(quoted[8:24])
        dst = ipaddress.IPv6Address(quoted[24:40])
        off = 40
    else:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", quoted, off)
    return (src, sport, dst, dport, seq)


@dataclass(eq=False)
class IncomingUdpBinding:
    """One host client of one ``-u`` forward. Mutated only by its table."""

    #: unique within its table, never reused
    id: int
    #: index of the forward in the configuration
    forward: int
    #: the host client (as the listener's socket reports it)
    client: SocketAddress
    #: our tunnel source and the tunnel destination
    src: SocketAddress
    dst: SocketAddress
    #: latest activity either way; never decreases
    last_seen: float
    datagrams_out: int = 0
    datagrams_in: int = 0


class IncomingUdpTable:
    """Bindings of the ``-u`` forwards: by (forward, client) and by tunnel 4-tuple.

    Invariants: ``_by_client`` and ``_by_tunnel`` hold the same bindings; ``_by_client`` is in
    least recently used order (its head has the earliest idle deadline); no two bindings
    share a tunnel 4-tuple (src, sport, dst, dport)."""

    def __init__(self, *, idle_timeout: float) -> None:
        if not idle_timeout > 0:
            raise ConfigError("udp idle timeout must be positive")
        self.idle_timeout = idle_timeout
        self._by_client: OrderedDict[tuple[int, SocketAddress], IncomingUdpBinding] = OrderedDict()
        self._by_tunnel: dict[tuple[IPAddress, int, IPAddress, int], IncomingUdpBinding] = {}
        self._ids = 0

    def __len__(self) -> int:
        return len(self._by_client)

    def get(self, forward: int, client: SocketAddress) -> IncomingUdpBinding | None:
        return self._by_client.get((forward, client))

    def uses(self, src: SocketAddress, dst: SocketAddress) -> bool:
        """True if a binding already sends from ``src`` to ``dst``."""
        return (src[0], src[1], dst[0], dst[1]) in self._by_tunnel

    def open(
        self, forward: int, client: SocketAddress, src: SocketAddress, dst: SocketAddress, *, now: float
    ) -> IncomingUdpBinding | None:
        """A new binding; None if its tunnel 4-tuple is in use (by another client)."""
        tkey = (src[0], src[1], dst[0], dst[1])
        if tkey in self._by_tunnel:
            return None
        self._ids += 1
        b = IncomingUdpBinding(self._ids, forward, client, src, dst, now)
        self._by_client[(forward, client)] = b
        self._by_tunnel[tkey] = b
        return b

    def touch(self, b: IncomingUdpBinding, *, now: float, outbound: bool) -> None:
        b.last_seen = max(b.last_seen, now)
        if outbound:
            b.datagrams_out += 1
        else:
            b.datagrams_in += 1
        self._by_client.move_to_end((b.forward, b.client))

    def match(self, src: IPAddress, sport: int, dst: IPAddress, dport: int) -> IncomingUdpBinding | None:
        """The binding a datagram from the tunnel (``src``:``sport`` -> ``dst``:``dport``)
        replies to: one sending from ``dst``:``dport`` to ``src``:``sport``."""
        return self._by_tunnel.get((dst, dport, src, sport))

    def next_deadline(self) -> float | None:
        for b in self._by_client.values():
            return b.last_seen + self.idle_timeout
        return None

    def expire(self, *, now: float) -> list[IncomingUdpBinding]:
        """Remove and return the bindings idle for ``idle_timeout``."""
        gone: list[IncomingUdpBinding] = []
        while self._by_client:
            key, b = next(iter(self._by_client.items()))
            if b.last_seen + self.idle_timeout > now:
                break
            del self._by_client[key]
            del self._by_tunnel[(b.src[0], b.src[1], b.dst[0], b.dst[1])]
            gone.append(b)
        return gone

    def close_forward(self, forward: int) -> list[IncomingUdpBinding]:
        """Remove every binding of ``forward`` (its listener stopped)."""
        gone = [b for b in self._by_client.values() if b.forward == forward]
        for b in gone:
            del self._by_client[(b.forward, b.client)]
            del self._by_tunnel[(b.src[0], b.src[1], b.dst[0], b.dst[1])]
        return gone
