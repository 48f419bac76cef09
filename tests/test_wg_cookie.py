"""mac1/mac2 and cookie replies (wg/cookie.py, whitepaper §5.4.4 and §5.4.7)."""

from __future__ import annotations

from tests.conftest import seeded_rng
from tests.wg_helpers import A_ADDR, A_PUBLIC, B_PUBLIC
from wgslirpy.constants import COOKIE_REFRESH_TIME
from wgslirpy.wg import crypto
from wgslirpy.wg.cookie import CookieChecker, CookieGenerator, address_bytes
from wgslirpy.wg.messages import decode_cookie_reply, encode_initiation

MSG = encode_initiation(0x01020304, b"E" * 32, b"S" * 48, b"T" * 28)


def test_mac1_is_keyed_by_responder_static_and_covers_message_up_to_mac1() -> None:
    gen = CookieGenerator(B_PUBLIC)
    out = gen.add_macs(MSG, now=0.0)
    key = crypto.hash_(b"mac1----", B_PUBLIC)
    assert out[:-32] == MSG[:-32]
    assert out[-32:-16] == crypto.mac(key, MSG[:-32])
    assert out[-16:] == bytes(16)  # no cookie: mac2 is zero
    assert CookieChecker(B_PUBLIC, seeded_rng()).check_mac1(out)
    assert not CookieChecker(A_PUBLIC, seeded_rng()).check_mac1(out)
    tampered = bytearray(out)
    tampered[10] ^= 1
    assert not CookieChecker(B_PUBLIC, seeded_rng()).check_mac1(bytes(tampered))


def test_cookie_round_trip_gives_valid_mac2() -> None:
    checker = CookieChecker(B_PUBLIC, seeded_rng())
    gen = CookieGenerator(B_PUBLIC)
    first = gen.add_macs(MSG, now=0.0)
    assert not checker.check_mac2(first, A_ADDR, now=0.0)
    reply = decode_cookie_reply(checker.create_reply(first, 0x01020304, A_ADDR, now=0.0))
    assert reply.receiver == 0x01020304
    assert gen.consume_reply(reply, now=0.0)
    assert not gen.consume_reply(reply, now=0.0)  # one cookie per message sent
    retry = gen.add_macs(MSG, now=1.0)
    assert retry[-16:] != bytes(16)
    assert checker.check_mac2(retry, A_ADDR, now=1.0)
    assert not checker.check_mac2(retry, ("192.0.2.99", A_ADDR[1]), now=1.0)  # bound to address
    assert not checker.check_mac2(retry, (A_ADDR[0], A_ADDR[1] + 1), now=1.0)


def test_cookie_reply_aad_is_the_mac1_answered() -> None:
    checker = CookieChecker(B_PUBLIC, seeded_rng())
    gen = CookieGenerator(B_PUBLIC)
    sent = gen.add_macs(MSG, now=0.0)
    other = bytearray(sent)
    other[-20] ^= 1  # a different mac1
    reply = decode_cookie_reply(checker.create_reply(bytes(other), 1, A_ADDR, now=0.0))
    assert not gen.consume_reply(reply, now=0.0)
    assert not CookieGenerator(B_PUBLIC).consume_reply(reply, now=0.0)  # nothing sent yet


def test_cookie_expires_and_secret_rotates() -> None:
    checker = CookieChecker(B_PUBLIC, seeded_rng())
    gen = CookieGenerator(B_PUBLIC)
    sent = gen.add_macs(MSG, now=0.0)
    gen.consume_reply(decode_cookie_reply(checker.create_reply(sent, 1, A_ADDR, now=0.0)), now=0.0)
    assert checker.check_mac2(gen.add_macs(MSG, now=COOKIE_REFRESH_TIME - 1), A_ADDR, now=COOKIE_REFRESH_TIME - 1)
    # the responder's secret rotated: the old cookie no longer verifies
    assert not checker.check_mac2(gen.add_macs(MSG, now=COOKIE_REFRESH_TIME - 1), A_ADDR, now=COOKIE_REFRESH_TIME)
    # the initiator stops using a stale cookie
    assert gen.add_macs(MSG, now=COOKIE_REFRESH_TIME)[-16:] == bytes(16)


def test_address_bytes() -> None:
    assert address_bytes(("192.0.2.1", 258)) == bytes([192, 0, 2, 1, 1, 2])
    assert len(address_bytes(("2001:db8::1", 1))) == 18
    assert address_bytes(("fe80::1%eth0", 1)) == address_bytes(("fe80::1", 1))
    assert address_bytes(("not-an-ip", 1)) == b"not-an-ip\x00\x01"
