"""Parsed inner packets: the values every network core works with.

These immutable values are the contract between the decoders (``net/packet.py``: a
struct fast path and impacket), the encoders (``net/build.py``) and the pure cores
(``net/tcp.py``, ``net/udp_nat.py``, ``net/dns.py``, ``net/stack.py``). Cores and their
tests see only these values, never impacket objects and never raw headers.

Addresses are :mod:`ipaddress` objects; whether a packet is IPv4 or IPv6 follows from
``src.version``. Sequence numbers, ports and windows are plain ints in wire range.

The types are immutable ``NamedTuple`` classes rather than frozen dataclasses: one is made
for every packet in each direction, and a frozen dataclass with slots costs about 4 µs to
construct against 0.6 µs for a NamedTuple (measured here). Compare them with ``==`` only
against values of the same type (tuple equality ignores the class); copy with ``_replace``.
Hot paths pass the leading header fields positionally (a keyword costs more than the field):
their order is part of the contract and pinned by ``tests/test_segments.py``.
"""

from __future__ import annotations

import enum
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

IPAddress = IPv4Address | IPv6Address


class IpProto(enum.IntEnum):
    IPV6_HOP_BY_HOP = 0
    ICMP = 1
    TCP = 6
    UDP = 17
    IPV6_ROUTING = 43
    IPV6_FRAGMENT = 44
    ICMPV6 = 58
    IPV6_NONXT = 59
    IPV6_DEST_OPTS = 60


#: IPv6 extension headers that may stand between the fixed header and a Fragment header
#: or the upper layer (RFC 8200 §4.1); plain ints for fast membership tests.
IPV6_EXTENSION_CHAIN = (int(IpProto.IPV6_HOP_BY_HOP), int(IpProto.IPV6_ROUTING), int(IpProto.IPV6_DEST_OPTS))


class TcpFlags(enum.IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


class TcpSegment(NamedTuple):
    """One TCP segment with the options we understand.

    ``window`` is the raw 16-bit field as on the wire (not scaled). Options absent on
    the wire are ``None``/``False``/``()``. ``sack_blocks`` are (left, right) edges.
    """

    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    seq: int
    ack: int
    flags: TcpFlags
    window: int
    payload: bytes = b""
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    ts_val: int | None = None
    ts_ecr: int | None = None

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies (payload + SYN + FIN)."""
        n = len(self.payload)
        if self.flags & TcpFlags.SYN:
            n += 1
        if self.flags & TcpFlags.FIN:
            n += 1
        return n


class UdpDatagram(NamedTuple):
    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    payload: bytes


class IcmpEcho(NamedTuple):
    """ICMP echo (IPv4) or ICMPv6 echo (IPv6) request or reply."""

    src: IPAddress
    dst: IPAddress
    is_request: bool
    ident: int
    seq: int
    payload: bytes


class IcmpError(NamedTuple):
    """An ICMP/ICMPv6 error message (unreachable, time exceeded, too big...).

    ``quoted`` is the start of the offending packet as carried in the message.
    """

    src: IPAddress
    dst: IPAddress
    type: int
    code: int
    quoted: bytes


class OtherIp(NamedTuple):
    """A well-formed IP packet of a protocol we do not handle (kept for counting)."""

    src: IPAddress
    dst: IPAddress
    proto: int


Decoded = TcpSegment | UdpDatagram | IcmpEcho | IcmpError | OtherIp


# ICMP unreachable kinds the builders know, independent of IP version.
class Unreachable(enum.Enum):
    """Kinds of ICMP destination unreachable we send (ICMPv4 type 3 / ICMPv6 type 1 codes)."""

    NET = "net"
    HOST = "host"
    PORT = "port"
    ADMIN = "admin"  # administratively prohibited (e.g. the loopback policy)
    FRAG_NEEDED = "frag_needed"  # IPv4 DF set / IPv6 Packet Too Big
