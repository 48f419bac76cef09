"""wgslirpy.net.packet: both decode paths, hostile bytes, round trips through build."""

from __future__ import annotations

import struct
import subprocess
import sys
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_build import A4, A6, B4, B6, icmp_echoes, tcp_segments, udp_datagrams
from wgslirpy.errors import DropReason
from wgslirpy.net.build import build_icmp_echo, build_icmp_unreachable, build_tcp, build_udp
from wgslirpy.net.packet import (
    checksums_ok,
    decode_ip,
    fast_decode_tcp,
    fast_decode_udp_or_echo,
    impacket_decode_ip,
)
from wgslirpy.net.segments import (
    IcmpEcho,
    IcmpError,
    IPAddress,
    OtherIp,
    TcpFlags,
    TcpSegment,
    UdpDatagram,
    Unreachable,
)

MALFORMED = DropReason.MALFORMED
DECODED = (TcpSegment, UdpDatagram, IcmpEcho, IcmpError, OtherIp, DropReason)

# --------------------------------------------------------------- raw packet helpers


def ip4(
    proto: int, l4: bytes, *, options: bytes = b"", frag: int = 0, src: IPv4Address = A4, dst: IPv4Address = B4
) -> bytes:
    """An IPv4 packet with arbitrary options/flags (header checksum left 0)."""
    ihl = 20 + len(options)
    return (
        struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, 0, ihl + len(l4), 0, frag, 64, proto, 0, src.packed, dst.packed)
        + options
        + l4
    )


def ip6(nh: int, payload: bytes, *, src: IPv6Address = A6, dst: IPv6Address = B6) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nh, 64, src.packed, dst.packed) + payload


def rewrap(packet: bytes, l4: bytes) -> bytes:
    """``packet``'s plain IPv4/IPv6 header (addresses, protocol) around a new upper layer."""
    if packet[0] >> 4 == 4:
        return ip4(packet[9], l4, src=IPv4Address(packet[12:16]), dst=IPv4Address(packet[16:20]))
    return ip6(packet[6], l4, src=IPv6Address(packet[8:24]), dst=IPv6Address(packet[24:40]))


def l4_of(packet: bytes) -> bytes:
    return packet[20:] if packet[0] >> 4 == 4 else packet[40:]


def tcp_hdr(flags: int = TcpFlags.ACK, options: bytes = b"", payload: bytes = b"", doff: int | None = None) -> bytes:
    doff = doff if doff is not None else (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", 1234, 80, 7, 9, doff << 4, flags, 1000, 0, 0) + options + payload


def udp_hdr(payload: bytes, length: int | None = None) -> bytes:
    return struct.pack("!HHHH", 53, 5353, 8 + len(payload) if length is None else length, 0) + payload


# ----------------------------------------------------------------------- import cost


def test_impacket_is_imported_lazily() -> None:
    code = (
        "import sys, wgslirpy, wgslirpy.net.packet as p, wgslirpy.net.build as b\n"
        "from ipaddress import ip_address as A\n"
        "from wgslirpy.net.segments import TcpSegment, TcpFlags\n"
        "seg = TcpSegment(A('10.0.0.1'), A('10.0.0.2'), 1, 2, 3, 4, TcpFlags.ACK, 5, b'x')\n"
        "assert p.decode_ip(b.build_tcp(seg)) == seg\n"
        "assert 'impacket' not in sys.modules, 'fast path imported impacket'\n"
        "p.decode_ip(b.build_tcp(TcpSegment(seg.src, seg.dst, 1, 2, 3, 4, TcpFlags.RST, 5)))\n"
        "assert 'impacket' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------- round trips


@settings(max_examples=300)
@given(tcp_segments())
def test_round_trip_tcp(seg: TcpSegment) -> None:
    packet = build_tcp(seg)
    assert decode_ip(packet) == seg
    assert decode_ip(packet, verify_checksums=True) == seg
    assert impacket_decode_ip(packet) == seg


@given(udp_datagrams)
def test_round_trip_udp(d: UdpDatagram) -> None:
    assert decode_ip(build_udp(d), verify_checksums=True) == d


@given(icmp_echoes)
def test_round_trip_icmp_echo(e: IcmpEcho) -> None:
    assert decode_ip(build_icmp_echo(e), verify_checksums=True) == e


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"mss": 1460},
        {"wscale": 14},
        {"sack_permitted": True},
        {"ts_val": 1, "ts_ecr": 2},
        {"sack_blocks": ((1, 2), (3, 4), (5, 6), (7, 8))},
        {"mss": 1, "wscale": 0, "sack_permitted": True, "ts_val": 0, "ts_ecr": 0},
        {"sack_permitted": True, "ts_val": 5, "ts_ecr": 0, "sack_blocks": ((9, 10),)},
        {"mss": 1360, "ts_val": 3, "ts_ecr": 4, "sack_blocks": ((1, 2), (3, 4))},
    ],
)
@pytest.mark.parametrize("pair", [(A4, B4), (A6, B6)])
@pytest.mark.parametrize("flags", [TcpFlags.SYN, TcpFlags.SYN | TcpFlags.ACK, TcpFlags.ACK, TcpFlags.RST])
def test_round_trip_option_combinations(
    fields: dict[str, object], pair: tuple[IPv4Address, IPv4Address], flags: TcpFlags
) -> None:
    seg = TcpSegment(pair[0], pair[1], 40000, 443, 2**32 - 1, 0, flags, 65535, b"data", **fields)  # type: ignore[arg-type]
    assert decode_ip(build_tcp(seg), verify_checksums=True) == seg


