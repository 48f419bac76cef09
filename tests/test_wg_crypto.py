"""Known-answer tests for wg/crypto.py (sources listed in tests/data/wg_vectors.json)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from wgslirpy.wg import crypto

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "wg_vectors.json").read_text())
h = bytes.fromhex


def test_noise_initial_constants_match_published_values() -> None:
    v = VECTORS["noise_constants"]
    assert crypto.INITIAL_CHAINING_KEY.hex() == v["initial_chaining_key"]
    assert crypto.INITIAL_HASH.hex() == v["initial_hash"]
    assert crypto.INITIAL_CHAINING_KEY == hashlib.blake2s(
        b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s").digest()


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
    out = crypto.chacha20poly1305_encrypt_raw(h(v["key"]), h(v["nonce"]), h(v["plaintext"]),
                                              h(v["aad"]))
    assert out[:16].hex() == v["ciphertext_prefix"]
    assert out[-16:].hex() == v["tag"]


def test_aead_nonce_is_four_zero_bytes_then_le_counter() -> None:
    assert crypto.aead_nonce(0x0102030405060708) == h("00000000" "0807060504030201")
    key = bytes(range(32))
    assert crypto.aead_encrypt(key, 7, b"pt", b"ad") == crypto.chacha20poly1305_encrypt_raw(
        key, h("00000000" "0700000000000000"), b"pt", b"ad")


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
