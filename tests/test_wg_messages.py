"""Wire layout of the four WireGuard messages (whitepaper §5.4)."""

from __future__ import annotations

import pytest

from wgslirpy.errors import DropReason, _Drop
from wgslirpy.wg import messages as m


def test_sizes() -> None:
    assert len(m.encode_initiation(1, bytes(32), bytes(48), bytes(28))) == 148
    assert len(m.encode_response(1, 2, bytes(32), bytes(16))) == 92
    assert len(m.encode_cookie_reply(1, bytes(24), bytes(32))) == 64
    assert len(m.encode_transport_header(1, 2)) == 16


def test_initiation_layout_and_roundtrip() -> None:
    data = m.encode_initiation(0x04030201, b"E" * 32, b"S" * 48, b"T" * 28, b"1" * 16, b"2" * 16)
    assert data[:8] == bytes([1, 0, 0, 0, 1, 2, 3, 4])  # type + 3 reserved zeros, LE sender
    assert data[8:40] == b"E" * 32 and data[40:88] == b"S" * 48 and data[88:116] == b"T" * 28
    assert data[116:132] == b"1" * 16 and data[132:148] == b"2" * 16
    msg = m.decode_initiation(data)
    assert msg == m.Initiation(0x04030201, b"E" * 32, b"S" * 48, b"T" * 28, b"1" * 16, b"2" * 16)


def test_response_layout_and_roundtrip() -> None:
    data = m.encode_response(0x0A0B0C0D, 0x01020304, b"E" * 32, b"N" * 16, b"1" * 16, b"2" * 16)
    assert data[:12] == bytes([2, 0, 0, 0, 0x0D, 0x0C, 0x0B, 0x0A, 4, 3, 2, 1])
    assert data[12:44] == b"E" * 32 and data[44:60] == b"N" * 16
    assert data[60:76] == b"1" * 16 and data[76:92] == b"2" * 16
    assert m.decode_response(data).receiver == 0x01020304


def test_cookie_reply_layout_and_roundtrip() -> None:
    data = m.encode_cookie_reply(0x01020304, b"N" * 24, b"C" * 32)
    assert data[:8] == bytes([3, 0, 0, 0, 4, 3, 2, 1])
    assert m.decode_cookie_reply(data) == m.CookieReply(0x01020304, b"N" * 24, b"C" * 32)


def test_transport_header_layout() -> None:
    hdr = m.encode_transport_header(0x01020304, 0x0102030405060708)
    assert hdr == bytes([4, 0, 0, 0, 4, 3, 2, 1, 8, 7, 6, 5, 4, 3, 2, 1])
    assert m.decode_transport_header(hdr + bytes(16)) == (0x01020304, 0x0102030405060708)


def _reason(fn: object, data: bytes) -> DropReason:
    with pytest.raises(_Drop) as e:
        fn(data)  # type: ignore[operator]
    return e.value.reason


def test_decode_rejects_wrong_size_type_and_reserved_bytes() -> None:
    init = m.encode_initiation(1, bytes(32), bytes(48), bytes(28))
    assert _reason(m.decode_initiation, init + b"\0") is DropReason.WG_BAD_SIZE
    assert _reason(m.decode_initiation, init[:-1]) is DropReason.WG_BAD_SIZE
    assert _reason(m.decode_initiation, b"\x01\x00\x01\x00" + init[4:]) is DropReason.WG_UNKNOWN_TYPE
    assert _reason(m.decode_response, init) is DropReason.WG_UNKNOWN_TYPE
    assert _reason(m.decode_cookie_reply, b"\x03\x00") is DropReason.WG_SHORT
    assert _reason(m.decode_transport_header, m.encode_transport_header(1, 1) + bytes(15)) is (DropReason.WG_SHORT)
    assert m.message_type(b"\x04\x00\x00\x00") == 4
