"""wg/crypto.py: known-answer tests (sources listed in tests/data/wg_vectors.json), and the
cffi fast path of the transport AEAD checked byte for byte against PyNaCl's public bindings."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nacl.bindings import crypto_aead_chacha20poly1305_ietf_decrypt as public_decrypt
from nacl.bindings import crypto_aead_chacha20poly1305_ietf_encrypt as public_encrypt

from tests.wg_helpers import WgPair, ipv4_packet
from wgslirpy.wg import crypto
from wgslirpy.wg.messages import TRANSPORT_HEADER
from wgslirpy.wg.session import Keypair

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "wg_vectors.json").read_text())
h = bytes.fromhex


def test_noise_initial_constants_match_published_values() -> None:
    v = VECTORS["noise_constants"]
    assert crypto.INITIAL_CHAINING_KEY.hex() == v["initial_chaining_key"]
    assert crypto.INITIAL_HASH.hex() == v["initial_hash"]
    assert hashlib.blake2s(b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s").digest() == crypto.INITIAL_CHAINING_KEY


def test_labels_and_identifier() -> None:
    assert crypto.CONSTRUCTION == b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
    assert crypto.IDENTIFIER == b"WireGuard v1 zx2c4 Jason@zx2c4.com"
    assert crypto.LABEL_MAC1 == b"mac1----"
    assert crypto.LABEL_COOKIE == b"cookie--"


@pytest.mark.parametrize("v", VECTORS["kdf"])
def test_kdf_vectors_from_wireguard_go(v: dict[str, str]) -> None:
    key, data = h(v["key"]), h(v["input"])
    assert crypto.kdf1(key, data).hex() == v["t0"]
    assert [t.hex() for t in crypto.kdf2(key, data)] == [v["t0"], v["t1"]]
    assert [t.hex() for t in crypto.kdf3(key, data)] == [v["t0"], v["t1"], v["t2"]]


def test_hmac_is_rfc2104_over_blake2s_with_64_byte_block() -> None:
    key, msg = b"k" * 32, b"message"
    k = key.ljust(64, b"\0")
    inner = hashlib.blake2s(bytes(x ^ 0x36 for x in k) + msg).digest()
    expected = hashlib.blake2s(bytes(x ^ 0x5C for x in k) + inner).digest()
    assert crypto.hmac(key, msg) == expected


def test_hash_and_mac() -> None:
    assert crypto.hash_(b"abc").hex() == VECTORS["blake2s_abc"]
    assert crypto.hash_(b"a", b"bc") == crypto.hash_(b"abc")
    r = VECTORS["regression"]
    assert crypto.mac(h(r["mac_key"]), h(r["mac_input"])).hex() == r["mac"]
    assert len(crypto.mac(b"k", b"")) == 16


def test_aead_rfc8439_vector() -> None:
    v = VECTORS["aead"]
    out = crypto.chacha20poly1305_encrypt_raw(h(v["key"]), h(v["nonce"]), h(v["plaintext"]), h(v["aad"]))
    assert out[:16].hex() == v["ciphertext_prefix"]
    assert out[-16:].hex() == v["tag"]


def test_aead_nonce_is_four_zero_bytes_then_le_counter() -> None:
    assert crypto.aead_nonce(0x0102030405060708) == h("000000000807060504030201")
    key = bytes(range(32))
    assert crypto.aead_encrypt(key, 7, b"pt", b"ad") == crypto.chacha20poly1305_encrypt_raw(
        key, h("000000000700000000000000"), b"pt", b"ad"
    )


def test_aead_roundtrip_and_tamper() -> None:
    key = bytes(range(32))
    ct = crypto.aead_encrypt(key, 5, b"hello", b"aad")
    assert len(ct) == 5 + crypto.TAG_SIZE
    assert crypto.aead_decrypt(key, 5, ct, b"aad") == b"hello"
    with pytest.raises(crypto.CryptoError):
        crypto.aead_decrypt(key, 6, ct, b"aad")
    with pytest.raises(crypto.CryptoError):
        crypto.aead_decrypt(key, 5, ct, b"other")
    with pytest.raises(crypto.CryptoError):
        crypto.aead_decrypt(key, 5, ct[:-1] + bytes([ct[-1] ^ 1]), b"aad")
    assert crypto.aead_decrypt(key, 0, crypto.aead_encrypt(key, 0, b""), b"") == b""


def test_xaead_draft_vector_and_tamper() -> None:
    v, pt = VECTORS["xaead"], h(VECTORS["aead"]["plaintext"])
    out = crypto.xaead_encrypt(h(v["key"]), h(v["nonce"]), pt, h(v["aad"]))
    assert out[:16].hex() == v["ciphertext_prefix"]
    assert out[-16:].hex() == v["tag"]
    assert crypto.xaead_decrypt(h(v["key"]), h(v["nonce"]), out, h(v["aad"])) == pt
    with pytest.raises(crypto.CryptoError):
        crypto.xaead_decrypt(h(v["key"]), h(v["nonce"]), out, b"")


def test_x25519_rfc7748_vector() -> None:
    v = VECTORS["x25519"]
    assert crypto.public_key(h(v["alice_private"])).hex() == v["alice_public"]
    assert crypto.public_key(h(v["bob_private"])).hex() == v["bob_public"]
    assert crypto.dh(h(v["alice_private"]), h(v["bob_public"])).hex() == v["shared"]
    assert crypto.dh(h(v["bob_private"]), h(v["alice_public"])).hex() == v["shared"]


def test_dh_rejects_low_order_points() -> None:
    priv = crypto.generate_private_key(lambda n: b"\x11" * n)
    with pytest.raises(crypto.CryptoError):
        crypto.dh(priv, bytes(32))
    with pytest.raises(crypto.CryptoError):
        crypto.dh(priv, (1).to_bytes(32, "little"))


def test_clamp() -> None:
    c = crypto.clamp(b"\xff" * 32)
    assert c[0] == 0xF8 and c[31] == 0x7F
    assert crypto.clamp(bytes(32))[31] == 0x40
    assert crypto.generate_private_key(lambda n: b"\xff" * n) == c
    with pytest.raises(ValueError):
        crypto.clamp(b"short")


def test_tai64n() -> None:
    assert crypto.tai64n(0.0).hex() == "400000000000000a00000000"
    t = crypto.tai64n(1_700_000_000.5)
    assert len(t) == 12
    assert int.from_bytes(t[:8], "big") == 0x400000000000000A + 1_700_000_000
    nanos = int.from_bytes(t[8:], "big")
    assert nanos % (1 << 24) == 0 and abs(nanos - 500_000_000) < (1 << 24)
    # byte order is time order (the replay check compares bytes)
    times = [1.0, 1.02, 1.5, 2.0, 1e9, 1e9 + 0.999999999]
    labels = [crypto.tai64n(x) for x in times]
    assert labels == sorted(labels) and len(set(labels)) == len(labels)


# --- transport AEAD backends (cffi ``lib`` fast path and the nacl.bindings fallback) -------------

Backend = tuple[Callable[..., bytes], Callable[..., bytes], Callable[..., bytes], Callable[..., list[bytes]]]
#: each backend's functions, in the order of crypto.AEAD_NAMES, by the prefix they carry
_PREFIXES = {"bindings": "_portable_", "cffi": "_fast_", "openssl": "_openssl_"}
BACKENDS: dict[str, Backend] = {
    name: tuple(getattr(crypto, prefix + attr) for attr in crypto.AEAD_NAMES)  # type: ignore[misc]
    for name, prefix in _PREFIXES.items()
    if hasattr(crypto, prefix + "aead_encrypt")  # cffi: PyNaCl's _sodium; openssl: cryptography
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


def random_cases(seed: int, count: int) -> Iterator[tuple[bytes, int, bytes, bytes]]:
    """(key, counter, plaintext, aad) with plaintext lengths 0..2000 and the edges around 16."""
    r = random.Random(seed)
    edges = [0, 1, 15, 16, 17, 31, 32, 1420, 1999, 2000]
    for i in range(count):
        n = edges[i] if i < len(edges) else r.randrange(2001)
        counter = r.choice([0, 1, 2**64 - 1, r.getrandbits(64), r.getrandbits(20)])
        yield (r.randbytes(32), counter, r.randbytes(n), r.randbytes(r.choice([0, 0, 1, 32, r.randrange(100)])))


def test_selected_backend_is_the_fastest_available() -> None:
    assert "cffi" in BACKENDS  # PyNaCl >= 1.5 always ships nacl._sodium
    expected = "openssl" if "openssl" in BACKENDS else "cffi"
    assert expected == crypto.BACKEND
    assert tuple(getattr(crypto, attr) for attr in crypto.AEAD_NAMES) == BACKENDS[expected]


def _fresh_crypto_module(monkeypatch: pytest.MonkeyPatch, *missing: str) -> Any:
    """wg/crypto.py imported anew as if the modules ``missing`` were not installed."""
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    spec = importlib.util.spec_from_file_location("_crypto_without_" + "_".join(missing), crypto.__file__)
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    return fresh


def test_import_without_cryptography_selects_libsodium(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = _fresh_crypto_module(monkeypatch, "cryptography.hazmat.primitives.ciphers.aead")
    assert fresh.BACKEND == "cffi" and not fresh._HAVE_OPENSSL
    assert fresh.aead_encrypt is fresh._fast_aead_encrypt
    key = bytes(range(32))
    assert fresh.aead_encrypt(key, 7, b"abc", b"ad") == crypto.aead_encrypt(key, 7, b"abc", b"ad")


@pytest.mark.skipif("openssl" not in BACKENDS, reason="the optional cryptography package is not installed")
def test_openssl_cipher_cache_is_bounded_and_forgets_erased_keys() -> None:
    crypto._ciphers.clear()
    keys = [bytes([i]) * 32 for i in range(crypto._CIPHERS_MAX + 5)]
    for key in keys:
        crypto._openssl_aead_encrypt(key, 0, b"x")
        assert len(crypto._ciphers) <= crypto._CIPHERS_MAX
    kp = Keypair(keys[-1], keys[-2], created=0.0, local_index=1, remote_index=2, is_initiator=True)
    assert keys[-1] in crypto._ciphers and keys[-2] in crypto._ciphers
    kp.zero()
    assert keys[-1] not in crypto._ciphers and keys[-2] not in crypto._ciphers
    with pytest.raises(ValueError):
        crypto._openssl_aead_encrypt(b"", 0, b"x")  # a zeroed key never reaches OpenSSL
    with pytest.raises(ValueError):
        crypto._openssl_aead_decrypt(b"short", 0, bytes(16))


def test_backends_match_public_binding_byte_for_byte(backend: Backend) -> None:
    enc, dec, enc_hdr, _ = backend
    for key, counter, pt, aad in random_cases(seed=8439, count=300):
        nonce = crypto.aead_nonce(counter)
        expected = public_encrypt(pt, aad, nonce, key)
        ct = enc(key, counter, pt, aad)
        assert type(ct) is bytes and ct == expected
        assert dec(key, counter, ct, aad) == public_decrypt(ct, aad, nonce, key) == pt
        fields = (4, counter & 0xFFFFFFFF, counter)
        msg = enc_hdr(TRANSPORT_HEADER, fields, key, counter, pt)
        assert msg == TRANSPORT_HEADER.pack(*fields) + public_encrypt(pt, b"", nonce, key)


def test_burst_encryption_is_one_message_per_counter(backend: Backend) -> None:
    _, _, enc_hdr, enc_many = backend
    r = random.Random(6)
    for first in (0, 1, 2**32 - 2, 2**64 - 4):
        key = r.randbytes(32)
        texts = [r.randbytes(n) for n in (0, 1, 16, 1420, 77)][: min(5, 2**64 - first)]
        got = enc_many(TRANSPORT_HEADER, (4, 9), key, first, texts)
        assert got == [enc_hdr(TRANSPORT_HEADER, (4, 9, c), key, c, p) for c, p in enumerate(texts, first)]
    assert enc_many(TRANSPORT_HEADER, (4, 9), bytes(32), 0, []) == []


def test_decrypt_rejects_every_single_bit_flip(backend: Backend) -> None:
    enc, dec, _, _ = backend
    r = random.Random(5)
    for n in (0, 1, 33, 200):
        key, pt, aad = r.randbytes(32), r.randbytes(n), r.randbytes(20)
        ct = enc(key, 9, pt, aad)
        for bit in range(len(ct) * 8):
            bad = bytearray(ct)
            bad[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(crypto.CryptoError):
                dec(key, 9, bytes(bad), aad)
        for bit in range(len(aad) * 8):
            bad = bytearray(aad)
            bad[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(crypto.CryptoError):
                dec(key, 9, ct, bytes(bad))
        for other_key, counter in ((key, 10), (key[:-1] + bytes([key[-1] ^ 0x80]), 9)):
            with pytest.raises(crypto.CryptoError):
                dec(other_key, counter, ct, aad)
        assert dec(key, 9, ct, aad) == pt  # the failures left nothing behind


def test_large_transport_sized_plaintext_bit_flips_rejected(backend: Backend) -> None:
    enc, dec, _, _ = backend
    key, pt = bytes(range(32)), bytes(range(256)) * 5 + bytes(140)  # 1420 bytes
    ct = enc(key, 3, pt)
    for bit in range(0, len(ct) * 8, 7):  # a spread of positions, tag included
        bad = bytearray(ct)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(crypto.CryptoError):
            dec(key, 3, bytes(bad))


def test_short_ciphertext_and_bad_key(backend: Backend) -> None:
    enc, dec, enc_hdr, _ = backend
    key = bytes(32)
    for short in (b"", b"x" * 15):
        with pytest.raises(crypto.CryptoError):
            dec(key, 0, short)
    for bad_key in (b"", bytes(31), bytes(33)):  # a zeroed keypair's key is b""
        with pytest.raises(ValueError):
            enc(bad_key, 0, b"data")
        with pytest.raises(ValueError):
            dec(bad_key, 0, bytes(32))
        with pytest.raises(ValueError):
            enc_hdr(TRANSPORT_HEADER, (4, 1, 0), bad_key, 0, b"data")


def test_results_are_independent_copies_of_the_reused_buffers(backend: Backend) -> None:
    enc, dec, enc_hdr, _ = backend
    key = bytes(range(32))
    first = enc(key, 1, b"a" * 100)
    first_copy = bytes(first)
    msg = enc_hdr(TRANSPORT_HEADER, (4, 7, 2), key, 2, b"b" * 1420)
    pt = dec(key, 1, first)
    enc(key, 3, b"c" * 2000)
    dec(key, 2, msg[16:])
    assert first == first_copy and pt == b"a" * 100
    assert dec(key, 2, msg[16:]) == b"b" * 1420


def test_plaintext_beyond_the_reused_buffer_falls_back(backend: Backend) -> None:
    enc, dec, enc_hdr, _ = backend
    key, pt = bytes(range(32)), bytes(70000)
    ct = enc(key, 1, pt)
    assert ct == public_encrypt(pt, b"", crypto.aead_nonce(1), key)
    assert dec(key, 1, ct) == pt
    assert enc_hdr(TRANSPORT_HEADER, (4, 1, 1), key, 1, pt) == TRANSPORT_HEADER.pack(4, 1, 1) + ct


def test_header_of_any_size_up_to_the_room() -> None:
    key = bytes(range(32))
    for fmt in ("<I", "<IIQ", "<8Q", "<9Q"):  # 4, 16, 64 bytes, and 72 (> room: fallback)
        h = struct.Struct(fmt)
        fields = tuple(range(1, len(h.unpack(bytes(h.size))) + 1))
        got = crypto.aead_encrypt_with_header(h, fields, key, 5, b"xyz")
        assert got == h.pack(*fields) + crypto.aead_encrypt(key, 5, b"xyz")


def select_portable_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Select the nacl.bindings fallback, as the import-time selection would without _sodium."""
    for name in crypto.AEAD_NAMES:
        monkeypatch.setattr(crypto, name, getattr(crypto, "_portable_" + name))
    monkeypatch.setattr(crypto, "BACKEND", "bindings")


