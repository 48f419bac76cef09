"""Struct-based encoders for the packets we send into the tunnel.

Contract: each ``build_*`` turns one value from :mod:`wgslirpy.net.segments` into the
bytes of a complete IPv4 or IPv6 packet, with every checksum computed here (never by
impacket, whose builders get IPv6 lengths and zero UDP checksums wrong and cost
~300 µs a packet). Output is deterministic: the same value gives the same bytes.

Specs: IPv4 RFC 791 (+ RFC 6864 on the Identification field), IPv6 RFC 8200, TCP RFC
9293 with options from RFC 7323 (timestamps, window scale) and RFC 2018 (SACK), UDP
RFC 768, ICMP RFC 792 (+ RFC 1191 next-hop MTU), ICMPv6 RFC 4443.

Choices:

* IPv4 Identification is always 0. RFC 6864 §4.1 allows any value for atomic datagrams
  (DF set, not fragmented), which covers TCP. UDP and ICMP go out without DF so a
  large reply may be fragmented; :func:`wgslirpy.net.fragments.fragment_ip` assigns a
  fresh Identification when it actually splits a packet, which is when uniqueness
  matters.
* TCP options are laid out as Linux's ``tcp_options_write`` does, so packet captures
  look familiar: MSS; SACK-permitted folded in front of the timestamps (or NOP NOP
  SACK-permitted without them); NOP + window scale; NOP NOP + SACK blocks. Every block
  is already 4-byte aligned. Timestamps are sent iff ``ts_val`` is set (``ts_ecr``
  None sends 0). SACK blocks that do not fit the 40-byte option space are dropped
  from the end (the first block is the most recent one, RFC 2018 §4).
* Checksums are summed arithmetically from the header fields plus one
  ``int.from_bytes`` over the payload (see :mod:`wgslirpy.net.checksum`), so a
  1400-byte TCP packet costs one big-integer modulo and one ``struct.pack``.
* Invalid values (a port out of range, mixed address families, FRAG_NEEDED without
  an MTU) are caller bugs and raise :class:`~wgslirpy.errors.ConfigError`.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from wgslirpy.constants import DEFAULT_TTL
from wgslirpy.errors import ConfigError
from wgslirpy.net.checksum import checksum, fold, word_sum
from wgslirpy.net.segments import IcmpEcho, IPAddress, IpProto, TcpSegment, UdpDatagram, Unreachable

__all__ = ["build_icmp_echo", "build_icmp_unreachable", "build_tcp", "build_udp"]

# IPv4 header (RFC 791): ver/ihl, tos, total length, id, flags/frag offset, ttl, proto,
# checksum, src, dst. Addresses are packed from their integer form.
_IP4 = struct.Struct("!BBHHHBBHII")
# IPv4 header + TCP header without options, packed in one call on the hot path.
_IP4_TCP = struct.Struct("!BBHHHBBHIIHHIIBBHHH")
# IPv6 header (RFC 8200): version/class/flow, payload length, next header, hop limit.
_IP6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_ICMP_HDR = struct.Struct("!BBHHH")  # type, code, checksum, two 16-bit fields
_TS_ONLY = struct.Struct("!III")  # NOP NOP kind=8 len=10 | TSval | TSecr
_IP6_HDR_WORD = 0x60000000  # version 6, traffic class 0, flow label 0

# Plain ints: looking up an IntEnum member costs ~0.15 µs each on the hot path.
_PROTO_TCP = int(IpProto.TCP)
_PROTO_UDP = int(IpProto.UDP)
_PROTO_ICMP = int(IpProto.ICMP)
_PROTO_ICMPV6 = int(IpProto.ICMPV6)

_IP4_HEADER_LEN = 20
_IP6_HEADER_LEN = 40
_TCP_HEADER_LEN = 20
_DF = 0x4000
_VER_IHL = 0x45
_NOP_NOP_TS = 0x0101080A
_MAX_TCP_OPTIONS = 40

# RFC 1812 §4.3.2.3: an ICMP error should carry as much of the original as fits in a
# 576-byte datagram; RFC 4443 §2.4(c): as much as fits the 1280-byte IPv6 minimum MTU.
_ICMP4_ERROR_MAX = 576
_ICMP6_ERROR_MAX = 1280

_ICMP4_UNREACH = 3
_ICMP6_UNREACH = 1
_ICMP6_TOO_BIG = 2
_ICMP4_CODES = {
    Unreachable.NET: 0,
    Unreachable.HOST: 1,
    Unreachable.PORT: 3,
    Unreachable.FRAG_NEEDED: 4,
    Unreachable.ADMIN: 13,
}
_ICMP6_CODES = {
    Unreachable.NET: 0,  # no route to destination
    Unreachable.ADMIN: 1,  # communication administratively prohibited
    Unreachable.HOST: 3,  # address unreachable
    Unreachable.PORT: 4,
}


def _ip4_header_sum(total: int, flags_frag: int, ttl: int, proto: int, src: int, dst: int) -> int:
    """Partial sum of an option-less IPv4 header with id 0 and checksum 0."""
    return (_VER_IHL << 8) + total + flags_frag + (ttl << 8) + proto + src + dst


def _ip_packet(src: IPAddress, dst: IPAddress, proto: int, l4: bytes, ttl: int, flags_frag: int) -> bytes:
    """Wrap an upper-layer message (its checksum already set) in an IPv4/IPv6 header."""
    if type(src) is IPv4Address:
        s = int(src)
        d = int(dst)
        total = _IP4_HEADER_LEN + len(l4)
        csum = fold(_ip4_header_sum(total, flags_frag, ttl, proto, s, d))
        return _IP4.pack(_VER_IHL, 0, total, 0, flags_frag, ttl, proto, csum, s, d) + l4
    return _IP6.pack(_IP6_HDR_WORD, len(l4), proto, ttl, src.packed, dst.packed) + l4


def _check_family(src: IPAddress, dst: IPAddress) -> None:
    if type(src) is not type(dst):
        raise ConfigError(f"source {src} and destination {dst} are of different IP versions")


def _tcp_options(seg: TcpSegment) -> bytes:
    """The option bytes for ``seg`` (Linux order, 4-byte aligned, at most 40 bytes)."""
    mss, wscale, sack_perm, blocks = seg.mss, seg.wscale, seg.sack_permitted, seg.sack_blocks
    ts = seg.ts_val
    if mss is None and wscale is None and not sack_perm and not blocks:
        # The established-flow case: nothing, or NOP NOP TS.
        if ts is None:
            return b""
        return _TS_ONLY.pack(_NOP_NOP_TS, ts, seg.ts_ecr or 0)
    out = bytearray()
    if mss is not None:
        out += struct.pack("!BBH", 2, 4, mss)
    if ts is not None:
        # SACK-permitted takes the place of the two NOPs in front of the timestamps.
        out += b"\x04\x02\x08\x0a" if sack_perm else b"\x01\x01\x08\x0a"
        out += struct.pack("!II", ts, seg.ts_ecr or 0)
    elif sack_perm:
        out += b"\x01\x01\x04\x02"
    if wscale is not None:
        out += struct.pack("!BBBB", 1, 3, 3, wscale)
    if blocks:
        room = (_MAX_TCP_OPTIONS - len(out) - 4) // 8
        if room > 0:
            blocks = blocks[:room]
            out += struct.pack("!BBBB", 1, 1, 5, 2 + 8 * len(blocks))
            for left, right in blocks:
                out += struct.pack("!II", left, right)
    return bytes(out)


def build_tcp(seg: TcpSegment, *, ttl: int = DEFAULT_TTL) -> bytes:
    """Encode ``seg`` as an IPv4 (DF set, id 0) or IPv6 packet with valid checksums."""
    src, dst = seg.src, seg.dst
    _check_family(src, dst)
    payload = seg.payload
    flags = int(seg.flags)  # arithmetic on the IntFlag itself would cost ~2 µs
    s = int(src)
    d = int(dst)
    try:
        opts = _tcp_options(seg)
        hlen = _TCP_HEADER_LEN + len(opts)
        tcp_len = hlen + len(payload)
        off_flags = (hlen << 10) | flags  # data offset (words) in the top 4 bits
        # Every TCP header field as an integer: congruent to its 16-bit words.
        tsum = (
            s + d + _PROTO_TCP + tcp_len
            + seg.sport + seg.dport + seg.seq + seg.ack + off_flags + seg.window
            + word_sum(payload)
        )
        if opts:
            tsum += int.from_bytes(opts, "big")  # 4-byte aligned: no padding concerns
        tcsum = fold(tsum)
        if type(src) is IPv4Address:
            total = _IP4_HEADER_LEN + tcp_len
            ipsum = fold(_ip4_header_sum(total, _DF, ttl, _PROTO_TCP, s, d))
            hdr = _IP4_TCP.pack(
                _VER_IHL, 0, total, 0, _DF, ttl, _PROTO_TCP, ipsum, s, d,
                seg.sport, seg.dport, seg.seq, seg.ack, hlen << 2, flags, seg.window, tcsum, 0,
            )
            return b"".join((hdr, opts, payload))
        ip6 = _IP6.pack(_IP6_HDR_WORD, tcp_len, _PROTO_TCP, ttl, src.packed, dst.packed)
        tcp = _TCP.pack(seg.sport, seg.dport, seg.seq, seg.ack, hlen << 2, flags, seg.window, tcsum, 0)
        return b"".join((ip6, tcp, opts, payload))
    except (struct.error, OverflowError) as exc:
        raise ConfigError(f"cannot encode TCP segment {seg!r}: {exc}") from None


def _udp_checksum(src: IPAddress, dst: IPAddress, udp_no_csum: bytes) -> int:
    csum = checksum(udp_no_csum, int(src) + int(dst) + _PROTO_UDP + len(udp_no_csum))
    # RFC 768 / RFC 8200 §8.1: a computed 0 is sent as all ones (0 means "none").
    return csum or 0xFFFF


def build_udp(d: UdpDatagram, *, ttl: int = DEFAULT_TTL) -> bytes:
    """Encode ``d`` as an IPv4 (no DF, id 0) or IPv6 packet with a UDP checksum.

    Does not fragment: pass the result through ``fragment_ip`` if it may exceed the MTU.
    """
    _check_family(d.src, d.dst)
    length = 8 + len(d.payload)
    try:
        head = _UDP.pack(d.sport, d.dport, length, 0)
        csum = _udp_checksum(d.src, d.dst, head + d.payload)
        udp = _UDP.pack(d.sport, d.dport, length, csum) + d.payload
        return _ip_packet(d.src, d.dst, _PROTO_UDP, udp, ttl, 0)
    except (struct.error, OverflowError) as exc:
        raise ConfigError(f"cannot encode UDP datagram to {d.dst}:{d.dport}: {exc}") from None


def _icmp(src: IPAddress, dst: IPAddress, type_: int, code: int, w1: int, w2: int, body: bytes, ttl: int) -> bytes:
    """An ICMP (IPv4) or ICMPv6 (IPv6, pseudo-header included) message in its IP packet."""
    msg = _ICMP_HDR.pack(type_, code, 0, w1, w2) + body
    if type(src) is IPv4Address:
        csum = checksum(msg)
        proto = _PROTO_ICMP
    else:
        csum = checksum(msg, int(src) + int(dst) + _PROTO_ICMPV6 + len(msg))
        proto = _PROTO_ICMPV6
    msg = msg[:2] + csum.to_bytes(2, "big") + msg[4:]
    return _ip_packet(src, dst, proto, msg, ttl, 0)


def build_icmp_echo(e: IcmpEcho, *, ttl: int = DEFAULT_TTL) -> bytes:
    """Encode an echo request/reply: ICMP type 8/0 (IPv4) or ICMPv6 128/129 (IPv6)."""
    _check_family(e.src, e.dst)
    if type(e.src) is IPv4Address:
        type_ = 8 if e.is_request else 0
    else:
        type_ = 128 if e.is_request else 129
    try:
        return _icmp(e.src, e.dst, type_, 0, e.ident, e.seq, e.payload, ttl)
    except (struct.error, OverflowError) as exc:
        raise ConfigError(f"cannot encode ICMP echo {e!r}: {exc}") from None


def build_icmp_unreachable(
    src: IPAddress,
    dst: IPAddress,
    kind: Unreachable,
    original: bytes,
    *,
    mtu: int | None = None,
    ttl: int = DEFAULT_TTL,
) -> bytes:
    """An ICMP destination-unreachable (or Packet Too Big) error quoting ``original``.

    ``src`` is the address the error comes from (usually the original's destination),
    ``dst`` the original's sender. IPv4: type 3 with code net 0 / host 1 / port 3 /
    admin 13 / frag-needed 4 (next-hop MTU in the second word, RFC 1191). IPv6: type 1
    with code no-route 0 / admin 1 / address 3 / port 4, or type 2 Packet Too Big with
    the 32-bit MTU for FRAG_NEEDED. ``mtu`` is required for FRAG_NEEDED only.
    """
    _check_family(src, dst)
    if kind is Unreachable.FRAG_NEEDED and mtu is None:
        raise ConfigError("an ICMP fragmentation-needed / packet-too-big error needs the MTU")
    try:
        if type(src) is IPv4Address:
            room = _ICMP4_ERROR_MAX - _IP4_HEADER_LEN - 8
            w2 = mtu if kind is Unreachable.FRAG_NEEDED else 0
            return _icmp(src, dst, _ICMP4_UNREACH, _ICMP4_CODES[kind], 0, w2 or 0, original[:room], ttl)
        room = _ICMP6_ERROR_MAX - _IP6_HEADER_LEN - 8
        if kind is Unreachable.FRAG_NEEDED:
            assert mtu is not None
            return _icmp(src, dst, _ICMP6_TOO_BIG, 0, mtu >> 16, mtu & 0xFFFF, original[:room], ttl)
        return _icmp(src, dst, _ICMP6_UNREACH, _ICMP6_CODES[kind], 0, 0, original[:room], ttl)
    except (struct.error, OverflowError) as exc:
        raise ConfigError(f"cannot encode ICMP error to {dst}: {exc}") from None

