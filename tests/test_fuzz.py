"""Property tests (hypothesis, a few seconds): hostile bytes never raise out of a core.

The long run is ``benchmarks/fuzz.py`` (millions of inputs, drops by reason, memory). Here
each core gets arbitrary and structured input: the IP stack (raw bytes, valid packets
with mutated fields, fragments, IPv6 extension headers), the WireGuard endpoint (raw
datagrams and every message type at every length), the packet decoder, the host error
parser and the policy parser (which may only raise ConfigError).
"""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgslirpy.errors import ConfigError, DropReason
from wgslirpy.io.udp_forward import parse_extended_err
from wgslirpy.net.build import build_tcp, build_udp
from wgslirpy.net.packet import decode_ip
from wgslirpy.net.policy import parse_rule
from wgslirpy.net.segments import TcpFlags, TcpSegment, UdpDatagram
from wgslirpy.net.stack import HostIcmpError, Stack, StackConfig, TcpConnectRequested, relay_icmp_error
from wgslirpy.wg import crypto
from wgslirpy.wg.endpoint import PeerConfig, WireGuardEndpoint

from .conftest import seeded_rng

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLIENT = ipaddress.ip_address("10.0.0.2")
CLIENT6 = ipaddress.ip_address("fd00::2")
SERVER = ipaddress.ip_address("192.0.2.10")
SERVER6 = ipaddress.ip_address("2001:db8::10")


def new_stack() -> Stack:
    return Stack(
        StackConfig(
            pingable=frozenset({ipaddress.ip_address("10.0.0.1")}),
            dns=frozenset({(ipaddress.ip_address("10.0.0.53"), 53)}),
        ),
        rng=seeded_rng(3),
    )


def drive(stack: Stack, packets: list[bytes]) -> None:
    now = 100.0
    for p in packets:
        stack.receive_ip(p, now=now)
        while (ev := stack.next_event()) is not None:
            if isinstance(ev, TcpConnectRequested):
                stack.tcp_accept(ev.conn, now=now)
        stack.packets_to_send(now=now)
        now += 0.5
        stack.handle_timer(now=now)
        stack.packets_to_send(now=now)
    stack.all_drops()


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_stack_takes_any_bytes(packets: list[bytes]) -> None:
    drive(new_stack(), packets)


def _valid(v6: bool, tcp: bool, payload: bytes, flags: int, options: int) -> bytes:
    src, dst = (CLIENT6, SERVER6) if v6 else (CLIENT, SERVER)
    if tcp:
        opts = {"mss": 1360} if options & 1 else {}
        if options & 2:
            opts["wscale"] = 7
        if options & 4:
            opts["ts_val"], opts["ts_ecr"] = 5, 0  # type: ignore[assignment]
        return build_tcp(TcpSegment(src, dst, 40000, 80, 1000, 0, TcpFlags(flags), 65535, payload, **opts))  # type: ignore[arg-type]
    return build_udp(UdpDatagram(src, dst, 40000, 53, payload))


@st.composite
def mutated_packets(draw: st.DrawFn) -> bytes:
    pkt = bytearray(
        _valid(
            draw(st.booleans()),
            draw(st.booleans()),
            draw(st.binary(max_size=64)),
            draw(st.integers(0, 255)),
            draw(st.integers(0, 7)),
        )
    )
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(pkt) - 1))
        pkt[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(pkt)))
    return bytes(pkt[:cut]) if draw(st.booleans()) else bytes(pkt)


@FUZZ
@given(st.lists(mutated_packets(), min_size=1, max_size=6))
def test_stack_takes_mutated_packets(packets: list[bytes]) -> None:
    drive(new_stack(), packets)


@st.composite
def fragments(draw: st.DrawFn) -> list[bytes]:
    """IPv4 fragments of one datagram with arbitrary offsets, MF bits, lengths and ids."""
    out = []
    ident = draw(st.integers(0, 3))
    for _ in range(draw(st.integers(1, 6))):
        data = draw(st.binary(min_size=0, max_size=64))
        offset = draw(st.integers(0, 8191))
        mf = draw(st.booleans())
        proto = draw(st.sampled_from([6, 17, 1, 0]))
        out.append(
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(data),
                ident,
                (mf << 13) | offset,
                64,
                proto,
                0,
                CLIENT.packed,
                SERVER.packed,
            )
            + data
        )
    return out


