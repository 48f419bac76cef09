"""WireGuardEndpoint end to end: two cores over an in-memory link (tests/wg_helpers.py)."""

from __future__ import annotations

import ipaddress
import itertools
import random

import pytest

from tests.conftest import FakeClock, seeded_rng
from tests.wg_helpers import (
    A_PRIVATE,
    A_PUBLIC,
    B_PUBLIC,
    WgPair,
    assert_dropped,
    ipv4_packet,
    ipv6_packet,
)
from wgslirpy.constants import (
    KEEPALIVE_TIMEOUT,
    REJECT_AFTER_TIME,
    REKEY_AFTER_TIME,
    REKEY_ATTEMPT_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
)
from wgslirpy.errors import ConfigError, DropReason
from wgslirpy.wg import crypto
from wgslirpy.wg.endpoint import (
    EndpointChanged,
    HandshakeCompleted,
    PeerConfig,
    PeerKeysZeroed,
    WgEvent,
    WireGuardEndpoint,
)

PKT = ipv4_packet(b"ping")
PKT_BACK = ipv4_packet(b"pong", src="10.0.0.1", dst="10.0.0.2")


def events(ep: WireGuardEndpoint) -> list[WgEvent]:
    out = []
    while (e := ep.next_event()) is not None:
        out.append(e)
    return out


def kinds(datagrams: list[tuple[bytes, tuple[str, int]]]) -> list[int]:
    return [d[0] for d, _ in datagrams]


def established(**kw: object) -> WgPair:
    p = WgPair(**kw)  # type: ignore[arg-type]
    p.handshake()
    events(p.a)
    events(p.b)
    return p


# --- handshake ---------------------------------------------------------------------------------


def test_handshake_initiated_by_a() -> None:
    p = WgPair()
    assert not p.a.has_session and p.a.next_deadline() is None
    p.a.initiate_handshake(now=p.now)
    out = p.a.datagrams_to_send()
    assert kinds(out) == [1] and out[0][1] == p.b_addr and len(out[0][0]) == 148
    assert p.b.receive_datagram(out[0][0], p.a_addr, now=p.now) is None
    resp = p.b.datagrams_to_send()
    assert kinds(resp) == [2] and resp[0][1] == p.a_addr
    assert not p.b.has_session  # parked in next until key confirmation
    assert p.a.receive_datagram(resp[0][0], p.b_addr, now=p.now) is None
    assert p.a.has_session
    assert events(p.a) == [HandshakeCompleted(True, p.b_addr)]
    confirm = p.a.datagrams_to_send()
    assert kinds(confirm) == [4] and len(confirm[0][0]) == 32  # keepalive confirms the keys
    p.b.receive_datagram(confirm[0][0], p.a_addr, now=p.now)
    assert p.b.has_session
    assert events(p.b) == [EndpointChanged(None, p.a_addr), HandshakeCompleted(False, p.a_addr)]
    assert p.a.stats.handshakes_completed == p.b.stats.handshakes_completed == 1
    assert p.a.drops.total() == p.b.drops.total() == 0


def test_handshake_initiated_by_b_when_it_knows_the_endpoint() -> None:
    p = WgPair(b_peer={"endpoint": ("192.0.2.1", 40000)})
    p.b.initiate_handshake(now=p.now)
    p.roundtrip(p.b)
    assert p.a.has_session and p.b.has_session
    assert p.b.keypairs.current is not None and p.b.keypairs.current.is_initiator
    p.a.send_ip(PKT, now=p.now)
    assert p.transfer(p.a) == [PKT]


def test_initiate_without_endpoint_is_a_noop() -> None:
    p = WgPair()
    p.b.initiate_handshake(now=p.now)
    assert p.b.datagrams_to_send() == [] and p.b.next_deadline() is None


