"""WireGuard's cryptographic primitives (whitepaper §5.4, "Notation").

The only module that imports nacl (and the optional ``cryptography``). Everything else in
``wg/`` calls these functions:

* ``DH``: X25519 via libsodium's ``crypto_scalarmult`` (private keys are clamped per RFC 7748).
  An all-zero shared secret (a low-order public key) raises :class:`CryptoError`.
* ``AEAD``: ChaCha20-Poly1305 (RFC 8439); the 96-bit nonce is 32 zero bits followed by the
  64-bit little-endian counter.
* ``XAEAD``: XChaCha20-Poly1305 with a 24-byte random nonce (cookie replies).
* ``HASH``: BLAKE2s-256; ``MAC``: keyed BLAKE2s-128; ``HMAC``: RFC 2104 over BLAKE2s (64-byte
  block); ``KDF1..3``: HKDF (RFC 5869) built from that HMAC.
* ``TAI64N``: 12-byte big-endian external TAI64N label of a wall-clock time.

Transport encryption/decryption are the hot path (docs/ARCHITECTURE.md). ``aead_encrypt``,
``aead_decrypt`` and ``aead_encrypt_with_header`` have three backends, chosen once at import
(:data:`BACKEND` says which), all with the same results and errors:

* ``openssl``, when the optional ``cryptography`` package is installed: OpenSSL's
  ChaCha20-Poly1305, about twice as fast as libsodium's on CPUs with AVX-512 (1.1 against
  2.1 µs for a 1420-byte packet), with one cipher object per key kept in a bounded cache.
* ``cffi``: libsodium through PyNaCl's cffi objects (``nacl._sodium.lib``) directly: PyNaCl's
  public wrappers spend more time on argument checks, ``ffi.new`` per call and an extra
  ``ffi.buffer`` than ChaCha20-Poly1305 itself needs for a 1420-byte packet. Inputs are
  ``bytes`` handed to C as pointers (no copy); the outputs land in two module-level buffers
  allocated once, and each result is one ``bytes`` copy out of them.
* ``bindings``, if ``nacl._sodium`` cannot be imported: the public ``nacl.bindings`` functions.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import struct
from collections.abc import Callable, Sequence

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt as _aead_dec,
)
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_encrypt as _aead_enc,
)
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt as _xaead_dec,
)
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_encrypt as _xaead_enc,
)
from nacl.bindings import (
    crypto_scalarmult as _scalarmult,
)
from nacl.bindings import (
    crypto_scalarmult_base as _scalarmult_base,
)
from nacl.exceptions import CryptoError as _NaclCryptoError
from nacl.exceptions import RuntimeError as _NaclRuntimeError

KEY_SIZE = 32
HASH_SIZE = 32
MAC_SIZE = 16
TAG_SIZE = 16
XNONCE_SIZE = 24
TIMESTAMP_SIZE = 12

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

ZERO_KEY = bytes(KEY_SIZE)

# 4 zero bytes then the counter as u64 little-endian (whitepaper §5.4.6).
_NONCE = struct.Struct("<4xQ")
_TAI64N = struct.Struct(">QI")
# TAI64 label of the Unix epoch: 2**62 plus the 10 s TAI-UTC offset of 1970 (as wireguard-go).
_TAI64_BASE = 0x400000000000000A
# wireguard-go rounds the nanoseconds down to a multiple of 2**24 ns (~16.8 ms) so the
# timestamp does not leak a precise clock; peers only compare timestamps for order.
_WHITENER_MASK = (1 << 24) - 1


class CryptoError(Exception):
    """An authentication tag did not verify, or a DH produced the all-zero secret."""


def clamp(private_key: bytes) -> bytes:
    """RFC 7748 clamping of an X25519 scalar (what ``wg genkey`` stores)."""
    if len(private_key) != KEY_SIZE:
        raise ValueError("private key must be 32 bytes")
    b = bytearray(private_key)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def generate_private_key(rng: Callable[[int], bytes]) -> bytes:
    """DH-GENERATE: a fresh clamped private key from ``rng``."""
    return clamp(rng(KEY_SIZE))


def public_key(private_key: bytes) -> bytes:
    """The X25519 public key of ``private_key``."""
    return bytes(_scalarmult_base(clamp(private_key)))


def dh(private_key: bytes, public: bytes) -> bytes:
    """DH(private, public); raises CryptoError for an all-zero result (low-order point)."""
    try:
        out = bytes(_scalarmult(clamp(private_key), public))
    except (_NaclRuntimeError, _NaclCryptoError) as e:  # libsodium rejects all-zero output
        raise CryptoError("low-order public key") from e
    if out == ZERO_KEY:
        raise CryptoError("low-order public key")
    return out


def hash_(*parts: bytes) -> bytes:
    """HASH(a || b || ...): BLAKE2s-256."""
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(key, data): keyed BLAKE2s with a 16-byte output."""
    return hashlib.blake2s(data, key=key, digest_size=MAC_SIZE).digest()


