"""IP fragment reassembly (inbound) and fragmentation (outbound); pure, takes ``now``.

Specs: IPv4 RFC 791 §3.2 (reassembly key: src, dst, protocol, identification);
IPv6 RFC 8200 §4.5 (key: src, dst, identification), RFC 5722 (any overlap drops the
whole datagram; applied to IPv4 too), RFC 6946 (an atomic fragment, offset 0 and M=0,
is processed at once, never mixed with a buffered datagram).

:class:`Reassembler` sits on the hot path in front of ``decode_ip``: a packet that is
not a fragment comes back as the very same object after a couple of byte tests. A
packet that is not recognisably a fragment (even a malformed one) passes through
unchanged too; ``decode_ip`` is the single place that judges it.

Counting contract: each drop is counted exactly once. A drop of the packet handed to
:meth:`Reassembler.receive` (and of the datagram it belonged to) is *returned* as a
DropReason for the caller to count. Drops of other datagrams, which happen behind
the caller's back (timeouts, evictions to make room), are counted in
``Reassembler.drops``.

Choices: an overlapped datagram is forgotten at once; later fragments of it start a
new reassembly that times out (RFC 5722 permits either). Memory is bounded by bytes
(payload plus a fixed per-fragment overhead, so tiny fragments cannot dodge it) and
by the number of pending datagrams; when full, the oldest other datagrams are evicted
(Linux does the same), so a flood cannot pin memory longer than the timeout.

:func:`fragment_ip` splits our own outgoing packets. IPv4 packets with DF set are not
split (returns ``[]``; our builders set DF on TCP only, whose segments fit the MSS).
The Identification comes from the ``ident`` argument or a process-wide counter: the
tunnel is authenticated, so unpredictable IDs (RFC 7739) buy nothing here.
"""

from __future__ import annotations

import bisect
import itertools
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import ConfigError, DropCounter, DropReason
from .checksum import checksum
from .segments import IPV6_EXTENSION_CHAIN, IpProto

__all__ = ["Reassembler", "fragment_ip"]

_FRAGMENT = int(IpProto.IPV6_FRAGMENT)
# First next-header values that may lead to a Fragment header.
_FRAGMENT_OR_CHAIN = frozenset((_FRAGMENT, *IPV6_EXTENSION_CHAIN))

_MF = 0x2000
_DF = 0x4000
_OFFSET_MASK = 0x1FFF
_IP_MAX = 65535
_FRAG_OVERHEAD = 64  # bytes charged per buffered fragment on top of its payload

_U16 = struct.Struct("!H")
_FRAG6 = struct.Struct("!BxHI")  # next header, reserved, offset|M, identification

_ident_counter: Iterator[int] = itertools.count(1)

# v4: (src, dst, id, proto); v6: (src, dst, id) -- address lengths tell them apart.
_Key = tuple[bytes, bytes, int, int] | tuple[bytes, bytes, int]


@dataclass(slots=True)
class _Datagram:
    """A datagram under reassembly."""

    deadline: float  # creation time + timeout; insertion order == deadline order
    # Fragments sorted by offset, pairwise non-overlapping: (offset, end, data).
    frags: list[tuple[int, int, bytes]] = field(default_factory=list)
    held: int = 0  # sum of len(data) over frags
    cost: int = 0  # bytes charged against Reassembler.max_bytes
    total: int | None = None  # fragmentable length, known once the last fragment came
    # From the offset-0 fragment: v4 its IP header; v6 the unfragmentable part.
    header: bytes | None = None
    nh_pos: int = 0  # v6: index in header of the Next Header byte to patch
    next_header: int = 0  # v6: the Fragment header's Next Header from offset 0


@dataclass(frozen=True, slots=True)
class _Fragment:
    """One fragment as parsed from the wire."""

    key: _Key
    offset: int
    data: bytes
    more: bool
    header: bytes  # v4 IP header; v6 unfragmentable part (IPv6 header + extensions)
    nh_pos: int
    next_header: int
    v6: bool


def _ipv6_fragment_header(packet: bytes, n: int) -> tuple[int, int] | None:
    """Find the Fragment header within ``packet[:n]``: (its offset, offset of the
    Next Header byte naming it). None if there is none or the chain cannot be walked
    (decode_ip will judge it).
    """
    nh = packet[6]
    nh_pos = 6
    off = 40
    while nh in IPV6_EXTENSION_CHAIN:
        if off + 8 > n:
            return None
        nh = packet[off]
        nh_pos = off
        off += (packet[off + 1] + 1) * 8
    if nh != _FRAGMENT or off + 8 > n:
        return None
    return off, nh_pos


