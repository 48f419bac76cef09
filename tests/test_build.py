"""wgslirpy.net.build: every checksum against an independent reference, exact layouts."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_checksum import reference_checksum
from wgslirpy.errors import ConfigError
from wgslirpy.net.build import build_icmp_echo, build_icmp_unreachable, build_tcp, build_udp
from wgslirpy.net.segments import IcmpEcho, IPAddress, TcpFlags, TcpSegment, UdpDatagram, Unreachable

A4, B4 = IPv4Address("10.0.0.2"), IPv4Address("93.184.216.34")
A6, B6 = IPv6Address("fd00::2"), IPv6Address("2001:db8::1:34")

# ------------------------------------------------------------------ strategies (shared)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
v4_pairs = st.tuples(st.integers(0, 2**32 - 1).map(IPv4Address), st.integers(0, 2**32 - 1).map(IPv4Address))
v6_pairs = st.tuples(st.integers(0, 2**128 - 1).map(IPv6Address), st.integers(0, 2**128 - 1).map(IPv6Address))
addr_pairs = st.one_of(v4_pairs, v6_pairs)


@st.composite
def tcp_segments(draw: Any, *, fast: bool = False, max_payload: int = 1500) -> TcpSegment:
    """Any TcpSegment build_tcp can represent exactly.

    ``fast=True`` restricts to the shape fast_decode_tcp accepts: no options but
    timestamps, and no RST/URG.
    """
    src, dst = draw(addr_pairs)
    flags = draw(st.integers(0, 255))
    ts = draw(st.one_of(st.none(), st.tuples(u32, u32)))
    mss = wscale = None
    sack_permitted = False
    blocks: tuple[tuple[int, int], ...] = ()
    if fast:
        flags &= ~(TcpFlags.RST | TcpFlags.URG)
    else:
        mss = draw(st.one_of(st.none(), u16))
        wscale = draw(st.one_of(st.none(), st.integers(0, 255)))
        sack_permitted = draw(st.booleans())
        used = (4 if mss is not None else 0) + (12 if ts else 4 if sack_permitted else 0)
        used += 4 if wscale is not None else 0
        room = max(0, (40 - used - 4) // 8)
        blocks = tuple(draw(st.lists(st.tuples(u32, u32), max_size=room)))
    return TcpSegment(
        src=src,
        dst=dst,
        sport=draw(u16),
        dport=draw(u16),
        seq=draw(u32),
        ack=draw(u32),
        flags=TcpFlags(flags),
        window=draw(u16),
        payload=draw(st.binary(max_size=max_payload)),
        mss=mss,
        wscale=wscale,
        sack_permitted=sack_permitted,
        sack_blocks=blocks,
        ts_val=ts[0] if ts else None,
        ts_ecr=ts[1] if ts else None,
    )


udp_datagrams = st.builds(
    lambda pair, sp, dp, payload: UdpDatagram(pair[0], pair[1], sp, dp, payload),
    addr_pairs,
    u16,
    u16,
    st.binary(max_size=1500),
)
icmp_echoes = st.builds(
    lambda pair, req, ident, seq, payload: IcmpEcho(pair[0], pair[1], req, ident, seq, payload),
    addr_pairs,
    st.booleans(),
    u16,
    u16,
    st.binary(max_size=1500),
)

# ---------------------------------------------------- independent reference verifier


def reference_verify(packet: bytes) -> tuple[int, bytes]:
    """Check lengths and every checksum the plain way; return (protocol, upper layer)."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        assert reference_checksum(packet[:ihl]) == 0, "IPv4 header checksum"
        assert int.from_bytes(packet[2:4], "big") == len(packet)
        proto = packet[9]
        l4 = packet[ihl:]
        pseudo = packet[12:20] + bytes([0, proto]) + len(l4).to_bytes(2, "big")
        if proto == 1:
            assert reference_checksum(l4) == 0, "ICMP checksum"
            return proto, l4
    else:
        assert packet[0] >> 4 == 6
        assert int.from_bytes(packet[4:6], "big") == len(packet) - 40, "IPv6 payload length"
        proto = packet[6]
        l4 = packet[40:]
        pseudo = packet[8:40] + len(l4).to_bytes(4, "big") + bytes([0, 0, 0, proto])
    assert proto in (6, 17, 58)
    if proto == 17:
        assert int.from_bytes(l4[4:6], "big") == len(l4)
        assert l4[6:8] != b"\x00\x00", "we always send a UDP checksum"
    assert reference_checksum(pseudo + l4) == 0, f"protocol {proto} checksum"
    return proto, l4