def test_handshake_with_preshared_key_and_mismatch() -> None:
    p = WgPair(psk=b"\x07" * 32)
    p.handshake()
    p.a.send_ip(PKT, now=p.now)
    assert p.transfer(p.a) == [PKT]
    q = WgPair(a_peer={"preshared_key": b"\x01" * 32}, psk=None)  # only a has a psk
    q.a.initiate_handshake(now=q.now)
    q.roundtrip(q.a)
    assert not q.a.has_session
    assert_dropped(q.a, DropReason.WG_HANDSHAKE_FAILED)


def test_initiation_from_unknown_key_is_dropped() -> None:
    clock = FakeClock()
    stranger = WireGuardEndpoint(
        crypto.clamp(b"\x55" * 32),
        PeerConfig(B_PUBLIC, endpoint=("198.51.100.2", 51820)),
        now=clock.now,
        wall_clock=lambda: 1.7e9,
        rng=seeded_rng(5),
    )
    p = WgPair(clock)
    stranger.initiate_handshake(now=clock.now)
    ((init, _),) = stranger.datagrams_to_send()
    assert p.b.receive_datagram(init, ("203.0.113.9", 1), now=clock.now) is None
    assert_dropped(p.b, DropReason.WG_HANDSHAKE_FAILED)
    assert p.b.datagrams_to_send() == [] and p.b.endpoint is None


# --- data ----------------------------------------------------------------------------------------


def test_data_both_ways_ipv4_and_ipv6() -> None:
    p = established()
    p.a.send_ip(PKT, now=p.now)
    assert p.transfer(p.a) == [PKT]
    p.b.send_ip(PKT_BACK, now=p.now)
    assert p.transfer(p.b) == [PKT_BACK]
    v6 = ipv6_packet(b"x" * 100)
    p.a.send_ip(v6, now=p.now)
    assert p.transfer(p.a) == [v6]
    assert p.b.stats.rx_packets == 2 and p.a.stats.tx_packets == 2