def _wire_transcript() -> list[bytes]:
    """Handshake and a few data packets between two endpoints; every datagram on the wire."""
    pair = WgPair()
    wire: list[bytes] = []
    pair.a.initiate_handshake(now=pair.now)
    for _ in range(4):
        for src, dst in ((pair.a, pair.b), (pair.b, pair.a)):
            for data, _addr in src.datagrams_to_send():
                wire.append(data)
                dst.receive_datagram(data, pair.addr_of(src), now=pair.now)
    for size in (5, 16, 60, 1380):
        pair.a.send_ip(ipv4_packet(bytes(size)), now=pair.now)
        pair.b.send_ip(ipv4_packet(bytes(size), src="10.0.0.1", dst="10.0.0.2"), now=pair.now)
        for src, dst in ((pair.a, pair.b), (pair.b, pair.a)):
            for data, _addr in src.datagrams_to_send():
                wire.append(data)
                assert dst.receive_datagram(data, pair.addr_of(src), now=pair.now)
    return wire


def _keypair_messages() -> list[bytes]:
    kp = Keypair(bytes(range(32)), bytes(range(32, 64)), created=0.0, local_index=1, remote_index=2, is_initiator=True)
    msgs = [kp.encrypt(b"x" * n, 1420) for n in (0, 1, 50, 1420)]
    peer = Keypair(kp.recv_key, kp.send_key, created=0.0, local_index=2, remote_index=1, is_initiator=False)
    assert [peer.decrypt(c, m[16:]) for c, m in enumerate(msgs)] == [
        b"",
        b"x" + bytes(15),
        b"x" * 50 + bytes(14),
        b"x" * 1420,
    ]
    return msgs


def test_callers_see_identical_bytes_with_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    selected = _wire_transcript(), _keypair_messages()
    select_portable_backend(monkeypatch)
    assert crypto.aead_encrypt is crypto._portable_aead_encrypt
    assert (_wire_transcript(), _keypair_messages()) == selected


def test_import_without_sodium_selects_the_public_bindings(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = _fresh_crypto_module(monkeypatch, "nacl._sodium", "cryptography.hazmat.primitives.ciphers.aead")
    assert fresh.BACKEND == "bindings"
    assert fresh.aead_encrypt is fresh._portable_aead_encrypt
    assert not hasattr(fresh, "_fast_aead_encrypt")
    for key, counter, pt, aad in random_cases(seed=3, count=20):
        ct = fresh.aead_encrypt(key, counter, pt, aad)
        assert ct == crypto.aead_encrypt(key, counter, pt, aad)
        assert fresh.aead_decrypt(key, counter, ct, aad) == pt
    with pytest.raises(fresh.CryptoError):
        fresh.aead_decrypt(bytes(32), 0, bytes(16))
