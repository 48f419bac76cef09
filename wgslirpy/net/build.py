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
  ``int.from_bytes`` over the payload (see :mod:`wgslirpy.net.checksum`; a TCP
  segment's payload sum is reduced on its own, so the header terms add as small ints),
  and the IP header and the upper-layer header are packed in one ``struct`` call, so a
  1400-byte TCP, UDP or ICMP packet costs one big-integer reduction, one ``pack`` and
  one copy of the payload. IPv6 addresses' 16-byte forms are memoised (bounded), as
  :mod:`wgslirpy.net.packet` memoises address objects.
* Per-flow header templates (the established-flow fast path of :func:`build_tcp`): a
  segment without MSS, window scale or SACK-permitted (every data segment and ACK of an
  established flow, SACK blocks included) is built from a template kept per (source
  port, destination port): the address integers (and IPv6 bytes), the TCP pseudo-header
  plus ports as a partial sum, and the IPv4 header's partial sum without its total
  length. Each packet then adds only seq, ack, flags, window, length, timestamps and the
  payload's sum, and packs the IP header, the TCP header and the timestamp option in one
  ``struct`` call (SACK blocks: the option bytes are laid out as for any segment and
  joined). A template is used only while the segment's address objects are the very
  ones it was made from (an identity check: a flow's addresses are the same objects for
  its whole life), else it is rebuilt; the cache is bounded (``_TEMPLATE_MAX``, cleared
  when full) so that idle flows add nothing per flow. The general encoder is
  :func:`build_tcp_generic`; ``tests/test_fastpath_build.py`` proves both give the same
  bytes for any segment either accepts.
* Invalid values (a port out of range, mixed address families, FRAG_NEEDED without
  an MTU) are caller bugs and raise :class:`~wgslirpy.errors.ConfigError`.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address
from typing import NamedTuple

from ..constants import DEFAULT_TTL
from ..errors import ConfigError
from .checksum import fold, small_word_sum, word_sum
from .segments import IcmpEcho, IPAddress, IpProto, TcpSegment, UdpDatagram, Unreachable

__all__ = [
    "build_icmp_echo",
    "build_icmp_error",
    "build_icmp_unreachable",
    "build_tcp",
    "build_tcp_generic",
    "build_udp",
]

# IPv4 header (RFC 791): ver/ihl, tos, total length, id, flags/frag offset, ttl, proto,
# checksum, src, dst (addresses packed from their integer form), followed by the
# upper-layer header, so that one call packs both.
_IP4_TCP = struct.Struct("!BBHHHBBHIIHHIIBBHHH")  # + TCP header without options
# + an 8-byte header as four 16-bit words: UDP (sport, dport, length, checksum) or
# ICMP/ICMPv6 (type << 8 | code, checksum, two 16-bit fields).
_IP4_SMALL = struct.Struct("!BBHHHBBHIIHHHH")
# IPv6 header (RFC 8200): version/class/flow, payload length, next header, hop limit.
_IP6 = struct.Struct("!IHBB16s16s")
_IP6_SMALL = struct.Struct("!IHBB16s16sHHHH")  # + the 8-byte header as above
_TCP = struct.Struct("!HHIIBBHHH")
_TS_ONLY = struct.Struct("!III")  # NOP NOP kind=8 len=10 | TSval | TSecr
# The template fast path: IP header + TCP header (+ NOP NOP TS option) in one call.
_IP4_TCP_TS = struct.Struct("!BBHHHBBHIIHHIIBBHHHIII")
_IP6_TCP = struct.Struct("!IHBB16s16sHHIIBBHHH")
_IP6_TCP_TS = struct.Struct("!IHBB16s16sHHIIBBHHHIII")
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

_SMALL_HEADER_LEN = 8  # UDP, or ICMP/ICMPv6 up to the end of the two 16-bit fields

# ``IPv6Address.packed`` costs ~0.3 µs; replies go to a handful of peers, so memoise
# the bytes by the address's integer (hashing an IPv6Address formats it as hex).
# Bounded: cleared when full, so a flood of addresses cannot grow it.
_PACKED_CACHE_MAX = 4096
_PACKED6: dict[int, bytes] = {}

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


def _packed6(n: int) -> bytes:
    """The 16 network-order bytes of the IPv6 address whose integer is ``n``, memoised."""
    b = _PACKED6.get(n)
    if b is None:
        if len(_PACKED6) >= _PACKED_CACHE_MAX:
            _PACKED6.clear()
        b = _PACKED6[n] = n.to_bytes(16, "big")
    return b


def _small_packet(
    v4: bool, s: int, d: int, proto: int, w0: int, w1: int, w2: int, w3: int, body: bytes, ttl: int
) -> bytes:
    """An IP packet (no DF, id 0) carrying an 8-byte header of four 16-bit words + ``body``.

    ``s``/``d`` are the addresses as integers; the upper-layer checksum is already
    one of the words.
    """
    length = _SMALL_HEADER_LEN + len(body)
    if v4:
        total = _IP4_HEADER_LEN + length
        ipsum = fold(_ip4_header_sum(total, 0, ttl, proto, s, d))
        hdr = _IP4_SMALL.pack(_VER_IHL, 0, total, 0, 0, ttl, proto, ipsum, s, d, w0, w1, w2, w3)
    else:
        hdr = _IP6_SMALL.pack(
            _IP6_HDR_WORD,
            length,
            proto,
            ttl,
            _PACKED6.get(s) or _packed6(s),
            _PACKED6.get(d) or _packed6(d),
            w0,
            w1,
            w2,
            w3,
        )
    return hdr + body


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


class _TcpTemplate(NamedTuple):
    """What every segment of one flow (one direction) shares, precomputed."""

    src: IPAddress  # the address objects the template was made from (identity-checked)
    dst: IPAddress
    ttl: int
    v4: bool
    s: int  # the addresses as integers
    d: int
    s16: bytes  # IPv6: the addresses' 16 bytes; b"" for IPv4
    d16: bytes
    #: partial sum of the pseudo-header's addresses and protocol plus both ports (the
    #: TCP length, the other header words and the payload are added per segment)
    tsum: int
    #: partial sum of the IPv4 header without its total length (id 0, DF, no options)
    ipsum: int


#: most flow templates kept (a few hundred bytes each); cleared when full, so a flood of
#: flows cannot grow it and an idle flow costs nothing once it has fallen out.
_TEMPLATE_MAX = 256
_TEMPLATES: dict[tuple[int, int], _TcpTemplate] = {}
_TCP_OFF5 = 5 << 12  # data offset 5 words (no options), in the offset/flags word
_TCP_OFF8 = 8 << 12  # data offset 8 words (NOP NOP TS)


def _tcp_template(src: IPAddress, dst: IPAddress, sport: int, dport: int, ttl: int) -> _TcpTemplate:
    """Make (and cache) the template for segments ``src:sport -> dst:dport``."""
    _check_family(src, dst)
    if not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF and 0 <= ttl <= 0xFF):
        raise ConfigError(f"cannot encode TCP segment {src}:{sport} -> {dst}:{dport} (ttl {ttl}): out of range")
    s = int(src)
    d = int(dst)
    v4 = type(src) is IPv4Address
    tmpl = _TcpTemplate(
        src,
        dst,
        ttl,
        v4,
        s,
        d,
        b"" if v4 else _packed6(s),
        b"" if v4 else _packed6(d),
        s + d + _PROTO_TCP + sport + dport,
        _ip4_header_sum(0, _DF, ttl, _PROTO_TCP, s, d),
    )
    if len(_TEMPLATES) >= _TEMPLATE_MAX:
        _TEMPLATES.clear()
    _TEMPLATES[(sport, dport)] = tmpl
    return tmpl