@pytest.mark.parametrize("payload_len", [0, 1, 15, 16, 17, 100, 1380])
def test_padding_to_16_and_removed_on_receive(payload_len: int) -> None:
    p = established()
    pkt = ipv4_packet(b"z" * payload_len)
    p.a.send_ip(pkt, now=p.now)
    ((dgram, _),) = p.a.datagrams_to_send()
    assert len(dgram) == 16 + -(-len(pkt) // 16) * 16 + 16
    assert p.b.receive_datagram(dgram, p.a_addr, now=p.now) == pkt


def test_full_mtu_packet_is_not_padded_past_the_mtu() -> None:
    p = established(a_kwargs={"mtu": 1420})
    pkt = ipv4_packet(bytes(1400))  # 1420 bytes: 12 more would round up to 1424
    p.a.send_ip(pkt, now=p.now)
    ((dg, _),) = p.a.datagrams_to_send()
    assert len(dg) == 16 + 1420 + 16
    assert p.b.receive_datagram(dg, p.a_addr, now=p.now) == pkt


def test_staged_until_session_then_sent() -> None:
    p = WgPair()
    p.a.send_ip(PKT, now=p.now)
    p.a.send_ip(ipv4_packet(b"2"), now=p.now)
    assert p.a.staged_count == 2
    out = p.a.datagrams_to_send()
    assert kinds(out) == [1]  # one initiation, the data waits
    p.b.receive_datagram(out[0][0], p.a_addr, now=p.now)
    p.transfer(p.b)  # response -> a sends its staged packets (no separate keepalive)
    got = p.transfer(p.a)
    assert got == [PKT, ipv4_packet(b"2")]
    assert p.a.stats.keepalives_sent == 0 and p.b.has_session


def test_responder_without_endpoint_stages_then_flushes_on_confirmation() -> None:
    p = WgPair()
    p.b.send_ip(PKT_BACK, now=p.now)
    assert p.b.datagrams_to_send() == [] and p.b.staged_count == 1
    p.a.initiate_handshake(now=p.now)
    p.transfer(p.a)
    p.transfer(p.b)
    p.transfer(p.a)  # keepalive confirms the keys at b, which then flushes
    assert p.transfer(p.b) == [PKT_BACK]


def test_staging_queue_capacity() -> None:
    p = WgPair(a_kwargs={"queue_capacity": 3})
    for i in range(5):
        p.a.send_ip(ipv4_packet(bytes([i])), now=p.now)
    assert p.a.staged_count == 3
    assert_dropped(p.a, DropReason.TRANSMIT_QUEUE_FULL, 2)
    p.roundtrip(p.a)
    # the oldest were dropped; the three newest arrive (delivered inside roundtrip)
    assert p.b.stats.rx_packets == 3


# --- timers ------------------------------------------------------------------------------------


def test_keepalive_after_10s_when_we_received_data_and_sent_nothing() -> None:
    p = established()
    p.a.send_ip(PKT, now=p.now)
    p.transfer(p.a)
    assert p.b.next_deadline() == pytest.approx(p.now + KEEPALIVE_TIMEOUT)
    p.advance(KEEPALIVE_TIMEOUT - 0.01)
    assert p.b.stats.keepalives_sent == 0
    p.advance(0.02)
    assert p.b.stats.keepalives_sent == 1
    assert p.a.stats.keepalives_received == 1
    p.advance(30)
    assert p.b.stats.keepalives_sent == 1  # nothing more to acknowledge


def test_no_keepalive_when_we_replied_with_data() -> None:
    p = established()
    assert p.a.stats.keepalives_sent == 1  # the key confirmation
    p.a.send_ip(PKT, now=p.now)
    p.transfer(p.a)
    p.clock.advance(1)
    p.b.send_ip(PKT_BACK, now=p.now)
    p.transfer(p.b)
    p.advance(KEEPALIVE_TIMEOUT + 1)
    assert p.b.stats.keepalives_sent == 0
    assert p.a.stats.keepalives_sent == 2  # a got b's data and answered nothing


def test_new_handshake_when_sent_data_and_heard_nothing() -> None:
    p = established()
    start = p.now
    p.a.send_ip(PKT, now=p.now)
    p.transfer(p.a)
    deadline = p.a.next_deadline()
    assert deadline is not None
    assert (
        KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
        <= deadline - start
        <= (KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX)
    )
    p.advance(deadline - start - 0.01, deliver=False)  # b's keepalive at 10 s is lost
    assert p.drop(p.b) == 1
    assert kinds(p.a.datagrams_to_send()) == []
    p.advance(0.02, deliver=False)
    assert kinds(p.a.datagrams_to_send()) == [1]


def test_persistent_keepalive() -> None:
    p = WgPair(a_peer={"persistent_keepalive": 25.0})
    assert p.a.next_deadline() == p.now  # wireguard-go keeps the tunnel up from the start
    p.advance(0.0)
    assert p.a.has_session and p.b.has_session
    sent = p.a.stats.keepalives_sent
    p.advance(24.9)
    assert p.a.stats.keepalives_sent == sent
    p.advance(0.2)
    assert p.a.stats.keepalives_sent == sent + 1
    p.advance(50)
    assert p.a.stats.keepalives_sent == sent + 3
    assert p.b.stats.keepalives_sent == 0


def test_rekey_after_120s_by_initiator_on_send() -> None:
    p = established()
    old = p.a.keypairs.current
    p.clock.advance(REKEY_AFTER_TIME - 1)
    p.b.send_ip(PKT_BACK, now=p.now)
    assert kinds(p.b.datagrams_to_send()) == [4]
    p.a.send_ip(PKT, now=p.now)
    assert kinds(p.a.datagrams_to_send()) == [4]
    p.clock.advance(1)
    p.b.send_ip(PKT_BACK, now=p.now)
    assert kinds(p.b.datagrams_to_send()) == [4]  # the responder never rekeys on time
    p.a.send_ip(PKT, now=p.now)
    out = p.a.datagrams_to_send()
    assert kinds(out) == [4, 1]  # data with the old keys, then a new initiation
    assert p.b.receive_datagram(out[0][0], p.a_addr, now=p.now) == PKT
    p.b.receive_datagram(out[1][0], p.a_addr, now=p.now)
    p.transfer(p.b)
    assert p.a.keypairs.current is not old and p.a.keypairs.previous is old
    # b still has its old current until confirmed; packets under either keypair decrypt
    p.a.send_ip(PKT, now=p.now)
    assert p.transfer(p.a) == [PKT]
    b_cur, a_cur = p.b.keypairs.current, p.a.keypairs.current
    assert b_cur is not None and a_cur is not None
    assert b_cur.local_index == a_cur.remote_index
    assert p.a.stats.handshakes_completed == 2


def test_rekey_on_receive_as_initiator_near_reject_time() -> None:
    p = established()
    p.clock.advance(REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT)
    p.b.send_ip(PKT_BACK, now=p.now)
    assert p.transfer(p.b) == [PKT_BACK]
    assert kinds(p.a.datagrams_to_send()) == [1]
    p.b.send_ip(PKT_BACK, now=p.now)
    p.transfer(p.b)
    assert p.a.datagrams_to_send() == []  # only once per keypair


def test_keys_rejected_after_180s() -> None:
    p = established()
    old = p.a.keypairs.current
    assert old is not None
    p.clock.advance(REJECT_AFTER_TIME)
    p.a.handle_timer(now=p.now)
    assert not p.a.has_session
    p.b.send_ip(PKT_BACK, now=p.now)
    out = p.b.datagrams_to_send()
    assert kinds(out) == [1]  # no transport with expired keys: b initiates instead
    assert p.b.staged_count == 1
    stale = old.encrypt(PKT)  # a packet made with the expired keys is refused
    assert p.b.receive_datagram(stale, p.a_addr, now=p.now) is None
    assert_dropped(p.b, DropReason.WG_KEY_EXPIRED)


def test_session_expiry_and_recovery_when_traffic_resumes() -> None:
    p = established()
    p.advance(REJECT_AFTER_TIME + 30)
    assert not p.a.has_session and not p.b.has_session
    p.a.send_ip(PKT, now=p.now)
    p.roundtrip(p.a)
    assert p.a.has_session and p.b.has_session
    assert p.b.stats.rx_packets == 1
    p.b.send_ip(PKT_BACK, now=p.now)
    assert p.transfer(p.b) == [PKT_BACK]


def test_key_material_zeroed_after_3_reject_after_time() -> None:
    p = established()
    events(p.a)
    p.advance(3 * REJECT_AFTER_TIME - 1)
    assert p.a.keypairs.current is not None
    assert events(p.a) == []
    p.advance(2)
    assert PeerKeysZeroed() in events(p.a)
    assert PeerKeysZeroed() in events(p.b)
    assert p.a.keypairs.all() == [] and not p.a.has_session
    assert p.a.next_deadline() is None
    p.a.send_ip(PKT, now=p.now)  # and it recovers
    p.roundtrip(p.a)
    assert p.b.stats.rx_packets == 1


def test_handshake_retransmission_with_jitter_then_give_up() -> None:
    p = WgPair()
    start = p.now
    p.a.send_ip(PKT, now=p.now)
    times = [p.now]
    p.drop(p.a)
    for _ in range(100):
        d = p.a.next_deadline()
        if d is None or d > start + 200:
            break
        p.clock.now = d
        p.a.handle_timer(now=p.now)
        for dg, _ in p.a.datagrams_to_send():
            assert dg[0] == 1
            times.append(p.now)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(REKEY_TIMEOUT <= g <= REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX for g in gaps)
    assert len({round(g, 6) for g in gaps}) > 1  # jittered
    assert times[-1] - start >= REKEY_ATTEMPT_TIME
    assert times[-1] - start <= REKEY_ATTEMPT_TIME + 2 * REKEY_TIMEOUT
    assert_dropped(p.a, DropReason.WG_NO_SESSION)  # the staged packet was flushed
    assert p.a.staged_count == 0
    # a later packet starts a new handshake
    p.a.send_ip(PKT, now=p.now)
    assert kinds(p.a.datagrams_to_send()) == [1]


def test_initiations_are_rate_limited() -> None:
    p = WgPair()
    p.a.initiate_handshake(now=p.now)
    p.a.initiate_handshake(now=p.now + 1)
    p.a.send_ip(PKT, now=p.now + 2)
    assert kinds(p.a.datagrams_to_send()) == [1]


# --- cookies -------------------------------------------------------------------------------------


def test_cookie_round_trip_under_load() -> None:
    p = WgPair()
    p.b.under_load = True
    p.a.send_ip(PKT, now=p.now)
    p.transfer(p.a)
    assert_dropped(p.b, DropReason.WG_UNDER_LOAD)
    out = p.b.datagrams_to_send()
    assert kinds(out) == [3] and len(out[0][0]) == 64 and out[0][1] == p.a_addr
    assert p.b.endpoint is None  # a cookie exchange authenticates nothing
    p.a.receive_datagram(out[0][0], p.b_addr, now=p.now)
    assert p.a.stats.cookie_replies_received == 1
    p.a.receive_datagram(out[0][0], p.b_addr, now=p.now)  # a second copy is not expected
    assert_dropped(p.a, DropReason.WG_UNEXPECTED_COOKIE)
    p.advance(REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX)  # the retry carries mac2
    assert p.a.has_session and p.b.has_session
    assert p.b.stats.rx_packets == 1
    assert p.b.drops[DropReason.WG_UNDER_LOAD] == 1


def test_under_load_is_the_flag_the_shell_sets() -> None:
    # The shell derives it from its handshake queue (tests/test_wg_flood.py); no rate guess here.
    p = WgPair()
    p.a.initiate_handshake(now=p.now)
    ((init, _),) = p.a.datagrams_to_send()
    p.b.under_load = True
    p.b.receive_datagram(init, p.a_addr, now=p.now)
    assert kinds(p.b.datagrams_to_send()) == [3]
    p.b.under_load = False
    p.b.receive_datagram(init, p.a_addr, now=p.now)
    assert kinds(p.b.datagrams_to_send()) == [2]
    assert p.b.drops[DropReason.WG_UNDER_LOAD] == 1


def test_bad_mac1_dropped_before_any_dh(monkeypatch: pytest.MonkeyPatch) -> None:
    p = WgPair()
    p.a.initiate_handshake(now=p.now)
    ((init, _),) = p.a.datagrams_to_send()
    calls: list[tuple[bytes, bytes]] = []
    real_dh = crypto.dh

    def counting_dh(priv: bytes, pub: bytes) -> bytes:
        calls.append((priv, pub))
        return real_dh(priv, pub)

    monkeypatch.setattr(crypto, "dh", counting_dh)
    bad = bytearray(init)
    bad[-20] ^= 1
    assert p.b.receive_datagram(bytes(bad), p.a_addr, now=p.now) is None
    bad = bytearray(init)
    bad[20] ^= 1  # body change: mac1 no longer matches
    p.b.receive_datagram(bytes(bad), p.a_addr, now=p.now)
    assert_dropped(p.b, DropReason.WG_BAD_MAC1, 2)
    assert calls == []
    p.b.receive_datagram(init, p.a_addr, now=p.now)
    assert calls  # a good one does reach the DH


# --- replay ------------------------------------------------------------------------------------


def test_replayed_transport_packet_dropped() -> None:
    p = established()
    p.a.send_ip(PKT, now=p.now)
    ((dg, _),) = p.a.datagrams_to_send()
    assert p.b.receive_datagram(dg, p.a_addr, now=p.now) == PKT
    assert p.b.receive_datagram(dg, p.a_addr, now=p.now) is None
    assert_dropped(p.b, DropReason.WG_REPLAYED)


def test_replayed_initiation_dropped() -> None:
    p = established()
    p.clock.advance(REKEY_TIMEOUT)
    p.a.initiate_handshake(now=p.now)
    ((init, _),) = p.a.datagrams_to_send()
    p.b.receive_datagram(init, p.a_addr, now=p.now)
    assert kinds(p.b.datagrams_to_send()) == [2]
    p.b.receive_datagram(init, p.a_addr, now=p.now + 1)
    assert_dropped(p.b, DropReason.WG_REPLAYED_INITIATION)
    assert p.b.datagrams_to_send() == []


def test_out_of_order_within_window_accepted_once() -> None:
    p = established()
    pkts = [ipv4_packet(bytes([i]) * 3) for i in range(50)]
    for pkt in pkts:
        p.a.send_ip(pkt, now=p.now)
    dgs = [d for d, _ in p.a.datagrams_to_send()]
    order = list(range(50))
    random.Random(4).shuffle(order)
    got = [p.b.receive_datagram(dgs[i], p.a_addr, now=p.now) for i in order]
    assert got == [pkts[i] for i in order]
    again = [p.b.receive_datagram(dgs[i], p.a_addr, now=p.now) for i in order]
    assert again == [None] * 50
    assert_dropped(p.b, DropReason.WG_REPLAYED, 50)


def test_forged_transport_does_not_advance_the_window() -> None:
    p = established()
    p.a.send_ip(PKT, now=p.now)
    ((dg, _),) = p.a.datagrams_to_send()
    forged = dg[:8] + (10**6).to_bytes(8, "little") + dg[16:]
    assert p.b.receive_datagram(forged, p.a_addr, now=p.now) is None
    assert_dropped(p.b, DropReason.WG_DECRYPT_FAILED)
    assert p.b.receive_datagram(dg, p.a_addr, now=p.now) == PKT


# --- robustness --------------------------------------------------------------------------------


def test_garbage_of_every_length_never_raises() -> None:
    p = established()
    rnd = random.Random(11)
    for n in range(0, 201):
        for first in (None, 1, 2, 3, 4, 0, 255):
            buf = bytearray(rnd.getrandbits(8) for _ in range(n))
            if first is not None and n >= 4:
                buf[0:4] = bytes([first, 0, 0, 0])
            assert p.b.receive_datagram(bytes(buf), p.a_addr, now=p.now) is None
            assert p.a.receive_datagram(bytes(buf), p.b_addr, now=p.now) is None
    for _ in range(300):
        data = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 1500)))
        p.b.receive_datagram(data, p.a_addr, now=p.now)
    assert p.b.drops[DropReason.WG_SHORT] > 0
    assert p.b.drops[DropReason.WG_BAD_SIZE] > 0
    assert p.b.drops[DropReason.WG_UNKNOWN_TYPE] > 0
    assert p.b.drops[DropReason.WG_UNKNOWN_INDEX] > 0
    assert p.b.endpoint == p.a_addr  # nothing unauthenticated moved it
    p.a.send_ip(PKT, now=p.now)
    assert p.transfer(p.a) == [PKT]


