"""Receive-buffer autotuning (Linux tcp_rcv_space_adjust / tcp_rcv_rtt_measure models).

The link is simulated in whole steps of a fake clock: a window-limited sender delivers at
most ``tuner.size`` bytes per RTT, the host side consumes at most ``rate`` bytes/s.
"""

from __future__ import annotations

import math

from wgslirpy.net.rcvbuf import ReceiveBufferTuner, ReceiverRttEstimator

MSS = 1448
KIB = 1024
MIB = 1024 * 1024
RTT = 0.040
STEP = 0.004  # the shell reports consumption every 4 ms


class Flow:
    """A receiver fed by a window-limited sender, drained by a rate-limited host."""

    def __init__(self, tuner: ReceiveBufferTuner, *, rate: float, rtt: float = RTT, timestamps: bool = True) -> None:
        self.tuner = tuner
        self.rate = rate
        self.rtt = rtt
        self.timestamps = timestamps
        self.estimator = ReceiverRttEstimator(min_window=MSS)
        self.now = 1000.0
        self.received = 0  # in-order bytes that arrived
        self.consumed = 0  # bytes the host took
        self.budget = 0.0  # host consumption credit (bytes)
        self.sizes: list[int] = []

    def run_rtts(self, count: int) -> None:
        steps = round(self.rtt / STEP)
        for _ in range(count):
            # one window (as advertised at the start of the RTT) arrives over the RTT,
            # limited by what the host freed: in-flight + buffered <= size
            window = self.tuner.size - (self.received - self.consumed)
            per_step = max(window, 0) // steps
            for _ in range(steps):
                self.now += STEP
                self.received += per_step
                if self.timestamps:
                    self.tuner.on_rtt_sample(self.rtt)
                else:
                    s = self.estimator.on_data(rcv_total=self.received, window=self.tuner.size, now=self.now)
                    if s is not None:
                        self.tuner.on_rtt_sample(s, window_based=True)
                self.budget = min(self.budget + self.rate * STEP, self.rate * STEP * 2)
                take = min(int(self.budget), self.received - self.consumed)
                self.budget -= take
                self.consumed += take
                self.tuner.on_consumed(total=self.consumed, now=self.now)
                size = self.tuner.size
                assert isinstance(size, int)
                if self.sizes:
                    assert size >= self.sizes[-1]  # never shrinks
                self.sizes.append(size)


def test_fast_consumer_grows_to_twice_the_bdp_within_a_few_rtts() -> None:
    rate = 10_000_000  # 10 MB/s over 40 ms: BDP 400 kB
    bdp = int(rate * RTT)
    tuner = ReceiveBufferTuner(mss=MSS, initial=64 * KIB, maximum=4 * MIB)
    flow = Flow(tuner, rate=rate)
    flow.run_rtts(6)
    assert tuner.size >= 2 * bdp
    flow.run_rtts(50)
    assert 2 * bdp <= tuner.size <= 4 * MIB
    # bounded by the 4x rule: no more than 4 x (bytes per RTT) + cushion
    assert tuner.size <= 4 * bdp + 32 * MSS + MSS
    # the flow got (nearly) the rate once grown
    before = flow.consumed
    flow.run_rtts(10)
    assert flow.consumed - before >= 0.95 * rate * 10 * RTT


def test_growth_stops_at_maximum() -> None:
    tuner = ReceiveBufferTuner(mss=MSS, initial=64 * KIB, maximum=300 * KIB)
    flow = Flow(tuner, rate=10_000_000)
    flow.run_rtts(20)
    assert tuner.size == 300 * KIB
    assert max(flow.sizes) == 300 * KIB


def test_slow_consumer_stays_at_initial() -> None:
    tuner = ReceiveBufferTuner(mss=MSS, initial=64 * KIB, maximum=4 * MIB)
    flow = Flow(tuner, rate=100_000)  # 100 kB/s: 4 kB per RTT
    flow.run_rtts(200)
    assert tuner.size == 64 * KIB
    assert 3000 <= tuner.consumed_per_rtt <= 5000


def test_bursty_slow_consumer_does_not_look_fast() -> None:
    # The host drains a full 64 KiB buffer once every 640 ms (100 kB/s on average). Linux
    # counts the whole burst as one RTT's worth; scaled to one RTT it is 4 kB.
    tuner = ReceiveBufferTuner(mss=MSS, initial=64 * KIB, maximum=4 * MIB)
    tuner.on_rtt_sample(RTT)
    now = 0.0
    total = 0
    tuner.on_consumed(total=total, now=now)
    for _ in range(50):
        now += 0.64
        total += 64 * KIB
        tuner.on_consumed(total=total, now=now)
    assert tuner.size == 64 * KIB


