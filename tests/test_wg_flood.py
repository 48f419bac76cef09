"""Handshake-flood guard, on a fake clock: token buckets, the per-source rate limiter, the
handshake intake queue and its load state, and the endpoint's admission checks before any DH."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.conftest import seeded_rng
from tests.wg_helpers import B_ADDR, B_PUBLIC, WgPair, assert_dropped, ipv4_packet, record_calls
from wgslirpy import errors
from wgslirpy.constants import (
    COOKIE_REFRESH_TIME,
    COOKIE_REPLY_BURST,
    HANDSHAKE_BURST_PER_SOURCE,
    UNDER_LOAD_AFTER_TIME,
)
from wgslirpy.errors import ConfigError, DropReason
from wgslirpy.wg import cookie as cookie_mod
from wgslirpy.wg import crypto
from wgslirpy.wg.endpoint import PeerConfig, WireGuardEndpoint
from wgslirpy.wg.intake import HandshakeIntake, is_handshake
from wgslirpy.wg.ratelimit import RateLimiter, TokenBucket, source_key

NOW = 1000.0


# --- token buckets -------------------------------------------------------------------------------


def test_token_bucket_burst_then_rate() -> None:
    b = TokenBucket(20.0, 5, now=NOW)
    assert [b.allow(now=NOW) for _ in range(6)] == [True] * 5 + [False]
    assert not b.allow(now=NOW + 0.04)  # 0.8 of a token
    assert b.allow(now=NOW + 0.05)
    assert [b.allow(now=NOW + 100) for _ in range(6)] == [True] * 5 + [False]  # capped at burst


def test_source_key_ipv4_ipv6_64_and_mapped() -> None:
    assert source_key("192.0.2.1") == "192.0.2.1"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::9")
    assert source_key("2001:db8:1:2::1") != source_key("2001:db8:1:3::1")
    assert source_key("fe80::1%eth0") == source_key("fe80::2")


def test_rate_limiter_20_per_second_burst_5_per_source() -> None:
    rl = RateLimiter(now=NOW)
    assert sum(rl.allow("192.0.2.1", now=NOW) for _ in range(100)) == HANDSHAKE_BURST_PER_SOURCE
    assert rl.allow("192.0.2.2", now=NOW)  # another source has its own bucket
    # One second of a steady flood from one source: 20 pass.
    passed = sum(rl.allow("192.0.2.1", now=NOW + i / 1000) for i in range(1, 1001))
    assert passed == 20
    # A /64 shares one bucket.
    assert sum(rl.allow(f"2001:db8::{i:x}", now=NOW) for i in range(50)) == HANDSHAKE_BURST_PER_SOURCE


def test_rate_limiter_forgets_idle_sources_and_is_bounded() -> None:
    rl = RateLimiter(now=NOW, max_sources=10)
    for i in range(10):
        assert rl.allow(f"192.0.2.{i}", now=NOW)
    assert not rl.allow("198.51.100.1", now=NOW)  # full: new sources refused (fail closed)
    assert len(rl) == 10
    assert rl.allow("198.51.100.1", now=NOW + 2.0)  # idle ones swept
    assert len(rl) == 1


# --- the intake queue ----------------------------------------------------------------------------


def test_classification_by_type_byte() -> None:
    assert [is_handshake(bytes([t]) + bytes(3)) for t in range(6)] == [False, True, True, True, False, False]
    assert not is_handshake(b"")


def test_intake_overflow_is_dropped_and_counted_peer_lane_first_and_budget() -> None:
    q = HandshakeIntake(capacity=4, peer_capacity=2, budget=3, load_mark=2)
    for i in range(6):
        q.offer(b"x%d" % i, ("192.0.2.9", i))
    assert q.drops[DropReason.WG_HANDSHAKE_QUEUE_FULL] == 2
    assert q.offer(b"peer", ("192.0.2.1", 1), from_peer=True)  # its own lane is not full
    assert q.pending == 5
    assert [d for d, _ in q.take()] == [b"peer", b"x0", b"x1"]
    assert [d for d, _ in q.take(1)] == [b"x2"]
    assert [d for d, _ in q.take()] == [b"x3"]
    assert q.take() == []


def test_intake_under_load_follows_depth_with_hysteresis() -> None:
    q = HandshakeIntake(capacity=8, budget=8, load_mark=4)
    for i in range(3):
        q.offer(b"x", ("192.0.2.9", i))
    assert not q.under_load(now=NOW)
    q.offer(b"x", ("192.0.2.9", 9))
    assert q.under_load(now=NOW)
    q.take()
    assert q.under_load(now=NOW + UNDER_LOAD_AFTER_TIME - 0.01)  # stays loaded a while
    assert not q.under_load(now=NOW + UNDER_LOAD_AFTER_TIME)
    with pytest.raises(ConfigError):
        HandshakeIntake(capacity=4, load_mark=5)


# --- the endpoint's admission checks ---------------------------------------------------------------


def _stranger(p: WgPair) -> WireGuardEndpoint:
    """A sender with a key b does not know: its initiations pass mac1 and fail in the DH."""
    return WireGuardEndpoint(
        crypto.clamp(bytes(range(50, 82))),
        PeerConfig(B_PUBLIC, endpoint=B_ADDR),
        now=p.now,
        wall_clock=lambda: 1.7e9,
        rng=seeded_rng(9),
    )


def _initiations(p: WgPair, n: int, src: WireGuardEndpoint | None = None) -> list[bytes]:
    """``n`` initiations to b with a valid mac1, from ``src`` (default: a fresh stranger)."""
    src = src or _stranger(p)
    out = []
    for _ in range(n):
        src.timers.last_sent_handshake = None  # lift the sender's one-per-REKEY_TIMEOUT limit
        src.initiate_handshake(now=p.now)
        ((init, _),) = src.datagrams_to_send()
        out.append(init)
    return out


@pytest.fixture
def dh_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    return record_calls(monkeypatch, crypto, "dh")


def test_rate_limit_before_any_dh(dh_calls: list[tuple[Any, ...]]) -> None:
    p = WgPair()
    inits = _initiations(p, 30)
    dh_calls.clear()
    stranger = ("203.0.113.7", 4444)
    for init in inits:
        p.b.receive_datagram(init, stranger, now=p.now)
    assert_dropped(p.b, DropReason.WG_RATE_LIMITED, 30 - HANDSHAKE_BURST_PER_SOURCE)
    assert_dropped(p.b, DropReason.WG_HANDSHAKE_FAILED, HANDSHAKE_BURST_PER_SOURCE)
    assert len(dh_calls) == HANDSHAKE_BURST_PER_SOURCE  # only the burst reached a DH


def test_rate_limit_also_applies_after_a_valid_mac2() -> None:
    p = WgPair()
    p.b.under_load = True
    stranger = ("203.0.113.7", 4444)
    c = _stranger(p)
    (init,) = _initiations(p, 1, c)
    p.b.receive_datagram(init, stranger, now=p.now)
    ((reply, _),) = p.b.datagrams_to_send()
    c.receive_datagram(reply, p.b_addr, now=p.now)
    assert c.stats.cookie_replies_received == 1  # c's next initiations carry a valid mac2
    for init in _initiations(p, 10, c):
        p.b.receive_datagram(init, stranger, now=p.now)
    assert p.b.drops[DropReason.WG_UNDER_LOAD] == 1
    # The cookie took one of the source's tokens; the rest of its burst reached the DH.
    assert_dropped(p.b, DropReason.WG_RATE_LIMITED, 10 - (HANDSHAKE_BURST_PER_SOURCE - 1))
    assert_dropped(p.b, DropReason.WG_HANDSHAKE_FAILED, HANDSHAKE_BURST_PER_SOURCE - 1)


def test_one_source_gets_only_its_share_of_cookie_replies() -> None:
    p = WgPair()
    p.b.under_load = True
    init = _initiations(p, 1)[0]
    for _ in range(500):
        p.b.receive_datagram(init, ("203.0.113.7", 4444), now=p.now)
    assert len(p.b.datagrams_to_send()) == HANDSHAKE_BURST_PER_SOURCE
    assert p.b.drops[DropReason.WG_COOKIE_BUDGET] == 0  # the global budget is left for others
    p.b.receive_datagram(init, ("198.51.100.1", 4444), now=p.now)
    assert len(p.b.datagrams_to_send()) == 1


def test_cookie_replies_have_a_global_budget() -> None:
    p = WgPair()
    p.b.under_load = True
    init = _initiations(p, 1)[0]
    for i in range(COOKIE_REPLY_BURST + 50):
        p.b.receive_datagram(init, (f"203.0.{i // 250}.{i % 250}", 1000), now=p.now)
    assert len(p.b.datagrams_to_send()) == COOKIE_REPLY_BURST
    assert_dropped(p.b, DropReason.WG_COOKIE_BUDGET, 50)


def test_the_peers_endpoint_has_its_own_budget_and_skips_the_cookie() -> None:
    p = WgPair()
    p.handshake()
    assert p.b.endpoint == p.a_addr
    # A flood from the peer's IP (another port) and from elsewhere, under load.
    p.b.under_load = True
    spoofed = (p.a_addr[0], p.a_addr[1] + 1)
    for init in _initiations(p, 20):
        p.b.receive_datagram(init, spoofed, now=p.now)
    p.b.datagrams_to_send()
    before = p.b.stats.handshake_responses_sent
    p.clock.advance(1.0)
    p.a.timers.last_sent_handshake = None
    p.a.initiate_handshake(now=p.now)
    p.roundtrip(p.a)  # from the authenticated endpoint: answered at once, no cookie needed
    assert p.b.stats.handshake_responses_sent == before + 1
    assert p.a.has_session and p.b.has_session


def test_a_sources_cookie_is_computed_once_per_secret_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    computed: list[tuple[str, int]] = []
    real = cookie_mod.address_bytes

    def counting(addr: tuple[str, int]) -> bytes:
        computed.append(addr)
        return real(addr)

    monkeypatch.setattr(cookie_mod, "address_bytes", counting)
    p = WgPair()
    p.b.under_load = True
    init = _initiations(p, 1)[0]
    for _ in range(50):
        p.b.receive_datagram(init, ("203.0.113.7", 4444), now=p.now)
    assert computed == [("203.0.113.7", 4444)]
    p.clock.advance(COOKIE_REFRESH_TIME)
    p.b.receive_datagram(init, ("203.0.113.7", 4444), now=p.now)
    assert len(computed) == 2


def test_rejections_raise_nothing_and_log_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    made = record_calls(monkeypatch, errors._Drop, "__init__")
    caplog.set_level(logging.DEBUG, logger="wgslirpy")
    p = WgPair()
    inits = _initiations(p, 30)
    bad = bytearray(inits[0])
    bad[-20] ^= 1
    p.b.receive_datagram(bytes(bad), ("203.0.113.7", 1), now=p.now)  # bad mac1
    for init in inits:
        p.b.receive_datagram(init, ("203.0.113.8", 1), now=p.now)  # rate limited
    p.b.under_load = True
    for i in range(COOKIE_REPLY_BURST + 10):
        p.b.receive_datagram(inits[0], (f"198.51.{i // 250}.{i % 250}", 1), now=p.now)  # cookie, budget
    assert p.b.drops[DropReason.WG_BAD_MAC1] == 1
    assert p.b.drops[DropReason.WG_RATE_LIMITED] > 0
    assert p.b.drops[DropReason.WG_UNDER_LOAD] == COOKIE_REPLY_BURST
    assert p.b.drops[DropReason.WG_COOKIE_BUDGET] == 10
    # The burst that passed went on to the DH, where a replayed timestamp may raise; the
    # admission path itself raised nothing: at most one _Drop per message that passed it.
    assert len(made) <= HANDSHAKE_BURST_PER_SOURCE
    assert len(caplog.records) <= HANDSHAKE_BURST_PER_SOURCE


def test_forged_and_replayed_transport_is_rejected_without_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    p = WgPair()
    p.handshake()
    p.a.send_ip(ipv4_packet(), now=p.now)
    ((data, _),) = p.a.datagrams_to_send()
    assert p.b.receive_datagram(data, p.a_addr, now=p.now) is not None
    made = record_calls(monkeypatch, errors._Drop, "__init__")
    forged = bytes([4, 0, 0, 0]) + b"\xee" * 4 + bytes(8) + bytes(32)
    for _ in range(100):
        p.b.receive_datagram(forged, ("203.0.113.9", 1), now=p.now)
        p.b.receive_datagram(data, p.a_addr, now=p.now)
    assert p.b.drops[DropReason.WG_UNKNOWN_INDEX] == 100
    assert p.b.drops[DropReason.WG_REPLAYED] == 100
    assert made == []