def test_mutated_valid_messages_never_raise() -> None:
    p = WgPair()
    p.a.initiate_handshake(now=p.now)
    msgs = [d for d, _ in p.a.datagrams_to_send()]
    rnd = random.Random(3)
    for msg in msgs:
        for cut in range(len(msg) + 1):
            p.b.receive_datagram(msg[:cut], p.a_addr, now=p.now)
        for _ in range(200):
            m = bytearray(msg)
            m[rnd.randrange(len(m))] ^= 1 << rnd.randrange(8)
            p.b.receive_datagram(bytes(m), p.a_addr, now=p.now)
            p.a.receive_datagram(bytes(m), p.b_addr, now=p.now)
    p.b.receive_datagram(bytearray(msgs[0]), p.a_addr, now=p.now)  # any bytes-like input
    assert kinds(p.b.datagrams_to_send()) == [2]


def test_unexpected_response_and_unknown_index() -> None:
    p = WgPair()
    p.a.initiate_handshake(now=p.now)
    p.transfer(p.a)
    ((resp, _),) = p.b.datagrams_to_send()
    p.a.receive_datagram(resp, p.b_addr, now=p.now)
    assert p.a.has_session and p.a.drops.total() == 0
    # The same (valid, MAC1-correct) response again: no initiation of ours is outstanding.
    p.a.receive_datagram(resp, p.b_addr, now=p.now)
    assert_dropped(p.a, DropReason.WG_UNEXPECTED_RESPONSE)
    # A response that fails MAC1 never gets as far as the handshake.
    p.a.receive_datagram(b"\x02\0\0\0" + bytes(88), p.b_addr, now=p.now)
    assert_dropped(p.a, DropReason.WG_BAD_MAC1)
    p.transfer(p.a)  # a's keepalive confirms the session at b
    p.a.send_ip(PKT, now=p.now)
    ((dg, _),) = p.a.datagrams_to_send()
    p.b.receive_datagram(dg[:4] + b"\xde\xad\xbe\xef" + dg[8:], p.a_addr, now=p.now)
    assert_dropped(p.b, DropReason.WG_UNKNOWN_INDEX)