# --------------------------------------------------------------------- known answers


# Checksums in the known answers below were computed with the byte-pair reference loop.


def test_known_answer_tcp_ipv4() -> None:
    seg = TcpSegment(
        A4,
        B4,
        40000,
        80,
        0x01020304,
        0x0A0B0C0D,
        TcpFlags.ACK | TcpFlags.PSH,
        502,
        b"GET / HTTP/1.0\r\n\r\n",
        ts_val=1000,
        ts_ecr=2000,
    )
    expected = bytes.fromhex(
        "4500 0046 0000 4000 4006 fad5 0a000002 5db8d822"  # IPv4: len 70, DF, ttl 64, TCP
        "9c40 0050 01020304 0a0b0c0d 8018 01f6 93ca 0000"  # TCP: doff 8, ACK|PSH, win 502
        "0101080a 000003e8 000007d0"  # NOP NOP TS 1000 2000
        "474554202f20485454502f312e300d0a0d0a"
    )
    assert build_tcp(seg) == expected
    reference_verify(expected)


def test_known_answer_udp_ipv6() -> None:
    d = UdpDatagram(A6, B6, 5353, 53, b"abc")
    expected = bytes.fromhex(
        "60000000 000b 11 40"  # payload length 11, next header UDP, hop limit 64
        "fd000000000000000000000000000002 20010db8000000000000000000010034"
        "14e9 0035 000b fb66 616263"
    )
    assert build_udp(d) == expected
    reference_verify(expected)


def test_known_answer_udp_ipv4() -> None:
    expected = bytes.fromhex(
        "4500 0021 0000 0000 4011 3af0 0a000002 5db8d822"  # len 33, no DF, ttl 64, UDP
        "9c40 0035 000d f9ba 6162636465"
    )
    assert build_udp(UdpDatagram(A4, B4, 40000, 53, b"abcde")) == expected
    reference_verify(expected)


def test_known_answer_icmp_echo() -> None:
    v4 = bytes.fromhex("4500 0020 0000 0000 4001 3b01 0a000002 5db8d822 0800 06f4 1234 0007 70696e67")
    assert build_icmp_echo(IcmpEcho(A4, B4, True, 0x1234, 7, b"ping")) == v4
    v6 = bytes.fromhex(
        "60000000 000d 3a 40 fd000000000000000000000000000002 20010db8000000000000000000010034"
        "8100 41b5 1234 0007 706f6e6721"  # echo reply, odd-length payload
    )
    assert build_icmp_echo(IcmpEcho(A6, B6, False, 0x1234, 7, b"pong!")) == v6
    for packet in (v4, v6):
        reference_verify(packet)


def test_icmp_all_zero_message_checksum_is_ffff() -> None:
    # Echo reply, id 0, seq 0, no data: every word is 0, so the one's-complement sum is
    # 0 and the field is 0xFFFF (the only case where fold() returns all ones).
    packet = build_icmp_echo(IcmpEcho(A4, B4, False, 0, 0, b""))
    assert packet[20:] == bytes.fromhex("0000 ffff 0000 0000")
    reference_verify(packet)


# ------------------------------------------------------ every checksum, by reference


@given(tcp_segments())
def test_tcp_checksums(seg: TcpSegment) -> None:
    packet = build_tcp(seg)
    proto, l4 = reference_verify(packet)
    assert proto == 6
    assert l4[-len(seg.payload) :] == seg.payload or not seg.payload
    assert (l4[12] >> 4) * 4 + len(seg.payload) == len(l4)


