"""Keypair transport en/decryption, padding and previous/current/next rotation (wg/session.py)."""

from __future__ import annotations

import pytest

from wgslirpy.constants import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from wgslirpy.wg import crypto
from wgslirpy.wg.session import Keypair, Keypairs, padded

K1, K2 = bytes(range(32)), bytes(range(32, 64))


def pair(created: float = 0.0, index: int = 1) -> tuple[Keypair, Keypair]:
    a = Keypair(K1, K2, created=created, local_index=index, remote_index=100 + index, is_initiator=True)
    b = Keypair(K2, K1, created=created, local_index=100 + index, remote_index=index, is_initiator=False)
    return a, b


def test_padding() -> None:
    assert padded(b"") == b""
    assert padded(b"x") == b"x" + bytes(15)
    assert padded(bytes(16)) == bytes(16)
    assert len(padded(bytes(17))) == 32
    assert padded(bytes(1419), 1420) == bytes(1420)  # never beyond the MTU
    assert padded(bytes(1421), 1420) == bytes(1421)  # already beyond it: as it is


def test_encrypt_layout_counter_and_padding() -> None:
    a, b = pair()
    msg = a.encrypt(b"hello")
    assert msg[:4] == b"\x04\0\0\0"
    assert int.from_bytes(msg[4:8], "little") == a.remote_index
    assert int.from_bytes(msg[8:16], "little") == 0
    assert len(msg) == 16 + 16 + 16  # header + padded 16 + tag
    assert b.decrypt(0, msg[16:]) == b"hello" + bytes(11)
    keepalive = a.encrypt(b"")
    assert len(keepalive) == 32 and int.from_bytes(keepalive[8:16], "little") == 1
    assert b.decrypt(1, keepalive[16:]) == b""
    assert a.send_counter == 2
    with pytest.raises(crypto.CryptoError):
        b.decrypt(2, keepalive[16:])


def test_can_send_and_receive_limits() -> None:
    a, _ = pair(created=10.0)
    assert a.can_send(10.0 + REJECT_AFTER_TIME - 0.001)
    assert not a.can_send(10.0 + REJECT_AFTER_TIME)
    assert not a.can_receive(10.0 + REJECT_AFTER_TIME)
    a.send_counter = REJECT_AFTER_MESSAGES - 2
    assert a.can_send(10.0, 2) and not a.can_send(10.0, 3)  # a burst must fit whole
    a.send_counter = REJECT_AFTER_MESSAGES
    assert not a.can_send(10.0)
    a.send_counter = 0
    a.zero()
    assert not a.can_send(10.0) and not a.can_receive(10.0)


def test_initiator_installs_current_at_once() -> None:
    ks = Keypairs()
    k1, _ = pair(index=1)
    k2, _ = pair(index=2)
    k3, _ = pair(index=3)
    assert ks.install(k1) == []
    assert ks.current is k1 and ks.previous is None and ks.next is None
    assert ks.install(k2) == []
    assert ks.previous is k1 and ks.current is k2
    assert ks.install(k3) == [k1]
    assert ks.previous is k2 and ks.current is k3
    assert k1.send_key == b"" and k2.send_key == K1  # retired keys are zeroed


def test_responder_parks_in_next_until_confirmed() -> None:
    ks = Keypairs()
    _, r1 = pair(index=1)
    _, r2 = pair(index=2)
    assert ks.install(r1) == []
    assert ks.current is None and ks.next is r1
    assert ks.received_with(r1) == (True, [])
    assert ks.current is r1 and ks.next is None
    assert ks.received_with(r1) == (False, [])
    assert ks.install(r2) == []
    assert ks.current is r1 and ks.next is r2
    assert ks.received_with(r2) == (True, [])
    assert (ks.previous, ks.current, ks.next) == (r1, r2, None)
    _, r3 = pair(index=3)
    _, r4 = pair(index=4)
    ks.install(r3)
    assert ks.previous is None and ks.next is r3  # previous dropped, as wireguard-go
    assert ks.install(r4) == [r3]  # a newer unconfirmed keypair replaces next
    assert sorted(k.local_index for k in ks.clear()) == [102, 104]
    assert ks.all() == []


def test_initiator_install_with_pending_next() -> None:
    ks = Keypairs()
    _, r1 = pair(index=1)
    i2, _ = pair(index=2)
    ks.install(r1)
    ks.received_with(r1)
    _, r3 = pair(index=3)
    ks.install(r3)  # next = r3, current = r1
    assert ks.install(i2) == [r1]
    assert (ks.previous, ks.current, ks.next) == (r3, i2, None)


def test_padding_stops_at_mtu() -> None:
    a, _b = pair()
    for n, mtu, plain_len in [
        (1420, 1420, 1420),
        (1419, 1420, 1420),
        (1405, 1420, 1408),
        (1500, 1420, 1500),
        (1, 1420, 16),
    ]:
        msg = a.encrypt(bytes(n), mtu)
        assert len(msg) == 16 + plain_len + 16, (n, mtu)


def test_encrypt_many_equals_encrypt_one_by_one() -> None:
    plaintexts = [b"", b"x", bytes(16), bytes(1419), bytes(1420), bytes(1421)]
    one, _ = pair()
    many, _ = pair()
    assert many.encrypt_many(plaintexts, 1420) == [one.encrypt(p, 1420) for p in plaintexts]
    assert many.send_counter == one.send_counter == len(plaintexts)
    assert many.encrypt_many([], 1420) == [] and many.send_counter == len(plaintexts)