def build_tcp(seg: TcpSegment, *, ttl: int = DEFAULT_TTL) -> bytes:
    """Encode ``seg`` as an IPv4 (DF set, id 0) or IPv6 packet with valid checksums.

    Segments of the established shape (no MSS, window scale or SACK-permitted;
    timestamps and SACK blocks or not) go through the flow's header template; the rest
    (SYNs) through :func:`build_tcp_generic`. Both give the same bytes.
    """
    if seg.mss is not None or seg.wscale is not None or seg.sack_permitted:
        return build_tcp_generic(seg, ttl=ttl)
    sport = seg.sport
    dport = seg.dport
    t = _TEMPLATES.get((sport, dport))
    if t is None or t.src is not seg.src or t.dst is not seg.dst or t.ttl != ttl:
        t = _tcp_template(seg.src, seg.dst, sport, dport, ttl)
    payload = seg.payload
    n = len(payload)
    psum = small_word_sum(payload)
    flags = int(seg.flags)
    seq = seg.seq
    ack = seg.ack
    win = seg.window
    ts = seg.ts_val
    try:
        if seg.sack_blocks:
            return _build_with_options(seg, t, sport, dport, flags, psum)
        if ts is None:
            tcp_len = _TCP_HEADER_LEN + n
            total = t.tsum + tcp_len + seq + ack + (_TCP_OFF5 | flags) + win + psum
        else:
            ecr = seg.ts_ecr or 0
            tcp_len = _TCP_HEADER_LEN + 12 + n
            total = t.tsum + tcp_len + seq + ack + (_TCP_OFF8 | flags) + win + _NOP_NOP_TS + ts + ecr + psum
        # checksum.fold, inlined: the protocol term makes ``total`` > 0, so a residue of
        # 0 is the one's-complement sum 0xFFFF, field 0.
        r = total % 0xFFFF
        tcsum = 0xFFFF - r if r else 0
        if t.v4:
            ip_total = _IP4_HEADER_LEN + tcp_len
            r = (t.ipsum + ip_total) % 0xFFFF
            ipsum = 0xFFFF - r if r else 0
            if ts is None:
                hdr = _IP4_TCP.pack(
                    _VER_IHL, 0, ip_total, 0, _DF, t.ttl, _PROTO_TCP, ipsum, t.s, t.d,
                    sport, dport, seq, ack, 0x50, flags, win, tcsum, 0,
                )  # fmt: skip
            else:
                hdr = _IP4_TCP_TS.pack(
                    _VER_IHL, 0, ip_total, 0, _DF, t.ttl, _PROTO_TCP, ipsum, t.s, t.d,
                    sport, dport, seq, ack, 0x80, flags, win, tcsum, 0, _NOP_NOP_TS, ts, ecr,
                )  # fmt: skip
        elif ts is None:
            hdr = _IP6_TCP.pack(
                _IP6_HDR_WORD, tcp_len, _PROTO_TCP, t.ttl, t.s16, t.d16,
                sport, dport, seq, ack, 0x50, flags, win, tcsum, 0,
            )  # fmt: skip
        else:
            hdr = _IP6_TCP_TS.pack(
                _IP6_HDR_WORD, tcp_len, _PROTO_TCP, t.ttl, t.s16, t.d16,
                sport, dport, seq, ack, 0x80, flags, win, tcsum, 0, _NOP_NOP_TS, ts, ecr,
            )  # fmt: skip
    except (struct.error, OverflowError) as exc:
        raise ConfigError(f"cannot encode TCP segment {seg!r}: {exc}") from None
    return hdr + payload if n else hdr