# --- roaming -------------------------------------------------------------------------------------


def test_roaming_follows_latest_authenticated_packet() -> None:
    p = established()
    assert p.b.endpoint == p.a_addr
    new_addr = ("203.0.113.7", 5555)
    p.a.send_ip(PKT, now=p.now)
    ((dg, _),) = p.a.datagrams_to_send()
    forged = dg[:-1] + bytes([dg[-1] ^ 1])
    p.b.receive_datagram(forged, new_addr, now=p.now)  # unauthenticated: ignored
    assert p.b.endpoint == p.a_addr
    assert p.b.receive_datagram(dg, new_addr, now=p.now) == PKT
    assert p.b.endpoint == new_addr
    assert events(p.b) == [EndpointChanged(p.a_addr, new_addr)]
    p.b.receive_datagram(dg, p.a_addr, now=p.now)  # a replay from the old address: ignored
    assert p.b.endpoint == new_addr
    p.b.send_ip(PKT_BACK, now=p.now)
    assert p.b.datagrams_to_send()[0][1] == new_addr


def test_ipv6_recvfrom_address_is_normalised() -> None:
    p = established()
    p.a.send_ip(PKT, now=p.now)
    ((dg, _),) = p.a.datagrams_to_send()
    assert p.b.receive_datagram(dg, ("2001:db8::1", 4444, 0, 0), now=p.now) == PKT
    assert p.b.endpoint == ("2001:db8::1", 4444)


