"""wgslirpy.net.fragments: reassembly on a FakeClock, fragmentation, round trips."""

from __future__ import annotations

import random
import struct

import pytest

from tests.conftest import FakeClock
from tests.test_build import A4, A6, B4, B6
from tests.test_checksum import reference_checksum
from wgslirpy.errors import ConfigError, DropReason
from wgslirpy.net.build import build_tcp, build_udp
from wgslirpy.net.fragments import Reassembler, fragment_ip
from wgslirpy.net.packet import decode_ip
from wgslirpy.net.segments import IPAddress, TcpFlags, TcpSegment, UdpDatagram


def udp_packet(size: int, v6: bool = False, seed: int = 0) -> bytes:
    payload = random.Random(seed).randbytes(size)
    src, dst = (A6, B6) if v6 else (A4, B4)
    return build_udp(UdpDatagram(src, dst, 4000, 53, payload))


def frag4(offset: int, data: bytes, *, more: bool, ident: int = 7, proto: int = 17, src: IPAddress = A4) -> bytes:
    """A raw IPv4 fragment (offset in bytes)."""
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(data),
        ident,
        (0x2000 if more else 0) | offset // 8,
        64,
        proto,
        0,
        src.packed,
        B4.packed,
    )
    return hdr + data


def frag6(offset: int, data: bytes, *, more: bool, ident: int = 7, nh: int = 17, ext: bytes = b"") -> bytes:
    """A raw IPv6 fragment, optionally behind extension headers ``ext`` (which must
    end by naming the Fragment header, 44)."""
    fh = struct.pack("!BxHI", nh, offset | int(more), ident)
    payload = ext + fh + data
    first_nh = 0 if ext else 44
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), first_nh, 64, A6.packed, B6.packed) + payload


def feed(r: Reassembler, packets: list[bytes], now: float = 0.0) -> list[object]:
    return [r.receive(p, now=now) for p in packets]


# ------------------------------------------------------------ not fragments: untouched


def test_unfragmented_packets_pass_through_as_the_same_object() -> None:
    r = Reassembler()
    tcp = build_tcp(TcpSegment(A4, B4, 1, 2, 3, 4, TcpFlags.ACK, 5, b"x" * 100))
    df_udp = udp_packet(100)
    v6 = udp_packet(100, v6=True)
    hbh_v6 = struct.pack("!IHBB16s16s", 0x60000000, 8, 0, 64, A6.packed, B6.packed) + bytes([59, 0, 1, 4, 0, 0, 0, 0])
    for p in (tcp, df_udp, v6, hbh_v6, b"", b"\x45", b"garbage" * 10, bytes(40)):
        assert r.receive(p, now=0.0) is p
    assert r.pending == 0 and r.drops.total() == 0


# -------------------------------------------------------------- reassembly orders


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("order", ["in_order", "reversed", "shuffled", "duplicated"])
def test_reassembly_orders(v6: bool, order: str) -> None:
    original = udp_packet(5000, v6=v6)
    frags = fragment_ip(original, 1280, ident=0)
    assert len(frags) == (5 if v6 else 4) and all(len(f) <= 1280 for f in frags)
    if order == "reversed":
        frags.reverse()
    elif order == "shuffled":
        random.Random(3).shuffle(frags)
    elif order == "duplicated":
        frags = [x for f in frags[:-1] for x in (f, f)] + [frags[0], frags[-1]]
    r = Reassembler()
    results = feed(r, frags)
    assert results[:-1] == [None] * (len(frags) - 1)
    assert results[-1] == original  # id 0 as built, so byte-identical
    duplicates = len(frags) - len(set(frags))
    assert r.pending == 0 and r.buffered_bytes == 0 and r.drops.total() == duplicates
    assert r.drops[DropReason.FRAGMENT_DUPLICATE] == duplicates  # each copy counted, none harmful


def test_reassembled_ipv4_header_is_normal() -> None:
    original = udp_packet(3000)
    frags = fragment_ip(original, 1000, ident=0xBEEF)
    whole = feed(Reassembler(), frags)[-1]
    assert isinstance(whole, bytes)
    assert whole[4:6] == b"\xbe\xef" and whole[6:8] == b"\x00\x00"  # flags/offset cleared
    assert int.from_bytes(whole[2:4], "big") == len(whole) == len(original)
    assert reference_checksum(whole[:20]) == 0
    assert whole[20:] == original[20:]
    assert decode_ip(whole, verify_checksums=True) == decode_ip(original)