def _build_with_options(seg: TcpSegment, t: _TcpTemplate, sport: int, dport: int, flags: int, psum: int) -> bytes:
    """The template path for a segment carrying SACK blocks (the options laid out by
    ``_tcp_options``); ``psum`` is the payload's partial sum."""
    opts = _tcp_options(seg)
    hlen = _TCP_HEADER_LEN + len(opts)
    payload = seg.payload
    tcp_len = hlen + len(payload)
    seq, ack, win = seg.seq, seg.ack, seg.window
    total = t.tsum + tcp_len + seq + ack + ((hlen << 10) | flags) + win + int.from_bytes(opts, "big") + psum
    r = total % 0xFFFF
    tcsum = 0xFFFF - r if r else 0
    if t.v4:
        ip_total = _IP4_HEADER_LEN + tcp_len
        r = (t.ipsum + ip_total) % 0xFFFF
        hdr = _IP4_TCP.pack(
            _VER_IHL, 0, ip_total, 0, _DF, t.ttl, _PROTO_TCP, 0xFFFF - r if r else 0, t.s, t.d,
            sport, dport, seq, ack, hlen << 2, flags, win, tcsum, 0,
        )  # fmt: skip
    else:
        hdr = _IP6_TCP.pack(
            _IP6_HDR_WORD, tcp_len, _PROTO_TCP, t.ttl, t.s16, t.d16,
            sport, dport, seq, ack, hlen << 2, flags, win, tcsum, 0,
        )  # fmt: skip
    return b"".join((hdr, opts, payload))