@FUZZ
@given(fragments())
def test_stack_takes_any_fragments(packets: list[bytes]) -> None:
    drive(new_stack(), packets)


@st.composite
def ipv6_with_extensions(draw: st.DrawFn) -> bytes:
    nh = draw(st.sampled_from([6, 17, 58, 59]))
    body = draw(st.binary(max_size=40))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from([0, 43, 44, 60, 135]))
        if kind == 44:
            ext = struct.pack("!BBHI", nh, 0, draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 3)))
        else:
            n = draw(st.integers(0, 2))
            ext = bytes([nh, n]) + draw(st.binary(min_size=6 + 8 * n, max_size=6 + 8 * n))
        body = ext + body
        nh = kind
    plen = draw(st.one_of(st.just(len(body)), st.integers(0, 0xFFFF)))
    return struct.pack("!IHBB16s16s", 6 << 28, plen, nh, 64, CLIENT6.packed, SERVER6.packed) + body


@FUZZ
@given(st.lists(ipv6_with_extensions(), min_size=1, max_size=4))
def test_stack_takes_ipv6_extension_chains(packets: list[bytes]) -> None:
    drive(new_stack(), packets)


@FUZZ
@given(st.binary(max_size=120))
def test_decode_ip_returns_a_value_or_a_drop_reason(data: bytes) -> None:
    result = decode_ip(data)
    assert result is not None
    if isinstance(result, DropReason):
        return
    assert hasattr(result, "src")


def _endpoint() -> WireGuardEndpoint:
    return WireGuardEndpoint(
        crypto.clamp(bytes(range(101, 133))),
        PeerConfig(crypto.public_key(crypto.clamp(bytes(range(1, 33))))),
        now=0.0,
        wall_clock=lambda: 1_700_000_000.0,
        rng=seeded_rng(4),
    )


_EP = _endpoint()


@st.composite
def wg_datagrams(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=200))
    size = {1: 148, 2: 92, 3: 64, 4: 32}.get(kind, draw(st.integers(0, 300)))
    size = max(0, size + draw(st.sampled_from([0, 0, -1, 1, -16, 16])))
    head = struct.pack("<IIQ", kind, draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**64 - 1)))
    return (head + draw(st.binary(min_size=size, max_size=size)))[:size]


@FUZZ
@given(st.lists(wg_datagrams(), min_size=1, max_size=8))
def test_endpoint_takes_any_datagram(datagrams: list[bytes]) -> None:
    before = _EP.drops.total()
    for i, d in enumerate(datagrams):
        assert _EP.receive_datagram(d, ("192.0.2.1", 1000 + i), now=float(i)) is None  # no session: nothing inside
        _EP.datagrams_to_send()
    _EP.handle_timer(now=100.0)
    assert _EP.drops.total() >= before + len(datagrams)  # each one counted


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 2**31), st.binary(max_size=64)), max_size=4))
def test_extended_error_parser_never_raises(cmsgs: list[tuple[int, int, bytes]]) -> None:
    parse_extended_err(cmsgs)
    parse_extended_err([(0, 11, d) for _, _, d in cmsgs] + [(41, 25, d) for _, _, d in cmsgs])


@FUZZ
@given(st.booleans(), st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**32 - 1), st.booleans())
def test_any_host_icmp_error_relays_or_is_refused(icmp6: bool, t: int, c: int, info: int, client_v6: bool) -> None:
    out = relay_icmp_error(HostIcmpError(icmp6, t, c, info), client_v6)
    if out is not None:
        assert 0 <= out[0] <= 255 and 0 <= out[1] <= 255 and 0 <= out[2] < 2**32


@FUZZ
@given(st.text(max_size=40))
def test_policy_parser_raises_only_config_errors(text: str) -> None:
    try:
        parse_rule(text, allow=True)
    except ConfigError as e:
        assert "\n" not in str(e)
