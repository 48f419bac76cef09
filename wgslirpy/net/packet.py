"""Decode an inner IP packet into the values of :mod:`wgslirpy.net.segments`.

Contract: :func:`decode_ip` takes the bytes of one reassembled IPv4 or IPv6 packet
(run :class:`wgslirpy.net.fragments.Reassembler` first) and returns a ``Decoded``
value, or a :class:`~wgslirpy.errors.DropReason` for input it will not handle. It
never raises, whatever the bytes. Bytes beyond the IP total length are ignored.

Two paths (see *Decoding: impacket and the fast paths* in docs/ARCHITECTURE.md):

1. Pure ``struct`` decoders, picked by :func:`decode_ip` from the version and protocol
   byte. They handle IPv4 without options or fragmentation, or IPv6 whose next header
   is the upper layer itself (no extension headers), carrying

   * TCP without RST or URG (:func:`fast_decode_tcp`): >99% of bulk traffic and every
     SYN, at ~1-2 µs instead of ~30 µs. No options or exactly NOP NOP Timestamps (Linux's
     established-flow layout) are read with one ``struct`` call; any other option list
     (SACK blocks during recovery: a quarter of a 200-connection echo went through
     impacket before; a SYN's MSS, window scale, SACK-permitted and timestamps: a short
     connection's SYN was a twentieth of its gateway CPU) is parsed by the same
     ``_parse_tcp_options`` as the general path;
   * UDP whose length field is >= 8 and fits the IP payload, or an ICMP/ICMPv6 echo
     request/reply (:func:`fast_decode_udp_or_echo`): ~1.5 µs instead of ~25-80 µs.

   A fast decoder returns None for anything else, never a verdict; it reads exactly
   the fields the general path reads, so both give equal values (property-tested).
2. :func:`impacket_decode_ip` for everything else. This module is the only importer
   of impacket, and imports it lazily so that importing wgslirpy stays cheap. Plain
   Python checks every length first, because impacket zero-extends short buffers
   and has parsing bugs (listed below); impacket then reads the header fields.

What is checked ourselves rather than trusted to impacket (0.13):

* IPv4 options: impacket loops forever on an option of length 0 and mis-sizes the
  header after an early EOL. We validate them and hand impacket an option-less copy.
* IPv6 extension headers: impacket treats every option as padding and parses a
  Routing header's addresses as options, so it can land mid-header. We walk
  hop-by-hop (first only), routing and destination-options headers ourselves
  (RFC 8200 §4) and hand impacket the upper layer directly behind a plain header.
  Routing headers are skipped whatever their Segments Left: we terminate every flow.
* A Fragment header (44), or an IPv4 packet with MF or a fragment offset, means the
  caller skipped reassembly: MALFORMED (impacket would decode a non-first fragment
  as if it began with a TCP header).
* TCP options are parsed here from the raw bytes (RFC 9293 §3.1, RFC 7323, RFC
  2018): impacket keeps unknown kinds as uninitialised objects and stops sizing the
  header at EOL, so the payload is always sliced at the Data Offset. A list that
  runs past the header, a length below 2, or a known option with the wrong length
  is MALFORMED; unknown kinds are skipped. ``wscale`` is reported raw (the TCP core
  clamps it to 14, RFC 7323 §2.3); a repeated option keeps its last value.
* ICMPv4 errors: impacket decodes the quoted packet with its IPv4 parser (and the
  option loop above), so impacket only sees the 8-byte ICMP header; ``quoted`` is
  sliced from the raw bytes.

Types: ICMP echo (v4 8/0, v6 128/129) -> IcmpEcho; ICMP errors (v4 3/11/12, v6
1/2/3/4) -> IcmpError; other ICMP types and other protocols -> OtherIp.

Checksums are not verified by default: the WireGuard AEAD already authenticates every
inner packet, and a sum costs ~4 µs per 1400 bytes. ``decode_ip(buf,
verify_checksums=True)`` (or :func:`checksums_ok`) checks the IPv4 header, TCP, UDP
(a zero UDP checksum means "none" on IPv4 and is invalid on IPv6, RFC 8200 §8.1),
ICMP and ICMPv6 (with pseudo-header) and returns BAD_CHECKSUM on a mismatch. That check
runs before either path is picked, so both paths answer to exactly the same checks.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any, NamedTuple

from ..errors import DropReason
from .checksum import checksum
from .segments import (
    IPV6_EXTENSION_CHAIN,
    Decoded,
    IcmpEcho,
    IcmpError,
    IPAddress,
    IpProto,
    OtherIp,
    TcpFlags,
    TcpSegment,
    UdpDatagram,
)

__all__ = [
    "checksums_ok",
    "decode_ip",
    "fast_decode_tcp",
    "fast_decode_udp_or_echo",
    "impacket_decode_ip",
    "preload_decoder",
]

_MALFORMED = DropReason.MALFORMED

# Fast path: IPv4 header (skipping ver/ihl, tos, id, ttl, checksum) + the first 16
# bytes of TCP (skipping checksum and urgent pointer).
_FAST4 = struct.Struct("!2xH2xHxB2xIIHHIIBBH")
# IPv6 header (skipping version/class/flow and hop limit) + first 16 bytes of TCP.
_FAST6 = struct.Struct("!4xHBx16s16sHHIIBBH")
# UDP and ICMP echo share one layout: the IP header fields above + the four 16-bit
# words of the 8-byte upper-layer header (UDP: sport, dport, length, checksum; ICMP:
# type/code, checksum, identifier, sequence).
_SMALL4 = struct.Struct("!2xH2xHxB2xIIHHHH")
_SMALL6 = struct.Struct("!4xHBx16s16sHHHH")
_TS_BLOCK = struct.Struct("!III")  # NOP NOP 8 10 | TSval | TSecr
_TS_PAIR = struct.Struct("!II")  # TSval | TSecr
_NOP_NOP_TS = 0x0101080A
# A plain int: ``int & IntFlag`` builds an enum member and costs ~1.8 µs.
_NOT_FAST = int(TcpFlags.RST | TcpFlags.URG)
_FLAGS = tuple(TcpFlags(i) for i in range(256))  # IntFlag construction is slow; index instead

_IP4_HDR = struct.Struct("!BBHHHBBH4s4s")
_IP6_HDR = struct.Struct("!IHBB16s16s")
_U16 = struct.Struct("!H")


_ICMP4_ECHO = {8: True, 0: False}  # type -> is_request
_ICMP6_ECHO = {128: True, 129: False}
_ICMP4_ERRORS = frozenset((3, 11, 12))  # unreachable, time exceeded, parameter problem
_ICMP6_ERRORS = frozenset((1, 2, 3, 4))  # unreachable, too big, time exceeded, param problem

# Address objects cost ~0.5-1 µs to build; flows reuse a handful, so memoise them.
# Bounded: cleared when full, so hostile traffic cannot grow it.
_ADDR_CACHE_MAX = 4096
_V4_CACHE: dict[int, IPv4Address] = {}
_V6_CACHE: dict[bytes, IPv6Address] = {}


def _v4(n: int) -> IPv4Address:
    a = _V4_CACHE.get(n)
    if a is None:
        if len(_V4_CACHE) >= _ADDR_CACHE_MAX:
            _V4_CACHE.clear()
        a = _V4_CACHE[n] = IPv4Address(n)
    return a


def _v6(b: bytes) -> IPv6Address:
    a = _V6_CACHE.get(b)
    if a is None:
        if len(_V6_CACHE) >= _ADDR_CACHE_MAX:
            _V6_CACHE.clear()
        a = _V6_CACHE[b] = IPv6Address(b)
    return a


def _addr(raw: bytes) -> IPAddress:
    return _v4(int.from_bytes(raw, "big")) if len(raw) == 4 else _v6(raw)


# --------------------------------------------------------------------------- fast path


def fast_decode_tcp(buf: bytes) -> TcpSegment | None:
    """Decode the common bulk TCP shape with ``struct`` only; None if ``buf`` is not it.

    None means "not handled here", never "bad": the caller falls back to the full
    decoder, which also judges malformed input. Every length is checked before use.
    """
    n = len(buf)
    if n < 40:
        return None
    first = buf[0]
    src: IPAddress
    dst: IPAddress
    if first == 0x45:
        total, frag, proto, s4, d4, sport, dport, seq, ack, off, flags, win = _FAST4.unpack_from(buf)
        if proto != 6 or frag & 0x3FFF or total > n:
            return None
        tcp = 20
        end = total
        src = _V4_CACHE.get(s4) or _v4(s4)
        dst = _V4_CACHE.get(d4) or _v4(d4)
    elif first >> 4 == 6:
        if n < 60:
            return None
        plen, nh, s6, d6, sport, dport, seq, ack, off, flags, win = _FAST6.unpack_from(buf)
        end = 40 + plen
        if nh != 6 or end > n:
            return None
        tcp = 40
        src = _V6_CACHE.get(s6) or _v6(s6)
        dst = _V6_CACHE.get(d6) or _v6(d6)
    else:
        return None
    if flags & _NOT_FAST:
        return None
    doff = off >> 4
    if doff == 5:
        start = tcp + 20
        if start > end:
            return None
        ts_val = ts_ecr = None
    elif doff == 8 and tcp + 32 <= end and _TS_BLOCK.unpack_from(buf, tcp + 20)[0] == _NOP_NOP_TS:
        start = tcp + 32
        ts_val, ts_ecr = _TS_PAIR.unpack_from(buf, tcp + 24)
    elif doff > 5:
        # Any other option list (SACK blocks behind the timestamps, as Linux sends during
        # recovery): parsed by the same function as the general path's.
        start = tcp + 4 * doff
        if start > end:
            return None
        opts = _parse_tcp_options(buf[tcp + 20 : start])
        if opts is None:
            return None  # malformed: the general path says so
        return TcpSegment(src, dst, sport, dport, seq, ack, _FLAGS[flags], win, buf[start:end], *opts)
    else:
        return None
    # The header fields positionally (their order is pinned by tests/test_segments.py), the
    # options by name: absent options keep the record's defaults.
    payload = buf[start:end]
    return TcpSegment(src, dst, sport, dport, seq, ack, _FLAGS[flags], win, payload, ts_val=ts_val, ts_ecr=ts_ecr)


def fast_decode_udp_or_echo(buf: bytes) -> UdpDatagram | IcmpEcho | None:
    """Decode UDP or an ICMP/ICMPv6 echo with ``struct`` only; None if ``buf`` is not that.

    Same contract as :func:`fast_decode_tcp`: None means "ask the full decoder", which
    also judges malformed input (a UDP length below 8 or past the IP payload, a short
    ICMP header, options, extension headers). Every length is checked before use.
    """
    n = len(buf)
    if n < 28:
        return None
    first = buf[0]
    src: IPAddress
    dst: IPAddress
    if first == 0x45:
        total, frag, proto, s4, d4, w0, w1, w2, w3 = _SMALL4.unpack_from(buf)
        if frag & 0x3FFF or total > n:
            return None
        l4 = 20
        echo = _ICMP4_ECHO if proto == 1 else None
        src = _V4_CACHE.get(s4) or _v4(s4)
        dst = _V4_CACHE.get(d4) or _v4(d4)
    elif first >> 4 == 6:
        if n < 48:
            return None
        plen, proto, s6, d6, w0, w1, w2, w3 = _SMALL6.unpack_from(buf)
        total = 40 + plen
        if total > n:
            return None
        l4 = 40
        echo = _ICMP6_ECHO if proto == 58 else None
        src = _V6_CACHE.get(s6) or _v6(s6)
        dst = _V6_CACHE.get(d6) or _v6(d6)
    else:
        return None
    start = l4 + 8
    if proto == 17:
        end = l4 + w2  # w2: the UDP length field, header included
        if w2 < 8 or end > total:
            return None
        return UdpDatagram(src, dst, w0, w1, buf[start:end])
    if echo is None or start > total:
        return None
    is_request = echo.get(w0 >> 8)  # the type byte; the code is not looked at
    if is_request is None:
        return None
    return IcmpEcho(src, dst, is_request, w2, w3, buf[start:total])


# Protocol byte -> fast decoder, for the dispatch in decode_ip. ICMP (1) in IPv6 and
# ICMPv6 (58) in IPv4 reach fast_decode_udp_or_echo, which declines them by version.
_FAST_BY_PROTO: dict[int, Callable[[bytes], Decoded | None]] = {
    6: fast_decode_tcp,
    17: fast_decode_udp_or_echo,
    1: fast_decode_udp_or_echo,
    58: fast_decode_udp_or_echo,
}
_FAST_MIN_LEN = 28  # the smallest fast shape: IPv4 + an 8-byte UDP/ICMP header


# --------------------------------------------------------------------------- layout


class _Layout(NamedTuple):
    """Where the upper layer is, after every IP-level length check passed."""

    version: int
    src: bytes  # raw 4 or 16 bytes
    dst: bytes
    proto: int  # upper-layer protocol / final next header
    l4: bytes  # exactly the upper-layer bytes (trailing bytes removed)
    header_len: int  # IPv4 header length (for the header checksum); 40 for IPv6


def _ipv4_options_ok(opts: bytes) -> bool:
    """RFC 791 option list: EOL ends it, NOP is one byte, others are TLVs of >= 2."""
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == 0:
            return True
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n:
            return False
        length = opts[i + 1]
        if length < 2 or i + length > n:
            return False
        i += length
    return True


def _ipv6_options_ok(opts: bytes) -> bool:
    """RFC 8200 §4.2 TLV options (Pad1 is one byte); they must fill the header exactly."""
    i, n = 0, len(opts)
    while i < n:
        if opts[i] == 0:
            i += 1
            continue
        if i + 1 >= n:
            return False
        i += opts[i + 1] + 2
    return i == n


def _layout(buf: bytes) -> _Layout | DropReason:
    n = len(buf)
    if n < 1:
        return _MALFORMED
    version = buf[0] >> 4
    if version == 4:
        if n < 20:
            return _MALFORMED
        ihl = (buf[0] & 0x0F) * 4
        total, frag = struct.unpack_from("!HxxH", buf, 2)
        if ihl < 20 or total < ihl or total > n:
            return _MALFORMED
        if frag & 0x3FFF:
            return _MALFORMED  # an unreassembled fragment
        if ihl > 20 and not _ipv4_options_ok(buf[20:ihl]):
            return _MALFORMED
        return _Layout(4, buf[12:16], buf[16:20], buf[9], buf[ihl:total], ihl)
    if version == 6:
        if n < 40:
            return _MALFORMED
        end = 40 + _U16.unpack_from(buf, 4)[0]
        if end > n:
            return _MALFORMED
        nh = buf[6]
        off = 40
        while nh in IPV6_EXTENSION_CHAIN:
            if nh == IpProto.IPV6_HOP_BY_HOP and off != 40:
                return _MALFORMED  # RFC 8200 §4.3: only immediately after the header
            if off + 8 > end:
                return _MALFORMED
            hlen = (buf[off + 1] + 1) * 8
            if off + hlen > end:
                return _MALFORMED
            if nh != IpProto.IPV6_ROUTING and not _ipv6_options_ok(buf[off + 2 : off + hlen]):
                return _MALFORMED
            nh = buf[off]
            off += hlen
        if nh == IpProto.IPV6_FRAGMENT:
            return _MALFORMED  # an unreassembled fragment
        return _Layout(6, buf[8:24], buf[24:40], nh, buf[off:end], 40)
    return _MALFORMED


# ----------------------------------------------------------------------- TCP options


class _TcpOptions(NamedTuple):  # TcpSegment's option fields and defaults (pinned by tests/test_segments.py)
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    ts_val: int | None = None
    ts_ecr: int | None = None


_NO_OPTIONS = _TcpOptions()


def _parse_tcp_options(opts: bytes) -> _TcpOptions | None:
    """Parse the option bytes of a TCP header; None if the list is malformed."""
    if not opts:
        return _NO_OPTIONS
    mss = wscale = ts_val = ts_ecr = None
    sack_permitted = False
    blocks: tuple[tuple[int, int], ...] = ()
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == 0:  # EOL: the rest is padding
            break
        if kind == 1:  # NOP
            i += 1
            continue
        if i + 1 >= n:
            return None
        length = opts[i + 1]
        if length < 2 or i + length > n:
            return None
        if kind == 2:
            if length != 4:
                return None
            mss = _U16.unpack_from(opts, i + 2)[0]
        elif kind == 3:
            if length != 3:
                return None
            wscale = opts[i + 2]
        elif kind == 4:
            if length != 2:
                return None
            sack_permitted = True
        elif kind == 5:
            if length < 10 or (length - 2) % 8:
                return None
            edges = struct.unpack_from(f"!{(length - 2) // 4}I", opts, i + 2)
            blocks = tuple(zip(edges[0::2], edges[1::2]))
        elif kind == 8:
            if length != 10:
                return None
            ts_val, ts_ecr = struct.unpack_from("!II", opts, i + 2)
        i += length
    return _TcpOptions(mss, wscale, sack_permitted, blocks, ts_val, ts_ecr)


# --------------------------------------------------------------------- impacket path

_decoders: tuple[Any, Any] | None = None


class _NotYetImported(Exception):
    """Stands in for ImpactPacketException until impacket is imported."""


# Rebound to impacket's exception class on import; read when an exception is matched.
_ImpactError: type[Exception] = _NotYetImported


def _impacket() -> tuple[Any, Any]:
    """Import impacket on first use (it pulls in pyasn1, pycryptodomex, ldap3, flask...)."""
    global _decoders, _ImpactError
    if _decoders is None:
        from impacket import ImpactDecoder, ImpactPacket

        _ImpactError = ImpactPacket.ImpactPacketException
        _decoders = (ImpactDecoder.IPDecoder, ImpactDecoder.IP6Decoder)
    return _decoders


def preload_decoder() -> None:
    """Import impacket and run its decoders once now, so that the first packet off the fast
    path (an RST, an ICMP error) does not stall the tunnel for the import (~20-40 ms)."""
    _impacket()
    impacket_decode_ip(_WARM_UP_SYN)


# A 44-byte IPv4 TCP SYN with an MSS option, 10.0.0.2:1 -> 10.0.0.1:2 (checksums zero:
# decoding does not verify them).
_WARM_UP_SYN = bytes.fromhex(
    "4500002c00004000400600000a0000020a000001"  # IPv4 header, total length 44
    "0001000200000003000000006002006400000000"  # TCP header, data offset 6, SYN
    "02040578"  # MSS 1400
)


def _impacket_parse(lay: _Layout, l4: bytes) -> Any:
    """Run impacket over a plain header (no IPv4 options, no IPv6 extensions) + ``l4``.

    Returns impacket's upper-layer object.
    """
    ip_dec, ip6_dec = _impacket()
    if lay.version == 4:
        hdr = _IP4_HDR.pack(0x45, 0, 20 + len(l4), 0, 0, 64, lay.proto, 0, lay.src, lay.dst)
        ip = ip_dec().decode(hdr + l4)
        src: IPAddress = IPv4Address(ip.get_ip_src())
        dst: IPAddress = IPv4Address(ip.get_ip_dst())
    else:
        hdr = _IP6_HDR.pack(0x60000000, len(l4), lay.proto, 64, lay.src, lay.dst)
        ip = ip6_dec().decode(hdr + l4)
        src = IPv6Address(bytes(ip.get_ip_src().as_bytes()))
        dst = IPv6Address(bytes(ip.get_ip_dst().as_bytes()))
    # Sanity: impacket must agree with our own reading of the addresses.
    if src.packed != lay.src or dst.packed != lay.dst:
        raise ValueError("impacket address mismatch")
    return ip.child()


def _decode_tcp(lay: _Layout) -> Decoded | DropReason:
    l4 = lay.l4
    if len(l4) < 20:
        return _MALFORMED
    hlen = (l4[12] >> 4) * 4
    if hlen < 20 or hlen > len(l4):
        return _MALFORMED
    opts = _parse_tcp_options(l4[20:hlen])
    if opts is None:
        return _MALFORMED
    t = _impacket_parse(lay, l4)
    if t.get_th_off() * 4 != hlen:
        return _MALFORMED
    return TcpSegment(
        src=_addr(lay.src),
        dst=_addr(lay.dst),
        sport=t.get_th_sport(),
        dport=t.get_th_dport(),
        seq=t.get_th_seq(),
        ack=t.get_th_ack(),
        flags=_FLAGS[t.get_th_flags() & 0xFF],
        window=t.get_th_win(),
        payload=l4[hlen:],
        mss=opts.mss,
        wscale=opts.wscale,
        sack_permitted=opts.sack_permitted,
        sack_blocks=opts.sack_blocks,
        ts_val=opts.ts_val,
        ts_ecr=opts.ts_ecr,
    )


def _decode_udp(lay: _Layout) -> Decoded | DropReason:
    l4 = lay.l4
    if len(l4) < 8:
        return _MALFORMED
    ulen = _U16.unpack_from(l4, 4)[0]
    if ulen < 8 or ulen > len(l4):
        return _MALFORMED
    u = _impacket_parse(lay, l4[:ulen])
    return UdpDatagram(_addr(lay.src), _addr(lay.dst), u.get_uh_sport(), u.get_uh_dport(), l4[8:ulen])


def _decode_icmp(lay: _Layout) -> Decoded | DropReason:
    l4 = lay.l4
    if len(l4) < 8:
        return _MALFORMED
    v4 = lay.version == 4
    echo = _ICMP4_ECHO if v4 else _ICMP6_ECHO
    errors = _ICMP4_ERRORS if v4 else _ICMP6_ERRORS
    kind = l4[0]
    if kind in echo:
        ic = _impacket_parse(lay, l4)
        if v4:
            ident, seq = ic.get_icmp_id(), ic.get_icmp_seq()
        else:
            ident, seq = ic.get_echo_id(), ic.get_echo_sequence_number()
        return IcmpEcho(_addr(lay.src), _addr(lay.dst), echo[kind], ident, seq, l4[8:])
    if kind in errors:
        ic = _impacket_parse(lay, l4[:8])  # never let impacket parse the quoted packet
        if v4:
            type_, code = ic.get_icmp_type(), ic.get_icmp_code()
        else:
            type_, code = ic.get_type(), ic.get_code()
        return IcmpError(_addr(lay.src), _addr(lay.dst), type_, code, l4[8:])
    return OtherIp(_addr(lay.src), _addr(lay.dst), lay.proto)


def impacket_decode_ip(buf: bytes) -> Decoded | DropReason:
    """The general decoder: plain-Python length checks, then impacket. Never raises."""
    try:
        lay = _layout(buf)
        if isinstance(lay, DropReason):
            return lay
        proto = lay.proto
        if proto == IpProto.TCP:
            return _decode_tcp(lay)
        if proto == IpProto.UDP:
            return _decode_udp(lay)
        if proto == (IpProto.ICMP if lay.version == 4 else IpProto.ICMPV6):
            return _decode_icmp(lay)
        return OtherIp(_addr(lay.src), _addr(lay.dst), proto)
    except (struct.error, IndexError, ValueError, _ImpactError):
        return _MALFORMED


# ----------------------------------------------------------------------- checksums


def checksums_ok(buf: bytes) -> bool:
    """True unless a checksum in ``buf`` is present and wrong.

    Packets that cannot be laid out count as "ok" here: :func:`decode_ip` reports them
    as MALFORMED. Covers the IPv4 header, TCP, UDP, ICMP and ICMPv6.
    """
    lay = _layout(buf)
    if isinstance(lay, DropReason):
        return True
    if lay.version == 4 and checksum(buf[: lay.header_len]):
        return False
    proto, l4 = lay.proto, lay.l4
    if proto == IpProto.ICMP and lay.version == 4:
        return len(l4) < 8 or checksum(l4) == 0
    if proto == IpProto.UDP:
        if len(l4) < 8:
            return True
        ulen = _U16.unpack_from(l4, 4)[0]
        if ulen < 8 or ulen > len(l4):
            return True
        if l4[6:8] == b"\x00\x00":
            return lay.version == 4  # "no checksum": allowed on IPv4 only (RFC 8200 §8.1)
        l4 = l4[:ulen]
    elif proto not in (IpProto.TCP, IpProto.ICMPV6):
        return True
    pseudo = int.from_bytes(lay.src, "big") + int.from_bytes(lay.dst, "big") + proto + len(l4)
    return checksum(l4, pseudo) == 0


# ---------------------------------------------------------------------- entry point


def decode_ip(buf: bytes, *, verify_checksums: bool = False) -> Decoded | DropReason:
    """Decode one reassembled IP packet; never raises.

    Returns a TcpSegment, UdpDatagram, IcmpEcho, IcmpError or OtherIp, or MALFORMED
    (bad lengths, unreassembled fragments, broken option lists) or, with
    ``verify_checksums``, BAD_CHECKSUM.
    """
    if verify_checksums:
        try:
            if not checksums_ok(buf):
                return DropReason.BAD_CHECKSUM
        except (struct.error, IndexError, ValueError):
            return _MALFORMED
    # Fast path first: one protocol byte (IPv4 at 9, IPv6 next header at 6) picks at
    # most one struct decoder; it returns None for any shape it does not take.
    if len(buf) >= _FAST_MIN_LEN:
        first = buf[0]
        if first == 0x45:
            fast = _FAST_BY_PROTO.get(buf[9])
        elif first >> 4 == 6:
            fast = _FAST_BY_PROTO.get(buf[6])
        else:
            fast = None
        if fast is not None:
            seg = fast(buf)
            if seg is not None:
                return seg
    return impacket_decode_ip(buf)