def test_ipv6_fragments_behind_extension_headers() -> None:
    payload = udp_packet(2000, v6=True)[40:]
    hbh = bytes([44, 0, 1, 4, 0, 0, 0, 0])  # hop-by-hop naming the Fragment header
    r = Reassembler()
    assert r.receive(frag6(0, payload[:1200], more=True, ext=hbh), now=0) is None
    whole = r.receive(frag6(1200, payload[1200:], more=False, ext=hbh), now=0)
    assert isinstance(whole, bytes)
    assert whole[6] == 0 and whole[40] == 17  # hop-by-hop now names UDP directly
    assert int.from_bytes(whole[4:6], "big") == 8 + len(payload)
    assert whole[48:] == payload
    d = decode_ip(whole, verify_checksums=True)
    assert isinstance(d, UdpDatagram) and len(d.payload) == 2000


def test_ipv6_atomic_fragment_is_processed_at_once() -> None:
    payload = udp_packet(8, v6=True)[40:]
    r = Reassembler()
    assert r.receive(frag6(0, payload, more=True, ident=1), now=0) is None  # a buffered datagram
    whole = r.receive(frag6(0, payload, more=False, ident=1), now=0)  # RFC 6946: not mixed in
    assert whole == udp_packet(8, v6=True)
    assert r.pending == 1


def test_keys_keep_datagrams_apart() -> None:
    r = Reassembler()
    a, b = b"A" * 16, b"B" * 8
    assert r.receive(frag4(0, a, more=True, ident=1), now=0) is None
    assert r.receive(frag4(0, a, more=True, ident=1, proto=6), now=0) is None  # other protocol
    assert r.receive(frag4(0, a, more=True, ident=1, src=B4), now=0) is None  # other source
    assert r.receive(frag4(0, a, more=True, ident=2), now=0) is None  # other id
    assert r.pending == 4
    whole = r.receive(frag4(16, b, more=False, ident=1, proto=6), now=0)
    assert isinstance(whole, bytes) and whole[9] == 6 and whole[20:] == a + b
    assert r.pending == 3


# ---------------------------------------------------------------------- bad input


def test_overlap_drops_the_whole_datagram() -> None:
    r = Reassembler()
    assert r.receive(frag4(0, bytes(16), more=True), now=0) is None
    assert r.receive(frag4(32, bytes(16), more=True), now=0) is None
    assert r.receive(frag4(8, bytes(16), more=True), now=0) is DropReason.FRAGMENT_OVERLAP
    assert r.pending == 0 and r.buffered_bytes == 0
    # Returned, not counted: the caller counts what it is handed.
    assert r.drops.total() == 0


@pytest.mark.parametrize("offset, size", [(0, 24), (8, 8), (24, 16), (16, 8), (40, 8)])
def test_overlap_cases(offset: int, size: int) -> None:
    r = Reassembler()
    r.receive(frag4(16, bytes(16), more=True), now=0)  # holds [16, 32)
    r.receive(frag4(40, bytes(8), more=True), now=0)  # holds [40, 48)
    result = r.receive(frag4(offset, b"\x01" * size, more=True), now=0)
    overlaps = (offset < 32 and offset + size > 16) or (offset < 48 and offset + size > 40)
    assert (result is DropReason.FRAGMENT_OVERLAP) == overlaps


def test_ipv6_overlap_and_changed_duplicate() -> None:
    r = Reassembler()
    assert r.receive(frag6(0, b"a" * 16, more=True), now=0) is None
    assert r.receive(frag6(0, b"a" * 16, more=True), now=0) is None  # exact duplicate: ignored
    assert r.receive(frag6(0, b"b" * 16, more=True), now=0) is DropReason.FRAGMENT_OVERLAP  # RFC 5722
    assert r.pending == 0


