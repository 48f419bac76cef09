"""The template fast path of build_tcp: the same bytes as the generic builder, always.

``build_tcp`` builds established-shape segments (no MSS, window scale or SACK-permitted;
SACK blocks allowed) from a per-flow header template with precomputed partial checksums; every
other shape goes to ``build_tcp_generic``. These tests prove the two equal over random
segments, and pin the cases a template could get wrong: a stale template (other address
objects, equal addresses, another TTL), the checksum's negative-zero edge, values out of
range, and the cache's bound.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_build import A4, A6, B4, B6, addr_pairs, reference_verify, tcp_segments, u16, u32
from wgslirpy.errors import ConfigError
from wgslirpy.net import build as mod
from wgslirpy.net.build import build_tcp, build_tcp_generic
from wgslirpy.net.checksum import checksum
from wgslirpy.net.segments import TcpFlags, TcpSegment


@st.composite
def established_segments(draw: Any) -> TcpSegment:
    """Segments of the template shape: any flags, ports, numbers, payload; TS and SACK
    blocks or not."""
    src, dst = draw(addr_pairs)
    ts = draw(st.one_of(st.none(), st.tuples(u32, st.one_of(st.none(), u32))))
    blocks = tuple(draw(st.lists(st.tuples(u32, u32), max_size=5)))  # more than fit, too
    return TcpSegment(
        src,
        dst,
        draw(u16),
        draw(u16),
        draw(u32),
        draw(u32),
        TcpFlags(draw(st.integers(0, 255))),
        draw(u16),
        draw(st.binary(max_size=1500)),
        sack_blocks=blocks,
        ts_val=ts[0] if ts else None,
        ts_ecr=ts[1] if ts else None,
    )


@given(established_segments(), st.integers(0, 255))
def test_template_path_equals_generic_builder(seg: TcpSegment, ttl: int) -> None:
    packet = build_tcp(seg, ttl=ttl)
    assert packet == build_tcp_generic(seg, ttl=ttl)
    assert build_tcp(seg, ttl=ttl) == packet  # now from the cached template
    reference_verify(packet)


@given(tcp_segments())
def test_every_shape_equals_generic_builder(seg: TcpSegment) -> None:
    assert build_tcp(seg) == build_tcp_generic(seg)


@given(st.lists(established_segments(), min_size=2, max_size=8), st.data())
def test_flows_sharing_ports_never_reuse_each_others_template(segs: list[TcpSegment], data: Any) -> None:
    # Every segment on the same port pair: the cache key collides, the identity check
    # must rebuild the template whenever the addresses differ.
    sport, dport = data.draw(u16), data.draw(u16)
    for seg in segs:
        seg = seg._replace(sport=sport, dport=dport)
        assert build_tcp(seg) == build_tcp_generic(seg)


def test_equal_but_distinct_address_objects_and_ttl_changes() -> None:
    seg = TcpSegment(A4, B4, 80, 40000, 1, 2, TcpFlags.ACK, 100, b"abc", ts_val=5, ts_ecr=6)
    first = build_tcp(seg)
    twin = seg._replace(src=IPv4Address(str(A4)), dst=IPv4Address(str(B4)))
    assert twin.src is not seg.src
    assert build_tcp(twin) == first
    other = seg._replace(src=IPv4Address("10.9.9.9"))
    assert build_tcp(other) == build_tcp_generic(other) != first
    assert build_tcp(seg, ttl=17) == build_tcp_generic(seg, ttl=17)
    assert build_tcp(seg, ttl=17)[8] == 17
    assert build_tcp(seg) == first


@pytest.mark.parametrize("pair", [(A4, B4), (A6, B6)])
@pytest.mark.parametrize("ts", [None, (7, 8)])
def test_negative_zero_sum_gives_field_zero(pair: tuple[Any, Any], ts: tuple[int, int] | None) -> None:
    # RFC 1071 / RFC 1624 §3: when the one's-complement sum is 0xFFFF ("negative zero"),
    # the field is 0x0000; a TCP sum always includes the protocol, so 0xFFFF never occurs.
    base = TcpSegment(
        pair[0], pair[1], 1, 2, 3, 4, TcpFlags.ACK, 5, b"\x00\x00",
        ts_val=ts[0] if ts else None, ts_ecr=ts[1] if ts else None,
    )  # fmt: skip
    packet = build_tcp_generic(base)
    l4 = packet[20:] if pair[0].version == 4 else packet[40:]
    field = int.from_bytes(l4[16:18], "big")
    # Choose the 16-bit payload word that brings the sum to 0xFFFF: adding w to the sum
    # lowers the field by w (mod 0xFFFF), so w = field takes it to 0.
    seg = base._replace(payload=field.to_bytes(2, "big"))
    for packet in (build_tcp(seg), build_tcp_generic(seg)):
        l4 = packet[20:] if pair[0].version == 4 else packet[40:]
        assert l4[16:18] == b"\x00\x00"
        reference_verify(packet)
    assert build_tcp(seg) == build_tcp_generic(seg)


def test_ipv4_header_checksum_matches_a_fresh_sum() -> None:
    for n in (0, 1, 2, 1367, 1368, 65535 - 52):
        seg = TcpSegment(A4, B4, 5201, 33000, 10, 20, TcpFlags.ACK | TcpFlags.PSH, 300, bytes(n), ts_val=1)
        packet = build_tcp(seg)
        assert checksum(packet[:20]) == 0
        assert packet == build_tcp_generic(seg)


@pytest.mark.parametrize(
    "change",
    [
        {"sport": 65536},
        {"dport": -1},
        {"seq": 2**32},
        {"ack": -1},
        {"window": 65536},
        {"ts_val": 2**32},
        {"ts_ecr": 2**32},
        {"sack_blocks": ((1, 2**32),)},
        {"payload": bytes(65535 - 52 + 1)},  # IPv4 total length 65536
        {"dst": A6},  # mixed families
    ],
)
def test_out_of_range_values_raise_config_error(change: dict[str, Any]) -> None:
    seg = TcpSegment(A4, B4, 1, 2, 3, 4, TcpFlags.ACK, 5, b"", ts_val=1, ts_ecr=2)._replace(**change)
    with pytest.raises(ConfigError):
        build_tcp(seg)
    with pytest.raises(ConfigError):
        build_tcp_generic(seg)


def test_bad_ttl_raises_config_error() -> None:
    seg = TcpSegment(A6, B6, 1, 2, 3, 4, TcpFlags.ACK, 5)
    for ttl in (256, -1):
        with pytest.raises(ConfigError):
            build_tcp(seg, ttl=ttl)


def test_template_cache_is_bounded() -> None:
    for i in range(3 * mod._TEMPLATE_MAX):
        seg = TcpSegment(A6, IPv6Address(0xFD00 << 112 | i), 443, i, 1, 2, TcpFlags.ACK, 3, b"x")
        assert build_tcp(seg) == build_tcp_generic(seg)
    assert len(mod._TEMPLATES) <= mod._TEMPLATE_MAX
