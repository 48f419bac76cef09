"""NewReno congestion control: RFC 5681 + RFC 3465 byte counting, RFC 6582 in a SACK/PRR world.

* Slow start (RFC 5681 §3.1, RFC 3465 §2.2): while cwnd < ssthresh every ACK adds
  ``min(acked, L * SMSS)`` with L = 2 (L = 8 and HyStart++ when built with ``hystart=True``,
  RFC 9406; off by default so "newreno" stays the classic algorithm).
* Congestion avoidance (RFC 5681 §3.1, RFC 3465 §2.1 "appropriate byte counting"):
  ``bytes_acked`` accumulates acked bytes; each time it reaches cwnd, cwnd grows by one SMSS
  and cwnd bytes are taken off the counter (a stretch ACK covering k windows adds k SMSS).
  So cwnd grows one SMSS per round trip, however the peer spaces its ACKs.
* Congestion event (RFC 5681 eq. 4, RFC 6582 §3.2 step 2): ``ssthresh = max(in_flight / 2,
  2 * SMSS)`` where ``in_flight`` is the FlightSize the connection passes. There is no
  window inflation: RFC 6582's inflate/deflate dance is replaced by PRR (RFC 6937), which
  the connection runs during recovery; at recovery end cwnd = ssthresh (RFC 6582 step 3).
* RTO (RFC 5681 §3.1): ssthresh as above (first RTO of an episode only), cwnd = 1 SMSS.
* Undo (RFC 5682 / RFC 3708 response): restores cwnd, ssthresh and the byte counter.
* App-limited ACKs do not grow cwnd unless the window was really used (base class rule).

Per ACK: a few integer operations, no allocation.
"""

from __future__ import annotations

from typing import ClassVar

from wgslirpy.net.congestion.base import MAX_CWND, CongestionControl
from wgslirpy.net.congestion.hystart import HyStartPlusPlus

__all__ = ["NewReno"]


class NewReno(CongestionControl):
    """RFC 5681 / RFC 6582 NewReno with byte counting (see the module docstring)."""

    name: ClassVar[str] = "newreno"
    _UNDO_FIELDS = ("_bytes_acked",)

    _bytes_acked: int  # RFC 3465 counter of acked bytes in congestion avoidance; 0 <= it < cwnd

    def __init__(self, *, mss: int, initial_window: int | None = None, hystart: bool = False) -> None:
        super().__init__(mss=mss, initial_window=initial_window)
        self._bytes_acked = 0
        if hystart:
            self._hystart = HyStartPlusPlus()

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
        cwnd = self.cwnd
        if cwnd < self.ssthresh:
            self._slow_start(acked, delivered, snd_max, in_flight, rtt, app_limited)
            return
        if not self._may_grow(app_limited, in_flight, acked):
            return
        counter = self._bytes_acked + acked
        if counter >= cwnd:
            steps = counter // cwnd
            counter -= steps * cwnd
            cwnd += steps * self.mss
            if cwnd >= MAX_CWND:
                cwnd = MAX_CWND
                counter = 0
            self.cwnd = cwnd
        self._bytes_acked = counter

    def _reduce(self, in_flight: int, now: float) -> int:
        self._bytes_acked = 0
        return in_flight // 2

    def _after_rto(self, now: float) -> None:
        self._bytes_acked = 0