# ------------------------------------------------------- fast path == impacket path


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(tcp_segments(fast=True), st.binary(max_size=8))
def test_fast_path_agrees_with_impacket(seg: TcpSegment, trailer: bytes) -> None:
    packet = build_tcp(seg) + trailer  # bytes past the IP length are ignored by both
    fast = fast_decode_tcp(packet)
    slow = impacket_decode_ip(packet)
    assert fast is not None, "the fast path must accept this shape"
    assert isinstance(slow, TcpSegment)
    for name in TcpSegment._fields:
        assert getattr(fast, name) == getattr(slow, name), name
    assert fast == slow == seg


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(tcp_segments(), st.binary(max_size=8))
def test_fast_path_with_any_options_agrees_with_impacket(seg: TcpSegment, trailer: bytes) -> None:
    # Every option combination the builder writes, on segments without RST/URG (SYNs too).
    seg = seg._replace(flags=TcpFlags(int(seg.flags) & ~int(TcpFlags.RST | TcpFlags.URG)))
    packet = build_tcp(seg) + trailer
    fast = fast_decode_tcp(packet)
    slow = impacket_decode_ip(packet)
    assert fast is not None, "the fast path must accept this shape"
    assert isinstance(slow, TcpSegment)
    _assert_same_fields(fast, slow)
    assert fast == slow == seg


def _assert_same_fields(fast: object, slow: object) -> None:
    assert type(fast) is type(slow)
    for name in type(fast)._fields:  # type: ignore[attr-defined]
        assert getattr(fast, name) == getattr(slow, name), name


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(udp_datagrams, st.binary(max_size=12), st.binary(max_size=8))
def test_fast_udp_agrees_with_impacket(d: UdpDatagram, slack: bytes, trailer: bytes) -> None:
    # ``slack``: bytes inside the IP payload past the UDP length (cut off by both
    # paths); ``trailer``: bytes past the IP length (ignored by both).
    built = build_udp(d)
    packet = (rewrap(built, l4_of(built) + slack) if slack else built) + trailer
    fast = fast_decode_udp_or_echo(packet)
    slow = impacket_decode_ip(packet)
    assert fast is not None, "the fast path must accept this shape"
    _assert_same_fields(fast, slow)
    assert fast == slow == d == decode_ip(packet)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(icmp_echoes, st.integers(0, 255), st.binary(max_size=8))
def test_fast_icmp_echo_agrees_with_impacket(e: IcmpEcho, code: int, trailer: bytes) -> None:
    built = build_icmp_echo(e)
    off = 20 if e.src.version == 4 else 40
    packet = built[: off + 1] + bytes([code]) + built[off + 2 :] + trailer  # neither path reads the code
    fast = fast_decode_udp_or_echo(packet)
    slow = impacket_decode_ip(packet)
    assert fast is not None, "the fast path must accept this shape"
    _assert_same_fields(fast, slow)
    assert fast == slow == e == decode_ip(packet)


