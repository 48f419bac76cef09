"""PeerTimers deadlines, hooks and expiry (wg/timers.py)."""

from __future__ import annotations

from tests.conftest import seeded_rng
from wgslirpy.constants import (
    KEEPALIVE_TIMEOUT,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
)
from wgslirpy.wg.session import Keypair
from wgslirpy.wg.timers import (
    MAX_TIMER_HANDSHAKES,
    PeerTimers,
    TimerAction,
    should_rekey_on_receive,
    should_rekey_on_send,
)


def timers(keepalive: float | None = None) -> PeerTimers:
    return PeerTimers(persistent_keepalive_interval=keepalive, rng=seeded_rng(3))


def test_nothing_armed_initially() -> None:
    t = timers()
    assert t.next_deadline() is None
    assert t.expire(1e9) == []


def test_data_sent_arms_new_handshake_once_with_jitter() -> None:
    t = timers()
    t.on_data_sent(100.0)
    d = t.new_handshake
    assert d is not None
    assert (
        100 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
        <= d
        <= (100 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX)
    )
    t.on_data_sent(101.0)
    assert t.new_handshake == d
    t.on_any_authenticated_packet_received(102.0)
    assert t.new_handshake is None


def test_keepalive_after_data_received_unless_we_sent() -> None:
    t = timers()
    t.on_data_received(0.0)
    assert t.send_keepalive == KEEPALIVE_TIMEOUT
    t.on_data_received(1.0)
    assert t.need_another_keepalive
    assert t.expire(KEEPALIVE_TIMEOUT - 0.01) == []
    assert t.expire(KEEPALIVE_TIMEOUT) == [TimerAction.SEND_KEEPALIVE]
    t.on_any_authenticated_packet_sent(KEEPALIVE_TIMEOUT)
    t.after_keepalive_timer_sent(KEEPALIVE_TIMEOUT)
    assert t.send_keepalive == 2 * KEEPALIVE_TIMEOUT and not t.need_another_keepalive
    t.on_any_authenticated_packet_sent(11.0)
    assert t.send_keepalive is None


def test_retransmit_jitter_and_give_up() -> None:
    t = timers()
    t.on_session_derived(0.0)
    zero_at = t.zero_key_material
    assert zero_at == 3 * REJECT_AFTER_TIME
    now = 0.0
    t.on_handshake_initiated(now)
    jitters = set()
    for attempt in range(MAX_TIMER_HANDSHAKES):
        d = t.retransmit_handshake
        assert d is not None and REKEY_TIMEOUT <= d - now <= REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX
        jitters.add(round(d - now, 6))
        now = d
        assert t.expire(now) == [TimerAction.RETRANSMIT_HANDSHAKE]
        assert t.handshake_attempts == attempt + 1
        t.on_handshake_initiated(now)
    assert len(jitters) > 1
    assert t.retransmit_handshake is not None
    assert t.expire(t.retransmit_handshake) == [TimerAction.GIVE_UP_HANDSHAKE]
    assert t.retransmit_handshake is None
    assert t.zero_key_material == zero_at  # already pending: kept


def test_handshake_complete_resets() -> None:
    t = timers()
    t.on_handshake_initiated(0.0)
    t.handshake_attempts = 3
    t.sent_last_minute_handshake = True
    t.on_handshake_complete(1.0)
    assert t.retransmit_handshake is None and t.handshake_attempts == 0
    assert not t.sent_last_minute_handshake


def test_persistent_keepalive() -> None:
    t = timers(keepalive=25.0)
    t.on_any_authenticated_packet_traversal(5.0)
    assert t.persistent_keepalive == 30.0
    assert t.next_deadline() == 30.0
    assert t.expire(30.0) == [TimerAction.PERSISTENT_KEEPALIVE]
    u = timers()
    u.on_any_authenticated_packet_traversal(5.0)
    assert u.persistent_keepalive is None


def test_zero_key_material_and_send_rate_limit() -> None:
    t = timers()
    t.on_session_derived(0.0)
    assert t.expire(3 * REJECT_AFTER_TIME) == [TimerAction.ZERO_KEY_MATERIAL]
    assert t.may_send_initiation(0.0)
    t.last_sent_handshake = 10.0
    assert not t.may_send_initiation(10.0 + REKEY_TIMEOUT - 0.01)
    assert t.may_send_initiation(10.0 + REKEY_TIMEOUT)


def test_keep_key_fresh() -> None:
    ini = Keypair(b"k" * 32, b"k" * 32, created=0.0, local_index=1, remote_index=2, is_initiator=True)
    resp = Keypair(b"k" * 32, b"k" * 32, created=0.0, local_index=3, remote_index=4, is_initiator=False)
    assert not should_rekey_on_send(ini, REKEY_AFTER_TIME - 0.1)
    assert should_rekey_on_send(ini, REKEY_AFTER_TIME)
    assert not should_rekey_on_send(resp, REKEY_AFTER_TIME * 1.4)
    resp.send_counter = REKEY_AFTER_MESSAGES + 1
    assert should_rekey_on_send(resp, 0.0)
    edge = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
    assert not should_rekey_on_receive(ini, edge - 0.1)
    assert should_rekey_on_receive(ini, edge)
    assert not should_rekey_on_receive(resp, edge + 1)