def test_malformed_fragments() -> None:
    r = Reassembler()
    assert r.receive(frag4(0, bytes(12), more=True), now=0) is DropReason.MALFORMED  # not a multiple of 8
    assert r.receive(frag6(0, bytes(12), more=True), now=0) is DropReason.MALFORMED
    assert r.receive(frag4(0, b"", more=True), now=0) is DropReason.MALFORMED
    assert r.receive(frag4(0, bytes(16), more=True), now=0) is None
    assert r.receive(frag4(32, bytes(8), more=False), now=0) is None
    assert r.receive(frag4(40, bytes(8), more=False), now=0) is DropReason.MALFORMED  # second end
    assert r.receive(frag4(16, bytes(16), more=True, ident=9), now=0) is None
    assert r.receive(frag4(8, bytes(8), more=False, ident=9), now=0) is DropReason.MALFORMED  # data past end
    assert r.receive(frag4(8, bytes(8), more=False, ident=10), now=0) is None
    assert r.receive(frag4(16, bytes(8), more=True, ident=10), now=0) is DropReason.MALFORMED  # past end
    assert r.pending == 0


def test_too_large() -> None:
    r = Reassembler()
    assert r.receive(frag4(8191 * 8, bytes(8), more=False), now=0) is DropReason.FRAGMENT_TOO_LARGE
    assert r.receive(frag6(65528, bytes(16), more=False), now=0) is DropReason.FRAGMENT_TOO_LARGE
    assert r.receive(frag4(65496, bytes(16), more=False), now=0) is None  # 20 + 65512 fits
    small = Reassembler(max_datagram=2000)
    assert small.receive(frag4(1976, bytes(8), more=False), now=0) is DropReason.FRAGMENT_TOO_LARGE
    assert small.receive(frag4(1968, bytes(8), more=False), now=0) is None


def test_timeout(clock: FakeClock) -> None:
    r = Reassembler(timeout=30.0)
    assert r.next_deadline() is None
    r.receive(frag4(0, bytes(8), more=True, ident=1), now=clock.now)
    clock.advance(10)
    r.receive(frag4(0, bytes(8), more=True, ident=2), now=clock.now)
    assert r.next_deadline() == clock.now - 10 + 30
    assert r.handle_timer(now=clock.advance(19.9)) == 0
    assert r.handle_timer(now=clock.advance(0.1)) == 1
    assert r.drops[DropReason.FRAGMENT_TIMEOUT] == 1
    assert r.next_deadline() == clock.now + 10
    # The late last fragment of the expired datagram starts over and stays incomplete.
    assert r.receive(frag4(8, bytes(8), more=False, ident=1), now=clock.now) is None
    assert r.handle_timer(now=clock.advance(100)) == 2
    assert r.pending == 0 and r.buffered_bytes == 0 and r.next_deadline() is None


def test_memory_limit_evicts_oldest() -> None:
    r = Reassembler(max_bytes=3000)
    for ident in range(3):
        assert r.receive(frag4(0, bytes(1000), more=True, ident=ident), now=ident) is None
    assert r.pending == 2 and r.drops[DropReason.FRAGMENT_LIMIT] == 1
    assert r.buffered_bytes <= 3000
    # The evicted datagram (ident 0) is gone; its last fragment starts a new one.
    assert r.receive(frag4(1000, bytes(8), more=False, ident=0), now=5) is None
    # A single datagram bigger than the whole budget is dropped and reported.
    r2 = Reassembler(max_bytes=1500)
    assert r2.receive(frag4(0, bytes(1000), more=True), now=0) is None
    assert r2.receive(frag4(1000, bytes(1000), more=True), now=0) is DropReason.FRAGMENT_LIMIT
    assert r2.pending == 0 and r2.buffered_bytes == 0 and r2.drops.total() == 0


def test_pending_limit_evicts_oldest() -> None:
    r = Reassembler(max_pending=2)
    for ident in range(5):
        r.receive(frag4(0, bytes(8), more=True, ident=ident), now=float(ident))
    assert r.pending == 2 and r.drops[DropReason.FRAGMENT_LIMIT] == 3
    assert r.next_deadline() == 3.0 + 30.0


def test_bad_limits() -> None:
    with pytest.raises(ConfigError):
        Reassembler(timeout=0)
    with pytest.raises(ConfigError):
        Reassembler(max_pending=0)


# -------------------------------------------------------------------- fragmentation