def hmac(key: bytes, data: bytes) -> bytes:
    """HMAC(key, data): RFC 2104 HMAC over BLAKE2s-256 (block size 64)."""
    return _hmac.digest(key, data, hashlib.blake2s)


def kdf1(key: bytes, data: bytes) -> bytes:
    """KDF1(key, data) = T1."""
    prk = hmac(key, data)
    return hmac(prk, b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    """KDF2(key, data) = (T1, T2)."""
    prk = hmac(key, data)
    t1 = hmac(prk, b"\x01")
    return t1, hmac(prk, t1 + b"\x02")


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    """KDF3(key, data) = (T1, T2, T3)."""
    prk = hmac(key, data)
    t1 = hmac(prk, b"\x01")
    t2 = hmac(prk, t1 + b"\x02")
    return t1, t2, hmac(prk, t2 + b"\x03")


def aead_nonce(counter: int) -> bytes:
    """The 12-byte ChaCha20-Poly1305 nonce WireGuard derives from a 64-bit counter."""
    return _NONCE.pack(counter)


# --- AEAD: portable implementation (PyNaCl's public bindings) --------------------------------


def _check_key(key: bytes) -> None:
    # libsodium reads exactly 32 bytes through the key pointer: a shorter key (a zeroed
    # keypair's b"") must never reach C. The public bindings check this too (raising their own
    # TypeError); both backends raise ValueError so callers see one contract.
    if len(key) != KEY_SIZE:
        raise ValueError("AEAD key must be 32 bytes")


def _portable_aead_encrypt(key: bytes, counter: int, plaintext: bytes, aad: bytes = b"") -> bytes:
    """AEAD(key, counter, plaintext, aad): ciphertext || 16-byte tag. ValueError unless 32-byte key."""
    _check_key(key)
    return _aead_enc(plaintext, aad, _NONCE.pack(counter), key)  # type: ignore[no-any-return]


def _portable_aead_decrypt(key: bytes, counter: int, ciphertext: bytes, aad: bytes = b"") -> bytes:
    """Inverse of aead_encrypt: CryptoError if the tag does not verify (or there is no room
    for one). ValueError unless 32-byte key."""
    _check_key(key)
    if len(ciphertext) < TAG_SIZE:
        raise CryptoError("AEAD tag mismatch")
    try:
        return _aead_dec(ciphertext, aad, _NONCE.pack(counter), key)  # type: ignore[no-any-return]
    except _NaclCryptoError as e:
        raise CryptoError("AEAD tag mismatch") from e


def _portable_aead_encrypt_with_header(
    header: struct.Struct, fields: tuple[int, ...], key: bytes, counter: int, plaintext: bytes
) -> bytes:
    """``header.pack(*fields) || AEAD(key, counter, plaintext, b"")``: a whole transport message."""
    return header.pack(*fields) + _portable_aead_encrypt(key, counter, plaintext)


#: ``aead_encrypt_with_header(header, fields, key, counter, plaintext)`` and its burst form
#: ``(header, fields without the counter, key, first counter, plaintexts)``.
_Seal = Callable[[struct.Struct, tuple[int, ...], bytes, int, bytes], bytes]
_SealMany = Callable[[struct.Struct, tuple[int, ...], bytes, int, Sequence[bytes]], list[bytes]]


def _one_by_one(seal: _Seal) -> _SealMany:
    """The burst form of a backend's ``aead_encrypt_with_header``: one call per message."""

    def seal_many(
        header: struct.Struct, fields: tuple[int, ...], key: bytes, counter: int, plaintexts: Sequence[bytes]
    ) -> list[bytes]:
        return [seal(header, (*fields, c), key, c, p) for c, p in enumerate(plaintexts, counter)]

    return seal_many


_portable_aead_encrypt_many_with_header = _one_by_one(_portable_aead_encrypt_with_header)


# --- AEAD: libsodium through PyNaCl's cffi ``lib`` ----------------------------------------------
#
# Buffer reuse is safe because every call below runs start to finish on one OS thread without
# yielding: the C call, then the copy out of the buffer into a fresh ``bytes``. The gateway runs
# all cores on gevent's hub thread and a greenlet only switches at a blocking gevent call, of
# which there is none in between; nothing that encrypts runs in a signal handler, a finalizer or
# another OS thread (gevent's resolver threads only resolve names). cffi releases the GIL during
# the C call, so calling these from several *OS threads* at once would NOT be safe.

#: Largest plaintext (and decrypted ciphertext minus tag) handled in the reused buffers: a UDP
#: datagram cannot carry more. Longer inputs (never seen on the wire) take the portable path.
_MAX_FAST_PLAINTEXT = 65536
#: Bytes reserved before the ciphertext in the encrypt buffer for a message header.
_HEADER_ROOM = 64

try:
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib

    _c_encrypt = _lib.crypto_aead_chacha20poly1305_ietf_encrypt
    _c_decrypt = _lib.crypto_aead_chacha20poly1305_ietf_decrypt
except (ImportError, AttributeError):  # PyNaCl built without its cffi module, or a changed one
    _ffi = None

if _ffi is not None:
    _NULL = _ffi.NULL
    # Encrypt buffer: [_HEADER_ROOM bytes of header room | ciphertext || tag]. A header of size
    # s is packed right before the ciphertext, so the message is one contiguous slice.
    _enc_buf = _ffi.new("unsigned char[]", _HEADER_ROOM + _MAX_FAST_PLAINTEXT + TAG_SIZE)
    _enc_ct = _enc_buf + _HEADER_ROOM  # where the ciphertext goes (pointer made once)
    _enc_view = _ffi.buffer(_enc_buf)  # slicing it returns bytes: the one copy
    _dec_buf = _ffi.new("unsigned char[]", _MAX_FAST_PLAINTEXT)
    _dec_view = _ffi.buffer(_dec_buf)

    def _fast_aead_encrypt(key: bytes, counter: int, plaintext: bytes, aad: bytes = b"") -> bytes:
        """AEAD(key, counter, plaintext, aad): ciphertext || 16-byte tag. ValueError unless
        32-byte key."""
        n = len(plaintext)
        if len(key) != KEY_SIZE or n > _MAX_FAST_PLAINTEXT:
            return _portable_aead_encrypt(key, counter, plaintext, aad)
        # clen_p may be NULL (we know clen = n + 16); nsec is unused by this construction.
        _c_encrypt(_enc_ct, _NULL, plaintext, n, aad, len(aad), _NULL, _NONCE.pack(counter), key)
        return _enc_view[_HEADER_ROOM : _HEADER_ROOM + n + TAG_SIZE]  # type: ignore[no-any-return]

    def _fast_aead_decrypt(key: bytes, counter: int, ciphertext: bytes, aad: bytes = b"") -> bytes:
        """Inverse of aead_encrypt: CryptoError if the tag does not verify (or there is no
        room for one). ValueError unless 32-byte key."""
        n = len(ciphertext) - TAG_SIZE
        if len(key) != KEY_SIZE or n > _MAX_FAST_PLAINTEXT:
            return _portable_aead_decrypt(key, counter, ciphertext, aad)
        if n < 0:  # libsodium would refuse it too; it has no room for a tag
            raise CryptoError("AEAD tag mismatch")
        # libsodium verifies the tag before decrypting (and zeroes the output on failure);
        # nothing is returned from the buffer unless it verified.
        if _c_decrypt(_dec_buf, _NULL, _NULL, ciphertext, n + TAG_SIZE, aad, len(aad), _NONCE.pack(counter), key):
            raise CryptoError("AEAD tag mismatch")
        return _dec_view[:n]  # type: ignore[no-any-return]

    def _fast_aead_encrypt_with_header(
        header: struct.Struct, fields: tuple[int, ...], key: bytes, counter: int, plaintext: bytes
    ) -> bytes:
        """``header.pack(*fields) || AEAD(key, counter, plaintext, b"")``: a whole transport
        message, packed and encrypted in one buffer and copied out once."""
        n = len(plaintext)
        start = _HEADER_ROOM - header.size
        if len(key) != KEY_SIZE or n > _MAX_FAST_PLAINTEXT or start < 0:
            return _portable_aead_encrypt_with_header(header, fields, key, counter, plaintext)
        header.pack_into(_enc_view, start, *fields)
        _c_encrypt(_enc_ct, _NULL, plaintext, n, b"", 0, _NULL, _NONCE.pack(counter), key)
        return _enc_view[start : _HEADER_ROOM + n + TAG_SIZE]  # type: ignore[no-any-return]

    _fast_aead_encrypt_many_with_header = _one_by_one(_fast_aead_encrypt_with_header)

# --- AEAD: OpenSSL through the optional ``cryptography`` package ---------------------------------
#
# Where it is importable (impacket installs it; it is not a dependency of ours) it is preferred:
# OpenSSL's ChaCha20 and Poly1305 use the widest vector units the CPU has (AVX-512 where present),
# about twice as fast as PyNaCl's libsodium for a 1420-byte packet. A cipher object is made once per key (its
# constructor costs a third of a packet) and kept in a small cache keyed by the key bytes;
# :func:`forget_keys` drops a keypair's entries when its keys are erased.

try:
    from cryptography.exceptions import InvalidTag as _InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305 as _OpensslChaCha

    _HAVE_OPENSSL = True
except ImportError:  # the optional package is not installed (or too old to have the class)
    _HAVE_OPENSSL = False

#: Cipher objects kept at most (transport keys live in pairs, three keypairs at a time, and
#: each handshake adds a few one-time keys); cleared when full.
_CIPHERS_MAX = 32
_ciphers: dict[bytes, _OpensslChaCha] = {}


def forget_keys(*keys: bytes) -> None:
    """Drop anything derived from ``keys`` that this module keeps (the OpenSSL cipher cache)."""
    for key in keys:
        _ciphers.pop(key, None)


if _HAVE_OPENSSL:

    def _cipher(key: bytes) -> _OpensslChaCha:
        c = _ciphers.get(key)
        if c is None:
            _check_key(key)
            if len(_ciphers) >= _CIPHERS_MAX:
                _ciphers.clear()
            c = _ciphers[key] = _OpensslChaCha(key)
        return c

    def _openssl_aead_encrypt(key: bytes, counter: int, plaintext: bytes, aad: bytes = b"") -> bytes:
        """AEAD(key, counter, plaintext, aad): ciphertext || 16-byte tag. ValueError unless
        32-byte key."""
        return _cipher(key).encrypt(_NONCE.pack(counter), plaintext, aad)

    def _openssl_aead_decrypt(key: bytes, counter: int, ciphertext: bytes, aad: bytes = b"") -> bytes:
        """Inverse of aead_encrypt: CryptoError if the tag does not verify (or there is no
        room for one). ValueError unless 32-byte key."""
        cipher = _cipher(key)
        if len(ciphertext) < TAG_SIZE:
            raise CryptoError("AEAD tag mismatch")
        try:
            return cipher.decrypt(_NONCE.pack(counter), ciphertext, aad)
        except _InvalidTag:
            raise CryptoError("AEAD tag mismatch") from None

    def _openssl_aead_encrypt_with_header(
        header: struct.Struct, fields: tuple[int, ...], key: bytes, counter: int, plaintext: bytes
    ) -> bytes:
        """``header.pack(*fields) || AEAD(key, counter, plaintext, b"")``: a whole transport
        message."""
        return header.pack(*fields) + _cipher(key).encrypt(_NONCE.pack(counter), plaintext, None)

    def _openssl_aead_encrypt_many_with_header(
        header: struct.Struct, fields: tuple[int, ...], key: bytes, counter: int, plaintexts: Sequence[bytes]
    ) -> list[bytes]:
        """``aead_encrypt_with_header`` for each of ``plaintexts``, with the counters
        ``counter, counter + 1, ...`` as the header's last field and the nonce."""
        encrypt = _cipher(key).encrypt
        pack = header.pack
        nonce = _NONCE.pack
        return [pack(*fields, c) + encrypt(nonce(c), p, None) for c, p in enumerate(plaintexts, counter)]


aead_encrypt_many_with_header: _SealMany
if _HAVE_OPENSSL:
    BACKEND = "openssl"
    aead_encrypt = _openssl_aead_encrypt
    aead_decrypt = _openssl_aead_decrypt
    aead_encrypt_with_header = _openssl_aead_encrypt_with_header
    aead_encrypt_many_with_header = _openssl_aead_encrypt_many_with_header
elif _ffi is not None:
    BACKEND = "cffi"
    aead_encrypt = _fast_aead_encrypt
    aead_decrypt = _fast_aead_decrypt
    aead_encrypt_with_header = _fast_aead_encrypt_with_header
    aead_encrypt_many_with_header = _fast_aead_encrypt_many_with_header
else:
    BACKEND = "bindings"
    aead_encrypt = _portable_aead_encrypt
    aead_decrypt = _portable_aead_decrypt
    aead_encrypt_with_header = _portable_aead_encrypt_with_header
    aead_encrypt_many_with_header = _portable_aead_encrypt_many_with_header

#: The public AEAD names rebound by the backend selection above (tests swap them together).
AEAD_NAMES = ("aead_encrypt", "aead_decrypt", "aead_encrypt_with_header", "aead_encrypt_many_with_header")


def chacha20poly1305_encrypt_raw(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """ChaCha20-Poly1305 with an arbitrary 12-byte nonce (for RFC 8439 known-answer tests)."""
    return _aead_enc(plaintext, aad, nonce, key)  # type: ignore[no-any-return]


def xaead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """XAEAD(key, nonce, plaintext, aad): XChaCha20-Poly1305, 24-byte nonce."""
    return _xaead_enc(plaintext, aad, nonce, key)  # type: ignore[no-any-return]


def xaead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`xaead_encrypt`; raises CryptoError if the tag does not verify."""
    try:
        return _xaead_dec(ciphertext, aad, nonce, key)  # type: ignore[no-any-return]
    except _NaclCryptoError as e:
        raise CryptoError("XAEAD tag mismatch") from e


def tai64n(wall_clock: float) -> bytes:
    """TAI64N label of a Unix wall-clock time (seconds since 1970, UTC), whitened like wireguard-go."""
    secs = int(wall_clock // 1)
    nanos = round((wall_clock - secs) * 1e9)
    if nanos >= 1_000_000_000:  # float rounding just below the next second
        secs, nanos = secs + 1, nanos - 1_000_000_000
    return _TAI64N.pack(_TAI64_BASE + secs, nanos & ~_WHITENER_MASK)


# Noise initial state (whitepaper §5.4.2): C_i = HASH(CONSTRUCTION), H_i = HASH(C_i || IDENTIFIER).
INITIAL_CHAINING_KEY = hash_(CONSTRUCTION)
INITIAL_HASH = hash_(INITIAL_CHAINING_KEY, IDENTIFIER)