def test_peer_config_endpoint_is_normalised() -> None:
    ep = WireGuardEndpoint(
        A_PRIVATE,
        PeerConfig(B_PUBLIC, endpoint=("::1", 5, 0, 0)),  # type: ignore[arg-type]
        now=0.0,
        wall_clock=lambda: 1.7e9,
        rng=seeded_rng(),
    )
    assert ep.endpoint == ("::1", 5)


# --- inner packet checks -------------------------------------------------------------------------


def _deliver_raw(p: WgPair, inner: bytes) -> bytes | None:
    kp = p.a.keypairs.current
    assert kp is not None
    return p.b.receive_datagram(kp.encrypt(inner), p.a_addr, now=p.now)


def test_inner_packet_checks() -> None:
    p = established(b_peer={"allowed_ips": (ipaddress.IPv4Network("10.0.0.0/24"),)})
    assert _deliver_raw(p, PKT) == PKT
    assert _deliver_raw(p, b"\x55" + PKT[1:]) is None  # version 5
    assert _deliver_raw(p, PKT[:15]) is None  # shorter than a header, even padded to 16
    too_long = PKT[:2] + (33).to_bytes(2, "big") + PKT[4:]  # longer than even the padded data
    assert _deliver_raw(p, too_long) is None
    too_short = PKT[:2] + (19).to_bytes(2, "big") + PKT[4:]
    assert _deliver_raw(p, too_short) is None
    assert _deliver_raw(p, b"\x60" + bytes(14)) is None
    assert_dropped(p.b, DropReason.WG_BAD_INNER, 5)
    assert _deliver_raw(p, ipv4_packet(src="10.0.1.2")) is None
    assert _deliver_raw(p, ipv6_packet()) is None  # no IPv6 allowed
    assert_dropped(p.b, DropReason.WG_NOT_ALLOWED_SOURCE, 2)
    trailing = PKT + b"junk"
    assert _deliver_raw(p, trailing) == PKT  # trailing bytes are cut at the IP length
    v6 = established(b_peer={"allowed_ips": (ipaddress.IPv6Network("fd00::/64"),)})
    assert _deliver_raw(v6, ipv6_packet()) == ipv6_packet()
    assert _deliver_raw(v6, ipv6_packet(src=b"\xfe" + bytes(15))) is None
    assert _deliver_raw(v6, PKT) is None


