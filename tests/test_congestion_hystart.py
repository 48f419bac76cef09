"""HyStart++ (wgslirpy.net.congestion.hystart): RFC 9406 slow-start exit, alone and in use."""

from __future__ import annotations

from collections.abc import Callable

from tests.congestion_sim import AckClock
from wgslirpy.net.congestion import INFINITE_SSTHRESH, CongestionControl, Cubic, HyStartPlusPlus, NewReno
from wgslirpy.net.congestion.hystart import CSS_GROWTH_DIVISOR, CSS_ROUNDS, N_RTT_SAMPLE

MSS = 1000


class Rounds:
    """Feeds a HyStartPlusPlus whole rounds of ACKs with monotonic offsets."""

    def __init__(self, hs: HyStartPlusPlus) -> None:
        self.hs = hs
        self.delivered = 0
        self.snd_max = 0

    def round(self, rtt: float | None, acks: int = 10) -> list[bool]:
        """One round: the ACKs of ``acks`` segments, each with RTT ``rtt``.

        As under an ACK clock, the next round's data has left by the time this round's
        last ACK arrives, so that ACK reports ``snd_max`` one more window ahead.
        """
        end = self.delivered + acks * MSS
        self.snd_max = max(self.snd_max, end)
        ends = []
        for i in range(acks):
            self.delivered += MSS
            if i == acks - 1:
                self.snd_max = end + acks * MSS
            ends.append(self.hs.on_ack(delivered=self.delivered, snd_max=self.snd_max, rtt=rtt))
        return ends


def test_rfc9406_4_2_no_exit_without_rtt_increase() -> None:
    hs = HyStartPlusPlus()
    feed = Rounds(hs)
    for _ in range(30):
        assert not any(feed.round(0.1))
    assert hs.state == hs.SLOW_START and hs.growth_divisor == 1


def test_rfc9406_4_2_exit_to_css_when_round_min_rtt_rises_by_threshold() -> None:
    # lastRoundMinRTT 100 ms: threshold clamp(100/8, 4, 16) = 12.5 ms.
    hs = HyStartPlusPlus()
    feed = Rounds(hs)
    feed.round(0.100)
    feed.round(0.100)
    feed.round(0.112)  # +12 ms: below the threshold
    assert hs.state == hs.SLOW_START
    feed.round(0.100)
    feed.round(0.1126)
    assert hs.state == hs.CSS
    assert hs.css_baseline_min_rtt == 0.1126
    assert hs.growth_divisor == CSS_GROWTH_DIVISOR


def test_rfc9406_4_3_threshold_is_clamped_to_4_and_16_ms() -> None:
    small = HyStartPlusPlus()
    feed = Rounds(small)
    feed.round(0.010)  # 10/8 = 1.25 ms -> clamped up to 4 ms
    feed.round(0.0135)
    assert small.state == small.SLOW_START
    feed.round(0.010)
    feed.round(0.0141)
    assert small.state == small.CSS
    large = HyStartPlusPlus()
    feed = Rounds(large)
    feed.round(0.400)  # 400/8 = 50 ms -> clamped down to 16 ms
    feed.round(0.4161)
    assert large.state == large.CSS


def test_rfc9406_4_2_needs_n_rtt_sample_samples_per_round() -> None:
    hs = HyStartPlusPlus()
    feed = Rounds(hs)
    feed.round(0.1, acks=N_RTT_SAMPLE)
    feed.round(0.2, acks=N_RTT_SAMPLE - 1)
    assert hs.state == hs.SLOW_START
    feed.round(0.1, acks=N_RTT_SAMPLE)
    feed.round(0.2, acks=N_RTT_SAMPLE)
    assert hs.state == hs.CSS


def test_rfc9406_4_2_back_to_slow_start_when_rtt_falls_during_css() -> None:
    hs = HyStartPlusPlus()
    feed = Rounds(hs)
    feed.round(0.1)
    feed.round(0.13)
    assert hs.state == hs.CSS
    feed.round(0.125)  # below cssBaselineMinRtt: the increase was spurious
    assert hs.state == hs.SLOW_START and hs.growth_divisor == 1


