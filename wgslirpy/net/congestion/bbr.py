"""Rate-based congestion control in the spirit of BBR (draft-ietf-ccwg-bbr): the default.

The default because it wins the link benchmark (benchmarks/links.py) over CUBIC on the
lossy profiles and matches it on clean links (see the package docstring).
It models the path instead of reacting to loss, because the gateway splits every
connection: loss on the tunnel leg is often radio or Wi-Fi loss, not a full queue.

Model (per flow, all in bytes and seconds):

* ``bw`` -- bottleneck bandwidth: the maximum delivery-rate sample of the last
  ``BW_WINDOW_ROUNDS`` (10) rounds, kept in a ring of per-round maxima (updating it is O(1)
  per ACK; the max over the ring is taken once per round). Samples come from on_ack's
  optional ``delivery_rate`` (RFC-draft "delivery rate sampling"); when the connection
  passes None, one sample per round is estimated as the bytes delivered in the round
  divided by its duration. An app-limited sample only counts when it raises ``bw``.
* ``min_rtt`` -- the minimum RTT seen in the last ``MIN_RTT_WINDOW`` (10 s); falls back to
  the connection's ``min_rtt`` argument until the controller has a sample of its own.
* Rounds: a round starts with ``round_end = snd_max`` and ends with the ACK whose
  ``delivered`` reaches it (the same monotonic offsets HyStart++ uses).

States (draft-ietf-ccwg-bbr §4.3, simplified):

* STARTUP: pacing and cwnd gain 2/ln 2; cwnd grows by the bytes acked (doubling per
  round). The target ``cwnd_gain x BDP`` caps it only once a round brought less than 25 %
  more bandwidth (the per-round estimate is a round old, so capping earlier would slow the
  doubling while the pipe is still far from full). Ends when ``bw`` grew by less than
  25 % in 3 rounds in a row (the pipe is full), or at a congestion event with a high loss
  rate.
* DRAIN: pacing gain ln 2 / 2 and cwnd = BDP (so a sender that does not pace drains too)
  until ``in_flight <= BDP``.
* PROBE_BW: gain cycle ``1.25, 0.75, 1 x 6``, each phase about one min_rtt (the 1.25 phase
  lasts until in_flight reached 1.25 BDP, at most 3 min_rtt; the 0.75 phase ends early once
  in_flight <= BDP). The cycle starts at a cruise phase chosen from the round count.
* PROBE_RTT: when min_rtt was not refreshed for 10 s, cwnd drops to
  ``max(4 MSS, BDP / 2)`` for at least 200 ms and one round, then the previous cwnd returns.

Outputs: ``cwnd = cwnd_gain x BDP + 3 MSS`` (cwnd gain 2 outside STARTUP and DRAIN; never
below 4 MSS once ACKs flow, never below 1 MSS) and ``pacing_rate = pacing_gain x bw x
0.99`` bytes/s (None until the first RTT sample; before the first bandwidth sample it is
``gain x cwnd / RTT``; in STARTUP it never decreases). ``ssthresh`` is bookkeeping for the
connection (it reports it; the window it sends by in recovery is cwnd).

Loss (see also the paragraph on ``QUEUE_RTT_FACTOR`` below): a congestion event keeps the
window (``ssthresh = min(cwnd, inflight_hi)``; recovery end restores that cwnd). Loss
counts as congestion only at a high loss *rate*: when on_ack's optional ``lost`` (the
connection's monotonic total of bytes marked lost) shows that more than ``LOSS_THRESH``
(15 %) of the bytes were lost over a window of at least ``LOSS_WINDOW_SEGMENTS`` (64)
delivered segments (short rounds are too noisy: one loss in four segments is 25 %; the
window also spans recoveries, during which on_ack is not called),
``inflight_hi = 0.7 x max(cwnd, flight)`` caps cwnd (again x 0.7 at most every second
round while it lasts) and STARTUP ends; each PROBE_BW cycle without one
raises the cap by 25 % until it no longer binds. 15 % is far above the random loss of the
radio and Wi-Fi links we serve (0.1-5 %), and far below what a window overrunning a
shallow bottleneck buffer causes (about a third of the segments in the link simulator of
``tests/tcp_link.py`` with a 30 KB queue at 2 MB/s and a 20 ms RTT). Without ``lost`` the
controller never treats loss as congestion (like BBRv1). An RTO sets cwnd = 1 MSS (the
contract); the next ACKs regrow it by the bytes acked up to the target. Undo restores the
state machine and inflight_hi saved at the event.

A high loss rate counts as congestion only while the loss window's least RTT sample
exceeds ``QUEUE_RTT_FACTOR`` (1.5) x min_rtt: a full bottleneck buffer raises every RTT,
while random loss plus reordering that RACK marks lost (about 10 % on a 5 % loss, 10 %
reorder link) raises none. Below the threshold the smoothed ``loss_rate`` raises the
pacing rate to ``bw / (1 - loss_rate)``: ``bw`` counts delivered bytes only, so without it
each round's sample would be ``1 - p`` of the last. ACK aggregation (``extra_acked``, the
draft's BBRUpdateACKAggregation, a max filter over 10 rounds whose slots last at least
``EXTRA_ACKED_MIN_SLOT_TIME`` so that sub-millisecond paths remember the shell's batches) is
added to the cwnd target. During recovery the
connection sends by ``cwnd - pipe`` rather than PRR (``prr_in_recovery`` False).

The model needs to see ACKs during loss recovery too (under steady random loss a flow is
in recovery most of the time): ``ack_in_recovery`` is True, asking the connection to call
on_ack for every delivering ACK, also inside recovery (an on_ack in RECOVERY ends the
controller's RECOVERY phase: cwnd = ssthresh = the kept window, and later events work as
usual).

Without pacing (if the connection ignores ``pacing_rate``) the gain cycle has no effect on
the sending rate; the controller then keeps about two BDPs in flight, re-measured every
round, which is what matters on a lossy path.

Per ACK: a few float operations and comparisons; no allocation.
"""