@st.composite
def near_fast_shapes(draw: st.DrawFn) -> bytes:
    """Plain-header IP packets around the fast shapes: lengths a little off, fragments,
    the wrong ICMP for the IP version, every ICMP type class, TCP flags and offsets."""
    v4 = draw(st.booleans())
    proto = draw(st.sampled_from([1, 6, 17, 58]))
    header = 20 if proto == 6 else 8
    short = draw(st.integers(0, 3)) == 0  # a quarter of the time, shorter than the header
    l4 = bytearray(draw(st.binary(max_size=header) if short else st.binary(min_size=header, max_size=48)))
    if proto == 17 and len(l4) >= 6:
        ulen = max(0, len(l4) + draw(st.sampled_from([0, 0, 0, -1, -5, 1, 3, -len(l4) + 7, -len(l4) + 8])))
        l4[4:6] = ulen.to_bytes(2, "big")
    elif proto in (1, 58) and l4:
        l4[0] = draw(st.sampled_from([0, 8, 128, 129, 0, 8, 128, 129, 3, 11, 1, 2, 13, 135]))
    elif proto == 6 and len(l4) >= 14:
        l4[12] = draw(st.sampled_from([0x50, 0x80, 0x40, 0x60, 0x70, 0xB0, 0xF0]))
        l4[13] = draw(st.sampled_from([0x10, 0x18, 0x11, 0x02, 0x04, 0x30]))
        if len(l4) >= 24 and draw(st.booleans()):
            l4[20:24] = b"\x01\x01\x08\x0a"
        elif len(l4) >= 22 and draw(st.booleans()):
            # an option list the parser must judge: kinds and lengths near the real ones
            l4[20] = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 8, 30]))
            l4[21] = draw(st.sampled_from([0, 1, 2, 3, 4, 10, 18, 26]))
    length_error = draw(st.sampled_from([0, 0, 0, 0, 0, -1, 1, -8, 7]))
    if v4:
        total = max(0, 20 + len(l4) + length_error)
        frag = draw(st.sampled_from([0, 0, 0, 0x4000, 0x2000, 0x0001]))
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, frag, 64, proto, 0, A4.packed, B4.packed)
    else:
        plen = max(0, len(l4) + length_error)
        hdr = struct.pack("!IHBB16s16s", 0x60000000, plen, proto, 64, A6.packed, B6.packed)
    return hdr + bytes(l4) + draw(st.binary(max_size=4))


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(near_fast_shapes())
def test_decode_ip_always_agrees_with_the_general_path(packet: bytes) -> None:
    # The fast paths only ever shortcut: whatever they take, the general path decodes
    # to an equal value, and whatever they decline it still judges (MALFORMED etc.).
    slow = impacket_decode_ip(packet)
    assert decode_ip(packet) == slow
    fast = fast_decode_udp_or_echo(packet)
    if fast is not None:
        _assert_same_fields(fast, slow)


def test_fast_udp_and_echo_decline_other_shapes() -> None:
    udp = udp_hdr(b"abc")
    echo = bytes([8, 0, 0, 0, 0, 1, 0, 2]) + b"ping"
    declined: list[tuple[bytes, DropReason | type]] = [
        (ip4(17, udp, options=b"\x01\x01\x01\x00"), UdpDatagram),  # IPv4 options
        (ip4(17, udp, frag=0x2000), MALFORMED),  # a fragment
        (ip4(17, udp, frag=0x0001), MALFORMED),
        (ip6(60, bytes([17, 0, 1, 4, 0, 0, 0, 0]) + udp), UdpDatagram),  # extension header
        (ip4(17, udp_hdr(b"abc", length=7)), MALFORMED),  # UDP length below 8
        (ip4(17, udp_hdr(b"abc", length=12)), MALFORMED),  # UDP length past the IP payload
        (ip6(17, udp_hdr(b"abc", length=0)), MALFORMED),
        (ip6(17, udp_hdr(b"abc", length=65535)), MALFORMED),
        (ip4(1, echo, options=b"\x01\x01\x01\x00"), IcmpEcho),
        (ip6(0, bytes([58, 0, 1, 4, 0, 0, 0, 0]) + bytes([128]) + echo[1:]), IcmpEcho),
        (ip4(1, bytes([8, 0, 0, 0, 0, 1, 0])), MALFORMED),  # short ICMP header
        (ip6(58, bytes([128, 0, 0, 0, 0, 1])), MALFORMED),
        (ip4(1, bytes([3, 3, 0, 0, 0, 0, 0, 0]) + bytes(28)), IcmpError),  # not an echo
        (ip6(58, bytes([1, 4, 0, 0, 0, 0, 0, 0]) + bytes(48)), IcmpError),
        (ip4(1, bytes([13, 0]) + bytes(18)), OtherIp),  # timestamp
        (ip4(1, bytes([128]) + echo[1:]), OtherIp),  # ICMPv6 type numbers in ICMPv4
        (ip6(58, echo), OtherIp),  # ICMPv4 type numbers in ICMPv6
        (ip4(58, bytes([128]) + echo[1:]), OtherIp),  # ICMPv6 inside IPv4
        (ip6(1, echo), OtherIp),  # ICMPv4 inside IPv6
        (ip4(6, tcp_hdr()), TcpSegment),
        (ip4(47, udp), OtherIp),
    ]
    for packet, expected in declined:
        assert fast_decode_udp_or_echo(packet) is None, packet.hex()
        got = decode_ip(packet)
        assert got == impacket_decode_ip(packet)
        assert got is expected if isinstance(expected, DropReason) else isinstance(got, expected), packet.hex()


