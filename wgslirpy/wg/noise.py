"""The Noise_IKpsk2 handshake of WireGuard, both roles (whitepaper §5.4.2-§5.4.5).

One :class:`Handshake` per peer (wireguard-go ``Handshake`` plus ``noise-protocol.go``). The
state machine runs ZEROED -> INITIATION_CREATED -> RESPONSE_CONSUMED (initiator) or
ZEROED -> INITIATION_CONSUMED -> RESPONSE_CREATED (responder); :meth:`Handshake.derive_keypair`
(``BeginSymmetricSession``) turns either final state into a :class:`~.session.Keypair` and zeroes
the handshake.

Consuming an untrusted message raises ``_Drop`` and leaves the state untouched:
WG_HANDSHAKE_FAILED (AEAD/DH failure or a static key other than the configured peer's),
WG_REPLAYED_INITIATION (TAI64N not strictly newer than the last accepted one),
WG_INITIATION_FLOOD (less than HANDSHAKE_INITIATION_RATE since the last accepted initiation),
WG_UNEXPECTED_RESPONSE (a response while no initiation of ours is outstanding).

mac1/mac2 are not handled here: messages are built with zero macs and ``cookie.py`` fills them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from ..constants import HANDSHAKE_INITIATION_RATE
from ..errors import DropReason, _Drop
from . import crypto
from .messages import Initiation, Response, encode_initiation, encode_response
from .session import Keypair

_EMPTY = b""


class HandshakeState(enum.Enum):
    ZEROED = "zeroed"
    INITIATION_CREATED = "initiation_created"
    INITIATION_CONSUMED = "initiation_consumed"
    RESPONSE_CREATED = "response_created"
    RESPONSE_CONSUMED = "response_consumed"


class Handshake:
    """Handshake state with one peer whose static public key is configured."""

    def __init__(self, local_private: bytes, remote_public: bytes, preshared_key: bytes | None = None) -> None:
        """Raises crypto.CryptoError if ``remote_public`` is a low-order point."""
        self.local_private = crypto.clamp(local_private)
        self.local_public = crypto.public_key(self.local_private)
        self.remote_public = remote_public
        self.preshared_key = preshared_key if preshared_key is not None else crypto.ZERO_KEY
        #: DH(S_priv, S_pub_peer): constant for the peer, so computed once (wireguard-go too).
        self.precomputed_static_static = crypto.dh(self.local_private, remote_public)
        # H after mixing the responder's static key: the peer's when we initiate, ours otherwise.
        self._initiator_hash0 = crypto.hash_(crypto.INITIAL_HASH, remote_public)
        self._responder_hash0 = crypto.hash_(crypto.INITIAL_HASH, self.local_public)
        self.state = HandshakeState.ZEROED
        #: Noise transcript hash H and chaining key C; meaningful only when state != ZEROED.
        self.hash = _EMPTY
        self.chaining_key = _EMPTY
        #: our ephemeral private key (state INITIATION_CREATED, RESPONSE_CREATED) and the peer's
        #: ephemeral public key (INITIATION_CONSUMED).
        self.local_ephemeral = _EMPTY
        self.remote_ephemeral = _EMPTY
        #: our sender index in the current handshake, the peer's sender index.
        self.local_index = 0
        self.remote_index = 0
        #: greatest TAI64N accepted from the peer; initiations must be strictly newer.
        self.last_timestamp = bytes(crypto.TIMESTAMP_SIZE)
        #: monotonic time of the last accepted initiation (flood guard); None before the first.
        self.last_initiation_consumed: float | None = None

    # --- initiator ---------------------------------------------------------------------

    def create_initiation(self, *, local_index: int, wall_clock: float, rng: Callable[[int], bytes]) -> bytes:
        """The initiation message (zero macs); state becomes INITIATION_CREATED."""
        h = self._initiator_hash0
        eph = crypto.generate_private_key(rng)
        eph_pub = crypto.public_key(eph)
        c = crypto.kdf1(crypto.INITIAL_CHAINING_KEY, eph_pub)
        h = crypto.hash_(h, eph_pub)
        c, k = crypto.kdf2(c, crypto.dh(eph, self.remote_public))
        enc_static = crypto.aead_encrypt(k, 0, self.local_public, h)
        h = crypto.hash_(h, enc_static)
        c, k = crypto.kdf2(c, self.precomputed_static_static)
        enc_ts = crypto.aead_encrypt(k, 0, crypto.tai64n(wall_clock), h)
        h = crypto.hash_(h, enc_ts)
        self.hash, self.chaining_key = h, c
        self.local_ephemeral = eph
        self.remote_ephemeral = _EMPTY
        self.local_index = local_index
        self.state = HandshakeState.INITIATION_CREATED
        return encode_initiation(local_index, eph_pub, enc_static, enc_ts)

    def consume_response(self, msg: Response) -> None:
        """Process the peer's response; state becomes RESPONSE_CONSUMED."""
        if self.state is not HandshakeState.INITIATION_CREATED or msg.receiver != self.local_index:
            raise _Drop(DropReason.WG_UNEXPECTED_RESPONSE)
        try:
            c = crypto.kdf1(self.chaining_key, msg.ephemeral)
            h = crypto.hash_(self.hash, msg.ephemeral)
            c = crypto.kdf1(c, crypto.dh(self.local_ephemeral, msg.ephemeral))
            c = crypto.kdf1(c, crypto.dh(self.local_private, msg.ephemeral))
            c, t, k = crypto.kdf3(c, self.preshared_key)
            h = crypto.hash_(h, t)
            crypto.aead_decrypt(k, 0, msg.encrypted_nothing, h)
        except crypto.CryptoError:
            raise _Drop(DropReason.WG_HANDSHAKE_FAILED) from None
        h = crypto.hash_(h, msg.encrypted_nothing)
        self.hash, self.chaining_key = h, c
        self.remote_index = msg.sender
        self.state = HandshakeState.RESPONSE_CONSUMED

    # --- responder ---------------------------------------------------------------------

    def consume_initiation(self, msg: Initiation, *, now: float) -> None:
        """Process an initiation from the peer; state becomes INITIATION_CONSUMED."""
        try:
            h = self._responder_hash0
            c = crypto.kdf1(crypto.INITIAL_CHAINING_KEY, msg.ephemeral)
            h = crypto.hash_(h, msg.ephemeral)
            c, k = crypto.kdf2(c, crypto.dh(self.local_private, msg.ephemeral))
            static = crypto.aead_decrypt(k, 0, msg.encrypted_static, h)
            if static != self.remote_public:  # we talk to exactly one peer
                raise crypto.CryptoError("unknown peer")
            h = crypto.hash_(h, msg.encrypted_static)
            c, k = crypto.kdf2(c, self.precomputed_static_static)
            timestamp = crypto.aead_decrypt(k, 0, msg.encrypted_timestamp, h)
        except crypto.CryptoError:
            raise _Drop(DropReason.WG_HANDSHAKE_FAILED) from None
        if timestamp <= self.last_timestamp:  # big-endian TAI64N: byte order is time order
            raise _Drop(DropReason.WG_REPLAYED_INITIATION)
        if (
            self.last_initiation_consumed is not None
            and now - self.last_initiation_consumed <= HANDSHAKE_INITIATION_RATE
        ):
            raise _Drop(DropReason.WG_INITIATION_FLOOD)
        self.hash = crypto.hash_(h, msg.encrypted_timestamp)
        self.chaining_key = c
        self.remote_ephemeral = msg.ephemeral
        self.local_ephemeral = _EMPTY
        self.remote_index = msg.sender
        self.last_timestamp = timestamp
        self.last_initiation_consumed = now
        self.state = HandshakeState.INITIATION_CONSUMED

    def create_response(self, *, local_index: int, rng: Callable[[int], bytes]) -> bytes:
        """The response (zero macs) to the consumed initiation; state becomes RESPONSE_CREATED."""
        if self.state is not HandshakeState.INITIATION_CONSUMED:
            raise ValueError("create_response needs a consumed initiation")
        eph = crypto.generate_private_key(rng)
        eph_pub = crypto.public_key(eph)
        c = crypto.kdf1(self.chaining_key, eph_pub)
        h = crypto.hash_(self.hash, eph_pub)
        # The initiator's keys were checked when the initiation was consumed, but the
        # ephemeral may still be low-order: give up quietly like a failed consume.
        try:
            c = crypto.kdf1(c, crypto.dh(eph, self.remote_ephemeral))
            c = crypto.kdf1(c, crypto.dh(eph, self.remote_public))
        except crypto.CryptoError:
            self.clear()
            raise _Drop(DropReason.WG_HANDSHAKE_FAILED) from None
        c, t, k = crypto.kdf3(c, self.preshared_key)
        h = crypto.hash_(h, t)
        enc_nothing = crypto.aead_encrypt(k, 0, _EMPTY, h)
        h = crypto.hash_(h, enc_nothing)
        self.hash, self.chaining_key = h, c
        self.local_ephemeral = eph
        self.local_index = local_index
        self.state = HandshakeState.RESPONSE_CREATED
        return encode_response(local_index, self.remote_index, eph_pub, enc_nothing)

    # --- both ----------------------------------------------------------------------------

    def derive_keypair(self, *, now: float) -> Keypair:
        """BeginSymmetricSession: transport keys from C, then zero the handshake."""
        if self.state is HandshakeState.RESPONSE_CONSUMED:
            send, recv = crypto.kdf2(self.chaining_key, _EMPTY)
            initiator = True
        elif self.state is HandshakeState.RESPONSE_CREATED:
            recv, send = crypto.kdf2(self.chaining_key, _EMPTY)
            initiator = False
        else:
            raise ValueError(f"no keys to derive in state {self.state.name}")
        keypair = Keypair(
            send,
            recv,
            created=now,
            local_index=self.local_index,
            remote_index=self.remote_index,
            is_initiator=initiator,
        )
        self.clear()
        return keypair

    def clear(self) -> None:
        """Forget the handshake in progress (keeps the replay/flood history)."""
        self.state = HandshakeState.ZEROED
        self.hash = self.chaining_key = _EMPTY
        self.local_ephemeral = self.remote_ephemeral = _EMPTY
        self.local_index = self.remote_index = 0