from __future__ import annotations

import math
from typing import ClassVar

from wgslirpy.net.congestion.base import MAX_CWND, CongestionControl, valid_rtt

__all__ = ["Bbr", "BbrState"]

STARTUP_PACING_GAIN = 2.0 / math.log(2.0)  # 2.885: doubles the sending rate per round
STARTUP_CWND_GAIN = STARTUP_PACING_GAIN
DRAIN_PACING_GAIN = math.log(2.0) / 2.0  # 0.347: drains the queue STARTUP built
DRAIN_CWND_GAIN = 1.0  # cwnd = BDP while draining, so an unpaced sender drains too
CWND_GAIN = 2.0
PROBE_BW_GAINS = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
PACING_MARGIN = 0.99
BW_WINDOW_ROUNDS = 10
MIN_RTT_WINDOW = 10.0  # seconds
PROBE_RTT_DURATION = 0.2  # seconds
FULL_BW_THRESH = 1.25
FULL_BW_ROUNDS = 3
LOSS_THRESH = 0.15  # lost / (lost + delivered) over a loss window that counts as congestion
LOSS_WINDOW_SEGMENTS = 64  # a loss rate is judged over at least this many delivered MSS
QUEUE_RTT_FACTOR = 1.5  # a loss window is congestive only if its least RTT exceeds this x min_rtt
LOSS_RATE_WEIGHT = 0.125  # EWMA weight of one loss window in loss_rate (pacing compensation)
BETA_BBR = 0.7
MIN_CWND_SEGMENTS = 4
QUANTUM_SEGMENTS = 3  # headroom for delayed ACKs
EXTRA_ACKED_ROUNDS = 10  # window (rounds) of the ACK-aggregation max filter
# ... but one slot of that filter lasts at least this long (seconds): on a sub-millisecond
# path ten rounds are shorter than the shell's loop jitter, the filter forgot each batch
# before the next and the flow ran cwnd-limited (clean loopback download 0.77x -> 0.87x,
# CPU per GB 12.6 -> 11.7 s, 3 repeats each). Paths with RTT >= this are unaffected.
EXTRA_ACKED_MIN_SLOT_TIME = 0.003
_MAX_RATE = 1e12  # bytes/s: samples above this are nonsense and ignored


class BbrState:
    STARTUP = 0
    DRAIN = 1
    PROBE_BW = 2
    PROBE_RTT = 3
    NAMES = ("STARTUP", "DRAIN", "PROBE_BW", "PROBE_RTT")