def test_no_rtt_sample_means_no_growth() -> None:
    tuner = ReceiveBufferTuner(mss=MSS, initial=64 * KIB, maximum=4 * MIB)
    now = 0.0
    for k in range(1, 1000):
        now += 0.001
        tuner.on_consumed(total=k * 64 * KIB, now=now)
    assert tuner.size == 64 * KIB and tuner.rtt is None
    # bytes consumed before the first sample never count
    tuner.on_rtt_sample(RTT)
    tuner.on_consumed(total=1000 * 64 * KIB, now=now + 0.001)
    tuner.on_consumed(total=1000 * 64 * KIB + 1000, now=now + 0.05)
    assert tuner.size == 64 * KIB


def test_never_shrinks_when_the_consumer_slows_down() -> None:
    tuner = ReceiveBufferTuner(mss=MSS, initial=64 * KIB, maximum=4 * MIB)
    flow = Flow(tuner, rate=10_000_000)
    flow.run_rtts(10)
    grown = tuner.size
    assert grown > 64 * KIB
    flow.rate = 50_000
    flow.run_rtts(100)
    assert tuner.size == grown


def test_growth_is_in_whole_segments() -> None:
    tuner = ReceiveBufferTuner(mss=MSS, initial=64 * KIB, maximum=64 * MIB)
    flow = Flow(tuner, rate=5_000_000)
    flow.run_rtts(8)
    assert tuner.size > 64 * KIB
    assert all(s % MSS == 0 for s in set(flow.sizes) if s != 64 * KIB)


def test_window_based_rtt_without_timestamps_also_grows() -> None:
    rate = 10_000_000
    tuner = ReceiveBufferTuner(mss=MSS, initial=64 * KIB, maximum=4 * MIB)
    flow = Flow(tuner, rate=rate, timestamps=False)
    flow.run_rtts(12)
    # (the simulated sender uses a new window half an RTT early, so samples run short)
    assert tuner.rtt is not None and RTT / 2 <= tuner.rtt <= 2 * RTT
    assert tuner.size >= 2 * int(rate * RTT)


def test_rtt_smoothing_follows_linux_rcv_rtt_update() -> None:
    tuner = ReceiveBufferTuner(mss=MSS, initial=64 * KIB, maximum=MIB)
    tuner.on_rtt_sample(0.080)
    assert tuner.rtt == 0.080
    tuner.on_rtt_sample(0.040)  # lower: taken at once
    assert tuner.rtt == 0.040
    tuner.on_rtt_sample(0.120)  # higher, from timestamps: 1/8 of the way
    assert tuner.rtt is not None and math.isclose(tuner.rtt, 0.050)
    tuner.on_rtt_sample(0.500, window_based=True)  # higher, window-based: ignored
    assert tuner.rtt is not None and math.isclose(tuner.rtt, 0.050)
    tuner.on_rtt_sample(0.030, window_based=True)  # lower: taken
    assert tuner.rtt == 0.030


def test_odd_inputs_are_ignored_or_clamped() -> None:
    tuner = ReceiveBufferTuner(mss=0, initial=10 * MIB, maximum=MIB)
    assert tuner.size == MIB  # initial clamped to maximum
    tuner = ReceiveBufferTuner(mss=MSS, initial=64 * KIB, maximum=4 * MIB)
    for bad in (0.0, -1.0, math.nan, math.inf):
        tuner.on_rtt_sample(bad)
    assert tuner.rtt is None
    tuner.on_rtt_sample(RTT)
    tuner.on_consumed(total=0, now=10.0)
    tuner.on_consumed(total=-5, now=10.1)  # total going back: ignored
    tuner.on_consumed(total=10, now=9.0)  # clock going back: ignored
    tuner.on_consumed(total=10, now=math.nan)
    tuner.on_consumed(total=200 * KIB, now=10.05)
    assert tuner.size > 64 * KIB and isinstance(tuner.size, int)


def test_estimator_samples_one_window_of_arrivals() -> None:
    est = ReceiverRttEstimator()
    assert est.on_data(rcv_total=0, window=10_000, now=1.0) is None  # starts
    assert est.on_data(rcv_total=5_000, window=10_000, now=1.02) is None
    s = est.on_data(rcv_total=10_000, window=20_000, now=1.05)
    assert s is not None and math.isclose(s, 0.05)
    assert est.on_data(rcv_total=29_999, window=20_000, now=1.08) is None
    s = est.on_data(rcv_total=30_000, window=20_000, now=1.09)
    assert s is not None and math.isclose(s, 0.04)


def test_estimator_ignores_closed_windows_and_clock_jumps() -> None:
    est = ReceiverRttEstimator(min_window=MSS)
    assert est.on_data(rcv_total=0, window=0, now=1.0) is None
    assert est.on_data(rcv_total=10, window=100, now=1.001) is None  # below min_window
    assert est.on_data(rcv_total=20, window=10 * MSS, now=1.002) is None  # starts
    assert est.on_data(rcv_total=30, window=10 * MSS, now=0.5) is None  # clock back
    assert est.on_data(rcv_total=30 + 10 * MSS, window=10 * MSS, now=0.5) is None  # 0 s
    s = est.on_data(rcv_total=30 + 20 * MSS, window=10 * MSS, now=0.6)
    assert s is not None and math.isclose(s, 0.1)