def build_tcp_generic(seg: TcpSegment, *, ttl: int = DEFAULT_TTL) -> bytes:
    """Encode any ``seg`` (every option) as :func:`build_tcp` does, without templates."""
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
            s
            + d
            + _PROTO_TCP
            + tcp_len
            + seg.sport
            + seg.dport
            + seg.seq
            + seg.ack
            + off_flags
            + seg.window
            + word_sum(payload)
        )
        if opts:
            tsum += int.from_bytes(opts, "big")  # 4-byte aligned: no padding concerns
        tcsum = fold(tsum)
        if type(src) is IPv4Address:
            total = _IP4_HEADER_LEN + tcp_len
            ipsum = fold(_ip4_header_sum(total, _DF, ttl, _PROTO_TCP, s, d))
            hdr = _IP4_TCP.pack(
                _VER_IHL,
                0,
                total,
                0,
                _DF,
                ttl,
                _PROTO_TCP,
                ipsum,
                s,
                d,
                seg.sport,
                seg.dport,
                seg.seq,
                seg.ack,
                hlen << 2,
                flags,
                seg.window,
                tcsum,
                0,
            )
            return b"".join((hdr, opts, payload))
        ip6 = _IP6.pack(
            _IP6_HDR_WORD, tcp_len, _PROTO_TCP, ttl, _PACKED6.get(s) or _packed6(s), _PACKED6.get(d) or _packed6(d)
        )
        tcp = _TCP.pack(seg.sport, seg.dport, seg.seq, seg.ack, hlen << 2, flags, seg.window, tcsum, 0)
        return b"".join((ip6, tcp, opts, payload))
    except (struct.error, OverflowError) as exc:
        raise ConfigError(f"cannot encode TCP segment {seg!r}: {exc}") from None


def build_udp(d: UdpDatagram, *, ttl: int = DEFAULT_TTL) -> bytes:
    """Encode ``d`` as an IPv4 (no DF, id 0) or IPv6 packet with a UDP checksum.

    Does not fragment: pass the result through ``fragment_ip`` if it may exceed the MTU.
    """
    src, dst = d.src, d.dst
    _check_family(src, dst)
    payload, sport, dport = d.payload, d.sport, d.dport
    s = int(src)
    t = int(dst)
    length = _SMALL_HEADER_LEN + len(payload)
    try:
        # Pseudo-header (addresses, protocol, length) + UDP header (ports, length again).
        csum = fold(s + t + _PROTO_UDP + length + sport + dport + length + word_sum(payload))
        # RFC 768 / RFC 8200 §8.1: a computed 0 is sent as all ones (0 means "none").
        return _small_packet(
            type(src) is IPv4Address, s, t, _PROTO_UDP, sport, dport, length, csum or 0xFFFF, payload, ttl
        )
    except (struct.error, OverflowError) as exc:
        raise ConfigError(f"cannot encode UDP datagram to {d.dst}:{d.dport}: {exc}") from None


def _icmp(src: IPAddress, dst: IPAddress, type_: int, code: int, w1: int, w2: int, body: bytes, ttl: int) -> bytes:
    """An ICMP (IPv4) or ICMPv6 (IPv6, pseudo-header included) message in its IP packet."""
    s = int(src)
    d = int(dst)
    type_code = (type_ << 8) | code
    total = type_code + w1 + w2 + word_sum(body)
    if type(src) is IPv4Address:
        return _small_packet(True, s, d, _PROTO_ICMP, type_code, fold(total), w1, w2, body, ttl)
    total += s + d + _PROTO_ICMPV6 + _SMALL_HEADER_LEN + len(body)
    return _small_packet(False, s, d, _PROTO_ICMPV6, type_code, fold(total), w1, w2, body, ttl)


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


def build_icmp_error(
    src: IPAddress, dst: IPAddress, type_: int, code: int, rest: int, original: bytes, *, ttl: int = DEFAULT_TTL
) -> bytes:
    """Any ICMP/ICMPv6 error (type and code as given, ``rest`` the 32-bit word after the
    checksum: MTU, pointer or zero) quoting as much of ``original`` as RFC 1812 §4.3.2.3 /
    RFC 4443 §2.4 allow. The family is ``src``'s; used to relay errors the host received."""
    _check_family(src, dst)
    room = (_ICMP4_ERROR_MAX - _IP4_HEADER_LEN if type(src) is IPv4Address else _ICMP6_ERROR_MAX - _IP6_HEADER_LEN) - 8
    try:
        return _icmp(src, dst, type_, code, (rest >> 16) & 0xFFFF, rest & 0xFFFF, original[:room], ttl)
    except (struct.error, OverflowError) as exc:
        raise ConfigError(f"cannot encode ICMP error to {dst}: {exc}") from None


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