def _parse(packet: bytes) -> _Fragment | None:
    """Parse a fragment; None if ``packet`` is not (recognisably) one."""
    n = len(packet)
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        total, ident, frag = struct.unpack_from("!HHH", packet, 2)
        if ihl < 20 or total < ihl or total > n:
            return None
        more = bool(frag & _MF)
        data = packet[ihl:total]
        key4: _Key = (packet[12:16], packet[16:20], ident, packet[9])
        return _Fragment(key4, (frag & _OFFSET_MASK) * 8, data, more, packet[:ihl], 0, 0, False)
    if n < 40:
        return None
    end = 40 + _U16.unpack_from(packet, 4)[0]
    if end > n:
        return None
    found = _ipv6_fragment_header(packet, end)
    if found is None:
        return None
    off, nh_pos = found
    # The two reserved bits of offset_m are ignored on receipt (RFC 8200 §4.5).
    next_header, offset_m, ident = _FRAG6.unpack_from(packet, off)
    key6: _Key = (packet[8:24], packet[24:40], ident)
    return _Fragment(
        key6,
        offset_m & 0xFFF8,
        packet[off + 8 : end],
        bool(offset_m & 1),
        packet[:off],
        nh_pos,
        next_header,
        True,
    )


def _assemble(dg: _Datagram, v6: bool) -> bytes | DropReason:
    """Build the unfragmented packet from a complete datagram."""
    payload = b"".join(d for _, _, d in dg.frags)
    header = dg.header
    assert header is not None  # complete implies the offset-0 fragment arrived
    if v6:
        plen = len(header) - 40 + len(payload)
        if plen > _IP_MAX:
            return DropReason.FRAGMENT_TOO_LARGE
        h = bytearray(header)
        h[4:6] = _U16.pack(plen)
        h[dg.nh_pos] = dg.next_header
        return bytes(h) + payload
    total = len(header) + len(payload)
    if total > _IP_MAX:
        return DropReason.FRAGMENT_TOO_LARGE
    h = bytearray(header)
    h[2:4] = _U16.pack(total)
    h[6:8] = b"\x00\x00"  # flags and offset cleared: a normal, whole packet
    h[10:12] = b"\x00\x00"
    h[10:12] = _U16.pack(checksum(h))
    return bytes(h) + payload