@given(udp_datagrams)
def test_udp_checksums(d: UdpDatagram) -> None:
    proto, l4 = reference_verify(build_udp(d))
    assert proto == 17 and l4[8:] == d.payload


@given(st.one_of(udp_datagrams, icmp_echoes), st.integers(0, 255))
def test_udp_and_icmp_header_fields(value: UdpDatagram | IcmpEcho, ttl: int) -> None:
    if isinstance(value, UdpDatagram):
        packet = build_udp(value, ttl=ttl)
        words: tuple[int, ...] = (value.sport, value.dport, 8 + len(value.payload))
    else:
        packet = build_icmp_echo(value, ttl=ttl)
        words = (value.ident, value.seq)
    if value.src.version == 4:
        assert packet[8] == ttl and packet[12:16] == value.src.packed and packet[16:20] == value.dst.packed
        l4 = packet[20:]
    else:
        assert packet[7] == ttl and packet[8:24] == value.src.packed and packet[24:40] == value.dst.packed
        l4 = packet[40:]
    if isinstance(value, UdpDatagram):
        assert struct.unpack("!HHH", l4[:6]) == words
    else:
        assert struct.unpack("!HH", l4[4:8]) == words
    reference_verify(packet)


@given(icmp_echoes)
def test_icmp_echo_checksums(e: IcmpEcho) -> None:
    proto, l4 = reference_verify(build_icmp_echo(e))
    v4 = e.src.version == 4
    assert proto == (1 if v4 else 58)
    assert l4[0] == ((8 if e.is_request else 0) if v4 else (128 if e.is_request else 129))
    assert struct.unpack("!HH", l4[4:8]) == (e.ident, e.seq) and l4[8:] == e.payload


@given(addr_pairs, st.sampled_from(list(Unreachable)), st.binary(max_size=3000), st.integers(68, 65535))
def test_icmp_unreachable_checksums(
    pair: tuple[IPAddress, IPAddress], kind: Unreachable, original: bytes, mtu: int
) -> None:
    packet = build_icmp_unreachable(pair[0], pair[1], kind, original, mtu=mtu)
    proto, l4 = reference_verify(packet)
    limit = 576 if proto == 1 else 1280
    assert len(packet) <= limit
    assert l4[8:] == original[: limit - len(packet) + len(l4) - 8] or len(packet) == limit


@pytest.mark.parametrize("payload_len", [0, 1, 2, 3, 1399, 1400])
@pytest.mark.parametrize("pair", [(A4, B4), (A6, B6)])
def test_odd_and_empty_payloads(payload_len: int, pair: tuple[IPAddress, IPAddress]) -> None:
    payload = bytes(range(256)) * 6
    payload = payload[:payload_len]
    reference_verify(build_tcp(TcpSegment(pair[0], pair[1], 1, 2, 3, 4, TcpFlags.ACK, 5, payload)))
    reference_verify(build_udp(UdpDatagram(pair[0], pair[1], 1, 2, payload)))
    reference_verify(build_icmp_echo(IcmpEcho(pair[0], pair[1], False, 1, 2, payload)))


@pytest.mark.parametrize("pair", [(A4, B4), (A6, B6)])
def test_udp_zero_checksum_is_sent_as_ffff(pair: tuple[IPAddress, IPAddress]) -> None:
    # With a 2-byte payload w, the sum is S + w; choosing w = ~S makes it 0xFFFF,
    # whose complement 0 must go out as 0xFFFF (RFC 768; IPv6 receivers drop 0).
    probe = build_udp(UdpDatagram(pair[0], pair[1], 1000, 2000, b"\x00\x00"))
    c = probe[-4:-2]
    packet = build_udp(UdpDatagram(pair[0], pair[1], 1000, 2000, c))
    assert packet[-4:-2] == b"\xff\xff"
    reference_verify(packet)


# ----------------------------------------------------------------- header fields