@pytest.mark.parametrize(
    "fields",
    [
        {"flags": TcpFlags.RST | TcpFlags.ACK},
        {"flags": TcpFlags.URG | TcpFlags.ACK},
    ],
)
def test_fast_path_declines_other_shapes(fields: dict[str, object]) -> None:
    base: dict[str, object] = {"flags": TcpFlags.ACK}
    base.update(fields)
    seg = TcpSegment(A4, B4, 1, 2, 3, 4, window=5, **base)  # type: ignore[arg-type]
    assert fast_decode_tcp(build_tcp(seg)) is None
    assert decode_ip(build_tcp(seg)) == seg


@pytest.mark.parametrize(
    "fields",
    [
        {"mss": 1400},
        {"wscale": 2},
        {"sack_permitted": True},
        {"sack_blocks": ((1, 2),)},
        {"sack_blocks": ((1, 2),), "ts_val": 1, "ts_ecr": 1},  # Linux during recovery
        {"sack_blocks": ((1, 2), (5, 9), (20, 30)), "ts_val": 1, "ts_ecr": 1, "payload": b"data"},
    ],
)
@pytest.mark.parametrize("pair", [(A4, B4), (A6, B6)])
def test_fast_path_takes_other_option_lists(fields: dict[str, Any], pair: tuple[IPAddress, IPAddress]) -> None:
    seg = TcpSegment(pair[0], pair[1], 1, 2, 3, 4, TcpFlags.ACK, 5)._replace(**fields)
    packet = build_tcp(seg)
    assert fast_decode_tcp(packet) == seg == impacket_decode_ip(packet)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"mss": 1400, "sack_permitted": True},
        {"mss": 1380, "wscale": 7, "sack_permitted": True, "ts_val": 5000, "ts_ecr": 0},  # Linux's SYN
        {"flags": TcpFlags.SYN | TcpFlags.ACK, "mss": 1380, "wscale": 9, "ts_val": 1, "ts_ecr": 2},
        {"ts_val": 7, "ts_ecr": 0},  # NOP NOP TS alone: the one-struct layout
        {"payload": b"data on a SYN"},
    ],
)
@pytest.mark.parametrize("pair", [(A4, B4), (A6, B6)])
def test_fast_path_takes_syns(fields: dict[str, Any], pair: tuple[IPAddress, IPAddress]) -> None:
    # One SYN per short connection: through impacket it was ~30 us of the gateway's CPU each.
    seg = TcpSegment(pair[0], pair[1], 1, 2, 3, 0, TcpFlags.SYN, 5)._replace(**fields)
    packet = build_tcp(seg)
    assert fast_decode_tcp(packet) == seg == impacket_decode_ip(packet)


def test_fast_path_declines_non_simple_ip() -> None:
    l4 = tcp_hdr(payload=b"abc")
    assert fast_decode_tcp(ip4(6, l4, options=b"\x01\x01\x01\x00")) is None
    assert fast_decode_tcp(ip4(6, l4, frag=0x2000)) is None
    assert fast_decode_tcp(ip4(17, l4)) is None
    assert fast_decode_tcp(ip6(60, bytes([6, 0, 1, 4, 0, 0, 0, 0]) + l4)) is None
    assert fast_decode_tcp(build_udp(UdpDatagram(A4, B4, 1, 2, bytes(40)))) is None
    # A NOP NOP TS-sized block that is not timestamps goes through the option parser.
    odd = ip4(6, tcp_hdr(options=b"\x01\x01\x05\x0a" + bytes(8)))
    assert fast_decode_tcp(odd) == impacket_decode_ip(odd)
    # A malformed option list is not the fast path's to judge.
    bad = ip4(6, tcp_hdr(options=b"\x01\x01\x05\x09" + bytes(8)))
    assert fast_decode_tcp(bad) is None and decode_ip(bad) is MALFORMED