class Reassembler:
    """Reassembles IPv4 and IPv6 fragments into whole packets.

    :param timeout: seconds an incomplete datagram is kept (RFC 8200 §4.5: 60 s
        maximum; Linux uses 30 s).
    :param max_bytes: total bytes buffered over all datagrams.
    :param max_datagram: largest reassembled packet accepted, header included.
    :param max_pending: most datagrams under reassembly at once.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        max_bytes: int = 4 * 1024 * 1024,
        max_datagram: int = _IP_MAX + 40,
        max_pending: int = 64,
    ) -> None:
        if timeout <= 0 or max_bytes <= 0 or max_datagram <= 0 or max_pending <= 0:
            raise ConfigError("reassembly timeout and limits must be positive")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_datagram = max_datagram
        self.max_pending = max_pending
        #: key -> datagram, oldest first (so the first entry has the nearest deadline).
        self._pending: dict[_Key, _Datagram] = {}
        #: sum of cost over _pending; never above max_bytes.
        self._buffered = 0
        #: drops of datagrams other than the one being received (see module docstring).
        self.drops = DropCounter()

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    @property
    def pending(self) -> int:
        return len(self._pending)

    def receive(self, packet: bytes, *, now: float) -> bytes | DropReason | None:
        """Feed one packet from the tunnel.

        Returns ``packet`` itself when it is not a fragment, the reassembled packet
        when this fragment completes one, None while incomplete, or the DropReason
        for this fragment's datagram.
        """
        if len(packet) < 20:
            return packet
        first = packet[0]
        if first >> 4 == 4:
            if not packet[6] & 0x3F and not packet[7]:  # MF clear and offset 0
                return packet
        elif first >> 4 == 6:
            if len(packet) < 40 or packet[6] not in _FRAGMENT_OR_CHAIN:
                return packet
        else:
            return packet
        try:
            frag = _parse(packet)
        except (struct.error, IndexError):
            return packet
        if frag is None:
            return packet
        return self._add(frag, now)

    def _add(self, frag: _Fragment, now: float) -> bytes | DropReason | None:
        self.handle_timer(now=now)
        off, data = frag.offset, frag.data
        end = off + len(data)
        if frag.more and (not data or len(data) % 8):
            return self._discard(frag.key, DropReason.MALFORMED)  # RFC 8200 §4.5
        if not frag.more and off == 0:
            # An atomic fragment (RFC 6946): whole already; never mixed with buffers.
            whole = _Datagram(
                0.0, [(0, end, data)], header=frag.header, nh_pos=frag.nh_pos, next_header=frag.next_header
            )
            return _assemble(whole, frag.v6)
        if len(frag.header) + end > min(self.max_datagram, _IP_MAX + (40 if frag.v6 else 0)):
            return self._discard(frag.key, DropReason.FRAGMENT_TOO_LARGE)

        dg = self._pending.get(frag.key)
        if dg is None:
            while len(self._pending) >= self.max_pending:
                self._evict_oldest()
            dg = self._pending[frag.key] = _Datagram(now + self.timeout)

        frags = dg.frags
        i = bisect.bisect_left(frags, off, key=lambda f: f[0])
        # Neighbours are the only fragments that can overlap (the list is disjoint).
        if i < len(frags) and frags[i][0] == off and frags[i][1] == end:
            if frags[i][2] == data:
                self.drops.add(DropReason.FRAGMENT_DUPLICATE)  # harmless, but a drop all the same
                return None
            return self._discard(frag.key, DropReason.FRAGMENT_OVERLAP)
        if (i < len(frags) and frags[i][0] < end) or (i > 0 and frags[i - 1][1] > off):
            return self._discard(frag.key, DropReason.FRAGMENT_OVERLAP)
        if not frag.more:
            if dg.total is not None and dg.total != end:
                return self._discard(frag.key, DropReason.MALFORMED)  # two different ends
            if frags and frags[-1][1] > end:
                return self._discard(frag.key, DropReason.MALFORMED)  # data past the end
            dg.total = end
        elif dg.total is not None and end > dg.total:
            return self._discard(frag.key, DropReason.MALFORMED)

        cost = len(data) + _FRAG_OVERHEAD
        while self._buffered + cost > self.max_bytes:
            if not self._evict_oldest(keep=frag.key):
                return self._discard(frag.key, DropReason.FRAGMENT_LIMIT)
        frags.insert(i, (off, end, data))
        dg.held += len(data)
        dg.cost += cost
        self._buffered += cost
        if off == 0:
            dg.header = frag.header
            dg.nh_pos = frag.nh_pos
            dg.next_header = frag.next_header

        if dg.total is not None and dg.held == dg.total:
            self._forget(frag.key)
            return _assemble(dg, frag.v6)
        return None

    def _forget(self, key: _Key) -> _Datagram | None:
        dg = self._pending.pop(key, None)
        if dg is not None:
            self._buffered -= dg.cost
        return dg

    def _discard(self, key: _Key, reason: DropReason) -> DropReason:
        """Drop the datagram of the fragment being received; the caller counts it."""
        self._forget(key)
        return reason

    def _evict_oldest(self, keep: _Key | None = None) -> bool:
        """Evict the oldest datagram other than ``keep``; False if there is none."""
        for key in self._pending:
            if key != keep:
                self._forget(key)
                self.drops.add(DropReason.FRAGMENT_LIMIT)
                return True
        return False

    def next_deadline(self) -> float | None:
        """When the oldest incomplete datagram expires, or None if none is pending."""
        for dg in self._pending.values():
            return dg.deadline
        return None

    def handle_timer(self, *, now: float) -> int:
        """Expire incomplete datagrams whose deadline has passed; returns how many."""
        expired = 0
        pending = self._pending
        while pending:
            key = next(iter(pending))
            if pending[key].deadline > now:
                break
            self._forget(key)
            self.drops.add(DropReason.FRAGMENT_TIMEOUT)
            expired += 1
        return expired


# ------------------------------------------------------------------- fragmentation


def _copied_ipv4_options(opts: bytes) -> bytes:
    """The options RFC 791 says to repeat in every fragment (the copied flag, 0x80)."""
    out = bytearray()
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        length = opts[i + 1] if i + 1 < n else 0
        if length < 2 or i + length > n:
            raise ConfigError("cannot fragment: malformed IPv4 options")
        if kind & 0x80:
            out += opts[i : i + length]
        i += length
    out += bytes(-len(out) % 4)  # pad with EOL to a 4-byte boundary
    return bytes(out)


def _fragment_v4(packet: bytes, mtu: int, ident: int) -> list[bytes]:
    ihl = (packet[0] & 0x0F) * 4
    total, frag = struct.unpack_from("!HxxH", packet, 2)
    if ihl < 20 or total < ihl or total > len(packet):
        raise ConfigError("cannot fragment: malformed IPv4 packet")
    if frag & _DF:
        return []
    if frag & (_MF | _OFFSET_MASK):
        raise ConfigError("cannot fragment a packet that is already a fragment")
    data = packet[ihl:total]
    later = packet[:20] + _copied_ipv4_options(packet[20:ihl])
    out: list[bytes] = []
    off = 0
    header = packet[:ihl]
    while off < len(data):
        step = (mtu - len(header)) // 8 * 8
        if step < 8:
            raise ConfigError(f"MTU {mtu} is too small to fragment an IPv4 packet")
        chunk = data[off : off + step]
        more = off + len(chunk) < len(data)
        h = bytearray(header)
        h[0] = 0x40 | (len(header) // 4)
        h[2:4] = _U16.pack(len(header) + len(chunk))
        h[4:6] = _U16.pack(ident & 0xFFFF)
        h[6:8] = _U16.pack((_MF if more else 0) | (off // 8))
        h[10:12] = b"\x00\x00"
        h[10:12] = _U16.pack(checksum(h))
        out.append(bytes(h) + chunk)
        off += len(chunk)
        header = later
    return out


def _fragment_v6(packet: bytes, mtu: int, ident: int) -> list[bytes]:
    end = 40 + _U16.unpack_from(packet, 4)[0]
    if end > len(packet):
        raise ConfigError("cannot fragment: malformed IPv6 packet")
    # Unfragmentable part (RFC 8200 §4.5): the header plus Hop-by-Hop and Routing
    # headers (and Destination Options in front of a Routing header).
    nh, nh_pos, off, unfrag_end, unfrag_nh_pos = packet[6], 6, 40, 40, 6
    while nh in IPV6_EXTENSION_CHAIN:
        if off + 8 > end:
            raise ConfigError("cannot fragment: malformed IPv6 extension headers")
        this = nh
        nh, nh_pos = packet[off], off
        off += (packet[off + 1] + 1) * 8
        if this in (IpProto.IPV6_HOP_BY_HOP, IpProto.IPV6_ROUTING):
            unfrag_end, unfrag_nh_pos = off, nh_pos
    if nh == _FRAGMENT:
        raise ConfigError("cannot fragment a packet that is already a fragment")
    unfrag = bytearray(packet[:unfrag_end])
    first_fragmentable = unfrag[unfrag_nh_pos]
    unfrag[unfrag_nh_pos] = _FRAGMENT
    data = packet[unfrag_end:end]
    step = (mtu - len(unfrag) - 8) // 8 * 8
    if step < 8:
        raise ConfigError(f"MTU {mtu} is too small to fragment an IPv6 packet")
    out: list[bytes] = []
    for pos in range(0, len(data), step):
        chunk = data[pos : pos + step]
        more = pos + len(chunk) < len(data)
        unfrag[4:6] = _U16.pack(len(unfrag) - 40 + 8 + len(chunk))
        fh = _FRAG6.pack(first_fragmentable, pos | int(more), ident & 0xFFFFFFFF)
        out.append(bytes(unfrag) + fh + chunk)
    return out


def fragment_ip(packet: bytes, mtu: int, *, ident: int | None = None) -> list[bytes]:
    """Split ``packet`` into fragments of at most ``mtu`` bytes.

    Returns ``[packet]`` if it fits, ``[]`` for an IPv4 packet with DF set that does
    not. ``ident`` is the Identification to use (default: a process-wide counter).
    Raises ConfigError for a packet we could not have built (malformed, already a
    fragment) or an MTU too small to carry 8 bytes of data per fragment.
    """
    if len(packet) <= mtu:
        return [packet]
    if ident is None:
        ident = next(_ident_counter)
    try:
        version = packet[0] >> 4
        if version == 4 and len(packet) >= 20:
            return _fragment_v4(packet, mtu, ident)
        if version == 6 and len(packet) >= 40:
            return _fragment_v6(packet, mtu, ident)
    except (struct.error, IndexError) as exc:
        raise ConfigError(f"cannot fragment: malformed packet ({exc})") from None
    raise ConfigError("cannot fragment: not an IPv4 or IPv6 packet")