def test_ipv4_fields() -> None:
    tcp = build_tcp(TcpSegment(A4, B4, 1, 2, 3, 4, TcpFlags.ACK, 5), ttl=7)
    assert tcp[8] == 7
    assert tcp[4:8] == b"\x00\x00\x40\x00"  # id 0, DF: atomic datagram (RFC 6864)
    for packet in (
        build_udp(UdpDatagram(A4, B4, 1, 2, b"x")),
        build_icmp_echo(IcmpEcho(A4, B4, True, 1, 2, b"")),
        build_icmp_unreachable(B4, A4, Unreachable.PORT, tcp),
    ):
        assert packet[4:8] == b"\x00\x00\x00\x00"  # no DF: may be fragmented
        assert packet[8] == 64


def test_ipv6_fields() -> None:
    packet = build_tcp(TcpSegment(A6, B6, 1, 2, 3, 4, TcpFlags.ACK, 5, b"xyz"), ttl=9)
    assert packet[:4] == b"\x60\x00\x00\x00"
    assert int.from_bytes(packet[4:6], "big") == 23 and packet[6] == 6 and packet[7] == 9
    assert packet[8:24] == A6.packed and packet[24:40] == B6.packed


# ------------------------------------------------------------------ TCP options


def _options(seg: TcpSegment) -> bytes:
    packet = build_tcp(seg)
    off = 20 if seg.src.version == 4 else 40
    return packet[off + 20 : off + (packet[off + 12] >> 4) * 4]


def test_linux_syn_option_layout() -> None:
    syn = TcpSegment(
        A4, B4, 1, 2, 3, 0, TcpFlags.SYN, 64240, mss=1460, wscale=7, sack_permitted=True, ts_val=0x11223344, ts_ecr=0
    )
    # Exactly what Linux sends in a SYN.
    assert _options(syn) == bytes.fromhex("020405b4 0402080a 11223344 00000000 01030307")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ""),
        ({"ts_val": 1, "ts_ecr": 2}, "0101080a 00000001 00000002"),
        ({"ts_val": 1}, "0101080a 00000001 00000000"),  # ts_ecr None is sent as 0
        ({"mss": 536}, "02040218"),
        ({"sack_permitted": True}, "01010402"),
        ({"mss": 1460, "sack_permitted": True, "wscale": 0}, "020405b4 01010402 01030300"),
        ({"sack_blocks": ((1, 2),)}, "0101050a 00000001 00000002"),
        (
            {"ts_val": 5, "ts_ecr": 6, "sack_blocks": ((1, 2), (3, 4))},
            "0101080a 00000005 00000006 01010512 00000001 00000002 00000003 00000004",
        ),
    ],
)
def test_option_layouts(fields: dict[str, Any], expected: str) -> None:
    assert _options(TcpSegment(A4, B4, 1, 2, 3, 4, TcpFlags.ACK, 5, **fields)) == bytes.fromhex(expected)


def test_sack_blocks_beyond_option_space_are_dropped() -> None:
    blocks = ((1, 2), (3, 4), (5, 6), (7, 8))
    opts = _options(TcpSegment(A6, B6, 1, 2, 3, 4, TcpFlags.ACK, 5, ts_val=1, ts_ecr=1, sack_blocks=blocks))
    assert len(opts) == 40
    assert opts[12:16] == bytes.fromhex("0101051a")  # three blocks: the most recent first
    assert opts[16:] == struct.pack("!6I", 1, 2, 3, 4, 5, 6)


# ------------------------------------------------------------------ ICMP errors

V4_CODES = {Unreachable.NET: 0, Unreachable.HOST: 1, Unreachable.PORT: 3, Unreachable.ADMIN: 13}
V6_CODES = {Unreachable.NET: 0, Unreachable.ADMIN: 1, Unreachable.HOST: 3, Unreachable.PORT: 4}


