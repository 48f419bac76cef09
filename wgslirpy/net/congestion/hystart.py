"""HyStart++ (RFC 9406): a slow-start exit that watches the RTT instead of waiting for loss.

:class:`HyStartPlusPlus` is a small helper a controller consults on every slow-start ACK
(NewReno and CUBIC share it). It tracks rounds with monotonic stream offsets: a round
starts with ``window_end = snd_max`` and ends with (and including) the ACK that makes
``delivered >= window_end``; the next ACK belongs to the next round (RFC 9406 §4.2 uses
SND.UNA and SND.NXT; ``delivered`` counts SACKed bytes too, which ends a round no later).

Per round it keeps the minimum RTT of the samples it saw. With at least
``N_RTT_SAMPLE`` samples in the current round and a previous round to compare with:

* slow start -> Conservative Slow Start (CSS) when
  ``currentRoundMinRTT >= lastRoundMinRTT + clamp(lastRoundMinRTT / 8, 4 ms, 16 ms)``;
  ``cssBaselineMinRtt = currentRoundMinRTT``;
* CSS -> slow start again when ``currentRoundMinRTT < cssBaselineMinRtt`` (the rise was
  spurious);
* after ``CSS_ROUNDS`` complete rounds in CSS, :meth:`on_ack` returns True: the caller
  ends slow start (``ssthresh = cwnd``) and enters congestion avoidance.

During CSS the caller divides its slow-start increase by :attr:`growth_divisor`
(``CSS_GROWTH_DIVISOR``); in slow start the divisor is 1. The caller limits each slow-start
increase to ``L * SMSS`` with ``L = HYSTART_L_SEGMENTS`` (8: we do not pace, RFC 9406 §4.2).

Without pacing, an ACK-clocked slow start sends in bursts that the bottleneck queue absorbs
and drains again within each round, so a round's *minimum* RTT rises only once a standing
queue remains, i.e. at several BDPs of cwnd: HyStart++ then ends slow start late (in the
link simulator with a 40 ms RTT, 10 MB/s and a one-BDP queue, at about 3 BDP, after the
queue overflowed). Pacing slow start would make it exit near one BDP.

RFC 9406 §4.3: HyStart++ runs only in the initial slow start (ssthresh still infinite); a
loss or RTO ends it for good (:meth:`finish`). Invariants: ``state`` is one of
``SLOW_START``/``CSS``/``DONE``; ``0 <= css_rounds < CSS_ROUNDS`` while in CSS; RTT fields
are seconds, ``inf`` meaning "no sample". Per ACK: a handful of comparisons, no allocation.
"""

from __future__ import annotations

from wgslirpy.net.congestion.base import valid_rtt

__all__ = [
    "CSS_GROWTH_DIVISOR",
    "CSS_ROUNDS",
    "HYSTART_L_SEGMENTS",
    "MAX_RTT_THRESH",
    "MIN_RTT_DIVISOR",
    "MIN_RTT_THRESH",
    "N_RTT_SAMPLE",
    "HyStartPlusPlus",
    "HyStartSnapshot",
]

# RFC 9406 §4.3 constants.
MIN_RTT_THRESH = 0.004  # seconds
MAX_RTT_THRESH = 0.016  # seconds
MIN_RTT_DIVISOR = 8
N_RTT_SAMPLE = 8
CSS_GROWTH_DIVISOR = 4
CSS_ROUNDS = 5
HYSTART_L_SEGMENTS = 8  # L for a non-paced sender (RFC 9406 §4.2)

_INF = float("inf")

HyStartSnapshot = tuple[int, "int | None", float, float, int, float, int]
"""Everything :meth:`HyStartPlusPlus.restore` needs (for undo)."""


class HyStartPlusPlus:
    """RFC 9406 slow-start exit state of one flow."""

    SLOW_START = 0
    CSS = 1
    DONE = 2
    L_SEGMENTS = HYSTART_L_SEGMENTS

    __slots__ = (
        "state",
        "window_end",
        "last_round_min_rtt",
        "current_round_min_rtt",
        "rtt_sample_count",
        "css_baseline_min_rtt",
        "css_rounds",
    )

    def __init__(self) -> None:
        self.state = self.SLOW_START  # SLOW_START, CSS or DONE
        # The round ends when delivered >= window_end; None before the first round.
        self.window_end: int | None = None
        self.last_round_min_rtt = _INF  # seconds; inf until a round with samples completed
        self.current_round_min_rtt = _INF  # seconds; inf until this round's first sample
        self.rtt_sample_count = 0  # samples seen in the current round
        self.css_baseline_min_rtt = _INF  # seconds; the round min RTT that started CSS
        self.css_rounds = 0  # complete rounds spent in CSS

    @property
    def growth_divisor(self) -> int:
        """Divide the slow-start increase by this (CSS_GROWTH_DIVISOR during CSS, else 1)."""
        return CSS_GROWTH_DIVISOR if self.state == self.CSS else 1

    @property
    def active(self) -> bool:
        return self.state != self.DONE

    def on_ack(self, *, delivered: int, snd_max: int, rtt: float | None) -> bool:
        """Account one slow-start ACK; True when slow start must end now (CSS_ROUNDS done)."""
        state = self.state
        if state == self.DONE:
            return False
        window_end = self.window_end
        if window_end is None:
            window_end = self.window_end = snd_max  # the first round starts
        if valid_rtt(rtt):
            self._sample(rtt)
        if delivered >= window_end:
            # This ACK ends the round (its sample belonged to it); RFC 9406 §4.2: at the
            # start of each round, remember its minimum and start afresh.
            self.last_round_min_rtt = self.current_round_min_rtt
            self.current_round_min_rtt = _INF
            self.rtt_sample_count = 0
            self.window_end = snd_max
            if self.state == self.CSS:
                self.css_rounds += 1
                if self.css_rounds >= CSS_ROUNDS:
                    self.state = self.DONE
                    return True
        return False

    def _sample(self, rtt: float) -> None:
        current = self.current_round_min_rtt
        if rtt < current:
            current = self.current_round_min_rtt = rtt
        count = self.rtt_sample_count = self.rtt_sample_count + 1
        if count < N_RTT_SAMPLE:
            return
        if self.state == self.SLOW_START:
            last = self.last_round_min_rtt
            if last == _INF:
                return
            thresh = last / MIN_RTT_DIVISOR
            if thresh < MIN_RTT_THRESH:
                thresh = MIN_RTT_THRESH
            elif thresh > MAX_RTT_THRESH:
                thresh = MAX_RTT_THRESH
            if current >= last + thresh:
                self.css_baseline_min_rtt = current
                self.css_rounds = 0
                self.state = self.CSS
        elif current < self.css_baseline_min_rtt:
            # The RTT rise was spurious: back to slow start.
            self.css_baseline_min_rtt = _INF
            self.state = self.SLOW_START

    def finish(self) -> None:
        """A congestion event or RTO ended the initial slow start: HyStart++ is done."""
        self.state = self.DONE

    def snapshot(self) -> HyStartSnapshot:
        return (
            self.state,
            self.window_end,
            self.last_round_min_rtt,
            self.current_round_min_rtt,
            self.rtt_sample_count,
            self.css_baseline_min_rtt,
            self.css_rounds,
        )

    def restore(self, saved: HyStartSnapshot) -> None:
        (
            self.state,
            self.window_end,
            self.last_round_min_rtt,
            self.current_round_min_rtt,
            self.rtt_sample_count,
            self.css_baseline_min_rtt,
            self.css_rounds,
        ) = saved