def test_fast_path_with_ip_options_still_decodes() -> None:
    packet = ip4(6, tcp_hdr(payload=b"abc"), options=b"\x01\x01\x01\x00")
    seg = decode_ip(packet)
    assert isinstance(seg, TcpSegment) and seg.payload == b"abc" and seg.sport == 1234


# ------------------------------------------------------------- known answer (Linux)


def test_linux_syn_known_answer() -> None:
    # A SYN written out by hand in Linux's layout (id 0x1c46, DF, window 64240, MSS,
    # SACK-permitted, timestamps, NOP, wscale 7); checksums from the byte-pair loop.
    packet = bytes.fromhex(
        "4500003c1c4640004006de990a0000025db8d822"
        "9c400050a6b1c7d200000000a002faf0087d0000"
        "020405b40402080a5d8c9c140000000001030307"
    )
    seg = decode_ip(packet, verify_checksums=True)
    assert seg == fast_decode_tcp(packet) == impacket_decode_ip(packet)
    assert seg == TcpSegment(
        A4,
        B4,
        40000,
        80,
        0xA6B1C7D2,
        0,
        TcpFlags.SYN,
        64240,
        b"",
        mss=1460,
        wscale=7,
        sack_permitted=True,
        ts_val=0x5D8C9C14,
        ts_ecr=0,
    )


# ------------------------------------------------------------------ hostile bytes


def _valid_packets() -> list[bytes]:
    return [
        build_tcp(TcpSegment(A4, B4, 1, 2, 3, 4, TcpFlags.ACK, 5, b"payload", ts_val=1, ts_ecr=2)),
        build_tcp(TcpSegment(A6, B6, 1, 2, 3, 4, TcpFlags.SYN, 5, b"", mss=1220, wscale=3, sack_permitted=True)),
        build_tcp(TcpSegment(A4, B4, 1, 2, 3, 4, TcpFlags.ACK, 5, b"xy", sack_blocks=((1, 2), (3, 4)))),
        build_udp(UdpDatagram(A4, B4, 1, 2, b"hello")),
        build_udp(UdpDatagram(A6, B6, 1, 2, b"hello")),
        build_icmp_echo(IcmpEcho(A4, B4, True, 1, 2, b"ping")),
        build_icmp_echo(IcmpEcho(A6, B6, False, 1, 2, b"pong")),
        build_icmp_unreachable(B4, A4, Unreachable.PORT, b"E" + bytes(30)),
        build_icmp_unreachable(B6, A6, Unreachable.ADMIN, b"`" + bytes(50)),
        ip6(0, bytes([6, 0, 1, 4, 0, 0, 0, 0]) + tcp_hdr(payload=b"z")),
    ]


@pytest.mark.parametrize("packet", _valid_packets())
def test_every_truncation_is_malformed(packet: bytes) -> None:
    assert isinstance(decode_ip(packet), DECODED[:-1])
    for n in range(len(packet)):
        cut = packet[:n]
        assert decode_ip(cut) is MALFORMED, n
        assert decode_ip(cut, verify_checksums=True) is MALFORMED, n
        assert fast_decode_tcp(cut) is None
        assert fast_decode_udp_or_echo(cut) is None


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(udp_datagrams, icmp_echoes), st.integers(0, 64))
def test_every_truncation_of_udp_and_echo_is_malformed(value: UdpDatagram | IcmpEcho, keep: int) -> None:
    value = value._replace(payload=value.payload[:keep])
    packet = build_udp(value) if isinstance(value, UdpDatagram) else build_icmp_echo(value)
    assert fast_decode_udp_or_echo(packet) == value
    for n in range(len(packet)):
        cut = packet[:n]
        assert fast_decode_udp_or_echo(cut) is None, n
        assert decode_ip(cut) is MALFORMED, n


@pytest.mark.parametrize("packet", _valid_packets())
def test_trailing_bytes_ignored(packet: bytes) -> None:
    assert decode_ip(packet + b"\xff" * 13) == decode_ip(packet)
    assert checksums_ok(packet + b"\xff" * 13) == checksums_ok(packet)


@given(st.one_of(tcp_segments(max_payload=64), udp_datagrams, icmp_echoes), st.data())
def test_random_truncation_is_malformed(value: object, data: st.DataObject) -> None:
    if isinstance(value, TcpSegment):
        packet = build_tcp(value)
    elif isinstance(value, UdpDatagram):
        packet = build_udp(value)
    else:
        assert isinstance(value, IcmpEcho)
        packet = build_icmp_echo(value)
    n = data.draw(st.integers(0, len(packet) - 1))
    assert decode_ip(packet[:n]) is MALFORMED