def test_rfc9406_4_2_ca_after_css_rounds() -> None:
    hs = HyStartPlusPlus()
    feed = Rounds(hs)
    feed.round(0.1)
    feed.round(0.13)
    assert hs.state == hs.CSS
    results = []
    for _ in range(CSS_ROUNDS):
        results.extend(feed.round(0.13))
    assert results.count(True) == 1
    assert hs.state == hs.DONE and not hs.active
    assert not any(feed.round(0.5))  # done for good


def test_rtt_none_breaks_nothing() -> None:
    hs = HyStartPlusPlus()
    feed = Rounds(hs)
    for _ in range(20):
        assert not any(feed.round(None))
    assert hs.state == hs.SLOW_START
    cc = Cubic(mss=MSS)
    sim = AckClock(cc, rtt=0.05, pass_rtt=False)
    sim.run_until(0.05 * 5 + 1e-9)
    assert cc.cwnd == 10 * MSS * 2**5  # plain slow start (L = 8 allows it)


def queue_rtt(cc: CongestionControl, base: float, bdp: int) -> Callable[[float], float]:
    """RTT of a bottleneck whose queue fills once cwnd exceeds ``bdp`` bytes."""

    def rtt(_now: float) -> float:
        excess = cc.cwnd - bdp
        return base + (excess / bdp * base if excess > 0 else 0.0)

    return rtt


def test_rfc9406_controller_leaves_slow_start_through_css_on_a_filling_queue() -> None:
    bdp = 200 * MSS
    for cc in (Cubic(mss=MSS), NewReno(mss=MSS, hystart=True)):
        hs = cc._hystart
        assert hs is not None
        sim = AckClock(cc, rtt=queue_rtt(cc, 0.05, bdp))
        css_entry = None
        for _ in range(100_000):
            if sim.now > 2.0:
                break
            sim.step()
            if css_entry is None and hs.state == hs.CSS:
                css_entry = cc.cwnd
        # Left slow start without any loss: first into CSS within a round of the queue
        # starting to build, then congestion avoidance after CSS_ROUNDS rounds.
        assert css_entry is not None and css_entry < 4 * bdp
        assert hs.state == hs.DONE
        assert cc.ssthresh != INFINITE_SSTHRESH and not cc.in_slow_start
        # Plain slow start over the same path is still doubling (until loss).
        plain = NewReno(mss=MSS)
        plain_sim = AckClock(plain, rtt=queue_rtt(plain, 0.05, bdp))
        plain_sim.run_until(sim.now, max_acks=200_000)
        assert plain.in_slow_start and plain.cwnd > 4 * cc.cwnd


def test_css_growth_is_a_quarter_of_slow_start() -> None:
    cc = NewReno(mss=MSS, hystart=True)
    hs = cc._hystart
    assert hs is not None
    hs.state = hs.CSS
    hs.css_baseline_min_rtt = 0.0  # keep it in CSS
    hs.window_end = 10**9
    before = cc.cwnd
    cc.on_ack(
        acked=4 * MSS,
        delivered=4 * MSS,
        snd_max=10**6,
        in_flight=10**6,
        rtt=0.1,
        min_rtt=0.1,
        app_limited=False,
        now=0.0,
    )
    assert cc.cwnd - before == 4 * MSS // CSS_GROWTH_DIVISOR


def test_rfc9406_4_3_loss_ends_hystart_and_later_slow_start_is_plain() -> None:
    cc = Cubic(mss=MSS)
    cc.on_congestion_event(in_flight=10 * MSS, now=0.0)
    hs = cc._hystart
    assert hs is not None and hs.state == hs.DONE
    cc.on_recovery_end(now=0.0)
    cc.on_rto(in_flight=5 * MSS, now=1.0)
    cc.on_ack(
        acked=10 * MSS,
        delivered=10 * MSS,
        snd_max=20 * MSS,
        in_flight=0,
        rtt=0.1,
        min_rtt=0.1,
        app_limited=False,
        now=1.1,
    )
    assert cc.cwnd == 3 * MSS  # RFC 3465 L = 2 after HyStart++ is done
