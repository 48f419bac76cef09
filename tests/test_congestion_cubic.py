"""CUBIC controller (wgslirpy.net.congestion.cubic): RFC 9438."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

from tests.congestion_sim import AckClock, ack
from wgslirpy.net.congestion import INFINITE_SSTHRESH, Cubic, Phase
from wgslirpy.net.congestion.cubic import ALPHA_CUBIC, BETA_CUBIC, C_CUBIC

MSS = 1000


def after_loss(w_max_segments: int, *, now: float = 0.0, **kwargs: bool) -> Cubic:
    """A controller whose loss at cwnd = W_max just ended recovery at ``now``."""
    cc = Cubic(mss=MSS, **kwargs)
    cc.cwnd = w_max_segments * MSS
    cc.on_congestion_event(in_flight=cc.cwnd, now=now)
    cc.on_recovery_end(now=now)
    return cc


def test_defaults() -> None:
    cc = Cubic(mss=MSS)
    assert cc.name == "cubic" and cc.cwnd == 10 * MSS and cc.ssthresh == INFINITE_SSTHRESH
    assert cc.pacing_rate is None and cc._hystart is not None
    assert pytest.approx(3 * 0.3 / 1.7) == ALPHA_CUBIC


def test_rfc9438_4_6_reduction_by_beta_and_recovery_end_starts_epoch() -> None:
    cc = Cubic(mss=MSS)
    cc.cwnd = 100 * MSS
    cc.on_congestion_event(in_flight=90 * MSS, now=5.0)
    assert cc.ssthresh == int(100 * MSS * BETA_CUBIC) == 70 * MSS
    assert cc.cwnd == 100 * MSS  # PRR owns recovery
    assert cc.epoch_start is None
    cc.on_recovery_end(now=5.5)
    assert cc.cwnd == 70 * MSS
    assert cc.epoch_start == 5.5
    assert cc.w_max == 100 * MSS
    # §4.2 eq. 2: K = cbrt((W_max - cwnd_epoch) / C) in segments.
    assert cc.k == pytest.approx(math.cbrt(30 / C_CUBIC))


def test_rfc9438_4_2_window_function_matches_the_formula() -> None:
    cc = after_loss(1000)
    k = math.cbrt(300 / C_CUBIC)
    for t in (0.0, 1.0, 3.0, k, 10.0, 15.0):
        expected = (C_CUBIC * (t - k) ** 3 + 1000) * MSS
        assert cc.w_cubic(t) == pytest.approx(expected)
    assert cc.w_cubic(0.0) == pytest.approx(700 * MSS)
    assert cc.w_cubic(k) == pytest.approx(1000 * MSS)


def test_rfc9438_4_2_cwnd_tracks_w_cubic_under_an_ack_clock() -> None:
    cc = after_loss(1000)
    sim = AckClock(cc, rtt=0.1)
    for t in (1.0, 3.0, 6.0, 9.0, 11.0, 13.0):
        sim.run_until(t)
        # cwnd aims at W_cubic(t + RTT) and lags it by up to about an RTT of growth.
        assert cc.w_cubic(t - 0.2) <= cc.cwnd + MSS
        assert cc.cwnd <= cc.w_cubic(t + 0.1) + MSS
        assert cc.cwnd == pytest.approx(cc.w_cubic(t), rel=0.01)


def test_rfc9438_4_4_and_4_5_concave_then_convex() -> None:
    cc = after_loss(1000)
    sim = AckClock(cc, rtt=0.1)
    k = cc.k
    samples = []
    for i in range(1, 15):
        sim.run_until(i * 1.0)
        samples.append(cc.cwnd)
    gains = [b - a for a, b in pairwise(samples)]
    before = [g for i, g in enumerate(gains) if i + 2 < k]
    after = [g for i, g in enumerate(gains) if i + 1 > k]
    # Concave region: growth slows down approaching W_max; cwnd stays below it until K.
    assert all(x > y for x, y in pairwise(before))
    assert max(samples[: int(k)]) < 1000 * MSS
    # Convex region: growth speeds up beyond W_max.
    assert all(x < y for x, y in pairwise(after))
    assert samples[-1] > 1000 * MSS


def test_rfc9438_4_7_fast_convergence_lowers_w_max() -> None:
    cc = after_loss(100)
    # A second loss before reaching the old W_max: release bandwidth (§4.7).
    cc.cwnd = 80 * MSS
    cc.on_congestion_event(in_flight=80 * MSS, now=1.0)
    assert cc.w_max == pytest.approx(80 * MSS * (1 + BETA_CUBIC) / 2)
    assert cc.ssthresh == 56 * MSS
    slow = after_loss(100, fast_convergence=False)
    slow.cwnd = 80 * MSS
    slow.on_congestion_event(in_flight=80 * MSS, now=1.0)
    assert slow.w_max == 80 * MSS


def test_rfc9438_4_3_reno_friendly_region_dominates_at_small_rtt_and_window() -> None:
    cc = after_loss(20)  # cwnd 14 segments, K = cbrt(15) ~ 2.5 s
    sim = AckClock(cc, rtt=0.001)  # 1 ms: 1000 rounds per second
    sim.run_until(0.5)
    assert cc.w_cubic(0.5) < cc.w_est
    assert cc.cwnd == int(cc.w_est)
    # W_est grew alpha_cubic per RTT until cwnd_prior (20 segments), then 1 per RTT.
    assert cc.cwnd > 20 * MSS + 100 * MSS
    assert cc.cwnd > cc.w_cubic(0.5) + 100 * MSS


def test_rfc9438_4_3_alpha_cubic_below_cwnd_prior() -> None:
    cc = after_loss(100)  # cwnd 70, cwnd_prior 100
    w_est = cc.w_est
    ack(cc, MSS, now=0.0)
    assert cc.w_est - w_est == pytest.approx(ALPHA_CUBIC * MSS * MSS / (70 * MSS))


def test_rfc9438_4_2_growth_clamped_to_one_and_a_half_cwnd() -> None:
    cc = after_loss(100)
    before = cc.cwnd
    ack(cc, 100 * before, now=1000.0)  # a long-past epoch and a huge stretch ACK
    assert before < cc.cwnd <= 1.5 * before
    for _ in range(5):
        grown = cc.cwnd
        ack(cc, 10 * grown, now=1000.0)
        assert cc.cwnd <= 1.5 * grown


def test_rfc9438_5_8_app_limited_no_growth_and_idle_not_counted() -> None:
    cc = after_loss(100, now=0.0)
    ack(cc, MSS, now=1.0)
    cwnd = cc.cwnd
    start = cc.epoch_start
    for i in range(100):
        ack(cc, MSS, now=1.0 + i * 0.1, in_flight=MSS, app_limited=True)
    assert cc.cwnd == cwnd
    ack(cc, MSS, now=11.0)  # growth allowed again: the 10 s app-limited are not part of t
    assert start is not None and cc.epoch_start == pytest.approx(start + 10.0)
    assert cc.cwnd < cc.w_cubic(1.5) + MSS


def test_app_limited_but_window_full_still_grows() -> None:
    cc = after_loss(100)
    ack(cc, MSS, now=1.0, in_flight=70 * MSS, app_limited=True)
    assert cc.cwnd > 70 * MSS


def test_rfc9438_4_8_timeout_then_epoch_with_k_zero() -> None:
    cc = Cubic(mss=MSS, hystart=False)
    cc.cwnd = 50 * MSS
    cc.on_rto(in_flight=50 * MSS, now=1.0)
    assert cc.cwnd == MSS and cc.ssthresh == 35 * MSS and cc.phase is Phase.LOSS
    sim = AckClock(cc, rtt=0.1, now=1.0)
    sim.run_until(1.0 + 0.1 * 6 + 1e-9)  # slow start 1 -> 35 segments
    assert not cc.in_slow_start
    assert cc.epoch_start is not None
    assert cc.k == 0.0
    assert cc.w_max <= cc.cwnd


def test_rfc9438_4_9_undo_restores_w_max_k_and_epoch() -> None:
    cc = after_loss(100, now=0.0)
    for i in range(1, 30):
        ack(cc, MSS, now=i * 0.1)
    saved = (cc.cwnd, cc.ssthresh, cc.w_max, cc.k, cc.epoch_start, cc.w_est)
    cc.on_congestion_event(in_flight=cc.cwnd, now=3.0)
    cc.on_recovery_end(now=3.1)
    assert cc.w_max != saved[2] and cc.epoch_start == 3.1
    cc.undo(now=3.2)
    assert (cc.cwnd, cc.ssthresh, cc.w_max, cc.k, cc.epoch_start, cc.w_est) == saved
    assert cc.phase is Phase.OPEN


def test_rfc9438_4_9_undo_of_an_rto_in_slow_start() -> None:
    cc = Cubic(mss=MSS)
    cc.cwnd = 30 * MSS
    cc.on_rto(in_flight=30 * MSS, now=1.0)
    cc.undo(now=1.1)
    assert cc.cwnd == 30 * MSS and cc.ssthresh == INFINITE_SSTHRESH
    assert cc._hystart is not None and cc._hystart.active  # HyStart++ state restored too


def test_odd_inputs_are_harmless() -> None:
    cc = after_loss(50)
    ack(cc, MSS, now=float("nan"))
    ack(cc, MSS, now=-5.0)
    ack(cc, 10**40, now=1e300, rtt=None)
    ack(cc, 10**40, now=float("inf"), rtt=float("nan"))
    assert MSS <= cc.cwnd <= 1 << 30 and type(cc.cwnd) is int