def test_address_cache_is_bounded() -> None:
    from wgslirpy.net import packet as mod

    for i in range(5000):
        seg = TcpSegment(IPv4Address(0x0A000000 + i), B4, 1, 2, 3, 4, TcpFlags.ACK, 5)
        assert decode_ip(build_tcp(seg)) == seg
    assert len(mod._V4_CACHE) <= mod._ADDR_CACHE_MAX


@settings(max_examples=1000)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    fast_decode_udp_or_echo(data)  # must not raise; what it returns is checked elsewhere
    fast_decode_tcp(data)
    assert isinstance(decode_ip(data), DECODED)
    assert isinstance(decode_ip(data, verify_checksums=True), DECODED)


@settings(max_examples=1000)
@given(
    st.sampled_from([b"\x45", b"\x46", b"\x4f", b"\x60"]),
    st.sampled_from([b"", b"\x00\x00\x28"]),
    st.binary(max_size=120),
)
def test_random_bytes_behind_plausible_header_never_raise(first: bytes, mid: bytes, rest: bytes) -> None:
    packet = first + mid + rest
    assert isinstance(decode_ip(packet), DECODED)
    fast = fast_decode_udp_or_echo(packet)
    if fast is not None:
        assert fast == impacket_decode_ip(packet)


@settings(max_examples=500)
@given(
    st.sampled_from(_valid_packets()),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_packets_never_raise(packet: bytes, edits: list[tuple[int, int]]) -> None:
    b = bytearray(packet)
    for pos, value in edits:
        b[pos % len(b)] = value
    assert isinstance(decode_ip(bytes(b)), DECODED)
    assert isinstance(decode_ip(bytes(b), verify_checksums=True), DECODED)


# ------------------------------------------------------------ IP-level malformations


def test_ip_level_malformed() -> None:
    good = ip4(17, udp_hdr(b"x"))
    assert decode_ip(b"") is MALFORMED
    assert decode_ip(b"\x50" + good[1:]) is MALFORMED  # version 5
    assert decode_ip(b"\x44" + good[1:]) is MALFORMED  # IHL 4
    assert decode_ip(good[:2] + b"\x00\x13" + good[4:]) is MALFORMED  # total < IHL
    assert decode_ip(good[:2] + b"\x00\x00" + good[4:]) is MALFORMED  # total 0 (impacket "TSO" fix-up)
    assert decode_ip(good[:2] + b"\x01\x00" + good[4:]) is MALFORMED  # total > len
    assert decode_ip(b"\x46" + good[1:]) is MALFORMED  # IHL 6 swallows half the UDP header
    v6 = ip6(17, udp_hdr(b"x"))
    assert decode_ip(v6[:4] + b"\x00\x20" + v6[6:]) is MALFORMED  # payload length > len


def test_ipv4_fragments_are_malformed_here() -> None:
    l4 = tcp_hdr(payload=b"12345678")
    assert decode_ip(ip4(6, l4, frag=0x2000)) is MALFORMED  # MF
    assert decode_ip(ip4(6, l4, frag=0x0001)) is MALFORMED  # offset 8
    assert isinstance(decode_ip(ip4(6, l4, frag=0x4000)), TcpSegment)  # DF only


def test_ipv4_options() -> None:
    l4 = udp_hdr(b"opt")
    for opts in (
        b"\x01\x01\x01\x01",
        b"\x00\x00\x00\x00",
        b"\x94\x04\x00\x00",
        b"\x01\x00\xff\xff",
        b"\x07\x07\x04\x00\x00\x00\x00\x00",
    ):
        d = decode_ip(ip4(17, l4, options=opts))
        assert isinstance(d, UdpDatagram) and d.payload == b"opt", opts
    # Length 0 (impacket loops forever on it), length 1, overrun, dangling kind byte.
    for opts in (b"\x07\x00\x00\x00", b"\x07\x01\x00\x00", b"\x07\x08\x00\x00", b"\x01\x01\x01\x07"):
        assert decode_ip(ip4(17, l4, options=opts)) is MALFORMED, opts


# -------------------------------------------------------------------- TCP


def test_tcp_length_checks() -> None:
    assert decode_ip(ip4(6, tcp_hdr()[:19])) is MALFORMED
    assert decode_ip(ip4(6, tcp_hdr(doff=4))) is MALFORMED
    assert decode_ip(ip4(6, tcp_hdr(doff=6))) is MALFORMED  # data offset past the segment
    assert decode_ip(ip6(6, tcp_hdr(doff=15, payload=bytes(39)))) is MALFORMED
    seg = decode_ip(ip6(6, tcp_hdr(doff=15, payload=bytes(40))))
    assert isinstance(seg, TcpSegment) and seg.payload == b""


@pytest.mark.parametrize(
    "options",
    [
        b"\x02\x00\x00\x00",  # length 0
        b"\x02\x01\x00\x00",  # length 1
        b"\x02\x08\x05\xb4",  # runs past the header
        b"\x01\x01\x01\x08",  # kind without a length byte
        b"\x02\x03\x05\x00",  # MSS must be 4 long
        b"\x03\x04\x07\x00",  # window scale must be 3 long
        b"\x04\x03\x00\x00",  # SACK-permitted must be 2 long
        b"\x08\x08\x00\x00\x00\x00\x00\x00",  # timestamps must be 10 long
        b"\x05\x06\x00\x00\x00\x01\x00\x00",  # SACK blocks are 8 bytes each
    ],
)
def test_malformed_tcp_options(options: bytes) -> None:
    assert decode_ip(ip4(6, tcp_hdr(options=options))) is MALFORMED
    assert decode_ip(ip6(6, tcp_hdr(options=options))) is MALFORMED


def test_tcp_option_edge_cases() -> None:
    # Unknown kinds are skipped; the payload always starts at the data offset, even
    # after an early EOL (impacket would size the header from the options instead).
    seg = decode_ip(ip4(6, tcp_hdr(options=b"\xfe\x06abcd\x02\x04\x05\xb4\x01\x00", payload=b"P")))
    assert isinstance(seg, TcpSegment) and seg.mss == 1460 and seg.payload == b"P"
    seg = decode_ip(ip4(6, tcp_hdr(options=b"\x00\x02\x04\x05" + bytes(4), payload=b"Q")))
    assert isinstance(seg, TcpSegment) and seg.mss is None and seg.payload == b"Q"
    seg = decode_ip(ip4(6, tcp_hdr(options=b"\x03\x03\x0e\x01\x03\x03\x02\x00", payload=b"")))
    assert isinstance(seg, TcpSegment) and seg.wscale == 2  # repeated: last one wins


# -------------------------------------------------------------------- UDP


def test_udp_length_field() -> None:
    assert decode_ip(ip4(17, udp_hdr(b"abc", length=7))) is MALFORMED
    assert decode_ip(ip4(17, udp_hdr(b"abc", length=12))) is MALFORMED
    assert decode_ip(ip4(17, b"\x00" * 7)) is MALFORMED
    d = decode_ip(ip4(17, udp_hdr(b"abc", length=10)))  # shorter than the IP payload
    assert isinstance(d, UdpDatagram) and d.payload == b"ab" and (d.sport, d.dport) == (53, 5353)


# ------------------------------------------------------------------ IPv6 extensions


def test_ipv6_extension_headers_are_skipped() -> None:
    l4 = udp_hdr(b"via extensions")
    hbh = bytes([60, 0, 1, 4, 0, 0, 0, 0])  # -> destination options, PadN
    dst_opts = bytes([43, 1, 0x1E, 10]) + bytes(12)  # -> routing, 16 bytes, unknown option
    routing = bytes([17, 2, 2, 1, 0, 0, 0, 0]) + B6.packed  # type 2 with an address -> UDP
    d = decode_ip(ip6(0, hbh + dst_opts + routing + l4))
    assert isinstance(d, UdpDatagram) and d.payload == b"via extensions"


@pytest.mark.parametrize(
    "payload",
    [
        bytes([0, 0, 1, 4, 0, 0, 0, 0]) + bytes([0, 0, 1, 4, 0, 0, 0, 0]),  # hop-by-hop not first
        bytes([17, 1, 1, 4, 0, 0, 0, 0]),  # header longer than the packet
        bytes([17, 0, 1, 5, 0, 0, 0, 0]),  # option runs past the header
        bytes([17, 0, 0, 0, 0, 0, 1]),  # shorter than 8
    ],
)
def test_ipv6_bad_extension_headers(payload: bytes) -> None:
    assert decode_ip(ip6(0, payload + udp_hdr(b""))) is MALFORMED


def test_ipv6_fragment_header_must_be_reassembled_first() -> None:
    frag = struct.pack("!BxHI", 17, 0, 1)
    assert decode_ip(ip6(44, frag + udp_hdr(b"x"))) is MALFORMED
    assert decode_ip(ip6(60, bytes([44, 0, 1, 4, 0, 0, 0, 0]) + frag + udp_hdr(b"x"))) is MALFORMED


def test_other_protocols() -> None:
    assert decode_ip(ip4(47, b"gre")) == OtherIp(A4, B4, 47)
    assert decode_ip(ip4(58, bytes(8))) == OtherIp(A4, B4, 58)  # ICMPv6 inside IPv4
    assert decode_ip(ip6(59, b"")) == OtherIp(A6, B6, 59)
    assert decode_ip(ip6(1, bytes(8))) == OtherIp(A6, B6, 1)  # ICMPv4 inside IPv6
    assert decode_ip(ip6(60, bytes([50, 0, 1, 4, 0, 0, 0, 0]) + b"esp")) == OtherIp(A6, B6, 50)


# ------------------------------------------------------------------------ ICMP


@pytest.mark.parametrize("type_", [3, 11, 12])
def test_icmp4_errors(type_: int) -> None:
    # Quoting an IPv4 header with a zero-length option: impacket's own ICMP decoder
    # would loop forever on it.
    quoted = bytes.fromhex("4600001c000000004011000001020304050607080700000000350035")
    d = decode_ip(ip4(1, bytes([type_, 1, 0, 0, 0, 0, 0, 0]) + quoted))
    assert d == IcmpError(A4, B4, type_, 1, quoted)


@pytest.mark.parametrize("type_", [1, 2, 3, 4])
def test_icmp6_errors(type_: int) -> None:
    quoted = ip6(17, udp_hdr(b"q"))
    d = decode_ip(ip6(58, bytes([type_, 0, 0, 0, 0, 0, 5, 0]) + quoted))
    assert d == IcmpError(A6, B6, type_, 0, quoted)


def test_icmp_other_types_and_short() -> None:
    assert decode_ip(ip4(1, bytes([13, 0]) + bytes(18))) == OtherIp(A4, B4, 1)  # timestamp
    assert decode_ip(ip6(58, bytes([135, 0]) + bytes(22))) == OtherIp(A6, B6, 58)  # neighbour solicitation
    assert decode_ip(ip4(1, bytes([8, 0, 0, 0, 0, 1, 0]))) is MALFORMED
    assert decode_ip(ip6(58, bytes([128, 0, 0, 0]))) is MALFORMED


def test_icmp_echo_fields() -> None:
    e = decode_ip(ip4(1, bytes([8, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]) + b"data"))
    assert e == IcmpEcho(A4, B4, True, 0x1234, 0x5678, b"data")
    e = decode_ip(ip6(58, bytes([129, 0, 0, 0, 0, 7, 0, 9])))
    assert e == IcmpEcho(A6, B6, False, 7, 9, b"")


# -------------------------------------------------------------------- checksums


def _corrupt(packet: bytes, pos: int) -> bytes:
    return packet[:pos] + bytes([packet[pos] ^ 0x01]) + packet[pos + 1 :]


@pytest.mark.parametrize("packet", _valid_packets()[:9])
def test_verify_checksums_catches_corruption(packet: bytes) -> None:
    assert checksums_ok(packet)
    bad = _corrupt(packet, len(packet) - 1)  # last payload / quoted byte
    assert decode_ip(bad, verify_checksums=True) is DropReason.BAD_CHECKSUM
    assert not isinstance(decode_ip(bad), DropReason)  # not checked by default


def test_verify_ipv4_header_checksum() -> None:
    packet = build_udp(UdpDatagram(A4, B4, 1, 2, b"x"))
    bad = packet[:8] + b"\x3f" + packet[9:]  # TTL changed, header checksum stale
    assert decode_ip(bad, verify_checksums=True) is DropReason.BAD_CHECKSUM


def test_zero_udp_checksum() -> None:
    v4 = build_udp(UdpDatagram(A4, B4, 1, 2, b"x"))
    v4 = v4[:26] + b"\x00\x00" + v4[28:]
    assert isinstance(decode_ip(v4, verify_checksums=True), UdpDatagram)  # "no checksum"
    v6 = build_udp(UdpDatagram(A6, B6, 1, 2, b"x"))
    v6 = v6[:46] + b"\x00\x00" + v6[48:]
    assert decode_ip(v6, verify_checksums=True) is DropReason.BAD_CHECKSUM  # RFC 8200 §8.1


def test_preload_decoder_warms_impacket_with_a_valid_syn() -> None:
    from wgslirpy.net import packet

    packet.preload_decoder()
    syn = packet.impacket_decode_ip(packet._WARM_UP_SYN)
    assert isinstance(syn, TcpSegment) and syn.flags == TcpFlags.SYN and syn.mss == 1400