def test_bad_inner_still_counts_as_authenticated() -> None:
    p = established()
    _deliver_raw(p, b"\x00" * 20)
    assert p.b.timers.send_keepalive is not None  # data was received: acknowledge it


# --- config --------------------------------------------------------------------------------------


def test_config_errors() -> None:
    with pytest.raises(ConfigError):
        PeerConfig(b"short")
    with pytest.raises(ConfigError):
        PeerConfig(A_PUBLIC, preshared_key=b"x")
    with pytest.raises(ConfigError):
        PeerConfig(A_PUBLIC, allowed_ips=("10.0.0.0/8",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        PeerConfig(A_PUBLIC, endpoint=("h", 0))
    with pytest.raises(ConfigError):
        WireGuardEndpoint(b"short", PeerConfig(A_PUBLIC), now=0.0, wall_clock=lambda: 0.0)
    with pytest.raises(ConfigError):
        WireGuardEndpoint(A_PRIVATE, PeerConfig(bytes(32)), now=0.0, wall_clock=lambda: 0.0)


def test_stats_count_bytes_and_datagrams() -> None:
    p = established()
    p.a.send_ip(PKT, now=p.now)
    p.transfer(p.a)
    assert p.a.stats.tx_datagrams == p.b.stats.rx_datagrams == 3
    assert p.a.stats.tx_bytes == p.b.stats.rx_bytes == 148 + 32 + 64
    assert p.a.stats.handshake_initiations_sent == 1
    assert p.b.stats.handshake_responses_sent == 1


def test_send_ips_is_send_ip_for_each_packet() -> None:
    """One burst: the same datagrams, counters and counters of stats as one call per packet."""
    packets = [ipv4_packet(bytes([i]) * i) for i in range(1, 6)] + [b""]
    one, burst = WgPair(), WgPair()
    one.handshake()
    burst.handshake()
    for pkt in packets:
        one.a.send_ip(pkt, now=one.now)
    burst.a.send_ips(packets, now=burst.now)
    assert burst.a.datagrams_to_send() == one.a.datagrams_to_send()
    assert burst.a.stats == one.a.stats
    assert burst.a.stats.keepalives_sent == one.a.stats.keepalives_sent >= 1
    assert burst.a.next_deadline() == one.a.next_deadline()


def test_send_ips_before_a_session_stages_the_burst_in_order() -> None:
    p = WgPair()
    packets = [ipv4_packet(bytes([i])) for i in range(3)]
    p.a.send_ips(packets, now=p.now)  # no session yet: staged, and a handshake starts
    ((init, _),) = p.a.datagrams_to_send()
    p.b.receive_datagram(init, p.a_addr, now=p.now)
    for data, _ in p.b.datagrams_to_send():
        p.a.receive_datagram(data, p.b_addr, now=p.now)
    assert p.transfer(p.a) == packets
