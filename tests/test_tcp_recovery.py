"""Unit tests of the loss-recovery modules: net/sack.py (RFC 6675 scoreboard, RFC 2883
D-SACK classification), net/rack.py (RFC 8985), net/prr.py (RFC 6937), net/rtt.py
(RFC 6298) and net/recovery.py (in-flight records, pipe, RACK loss marking)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgslirpy.net.prr import Prr
from wgslirpy.net.rack import RackState, probe_timeout
from wgslirpy.net.recovery import SentQueue
from wgslirpy.net.rtt import RttEstimator
from wgslirpy.net.sack import SackScoreboard, classify_dsack

MSS = 1000

# ----------------------------------------------------------------------------------------
# SACK scoreboard (RFC 6675 §3)


def test_scoreboard_add_returns_only_new_ranges() -> None:
    """A block repeated in every ACK costs nothing after the first time."""
    b = SackScoreboard()
    assert b.add(10, 20) == [(10, 20)]
    assert b.add(10, 20) == []
    assert b.add(30, 40) == [(30, 40)]
    assert b.add(5, 45) == [(5, 10), (20, 30), (40, 45)]
    assert b.ranges() == [(5, 45)] and b.bytes == 40
    assert b.covers(5, 45) and not b.covers(4, 6)


def test_scoreboard_merges_adjacent_and_advances() -> None:
    b = SackScoreboard()
    b.add(10, 20)
    b.add(20, 30)
    assert b.ranges() == [(10, 30)]
    b.add(50, 60)
    b.advance(15)
    assert b.ranges() == [(15, 30), (50, 60)] and b.bytes == 25
    b.advance(55)
    assert b.ranges() == [(55, 60)] and b.highest == 60
    b.advance(100)
    assert b.ranges() == [] and b.bytes == 0 and b.highest is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 40)), max_size=40), st.integers(0, 300))
def test_scoreboard_matches_a_set_model(blocks: list[tuple[int, int]], una: int) -> None:
    """Property: the scoreboard equals the union of its blocks; add() reports exactly the
    bytes that were not covered before."""
    b = SackScoreboard()
    model: set[int] = set()
    for s, n in blocks:
        new = b.add(s, s + n)
        newbytes = {x for a, e in new for x in range(a, e)}
        assert newbytes == set(range(s, s + n)) - model
        model |= set(range(s, s + n))
        assert b.bytes == len(model)
    b.advance(una)
    model = {x for x in model if x >= una}
    assert b.bytes == len(model)
    assert {x for a, e in b.ranges() for x in range(a, e)} == model
    starts = [a for a, _ in b.ranges()]
    assert starts == sorted(starts)


def test_dsack_classification_rfc2883() -> None:
    """RFC 2883 §4: first block below the cumulative ACK, or inside the second block."""
    assert classify_dsack([(0, 10)], 20)
    assert classify_dsack([(35, 40), (30, 50)], 20)
    assert not classify_dsack([(30, 40)], 20)
    assert not classify_dsack([(30, 40), (50, 60)], 20)
    assert not classify_dsack([], 20)


# ----------------------------------------------------------------------------------------
# RACK (RFC 8985 §6) and the probe timeout (§7.2)


def test_rack_tracks_most_recently_sent_delivered_segment() -> None:
    r = RackState()
    r.on_delivered(xmit_ts=1.0, end=100, retransmitted=False, now=1.1, min_rtt=0.1)
    r.on_delivered(xmit_ts=0.9, end=50, retransmitted=False, now=1.1, min_rtt=0.1)
    assert r.xmit_ts == 1.0 and r.end == 100 and r.rtt == pytest.approx(0.1)
    assert r.reordering_seen  # end 50 < fack 100, never retransmitted (§6.2 step 2)
    assert r.sent_before_rack(0.95, 200) and r.sent_before_rack(1.0, 100) and not r.sent_before_rack(1.0, 101)


def test_rack_ignores_ambiguous_retransmission_ack() -> None:
    """§6.2 step 1: an ACK quicker than min_rtt after a retransmission was for the original."""
    r = RackState()
    r.on_delivered(xmit_ts=2.0, end=100, retransmitted=True, now=2.01, min_rtt=0.05)
    assert r.xmit_ts is None


def test_reo_wnd_zero_until_reordering_then_grows_with_dsack_rounds() -> None:
    """§6.2 step 4: reo_wnd 0 in recovery or after DupThresh SACKs until reordering is
    seen; then min_rtt/4 times a multiplier raised once per D-SACK round, capped by SRTT."""
    r = RackState()
    assert r.reo_wnd(in_recovery=True, sacked_segments=0, min_rtt=0.04, srtt=0.05) == 0
    assert r.reo_wnd(in_recovery=False, sacked_segments=3, min_rtt=0.04, srtt=0.05) == 0
    assert r.reo_wnd(in_recovery=False, sacked_segments=1, min_rtt=0.04, srtt=0.05) == pytest.approx(0.01)
    r.on_dsack(una=0, snd_max=1000)
    assert r.reordering_seen and r.reo_wnd_mult == 2
    r.on_dsack(una=500, snd_max=2000)  # same round: no second increase
    assert r.reo_wnd_mult == 2
    r.on_dsack(una=1000, snd_max=3000)  # next round
    assert r.reo_wnd(in_recovery=True, sacked_segments=9, min_rtt=0.04, srtt=0.05) == pytest.approx(0.03)
    for _ in range(20):
        r.on_dsack(una=10**9, snd_max=10**9 + 1)
        r.dsack_round = None
    assert r.reo_wnd(in_recovery=True, sacked_segments=9, min_rtt=0.04, srtt=0.05) == pytest.approx(0.05)
    for _ in range(16):
        r.on_recovery_exit()
    assert r.reo_wnd_mult == 1


def test_probe_timeout() -> None:
    """§7.2: PTO = 2 SRTT, + WCDelAckT for a single segment in flight, at most the RTO."""
    assert probe_timeout(srtt=0.1, flight_segments=1, rto=1.0) == pytest.approx(0.4)
    assert probe_timeout(srtt=0.1, flight_segments=5, rto=1.0) == pytest.approx(0.202)
    assert probe_timeout(srtt=0.1, flight_segments=5, rto=0.15) == pytest.approx(0.15)
    assert probe_timeout(srtt=None, flight_segments=5, rto=3.0) == 1.0


# ----------------------------------------------------------------------------------------
# PRR (RFC 6937)


def test_prr_proportional_then_slow_start_reduction_bound() -> None:
    """§3.1: while pipe > ssthresh send ssthresh/RecoverFS of what is delivered; below it,
    grow back at most one MSS beyond what was delivered."""
    p = Prr(ssthresh=10 * MSS, pipe=20 * MSS, mss=MSS)
    assert p.sndcnt == MSS  # the first retransmission
    p.on_sent(MSS)
    total = 0
    for _ in range(10):
        p.on_ack(delivered=MSS, pipe=19 * MSS)
        total += p.sndcnt
        p.on_sent(p.sndcnt)
    assert total == pytest.approx(4 * MSS, abs=MSS)  # 10 delivered x 1/2, minus the first
    p.on_ack(delivered=MSS, pipe=2 * MSS)  # pipe collapsed: SSRB
    assert p.sndcnt <= p.delivered - p.out + MSS + MSS


# ----------------------------------------------------------------------------------------
# RTT estimator (RFC 6298)


def test_rtt_estimator_rfc6298() -> None:
    e = RttEstimator(initial_rto=1.0, min_rto=0.2, max_rto=60.0)
    assert e.rto == 1.0 and e.srtt is None and e.min_rtt is None
    e.sample(0.1)
    assert e.srtt == pytest.approx(0.1) and e.rttvar == pytest.approx(0.05)
    assert e.rto == pytest.approx(0.3)  # srtt + 4 rttvar
    e.sample(0.3)
    assert e.srtt == pytest.approx(0.125) and e.min_rtt == pytest.approx(0.1)
    e.backoff()
    assert e.rto == pytest.approx(2 * (0.125 + 4 * (0.75 * 0.05 + 0.25 * 0.2)))
    e.sample(500.0)  # garbage (bogus TSecr) is ignored
    assert e.latest == pytest.approx(0.3)
    for _ in range(12):
        e.backoff()
    assert e.rto == 60.0


# ----------------------------------------------------------------------------------------
# SentQueue: records, pipe, RACK marking


def _queue(n: int, now: float = 0.0) -> SentQueue:
    q = SentQueue()
    for i in range(n):
        q.on_send(i * MSS, (i + 1) * MSS, False, now)
    return q


def test_pipe_counts_sacked_lost_and_retransmitted() -> None:
    """RFC 6675 pipe = outstanding - SACKed - lost + retransmitted."""
    q = _queue(10)
    assert q.pipe == 10 * MSS
    res = q.on_ack(0, [(5 * MSS, 9 * MSS)], now=0.1, min_rtt=None)
    assert res.sacked == 4 * MSS and res.delivered == 4 * MSS and q.pipe == 6 * MSS
    marked, timer = q.detect_loss(0.1, 0.0)
    assert marked == 5 and timer is None  # all sent before the SACKed ones (same time, lower end)
    assert q.pipe == 1 * MSS  # only segment 9 is presumed in flight
    r = q.next_lost()
    assert r is not None and r.start == 0
    q.on_retransmit(r, 0.2)
    assert q.pipe == 2 * MSS and q.next_lost() is not None and q.next_lost().start == MSS  # type: ignore[union-attr]
    q.check()
    res = q.on_ack(MSS, [(5 * MSS, 9 * MSS)], now=0.3, min_rtt=0.1)
    assert res.delivered == MSS and res.retransmitted_acked
    q.check()


def test_reordering_window_defers_loss_marking() -> None:
    """RFC 8985 §6.2: with reo_wnd > 0 a hole is only lost once reo_wnd passed."""
    q = _queue(4)
    q.on_ack(0, [(MSS, 2 * MSS)], now=0.1, min_rtt=0.1)
    marked, timer = q.detect_loss(0.1, 0.02)
    assert marked == 0 and timer == pytest.approx(0.12)
    marked, timer = q.detect_loss(0.12, 0.02)
    assert marked == 1 and q.next_lost() is not None and q.next_lost().start == 0  # type: ignore[union-attr]


def test_rto_never_marks_sacked_data_lost() -> None:
    """RFC 6675 §5.1: after an RTO everything *not SACKed* is resent; SACKed data never."""
    q = _queue(6)
    q.on_ack(0, [(2 * MSS, 4 * MSS)], now=0.1, min_rtt=0.1)
    q.mark_all_lost()
    resent = []
    while (r := q.next_lost()) is not None:
        resent.append(r.start // MSS)
        q.on_retransmit(r, 1.0)
    assert resent == [0, 1, 4, 5]
    q.check()


def test_dsack_of_a_retransmission_is_flagged() -> None:
    q = _queue(3)
    q.on_ack(0, [(MSS, 3 * MSS)], now=0.1, min_rtt=0.1)
    q.detect_loss(0.1, 0.0)
    r = q.next_lost()
    assert r is not None
    q.on_retransmit(r, 0.2)
    res = q.on_ack(3 * MSS, [(0, MSS)], now=0.3, min_rtt=0.1)
    assert res.dsack == (0, MSS) and res.dsack_retransmitted


def test_lost_retransmission_is_marked_again() -> None:
    """RFC 8985: a retransmission sent before a delivered segment is itself overdue."""
    q = _queue(3)
    q.on_ack(0, [(MSS, 2 * MSS)], now=0.1, min_rtt=0.1)
    q.detect_loss(0.1, 0.0)
    r = q.next_lost()
    assert r is not None
    q.on_retransmit(r, 0.2)
    q.on_send(3 * MSS, 4 * MSS, False, 0.2)  # new data after the retransmission
    q.on_ack(0, [(MSS, 2 * MSS), (3 * MSS, 4 * MSS)], now=0.3, min_rtt=0.1)
    marked, _ = q.detect_loss(0.3, 0.0)
    assert marked >= 1 and q.next_lost() is r
    q.check()


def test_undo_unmarks_everything() -> None:
    q = _queue(5)
    q.on_ack(0, [(3 * MSS, 5 * MSS)], now=0.1, min_rtt=0.1)
    q.detect_loss(0.1, 0.0)
    assert q.lost_out == 3 * MSS
    q.unmark_lost()
    assert q.lost_out == 0 and q.retrans_out == 0 and q.next_lost() is None
    q.check()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32))
def test_random_ack_sequences_keep_the_counters_consistent(seed: int) -> None:
    """Property: whatever SACKs, losses, retransmissions and cumulative ACKs arrive, the
    counters equal what the records say (SentQueue.check)."""
    rnd = random.Random(seed)
    q = SentQueue()
    now = 0.0
    nxt = 0
    una = 0
    for _ in range(60):
        now += 0.01
        op = rnd.random()
        if op < 0.3:
            n = rnd.randint(1, 3 * MSS)
            q.on_send(nxt, nxt + n, False, now)
            nxt += n
        elif op < 0.6 and nxt > una:
            blocks = []
            for _ in range(rnd.randint(0, 3)):
                a = rnd.randint(una, nxt)
                blocks.append((a, min(nxt, a + rnd.randint(1, 4 * MSS))))
            if rnd.random() < 0.5:
                una = rnd.randint(una, nxt)
            q.on_ack(una, blocks, now=now, min_rtt=0.01)
        elif op < 0.8:
            q.detect_loss(now, rnd.choice([0.0, 0.02]))
        elif op < 0.9:
            r = q.next_lost()
            if r is not None:
                q.on_retransmit(r, now)
        elif op < 0.95:
            q.mark_all_lost()
        else:
            q.unmark_lost()
        q.check()
        assert q.pipe <= q.outstanding
