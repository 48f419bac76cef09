"""WireGuard message wire formats (whitepaper §5.4.2-§5.4.7).

Every message starts with a 4-byte little-endian word: the type in the low byte and three
reserved zero bytes, so decoding compares the whole word with the type (as wireguard-go does)
and a non-zero reserved byte is rejected. Indexes and counters are little-endian.

=================  ====  ===================================================================
message            size  layout after the type word
=================  ====  ===================================================================
Initiation (1)      148  sender u32, ephemeral 32, static 32+16, timestamp 12+16, mac1 16, mac2 16
Response (2)         92  sender u32, receiver u32, ephemeral 32, empty 0+16, mac1 16, mac2 16
CookieReply (3)      64  receiver u32, nonce 24, cookie 16+16
Transport (4)      >=32  receiver u32, counter u64, ciphertext (>= 16: the tag)
=================  ====  ===================================================================

``decode_*`` raise ``_Drop`` (WG_BAD_SIZE / WG_UNKNOWN_TYPE); handshake sizes must match
exactly, transport has a minimum. ``encode_*`` return the message with zero mac1/mac2, which
``cookie.py`` fills in. The transport hot path unpacks :data:`TRANSPORT_HEADER` directly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..constants import (
    MESSAGE_COOKIE_REPLY_SIZE,
    MESSAGE_COOKIE_REPLY_TYPE,
    MESSAGE_INITIATION_SIZE,
    MESSAGE_INITIATION_TYPE,
    MESSAGE_RESPONSE_SIZE,
    MESSAGE_RESPONSE_TYPE,
    MESSAGE_TRANSPORT_HEADER_SIZE,
    MESSAGE_TRANSPORT_MIN_SIZE,
    MESSAGE_TRANSPORT_TYPE,
)
from ..errors import DropReason, _Drop

TYPE_WORD = struct.Struct("<I")
INITIATION = struct.Struct("<II32s48s28s16s16s")
RESPONSE = struct.Struct("<III32s16s16s16s")
COOKIE_REPLY = struct.Struct("<II24s32s")
TRANSPORT_HEADER = struct.Struct("<IIQ")

assert INITIATION.size == MESSAGE_INITIATION_SIZE
assert RESPONSE.size == MESSAGE_RESPONSE_SIZE
assert COOKIE_REPLY.size == MESSAGE_COOKIE_REPLY_SIZE
assert TRANSPORT_HEADER.size == MESSAGE_TRANSPORT_HEADER_SIZE

# mac1 covers the message up to mac1; mac2 covers it up to mac2 (both at the end of the message).
MAC1_FROM_END = 32
MAC2_FROM_END = 16


@dataclass(frozen=True, slots=True)
class Initiation:
    sender: int
    ephemeral: bytes  # 32
    encrypted_static: bytes  # 48 = 32 + tag
    encrypted_timestamp: bytes  # 28 = 12 + tag
    mac1: bytes
    mac2: bytes


@dataclass(frozen=True, slots=True)
class Response:
    sender: int
    receiver: int
    ephemeral: bytes  # 32
    encrypted_nothing: bytes  # 16 = tag only
    mac1: bytes
    mac2: bytes


@dataclass(frozen=True, slots=True)
class CookieReply:
    receiver: int
    nonce: bytes  # 24
    encrypted_cookie: bytes  # 32 = 16 + tag


def message_type(data: bytes) -> int:
    """The type word of ``data``; raises _Drop(WG_SHORT) if there are fewer than 4 bytes."""
    if len(data) < 4:
        raise _Drop(DropReason.WG_SHORT)
    return int(TYPE_WORD.unpack_from(data, 0)[0])


def _check(data: bytes, msg_type: int, size: int) -> None:
    if message_type(data) != msg_type:
        raise _Drop(DropReason.WG_UNKNOWN_TYPE)
    if len(data) != size:
        raise _Drop(DropReason.WG_BAD_SIZE)


def decode_initiation(data: bytes) -> Initiation:
    _check(data, MESSAGE_INITIATION_TYPE, MESSAGE_INITIATION_SIZE)
    _, sender, eph, static, ts, mac1, mac2 = INITIATION.unpack(data)
    return Initiation(sender, eph, static, ts, mac1, mac2)


def decode_response(data: bytes) -> Response:
    _check(data, MESSAGE_RESPONSE_TYPE, MESSAGE_RESPONSE_SIZE)
    _, sender, receiver, eph, empty, mac1, mac2 = RESPONSE.unpack(data)
    return Response(sender, receiver, eph, empty, mac1, mac2)


def decode_cookie_reply(data: bytes) -> CookieReply:
    _check(data, MESSAGE_COOKIE_REPLY_TYPE, MESSAGE_COOKIE_REPLY_SIZE)
    _, receiver, nonce, cookie = COOKIE_REPLY.unpack(data)
    return CookieReply(receiver, nonce, cookie)


def decode_transport_header(data: bytes) -> tuple[int, int]:
    """(receiver, counter) of a transport message; the ciphertext is ``data[16:]``."""
    if message_type(data) != MESSAGE_TRANSPORT_TYPE:
        raise _Drop(DropReason.WG_UNKNOWN_TYPE)
    if len(data) < MESSAGE_TRANSPORT_MIN_SIZE:
        raise _Drop(DropReason.WG_SHORT)
    _, receiver, counter = TRANSPORT_HEADER.unpack_from(data, 0)
    return receiver, counter


def encode_initiation(
    sender: int,
    ephemeral: bytes,
    encrypted_static: bytes,
    encrypted_timestamp: bytes,
    mac1: bytes = bytes(16),
    mac2: bytes = bytes(16),
) -> bytes:
    return INITIATION.pack(
        MESSAGE_INITIATION_TYPE, sender, ephemeral, encrypted_static, encrypted_timestamp, mac1, mac2
    )


def encode_response(
    sender: int,
    receiver: int,
    ephemeral: bytes,
    encrypted_nothing: bytes,
    mac1: bytes = bytes(16),
    mac2: bytes = bytes(16),
) -> bytes:
    return RESPONSE.pack(MESSAGE_RESPONSE_TYPE, sender, receiver, ephemeral, encrypted_nothing, mac1, mac2)


def encode_cookie_reply(receiver: int, nonce: bytes, encrypted_cookie: bytes) -> bytes:
    return COOKIE_REPLY.pack(MESSAGE_COOKIE_REPLY_TYPE, receiver, nonce, encrypted_cookie)


def encode_transport_header(receiver: int, counter: int) -> bytes:
    return TRANSPORT_HEADER.pack(MESSAGE_TRANSPORT_TYPE, receiver, counter)
