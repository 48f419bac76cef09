"""NewReno controller (wgslirpy.net.congestion.newreno): RFC 5681, RFC 3465, RFC 6582 + PRR."""

from __future__ import annotations

import pytest

from tests.congestion_sim import AckClock, ack
from wgslirpy.errors import ConfigError
from wgslirpy.net.congestion import INFINITE_SSTHRESH, NewReno, Phase

MSS = 1000
RTT = 0.1


def phase(cc: NewReno) -> Phase:
    """The controller's phase (a call, so mypy does not carry a narrowed value across calls)."""
    return cc.phase


def in_avoidance(cwnd: int) -> NewReno:
    """A controller in congestion avoidance with cwnd == ssthresh == ``cwnd``."""
    cc = NewReno(mss=MSS)
    cc.on_congestion_event(in_flight=2 * cwnd, now=0.0)
    cc.on_recovery_end(now=0.0)
    assert cc.cwnd == cc.ssthresh == cwnd
    return cc


def test_initial_window_is_rfc6928_and_ssthresh_infinite() -> None:
    cc = NewReno(mss=MSS)
    assert cc.cwnd == 10 * MSS
    assert cc.ssthresh == INFINITE_SSTHRESH
    assert cc.in_slow_start and cc.pacing_rate is None and cc.name == "newreno"
    assert NewReno(mss=MSS, initial_window=3 * MSS).cwnd == 3 * MSS
    assert NewReno(mss=MSS, initial_window=1).cwnd == MSS  # never below one MSS


@pytest.mark.parametrize("bad", [0, -5])
def test_bad_mss_or_window_is_config_error(bad: int) -> None:
    with pytest.raises(ConfigError):
        NewReno(mss=bad)
    with pytest.raises(ConfigError):
        NewReno(mss=MSS, initial_window=bad)


def test_rfc5681_3_1_slow_start_doubles_per_rtt() -> None:
    cc = NewReno(mss=MSS)
    sim = AckClock(cc, rtt=RTT)
    for k in range(1, 6):
        sim.run_until(k * RTT)
        assert cc.cwnd == 10 * MSS * 2**k


def test_rfc3465_2_2_slow_start_increase_limited_to_two_smss_per_ack() -> None:
    cc = NewReno(mss=MSS)
    ack(cc, 10 * MSS)  # a stretch ACK for ten segments
    assert cc.cwnd == 12 * MSS
    ack(cc, 500)
    assert cc.cwnd == 12 * MSS + 500


def test_rfc5681_3_1_congestion_avoidance_one_smss_per_rtt() -> None:
    cc = in_avoidance(20 * MSS)
    sim = AckClock(cc, rtt=RTT)
    for k in range(1, 11):
        sim.run_until(k * RTT + 1e-9)
        assert cc.cwnd == (20 + k) * MSS
    assert not cc.in_slow_start


def test_rfc3465_2_1_byte_counting_independent_of_ack_spacing() -> None:
    cc = in_avoidance(20 * MSS)
    for _ in range(40):
        ack(cc, 500)  # one window in half-segment ACKs
    assert cc.cwnd == 21 * MSS
    cc = in_avoidance(20 * MSS)
    ack(cc, 3 * 20 * MSS + 10)  # a stretch ACK covering three windows
    assert cc.cwnd == 23 * MSS


def test_rfc5681_eq4_congestion_event_halves_flight_and_prr_owns_recovery() -> None:
    cc = NewReno(mss=MSS)
    cc.cwnd = 40 * MSS
    cc.on_congestion_event(in_flight=36 * MSS, now=1.0)
    assert cc.ssthresh == 18 * MSS
    assert cc.cwnd == 40 * MSS  # untouched: PRR sizes sending during recovery
    assert phase(cc) is Phase.RECOVERY
    cc.on_congestion_event(in_flight=10 * MSS, now=1.1)  # once per episode
    assert cc.ssthresh == 18 * MSS
    cc.on_recovery_end(now=1.2)
    assert cc.cwnd == 18 * MSS  # RFC 6582 §3.2 step 3
    assert phase(cc) is Phase.OPEN


def test_rfc5681_eq4_ssthresh_at_least_two_smss() -> None:
    cc = NewReno(mss=MSS)
    cc.on_congestion_event(in_flight=MSS, now=0.0)
    assert cc.ssthresh == 2 * MSS
    cc.on_recovery_end(now=0.0)
    assert cc.cwnd == 2 * MSS


def test_ack_during_recovery_is_an_implicit_recovery_end() -> None:
    cc = NewReno(mss=MSS)
    cc.cwnd = 40 * MSS
    cc.on_congestion_event(in_flight=40 * MSS, now=0.0)
    ack(cc, MSS)
    assert phase(cc) is Phase.OPEN
    assert cc.cwnd == 20 * MSS  # ssthresh, and the ACK counted into CA


def test_rfc5681_3_1_rto_loss_window_and_repeated_rto_holds_ssthresh() -> None:
    cc = NewReno(mss=MSS)
    cc.cwnd = 40 * MSS
    cc.on_rto(in_flight=30 * MSS, now=1.0)
    assert cc.cwnd == MSS
    assert cc.ssthresh == 15 * MSS
    assert phase(cc) is Phase.LOSS
    cc.on_rto(in_flight=MSS, now=2.0)  # the retransmission timed out again
    assert cc.cwnd == MSS and cc.ssthresh == 15 * MSS
    ack(cc, MSS)  # slow start from the loss window
    assert cc.cwnd == 2 * MSS
    cc.on_recovery_end(now=3.0)  # RTO recovery point acked: cwnd untouched
    assert cc.cwnd == 2 * MSS and phase(cc) is Phase.OPEN


