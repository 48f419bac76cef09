"""Transport keypairs and their rotation (whitepaper §5.4.6, wireguard-go ``keypair.go``).

A :class:`Keypair` holds one direction pair of transport keys derived from a handshake, the
send counter, the receive replay filter and the indexes that name it on the wire.
:class:`Keypairs` keeps previous/current/next:

* the initiator makes a fresh keypair ``current`` at once (it has seen the responder's
  confirmation in the response);
* the responder parks it in ``next`` and promotes it to ``current`` on the first authenticated
  transport packet received with it (key confirmation), demoting ``current`` to ``previous``.

Methods that retire keypairs return them so the owner can drop their receiver indexes.
Transport encryption pads plaintext with zeros to a multiple of 16 bytes, but not beyond the
tunnel MTU (keepalives, which are empty, stay empty).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..constants import (
    MESSAGE_PADDING_MULTIPLE,
    MESSAGE_TRANSPORT_TYPE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
)
from . import crypto
from .messages import TRANSPORT_HEADER
from .replay import ReplayFilter

_PAD = bytes(MESSAGE_PADDING_MULTIPLE)


def padded(plaintext: bytes, mtu: int = 1 << 31) -> bytes:
    """``plaintext`` zero-padded to a multiple of 16 bytes, but never beyond ``mtu``
    (wireguard-go ``calculatePaddingSize``: a full-MTU packet still fits the outer path)."""
    n = len(plaintext)
    pad = -n % MESSAGE_PADDING_MULTIPLE
    if n + pad > mtu:
        pad = mtu - n if mtu > n else 0
    return plaintext + _PAD[:pad] if pad else plaintext


class Keypair:
    """One session's transport keys. Zeroed keypairs have empty keys and are never used."""

    __slots__ = (
        "send_key",
        "recv_key",
        "send_counter",
        "replay",
        "created",
        "local_index",
        "remote_index",
        "is_initiator",
    )

    def __init__(
        self,
        send_key: bytes,
        recv_key: bytes,
        *,
        created: float,
        local_index: int,
        remote_index: int,
        is_initiator: bool,
    ) -> None:
        #: ChaCha20-Poly1305 keys; b"" once zeroed.
        self.send_key = send_key
        self.recv_key = recv_key
        #: the counter the next sent message uses; only grows.
        self.send_counter = 0
        #: counters already received with this keypair.
        self.replay = ReplayFilter()
        #: monotonic time the keypair was derived; its age bounds its use (REJECT_AFTER_TIME).
        self.created = created
        #: our receiver index for it (the peer puts it in transport headers) and the peer's.
        self.local_index = local_index
        self.remote_index = remote_index
        #: True if we sent the initiation that produced it: the time-based rekey is ours.
        self.is_initiator = is_initiator

    def can_send(self, now: float, count: int = 1) -> bool:
        """Young enough, counter not exhausted by ``count`` more messages, and not zeroed."""
        return (
            now - self.created < REJECT_AFTER_TIME
            and self.send_counter + count <= REJECT_AFTER_MESSAGES
            and bool(self.send_key)
        )

    def can_receive(self, now: float) -> bool:
        return now - self.created < REJECT_AFTER_TIME and bool(self.recv_key)

    def encrypt(self, plaintext: bytes, mtu: int = 1 << 31) -> bytes:
        """A whole transport message for ``plaintext`` (caller checked :meth:`can_send`)."""
        return self.encrypt_many((plaintext,), mtu)[0]

    def encrypt_many(self, plaintexts: Sequence[bytes], mtu: int = 1 << 31) -> list[bytes]:
        """Transport messages for ``plaintexts``, in order, with consecutive counters
        (caller checked ``can_send(now, len(plaintexts))``), each :func:`padded` within ``mtu``."""
        padded_texts = [padded(p, mtu) if len(p) % MESSAGE_PADDING_MULTIPLE else p for p in plaintexts]
        counter = self.send_counter
        self.send_counter = counter + len(padded_texts)
        return crypto.aead_encrypt_many_with_header(
            TRANSPORT_HEADER, (MESSAGE_TRANSPORT_TYPE, self.remote_index), self.send_key, counter, padded_texts
        )

    def decrypt(self, counter: int, ciphertext: bytes) -> bytes:
        """Authenticate and decrypt; raises crypto.CryptoError. Does not touch the replay filter."""
        return crypto.aead_decrypt(self.recv_key, counter, ciphertext)

    def zero(self) -> None:
        crypto.forget_keys(self.send_key, self.recv_key)
        self.send_key = b""
        self.recv_key = b""


class Keypairs:
    """previous/current/next keypairs of one peer (wireguard-go ``Keypairs``)."""

    __slots__ = ("previous", "current", "next")

    def __init__(self) -> None:
        #: the keypair before ``current``; kept so in-flight packets still decrypt.
        self.previous: Keypair | None = None
        #: the keypair we send with; None before the first handshake or after zeroing.
        self.current: Keypair | None = None
        #: responder only: a keypair awaiting key confirmation (first packet received with it).
        self.next: Keypair | None = None

    def all(self) -> list[Keypair]:
        return [k for k in (self.previous, self.current, self.next) if k is not None]

    def install(self, keypair: Keypair) -> list[Keypair]:
        """Add a freshly derived keypair; returns the keypairs retired by it."""
        retired: list[Keypair] = []
        if keypair.is_initiator:
            if self.next is not None:
                # An unconfirmed responder keypair is newer than current: keep it as previous.
                if self.current is not None:
                    retired.append(self.current)
                if self.previous is not None:
                    retired.append(self.previous)
                self.previous, self.next = self.next, None
            else:
                if self.previous is not None:
                    retired.append(self.previous)
                self.previous = self.current
            self.current = keypair
        else:
            if self.next is not None:
                retired.append(self.next)
            if self.previous is not None:
                retired.append(self.previous)
            self.next = keypair
            self.previous = None
        for k in retired:
            k.zero()
        return retired

    def received_with(self, keypair: Keypair) -> tuple[bool, list[Keypair]]:
        """Note an authenticated receive; promote ``next`` on its first use.

        Returns (promoted, retired keypairs).
        """
        if keypair is not self.next:
            return False, []
        retired = [self.previous] if self.previous is not None else []
        self.previous, self.current, self.next = self.current, keypair, None
        for k in retired:
            k.zero()
        return True, retired

    def clear(self) -> list[Keypair]:
        """Zero and drop every keypair; returns them."""
        gone = self.all()
        for k in gone:
            k.zero()
        self.previous = self.current = self.next = None
        return gone