class Bbr(CongestionControl):
    """BBR-style controller (see the module docstring)."""

    _UNDO_FIELDS = (
        "state",
        "full_bw_reached",
        "_full_bw",
        "_full_bw_count",
        "_inflight_hi",
        "_cycle_index",
        "pacing_gain",
        "cwnd_gain",
        "_prior_cwnd",
    )

    # Slots: one controller per flow, so its size is part of what an idle flow costs.
    __slots__ = (
        "_agg_acked",
        "_agg_start",
        "_bw_index",
        "_bw_ring",
        "_cycle_index",
        "_cycle_stamp",
        "_extra_index",
        "_extra_slot_start",
        "_extra_ring",
        "_full_bw",
        "_full_bw_count",
        "_inflight_hi",
        "_loss_cut_round",
        "_loss_delivered",
        "_loss_lost",
        "_loss_rtt",
        "_min_rtt_stamp",
        "_prior_cwnd",
        "_probe_rtt_done",
        "_probe_rtt_round",
        "_round_delivered",
        "_round_end",
        "_round_time",
        "_srtt",
        "bw",
        "cwnd",
        "cwnd_gain",
        "extra_acked",
        "full_bw_reached",
        "loss_rate",
        "min_rtt",
        "pacing_gain",
        "pacing_rate",
        "round_count",
        "state",
    )

    name: ClassVar[str] = "bbr"
    ack_in_recovery: ClassVar[bool] = True
    # PRR limits sending to what the ACKs deliver (+1 MSS each in its slow-start part):
    # under steady random loss a flow is in recovery most of the time, and that ACK clock
    # held a paced sender at about half its model's rate (link sim, 5 % loss at 4 ms RTT).
    prr_in_recovery: ClassVar[bool] = False

    # Invariants: bw >= 0.0 bytes/s and == max(_bw_ring); min_rtt None or in (0, 600] s;
    # 0 <= _cycle_index < len(PROBE_BW_GAINS); _inflight_hi None or >= 4 MSS.
    state: int
    bw: float
    min_rtt: float | None
    pacing_gain: float
    cwnd_gain: float

    def __init__(self, *, mss: int, initial_window: int | None = None) -> None:
        super().__init__(mss=mss, initial_window=initial_window)
        self.state = BbrState.STARTUP
        self.bw = 0.0
        self._bw_ring = [0.0] * BW_WINDOW_ROUNDS
        self._bw_index = 0
        self.min_rtt = None
        self._min_rtt_stamp: float | None = None  # when min_rtt was last set
        self._srtt: float | None = None
        self.pacing_gain = STARTUP_PACING_GAIN
        self.cwnd_gain = STARTUP_CWND_GAIN
        self.round_count = 0
        self._round_end: int | None = None
        self._round_delivered = 0
        self._round_time = 0.0
        # Loss-rate window: the connection's lost total and delivered when it began.
        self._loss_lost: int | None = None
        self._loss_delivered = 0
        self._loss_cut_round = -2  # round of the last inflight_hi cut
        self._loss_rtt: float | None = None  # least RTT sample of the loss window
        self._full_bw = 0.0
        self._full_bw_count = 0
        self.full_bw_reached = False
        self._cycle_index = 0
        self._cycle_stamp = 0.0
        self._inflight_hi: int | None = None
        self._prior_cwnd = 0
        self._probe_rtt_done: float | None = None
        self._probe_rtt_round: int | None = None
        # ACK aggregation (draft-ietf-ccwg-bbr "BBRUpdateACKAggregation"): bytes acked
        # beyond bw x time in the current epoch; extra_acked = max of the per-round maxima
        # of the last EXTRA_ACKED_ROUNDS rounds, each slot at least EXTRA_ACKED_MIN_SLOT_TIME
        # long (added to the cwnd target).
        self.extra_acked = 0
        # Smoothed loss rate of the loss windows, 0 <= loss_rate <= LOSS_THRESH.
        self.loss_rate = 0.0
        self._extra_ring = [0] * EXTRA_ACKED_ROUNDS
        self._extra_index = 0
        self._extra_slot_start = 0.0  # when the current slot of _extra_ring began
        self._agg_start = 0.0
        self._agg_acked = 0

    @property
    def in_slow_start(self) -> bool:
        """STARTUP is BBR's slow start."""
        return self.state == BbrState.STARTUP

    @property
    def bdp(self) -> int | None:
        """bw x min_rtt in bytes, or None while either is unknown."""
        rtt = self.min_rtt
        if rtt is None or self.bw <= 0.0:
            return None
        return int(self.bw * rtt)

    def __repr__(self) -> str:
        return (
            f"<Bbr {BbrState.NAMES[self.state]} cwnd={self.cwnd} bw={self.bw:.0f} "
            f"min_rtt={self.min_rtt} pacing={self.pacing_rate} phase={self.phase.name}>"
        )

    # ---- per ACK ------------------------------------------------------------------------------

    def _on_delivery(
        self,
        acked: int,
        delivered: int,
        snd_max: int,
        in_flight: int,
        rtt: float | None,
        min_rtt: float | None,
        app_limited: bool,
        delivery_rate: float | None,
        lost: int | None,
        now: float,
    ) -> None:
        mss = self.mss

        # min_rtt filter (10 s window) and a smoothed RTT for the initial pacing rate.
        stamp = self._min_rtt_stamp
        expired = stamp is not None and now - stamp > MIN_RTT_WINDOW
        if valid_rtt(rtt):
            window_rtt = self._loss_rtt
            if window_rtt is None or rtt < window_rtt:
                self._loss_rtt = rtt
            srtt = self._srtt
            self._srtt = rtt if srtt is None else srtt + (rtt - srtt) * 0.125
            current = self.min_rtt
            if current is None or rtt <= current or expired:
                self.min_rtt = rtt
                self._min_rtt_stamp = now
        elif self.min_rtt is None and valid_rtt(min_rtt):
            self.min_rtt = min_rtt
            self._min_rtt_stamp = now

        # Rounds and the bandwidth sample.
        round_start = False
        sample: float | None = None
        round_end = self._round_end
        if round_end is None:
            self._round_end = snd_max
            self._round_delivered = delivered
            self._round_time = now
        elif delivered >= round_end:
            round_start = True
            self.round_count += 1
            elapsed = now - self._round_time
            rtt_floor = self.min_rtt
            # Only rounds of at least half an RTT give a rate (a burst of compressed ACKs
            # or a one-ACK app-limited round would overestimate it).
            if delivery_rate is None and rtt_floor is not None and elapsed >= 0.5 * rtt_floor:
                sample = (delivered - self._round_delivered) / elapsed
            self._round_end = snd_max
            self._round_delivered = delivered
            self._round_time = now
        if delivery_rate is not None:
            sample = delivery_rate
        if sample is not None and 0.0 < sample < _MAX_RATE:
            bw = self.bw
            if not app_limited or sample >= bw:
                ring = self._bw_ring
                if sample > ring[self._bw_index]:
                    ring[self._bw_index] = sample
                if sample > bw:
                    self.bw = sample
        if round_start and not app_limited:
            # The window ages by rounds that were not app-limited (app-limited time keeps
            # the estimate, as in BBR: it could not have measured the path anyway).
            index = self._bw_index = (self._bw_index + 1) % BW_WINDOW_ROUNDS
            ring = self._bw_ring
            ring[index] = 0.0
            self.bw = max(ring)

        self._update_ack_aggregation(acked, round_start, now)

        if lost is not None:
            base = self._loss_lost
            if base is None or lost < base:
                self._loss_lost = lost
                self._loss_delivered = delivered
            elif delivered - self._loss_delivered >= LOSS_WINDOW_SEGMENTS * mss:
                window_lost = lost - base
                window = window_lost + delivered - self._loss_delivered
                # At most one cut per two rounds: losses detected in the round after a cut
                # were mostly sent before it.
                rested = self.round_count > self._loss_cut_round + 1
                # The loss rate (below LOSS_THRESH: not congestion) scales the pacing rate,
                # see _update_pacing; smoothed over windows (losses are marked in bursts).
                rate = window_lost / window if window > 0 and window_lost > 0 else 0.0
                rate = self.loss_rate + (rate - self.loss_rate) * LOSS_RATE_WEIGHT
                self.loss_rate = rate if rate < LOSS_THRESH else LOSS_THRESH
                # Loss is congestion only with a standing queue: a full bottleneck
                # buffer raises every RTT of the window, random loss raises none.
                window_rtt = self._loss_rtt
                floor = self.min_rtt
                queued = window_rtt is None or floor is None or window_rtt > QUEUE_RTT_FACTOR * floor
                self._loss_rtt = None
                if rested and queued and window_lost > LOSS_THRESH * window:
                    self._loss_cut_round = self.round_count
                    self._on_high_loss(in_flight + acked)
                self._loss_lost = lost
                self._loss_delivered = delivered

        self._update_state(round_start, app_limited, in_flight, acked, expired, now)
        self._update_cwnd(acked, in_flight, app_limited)
        self._update_pacing()
        if self.cwnd < MIN_CWND_SEGMENTS * mss and self.state != BbrState.PROBE_RTT:
            self.cwnd = MIN_CWND_SEGMENTS * mss

    def _update_ack_aggregation(self, acked: int, round_start: bool, now: float) -> None:
        """draft-ietf-ccwg-bbr §5.5.9: ACKs that come in batches (a gevent loop turn, a
        receiver's delayed or stretched ACKs) deliver more than ``bw x interval``; the excess
        must stay in flight too, or a flow whose RTT is little more than the loop's turn is
        cwnd-limited below the path's rate (and measures that lower rate as ``bw``)."""
        ring = self._extra_ring
        if round_start and now - self._extra_slot_start >= EXTRA_ACKED_MIN_SLOT_TIME:
            self._extra_slot_start = now
            index = self._extra_index = (self._extra_index + 1) % EXTRA_ACKED_ROUNDS
            ring[index] = 0
            self.extra_acked = max(ring)
        bw = self.bw
        if bw <= 0.0:
            return
        expected = bw * (now - self._agg_start)
        if self._agg_acked <= expected:
            self._agg_acked = 0
            self._agg_start = now
            expected = 0.0
        self._agg_acked += acked
        extra = int(self._agg_acked - expected)
        if extra > self.cwnd:
            extra = self.cwnd
        if extra > ring[self._extra_index]:
            ring[self._extra_index] = extra
            if extra > self.extra_acked:
                self.extra_acked = extra

    def _update_state(
        self,
        round_start: bool,
        app_limited: bool,
        in_flight: int,
        acked: int,
        expired: bool,
        now: float,
    ) -> None:
        state = self.state
        if state == BbrState.STARTUP:
            if round_start and not app_limited:
                bw = self.bw
                if bw >= self._full_bw * FULL_BW_THRESH:
                    self._full_bw = bw
                    self._full_bw_count = 0
                else:
                    self._full_bw_count += 1
                    if self._full_bw_count >= FULL_BW_ROUNDS:
                        self.full_bw_reached = True
            if self.full_bw_reached:
                state = self.state = BbrState.DRAIN
                self.pacing_gain = DRAIN_PACING_GAIN
                self.cwnd_gain = DRAIN_CWND_GAIN
        if state == BbrState.DRAIN:
            bdp = self.bdp
            if bdp is None or in_flight <= bdp:
                self._enter_probe_bw(now)
                state = BbrState.PROBE_BW
        elif state == BbrState.PROBE_BW:
            self._advance_cycle(in_flight, acked, now)
        if state != BbrState.PROBE_RTT:
            if expired and self.min_rtt is not None:
                self._prior_cwnd = self.cwnd
                self.state = BbrState.PROBE_RTT
                self.pacing_gain = 1.0
                self._probe_rtt_done = None
                self._probe_rtt_round = None
            return
        # PROBE_RTT: wait until the flight is down, then 200 ms and one round.
        if self._probe_rtt_done is None:
            if in_flight <= self._probe_rtt_cwnd():
                self._probe_rtt_done = now + PROBE_RTT_DURATION
                self._probe_rtt_round = self.round_count
            return
        if now >= self._probe_rtt_done and self.round_count != self._probe_rtt_round:
            self._min_rtt_stamp = now
            self.cwnd = min(max(self.cwnd, self._prior_cwnd), MAX_CWND)
            if self.full_bw_reached:
                self._enter_probe_bw(now)
            else:
                self.state = BbrState.STARTUP
                self.pacing_gain = STARTUP_PACING_GAIN
                self.cwnd_gain = STARTUP_CWND_GAIN

    def _enter_probe_bw(self, now: float) -> None:
        self.state = BbrState.PROBE_BW
        self.cwnd_gain = CWND_GAIN
        self._cycle_index = 2 + self.round_count % (len(PROBE_BW_GAINS) - 2)  # a cruise phase
        self._cycle_stamp = now
        self.pacing_gain = PROBE_BW_GAINS[self._cycle_index]

    def _advance_cycle(self, in_flight: int, acked: int, now: float) -> None:
        rtt = self.min_rtt
        if rtt is None:
            return
        elapsed = now - self._cycle_stamp
        gain = self.pacing_gain
        bdp = self.bdp
        if gain > 1.0:
            done = elapsed > 3 * rtt or (elapsed > rtt and (bdp is None or in_flight + acked >= gain * bdp))
        elif gain < 1.0:
            done = elapsed > rtt or (bdp is not None and in_flight <= bdp)
        else:
            done = elapsed > rtt
        if not done:
            return
        index = self._cycle_index = (self._cycle_index + 1) % len(PROBE_BW_GAINS)
        hi = self._inflight_hi
        if index == 0 and hi is not None:
            # A whole cycle: probe above the cap again, drop it once it no longer binds.
            hi = hi + hi // 4
            self._inflight_hi = None if bdp is None or hi > CWND_GAIN * bdp else hi
        self._cycle_stamp = now
        self.pacing_gain = PROBE_BW_GAINS[index]

    def _probe_rtt_cwnd(self) -> int:
        bdp = self.bdp
        floor = MIN_CWND_SEGMENTS * self.mss
        return floor if bdp is None or bdp // 2 < floor else bdp // 2

    def _update_cwnd(self, acked: int, in_flight: int, app_limited: bool) -> None:
        cwnd = self.cwnd
        if self.state == BbrState.PROBE_RTT:
            limit = self._probe_rtt_cwnd()
            if cwnd > limit:
                self.cwnd = limit
            return
        bdp = self.bdp
        if bdp is None:
            target = None
        elif self.state == BbrState.DRAIN:
            target = bdp  # exactly one BDP: the flight falls to it and DRAIN ends
        else:
            target = int(self.cwnd_gain * bdp) + QUANTUM_SEGMENTS * self.mss + self.extra_acked
        hi = self._inflight_hi
        if hi is not None and (target is None or target > hi):
            target = hi
        if target is None:
            if self._may_grow(app_limited, in_flight, acked):
                cwnd += acked
        elif self.full_bw_reached:
            cwnd += acked
            if cwnd > target:
                cwnd = target
        elif (cwnd < target or self._full_bw_count == 0) and self._may_grow(app_limited, in_flight, acked):
            # STARTUP: while bw still grows 25 % per round the pipe is not full, so the
            # (one round old) target does not cap the doubling; after a flat round it does.
            cwnd += acked
        if cwnd > MAX_CWND:
            cwnd = MAX_CWND
        self.cwnd = cwnd if cwnd > self.mss else self.mss

    def _update_pacing(self) -> None:
        bw = self.bw
        if bw > 0.0:
            # bw counts delivered bytes only: on a path that loses a fraction p of what
            # is sent (below the congestion threshold), delivering bw needs sending
            # bw / (1 - p), or every round's sample is (1 - p) of the last and bw decays.
            rate = self.pacing_gain * bw * PACING_MARGIN / (1.0 - self.loss_rate)
        else:
            srtt = self._srtt
            if srtt is None:
                return
            rate = self.pacing_gain * self.cwnd / srtt
        if not rate < _MAX_RATE:  # a denormal RTT sample must not make it infinite
            rate = _MAX_RATE
        current = self.pacing_rate
        if self.full_bw_reached or current is None or rate > current:
            self.pacing_rate = rate

    # ---- events -------------------------------------------------------------------------------

    def _on_high_loss(self, flight: int) -> None:
        """A round lost more than LOSS_THRESH of its bytes: that is congestion."""
        cwnd = self.cwnd
        hi = int(BETA_BBR * (cwnd if cwnd > flight else flight))
        current = self._inflight_hi
        if current is not None and current < hi:
            hi = int(BETA_BBR * current)
        floor = MIN_CWND_SEGMENTS * self.mss
        self._inflight_hi = hi if hi > floor else floor
        if self.state == BbrState.STARTUP:
            self.full_bw_reached = True

    def _reduce(self, in_flight: int, now: float) -> int:
        # Loss alone is not congestion here: keep the window (recovery sends by cwnd - pipe).
        hi = self._inflight_hi
        cwnd = self.cwnd
        return cwnd if hi is None or cwnd < hi else hi

    def _restore(self, extra: tuple[object, ...], now: float) -> None:
        super()._restore(extra, now)
        self._cycle_stamp = now  # the restored gain cycle phase starts now