def test_rto_inside_fast_recovery_keeps_the_reduced_ssthresh() -> None:
    cc = NewReno(mss=MSS)
    cc.cwnd = 40 * MSS
    cc.on_congestion_event(in_flight=40 * MSS, now=0.0)
    cc.on_rto(in_flight=4 * MSS, now=1.0)
    assert cc.ssthresh == 20 * MSS and cc.cwnd == MSS


def test_rfc5682_undo_after_congestion_event_restores_cwnd_and_ssthresh() -> None:
    cc = in_avoidance(30 * MSS)
    ack(cc, 1000)
    cc.on_congestion_event(in_flight=30 * MSS, now=1.0)
    cc.on_recovery_end(now=1.1)
    assert cc.cwnd == 15 * MSS
    cc.undo(now=1.2)
    assert cc.cwnd == 30 * MSS and cc.ssthresh == 30 * MSS
    assert cc._bytes_acked == 1000
    cc.undo(now=1.3)  # consumed: a second undo changes nothing
    assert cc.cwnd == 30 * MSS


def test_rfc5682_undo_after_rto_restores_slow_start() -> None:
    cc = NewReno(mss=MSS)
    cc.cwnd = 25 * MSS
    cc.on_rto(in_flight=25 * MSS, now=1.0)
    cc.on_rto(in_flight=25 * MSS, now=2.0)
    cc.undo(now=2.1)  # F-RTO: both timeouts spurious; state from before the first one
    assert cc.cwnd == 25 * MSS
    assert cc.ssthresh == INFINITE_SSTHRESH and cc.in_slow_start
    assert phase(cc) is Phase.OPEN


def test_undo_never_shrinks_and_without_event_is_a_no_op() -> None:
    cc = NewReno(mss=MSS, initial_window=2 * MSS)
    cc.undo(now=0.0)
    assert cc.cwnd == 2 * MSS and cc.ssthresh == INFINITE_SSTHRESH
    cc.on_rto(in_flight=100 * MSS, now=0.0)
    for _ in range(30):
        ack(cc, MSS)  # slow start regrew beyond the saved window
    grown = cc.cwnd
    assert grown > 2 * MSS
    cc.undo(now=1.0)
    assert cc.cwnd == grown and cc.ssthresh == INFINITE_SSTHRESH


def test_rfc7661_app_limited_does_not_grow_an_unused_window() -> None:
    cc = in_avoidance(20 * MSS)
    for _ in range(100):
        ack(cc, MSS, in_flight=2 * MSS, app_limited=True)
    assert cc.cwnd == 20 * MSS
    # App-limited after every ACK but the window was full before it: still grows.
    for _ in range(20):
        ack(cc, MSS, in_flight=19 * MSS, app_limited=True)
    assert cc.cwnd == 21 * MSS
    ss = NewReno(mss=MSS)
    ack(ss, MSS, in_flight=MSS, app_limited=True)  # slow start: cwnd 10 >= 2 x flight 2
    assert ss.cwnd == 10 * MSS
    ack(ss, MSS, in_flight=8 * MSS, app_limited=True)
    assert ss.cwnd == 11 * MSS


def test_odd_inputs_are_harmless() -> None:
    cc = NewReno(mss=MSS)
    ack(cc, 0)
    ack(cc, -100)
    assert cc.cwnd == 10 * MSS
    ack(cc, 10**30, in_flight=0, rtt=None)
    cc.on_congestion_event(in_flight=-5, now=float("nan"))
    assert cc.ssthresh == 2 * MSS
    cc.on_recovery_end(now=0.0)
    ack(cc, 10**30, rtt=float("inf"))
    assert MSS <= cc.cwnd <= 1 << 30
    assert isinstance(cc.cwnd, int) and isinstance(cc.ssthresh, int)


def test_mss_change_keeps_windows_in_bytes() -> None:
    cc = NewReno(mss=MSS)
    cc.on_congestion_event(in_flight=2 * MSS, now=0.0)
    cc.on_recovery_end(now=0.0)
    cc.on_mss_change(1400)
    assert cc.mss == 1400
    assert cc.cwnd >= 1400 and cc.ssthresh >= 2800
    cc.on_mss_change(0)  # ignored
    assert cc.mss == 1400


def test_optional_hystart_is_off_by_default() -> None:
    assert NewReno(mss=MSS)._hystart is None
    assert NewReno(mss=MSS, hystart=True)._hystart is not None


def test_loss_phase_ends_when_the_rto_recovery_point_is_delivered() -> None:
    cc = NewReno(mss=MSS)
    cc.cwnd = 40 * MSS
    cc.on_rto(in_flight=40 * MSS, now=1.0)

    def ack_at(delivered: int, snd_max: int) -> None:
        cc.on_ack(
            acked=MSS,
            delivered=delivered,
            snd_max=snd_max,
            in_flight=0,
            rtt=0.1,
            min_rtt=0.1,
            app_limited=False,
            now=1.1,
        )

    ack_at(11 * MSS, 50 * MSS)
    assert phase(cc) is Phase.LOSS
    ack_at(49 * MSS, 60 * MSS)
    assert phase(cc) is Phase.LOSS  # the recovery point is the first ACK's snd_max (50)
    ack_at(50 * MSS, 60 * MSS)
    assert phase(cc) is Phase.OPEN  # without an on_recovery_end call
    grown = cc.cwnd
    cc.on_congestion_event(in_flight=grown, now=2.0)  # a new episode: a new undo snapshot
    cc.undo(now=2.1)
    assert cc.cwnd == grown and cc.ssthresh == 20 * MSS
