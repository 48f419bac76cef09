"""Noise_IKpsk2 handshake, both roles, and the golden transcript (wg/noise.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import seeded_rng
from tests.wg_helpers import A_PRIVATE, A_PUBLIC, B_PRIVATE, B_PUBLIC, GOLDEN_PATH, golden_transcript
from wgslirpy.constants import HANDSHAKE_INITIATION_RATE
from wgslirpy.errors import DropReason, _Drop
from wgslirpy.wg import crypto
from wgslirpy.wg.messages import decode_initiation, decode_response
from wgslirpy.wg.noise import Handshake, HandshakeState

GOLDEN = json.loads((Path(__file__).parent.parent / GOLDEN_PATH).read_text())
WALL = 1_700_000_000.0


def handshakes(psk: bytes | None = None) -> tuple[Handshake, Handshake]:
    return Handshake(A_PRIVATE, B_PUBLIC, psk), Handshake(B_PRIVATE, A_PUBLIC, psk)


def reason(fn: object, *args: object, **kw: object) -> DropReason:
    with pytest.raises(_Drop) as e:
        fn(*args, **kw)  # type: ignore[operator]
    return e.value.reason


@pytest.mark.parametrize("psk", [None, bytes(range(32))])
def test_full_handshake_derives_matching_keys(psk: bytes | None) -> None:
    i, r = handshakes(psk)
    rng = seeded_rng(7)
    init = i.create_initiation(local_index=11, wall_clock=WALL, rng=rng)
    assert i.state is HandshakeState.INITIATION_CREATED
    r.consume_initiation(decode_initiation(init), now=0.0)
    assert r.state.name == "INITIATION_CONSUMED" and r.remote_index == 11
    resp = r.create_response(local_index=22, rng=rng)
    assert r.state.name == "RESPONSE_CREATED"
    i.consume_response(decode_response(resp))
    assert i.state.name == "RESPONSE_CONSUMED"
    assert i.hash == r.hash and i.chaining_key == r.chaining_key
    ki, kr = i.derive_keypair(now=5.0), r.derive_keypair(now=6.0)
    assert ki.send_key == kr.recv_key and ki.recv_key == kr.send_key
    assert ki.send_key != ki.recv_key
    assert (ki.local_index, ki.remote_index, ki.is_initiator) == (11, 22, True)
    assert (kr.local_index, kr.remote_index, kr.is_initiator) == (22, 11, False)
    assert ki.created == 5.0
    assert i.state is r.state is HandshakeState.ZEROED and i.chaining_key == b""


def test_psk_mismatch_fails_response() -> None:
    i = Handshake(A_PRIVATE, B_PUBLIC, bytes(32))
    r = Handshake(B_PRIVATE, A_PUBLIC, b"\x01" * 32)
    init = i.create_initiation(local_index=1, wall_clock=WALL, rng=seeded_rng())
    r.consume_initiation(decode_initiation(init), now=0.0)  # psk only enters at the response
    resp = r.create_response(local_index=2, rng=seeded_rng())
    assert reason(i.consume_response, decode_response(resp)) is DropReason.WG_HANDSHAKE_FAILED
    assert i.state is HandshakeState.INITIATION_CREATED


def test_initiation_from_unknown_static_key_fails() -> None:
    stranger_priv = crypto.generate_private_key(seeded_rng(9))
    stranger = Handshake(stranger_priv, B_PUBLIC)
    _, r = handshakes()
    init = stranger.create_initiation(local_index=1, wall_clock=WALL, rng=seeded_rng())
    assert reason(r.consume_initiation, decode_initiation(init), now=0.0) is (DropReason.WG_HANDSHAKE_FAILED)
    assert r.state is HandshakeState.ZEROED


def test_initiation_for_another_responder_fails() -> None:
    i = Handshake(A_PRIVATE, A_PUBLIC)  # encrypts to the wrong responder key
    _, r = handshakes()
    init = i.create_initiation(local_index=1, wall_clock=WALL, rng=seeded_rng())
    assert reason(r.consume_initiation, decode_initiation(init), now=0.0) is (DropReason.WG_HANDSHAKE_FAILED)


def test_tai64n_replay_and_flood_guard() -> None:
    i, r = handshakes()
    first = i.create_initiation(local_index=1, wall_clock=WALL, rng=seeded_rng())
    r.consume_initiation(decode_initiation(first), now=0.0)
    assert reason(r.consume_initiation, decode_initiation(first), now=10.0) is (DropReason.WG_REPLAYED_INITIATION)
    older = i.create_initiation(local_index=2, wall_clock=WALL - 1, rng=seeded_rng())
    assert reason(r.consume_initiation, decode_initiation(older), now=10.0) is (DropReason.WG_REPLAYED_INITIATION)
    newer = i.create_initiation(local_index=3, wall_clock=WALL + 1, rng=seeded_rng())
    assert (
        reason(r.consume_initiation, decode_initiation(newer), now=HANDSHAKE_INITIATION_RATE / 2)
        is DropReason.WG_INITIATION_FLOOD
    )
    r.consume_initiation(decode_initiation(newer), now=HANDSHAKE_INITIATION_RATE * 2)
    assert r.remote_index == 3


def test_unexpected_and_tampered_responses() -> None:
    i, r = handshakes()
    init = i.create_initiation(local_index=1, wall_clock=WALL, rng=seeded_rng())
    r.consume_initiation(decode_initiation(init), now=0.0)
    resp = r.create_response(local_index=2, rng=seeded_rng())
    wrong_receiver = resp[:8] + (99).to_bytes(4, "little") + resp[12:]
    assert reason(i.consume_response, decode_response(wrong_receiver)) is (DropReason.WG_UNEXPECTED_RESPONSE)
    tampered = bytearray(resp)
    tampered[50] ^= 1
    assert reason(i.consume_response, decode_response(bytes(tampered))) is (DropReason.WG_HANDSHAKE_FAILED)
    i.consume_response(decode_response(resp))  # state was left intact
    assert reason(i.consume_response, decode_response(resp)) is DropReason.WG_UNEXPECTED_RESPONSE
    fresh, _ = handshakes()
    assert reason(fresh.consume_response, decode_response(resp)) is (DropReason.WG_UNEXPECTED_RESPONSE)


def test_low_order_ephemeral_rejected() -> None:
    i, r = handshakes()
    init = bytearray(i.create_initiation(local_index=1, wall_clock=WALL, rng=seeded_rng()))
    init[8:40] = bytes(32)
    assert reason(r.consume_initiation, decode_initiation(bytes(init)), now=0.0) is (DropReason.WG_HANDSHAKE_FAILED)


def test_misuse_raises() -> None:
    i, r = handshakes()
    with pytest.raises(ValueError):
        i.derive_keypair(now=0.0)
    with pytest.raises(ValueError):
        r.create_response(local_index=1, rng=seeded_rng())
    with pytest.raises(crypto.CryptoError):
        Handshake(A_PRIVATE, bytes(32))


@pytest.mark.parametrize("name,psk", [("no_psk", None), ("psk", bytes(range(200, 232)))])
def test_golden_transcript(name: str, psk: bytes | None) -> None:
    """Exact bytes of initiation, response, transport and cookie messages from fixed inputs."""
    assert golden_transcript(psk) == GOLDEN[name]


def test_golden_transcript_structure() -> None:
    g = {k: bytes.fromhex(v) if k != "wall_clock" else v for k, v in GOLDEN["no_psk"].items()}
    init, resp = g["initiation"], g["response"]
    assert len(init) == 148 and init[:8] == bytes.fromhex("0100000044332211")
    assert init[8:40] == crypto.public_key(g["initiator_ephemeral"])
    assert len(resp) == 92 and resp[:12] == bytes.fromhex("020000008877665544332211")
    assert resp[12:44] == crypto.public_key(g["responder_ephemeral"])
    assert init[-32:-16] == crypto.mac(crypto.hash_(b"mac1----", g["responder_public"]), init[:-32])
    assert resp[-32:-16] == crypto.mac(crypto.hash_(b"mac1----", g["initiator_public"]), resp[:-32])
    first = g["first_transport"]
    assert first[:16] == bytes.fromhex("04000000887766550000000000000000")
    assert crypto.aead_decrypt(g["initiator_send_key"], 0, first[16:])[20:26] == b"golden"
    assert g["keepalive"][8:16] == (1).to_bytes(8, "little") and len(g["keepalive"]) == 32
    assert len(g["cookie_reply"]) == 64 and g["retry_initiation_with_mac2"][-16:] != bytes(16)