@pytest.mark.parametrize("kind", list(V4_CODES))
def test_icmp4_unreachable_codes(kind: Unreachable) -> None:
    original = build_udp(UdpDatagram(A4, B4, 1, 2, b"q"))
    packet = build_icmp_unreachable(B4, A4, kind, original)
    assert packet[12:16] == B4.packed and packet[16:20] == A4.packed
    assert packet[20:22] == bytes([3, V4_CODES[kind]]) and packet[24:28] == bytes(4)
    assert packet[28:] == original


@pytest.mark.parametrize("kind", list(V6_CODES))
def test_icmp6_unreachable_codes(kind: Unreachable) -> None:
    original = build_udp(UdpDatagram(A6, B6, 1, 2, b"q"))
    packet = build_icmp_unreachable(B6, A6, kind, original)
    assert packet[40:42] == bytes([1, V6_CODES[kind]]) and packet[44:48] == bytes(4)
    assert packet[48:] == original


def test_frag_needed_and_packet_too_big() -> None:
    v4 = build_icmp_unreachable(B4, A4, Unreachable.FRAG_NEEDED, b"x" * 1000, mtu=1380)
    assert v4[20:22] == b"\x03\x04" and v4[24:28] == b"\x00\x00\x05\x64"  # next-hop MTU 1380
    assert len(v4) == 576
    v6 = build_icmp_unreachable(B6, A6, Unreachable.FRAG_NEEDED, b"x" * 2000, mtu=0x10500)
    assert v6[40:42] == b"\x02\x00" and v6[44:48] == b"\x00\x01\x05\x00"  # 32-bit MTU
    assert len(v6) == 1280


# ------------------------------------------------------------------ caller errors


def test_caller_errors() -> None:
    with pytest.raises(ConfigError):
        build_tcp(TcpSegment(A4, B6, 1, 2, 3, 4, TcpFlags.ACK, 5))
    with pytest.raises(ConfigError):
        build_tcp(TcpSegment(A4, B4, 70000, 2, 3, 4, TcpFlags.ACK, 5))
    with pytest.raises(ConfigError):
        build_tcp(TcpSegment(A4, B4, 1, 2, 3, 4, TcpFlags.ACK, 5, mss=70000))
    with pytest.raises(ConfigError):
        build_udp(UdpDatagram(A6, B4, 1, 2, b""))
    with pytest.raises(ConfigError):
        build_icmp_echo(IcmpEcho(A4, B4, True, -1, 0, b""))
    with pytest.raises(ConfigError):
        build_icmp_unreachable(B4, A4, Unreachable.FRAG_NEEDED, b"")
    with pytest.raises(ConfigError):
        build_icmp_unreachable(ip_address("::1"), A4, Unreachable.PORT, b"")


def test_udp_caller_errors() -> None:
    for bad in (
        UdpDatagram(A4, B4, 65536, 2, b""),
        UdpDatagram(A6, B6, 1, -1, b""),
        UdpDatagram(A6, B6, 1, 2, bytes(65528)),
    ):  # UDP length 65536
        with pytest.raises(ConfigError):
            build_udp(bad)
    with pytest.raises(ConfigError):
        build_udp(UdpDatagram(A4, B4, 1, 2, bytes(65508)))  # IPv4 total length 65536
    with pytest.raises(ConfigError):
        build_udp(UdpDatagram(A4, B4, 1, 2, b""), ttl=256)
    with pytest.raises(ConfigError):
        build_icmp_echo(IcmpEcho(A6, B6, True, 1, 65536, b""))


def test_packed_address_cache_is_bounded() -> None:
    from wgslirpy.net import build as mod

    for i in range(5000):
        src = IPv6Address(0xFD00 << 112 | i)
        packet = build_udp(UdpDatagram(src, B6, 1, 2, b"x"))
        assert packet[8:24] == src.packed and packet[24:40] == B6.packed
    assert len(mod._PACKED6) <= mod._PACKED_CACHE_MAX


def test_deterministic() -> None:
    seg = TcpSegment(A6, B6, 1, 2, 3, 4, TcpFlags.ACK, 5, b"p", ts_val=1, ts_ecr=2)
    assert build_tcp(seg) == build_tcp(seg)