def test_fragment_ip_fits_or_df() -> None:
    p = udp_packet(1000)
    assert fragment_ip(p, 1028)[0] is p
    tcp = build_tcp(TcpSegment(A4, B4, 1, 2, 3, 4, TcpFlags.ACK, 5, bytes(2000)))  # DF set
    assert fragment_ip(tcp, 1280) == []


def test_fragment_ip_ipv4_layout() -> None:
    p = udp_packet(3000)
    frags = fragment_ip(p, 1000, ident=0x1234)
    offsets = []
    for i, f in enumerate(frags):
        assert len(f) <= 1000 and reference_checksum(f[:20]) == 0
        assert f[4:6] == b"\x12\x34"
        flags_off = int.from_bytes(f[6:8], "big")
        assert bool(flags_off & 0x2000) == (i < len(frags) - 1)
        offsets.append((flags_off & 0x1FFF) * 8)
        assert int.from_bytes(f[2:4], "big") == len(f)
    assert offsets == [0, 976, 1952, 2928]
    assert b"".join(f[20:] for f in frags) == p[20:]


def test_fragment_ip_ipv4_copies_only_copied_options() -> None:
    body = bytes(range(256)) * 8
    # Option 0x94 (router alert, copied) and 0x07 (record route, not copied).
    opts = bytes([0x94, 4, 0, 0, 0x07, 7, 4, 0, 0, 0, 0, 0])
    p = struct.pack("!BBHHHBBH4s4s", 0x48, 0, 32 + len(body), 0, 0, 64, 17, 0, A4.packed, B4.packed) + opts + body
    frags = fragment_ip(p, 600, ident=1)
    assert frags[0][20:32] == opts
    for f in frags[1:]:
        assert f[0] == 0x46 and f[20:24] == bytes([0x94, 4, 0, 0])
    whole = feed(Reassembler(), frags)[-1]
    assert isinstance(whole, bytes) and whole[32:] == body and whole[20:32] == opts


def test_fragment_ip_ipv6_layout() -> None:
    p = udp_packet(3000, v6=True)
    frags = fragment_ip(p, 1280, ident=0xDEADBEEF)
    for i, f in enumerate(frags):
        assert len(f) <= 1280
        assert f[6] == 44 and int.from_bytes(f[4:6], "big") == len(f) - 40
        nh, off_m, ident = struct.unpack_from("!BxHI", f, 40)
        assert nh == 17 and ident == 0xDEADBEEF and bool(off_m & 1) == (i < len(frags) - 1)
        assert (off_m & 0xFFF8) % 8 == 0


def test_fragment_ip_default_idents_differ() -> None:
    p = udp_packet(3000)
    assert fragment_ip(p, 1280)[0][4:6] != fragment_ip(p, 1280)[0][4:6]


def test_fragment_ip_caller_errors() -> None:
    with pytest.raises(ConfigError):
        fragment_ip(udp_packet(3000), 27)
    with pytest.raises(ConfigError):
        fragment_ip(udp_packet(3000, v6=True), 50)
    with pytest.raises(ConfigError):
        fragment_ip(frag4(0, bytes(3000), more=True), 1280)
    with pytest.raises(ConfigError):
        fragment_ip(b"\x00" * 3000, 1280)


# ------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("size", "v6"), [(1473, False), (8000, False), (65507, False), (1453, True), (30000, True), (65527, True)]
)
@pytest.mark.parametrize("mtu", [1280, 1420])
def test_round_trip_then_decode(size: int, v6: bool, mtu: int) -> None:
    original = udp_packet(size, v6=v6, seed=size)
    frags = fragment_ip(original, mtu)
    assert len(frags) > 1 and all(len(f) <= mtu for f in frags)
    random.Random(size).shuffle(frags)
    r = Reassembler()
    results = feed(r, frags)
    whole = results[-1]
    assert results[:-1] == [None] * (len(frags) - 1)
    assert isinstance(whole, bytes) and len(whole) == len(original)
    if v6:
        assert whole == original
    else:
        assert whole[20:] == original[20:] and whole[:4] == original[:4] and whole[8:10] == original[8:10]
    assert decode_ip(whole, verify_checksums=True) == decode_ip(original)
    assert r.pending == 0 and r.buffered_bytes == 0
