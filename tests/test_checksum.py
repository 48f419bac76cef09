"""wgslirpy.net.checksum against a plain RFC 1071 byte-pair loop."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address

from hypothesis import given
from hypothesis import strategies as st

from wgslirpy.net.checksum import checksum, fold, pseudo_header_sum, residue, small_word_sum, word_sum


def reference_sum(data: bytes) -> int:
    """One's-complement sum of 16-bit big-endian words, end-around carry, odd byte padded."""
    if len(data) % 2:
        data += b"\x00"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return s


def reference_checksum(data: bytes) -> int:
    return ~reference_sum(data) & 0xFFFF


def test_rfc1071_example() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (checksum 220d).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert reference_sum(data) == 0xDDF2
    assert checksum(data) == 0x220D


def test_known_ipv4_header() -> None:
    # A classic worked example: header checksum b861.
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert checksum(hdr) == 0xB861
    filled = hdr[:10] + b"\xb8\x61" + hdr[12:]
    assert checksum(filled) == 0


def test_edge_values() -> None:
    assert checksum(b"") == 0xFFFF
    assert checksum(b"\x00") == 0xFFFF
    assert checksum(b"\x00" * 64) == 0xFFFF
    # Non-zero data whose sum is "negative zero" 0xFFFF gives field 0, not 0xFFFF.
    assert checksum(b"\xff\xff") == 0
    assert checksum(b"\xff\xff" * 7) == 0
    assert checksum(b"\x80\x00\x7f\xff") == 0
    assert checksum(b"\xff") == reference_checksum(b"\xff") == 0x00FF
    for data in (b"\x00\x01", b"\x12", b"\x12\x34\x56", b"\xfe\xff\x00\x01"):
        assert checksum(data) == reference_checksum(data)


@given(st.binary(max_size=3000))
def test_matches_reference(data: bytes) -> None:
    assert checksum(data) == reference_checksum(data)


@given(st.binary(max_size=200), st.binary(max_size=200).map(lambda b: b + b"\x00" * (len(b) % 2)))
def test_initial_is_a_prefix_sum(tail: bytes, head: bytes) -> None:
    # Feeding the sum of an even-length prefix as ``initial`` equals checksumming both.
    assert checksum(tail, word_sum(head)) == reference_checksum(head + tail)
    assert fold(word_sum(head) + word_sum(tail)) == reference_checksum(head + tail)


@given(st.binary(min_size=2, max_size=500))
def test_verifies_to_zero(data: bytes) -> None:
    data = data + b"\x00" * (len(data) % 2)
    csum = checksum(data[:0] + b"\x00\x00" + data[2:])
    assert checksum(csum.to_bytes(2, "big") + data[2:]) == 0


def test_pseudo_header_ipv4() -> None:
    src, dst = IPv4Address("10.1.2.3"), IPv4Address("192.168.200.7")
    pseudo = src.packed + dst.packed + bytes([0, 6]) + (1234).to_bytes(2, "big")
    assert fold(pseudo_header_sum(int(src), int(dst), 6, 1234)) == reference_checksum(pseudo)


@given(st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1), st.sampled_from([6, 17, 58]), st.integers(0, 65535))
def test_pseudo_header_ipv6(s: int, d: int, proto: int, length: int) -> None:
    src, dst = IPv6Address(s), IPv6Address(d)
    pseudo = src.packed + dst.packed + length.to_bytes(4, "big") + bytes([0, 0, 0, proto])
    assert fold(pseudo_header_sum(int(src), int(dst), proto, length)) == reference_checksum(pseudo)


@given(st.integers(min_value=0, max_value=1 << 20))
def test_residue_of_small_totals(total: int) -> None:
    assert residue(total) == total % 0xFFFF


@given(st.integers(min_value=0, max_value=70_000), st.integers(min_value=0, max_value=2**32))
def test_residue_of_wide_totals(nbytes: int, seed: int) -> None:
    """Every width the folds take: below the fold threshold, the precomputed masks
    (payloads up to ~2 KB) and the masks made on demand (up to a 64 KiB datagram)."""
    total = int.from_bytes(random.Random(seed).randbytes(nbytes), "big") + seed
    assert residue(total) == total % 0xFFFF


def test_residue_of_all_ones_is_zero() -> None:
    # 2**(16k) - 1 is a multiple of 0xFFFF: the case fold() must read as negative zero.
    for k in (1, 75, 684, 4096):
        assert residue((1 << (16 * k)) - 1) == 0
        assert fold((1 << (16 * k)) - 1) == 0


@given(st.binary(max_size=3000))
def test_small_word_sum_is_the_word_sum_reduced(data: bytes) -> None:
    small = small_word_sum(data)
    assert 0 <= small < 1 << 24
    assert small % 0xFFFF == word_sum(data) % 0xFFFF


@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=1 << 40))
def test_checksum_with_a_nonzero_initial_matches_the_reference(data: bytes, initial: int) -> None:
    # the reduced path: reference sum of the data plus the initial, end-around carried
    s = reference_sum(data) + initial
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    assert checksum(data, initial) == ~s & 0xFFFF
    assert checksum(b"\xff\xff", 0) == 0  # all-ones data: negative zero, on the unreduced path
