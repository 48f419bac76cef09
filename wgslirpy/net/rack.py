"""RACK-TLP state of one sender (RFC 8985), in monotonic stream offsets and seconds.

RACK detects loss by time: a segment is lost once a segment sent *after* it was delivered
and more than ``RACK.rtt + reo_wnd`` has passed since it was sent (§6.2). Reordering is
tolerated through the reordering window ``reo_wnd`` (§6.2 step 4), which starts at zero
until reordering is seen, then is ``min_rtt / 4`` times a multiplier that grows on every
D-SACK round (RFC 8985 §6.2 / RFC 3708: a D-SACK says we retransmitted needlessly) and
decays after 16 recoveries without one. The tail loss probe timeout (§7.2) lives here too.

:class:`RackState` only holds and updates the numbers; the walk over sent segments is in
``net/recovery.py``, which owns the segments.
"""

from __future__ import annotations

__all__ = ["RackState", "DUP_THRESH", "WC_DEL_ACK", "REO_WND_MULT_MAX"]

#: RFC 8985 §6.2 / RFC 6675 DupThresh (in segments).
DUP_THRESH = 3
#: RFC 8985 §7.2 WCDelAckT: worst-case delayed ACK timer of the peer.
WC_DEL_ACK = 0.2
#: cap on the reordering-window multiplier (reo_wnd never exceeds SRTT anyway).
REO_WND_MULT_MAX = 64
_PERSIST_ROUNDS = 16


class RackState:
    """RACK.xmit_ts / end_seq / rtt / reo_wnd (RFC 8985 §6.1, §6.2)."""

    __slots__ = (
        "xmit_ts",
        "end",
        "rtt",
        "fack",
        "reordering_seen",
        "reo_wnd_mult",
        "reo_wnd_persist",
        "dsack_round",
    )

    def __init__(self) -> None:
        #: send time of the most recently sent segment that was delivered; None before any.
        self.xmit_ts: float | None = None
        #: end offset of that segment (ties on xmit_ts break by end).
        self.end = 0
        #: RTT measured on that segment (seconds).
        self.rtt = 0.0
        #: highest end offset delivered (RACK.fack).
        self.fack = 0
        #: a never-retransmitted segment was delivered below fack (§6.2 step 2).
        self.reordering_seen = False
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = _PERSIST_ROUNDS
        #: snd_max when the last D-SACK round started; None outside one.
        self.dsack_round: int | None = None

    def on_delivered(self, *, xmit_ts: float, end: int, retransmitted: bool, now: float, min_rtt: float | None) -> None:
        """§6.2 steps 1-3 for one newly delivered (ACKed or SACKed) segment."""
        rtt = now - xmit_ts
        if retransmitted and min_rtt is not None and rtt < min_rtt:
            return  # the ACK was for the original transmission: ambiguous, skip (step 1)
        if end < self.fack and not retransmitted:
            self.reordering_seen = True
        elif end > self.fack:
            self.fack = end
        cur = self.xmit_ts
        if cur is None or xmit_ts > cur or (xmit_ts == cur and end > self.end):
            self.xmit_ts = xmit_ts
            self.end = end
            self.rtt = rtt

    def sent_before_rack(self, xmit_ts: float, end: int) -> bool:
        """True if a segment sent at ``xmit_ts`` ending at ``end`` was sent before RACK's."""
        cur = self.xmit_ts
        return cur is not None and (xmit_ts < cur or (xmit_ts == cur and end <= self.end))

    def on_dsack(self, *, una: int, snd_max: int) -> None:
        """A D-SACK arrived: widen reo_wnd once per round trip (§6.2 step 4)."""
        if self.dsack_round is not None and una >= self.dsack_round:
            self.dsack_round = None
        if self.dsack_round is None:
            self.dsack_round = snd_max
            self.reo_wnd_mult = min(self.reo_wnd_mult + 1, REO_WND_MULT_MAX)
            self.reo_wnd_persist = _PERSIST_ROUNDS
        self.reordering_seen = True

    def on_recovery_exit(self) -> None:
        """Loss recovery ended: decay the multiplier after 16 rounds without D-SACK."""
        self.reo_wnd_persist -= 1
        if self.reo_wnd_persist <= 0:
            self.reo_wnd_mult = 1
            self.reo_wnd_persist = _PERSIST_ROUNDS

    def reo_wnd(self, *, in_recovery: bool, sacked_segments: int, min_rtt: float | None, srtt: float | None) -> float:
        """The reordering window to use now (§6.2 step 4)."""
        if not self.reordering_seen and (in_recovery or sacked_segments >= DUP_THRESH):
            return 0.0
        if min_rtt is None or srtt is None:
            return 0.0
        return min(self.reo_wnd_mult * min_rtt / 4, srtt)


def probe_timeout(*, srtt: float | None, flight_segments: int, rto: float) -> float:
    """RFC 8985 §7.2: PTO = 2 * SRTT (+ WCDelAckT for a single segment), at most the RTO."""
    if srtt is None:
        return min(1.0, rto)
    pto = 2 * srtt
    if flight_segments <= 1:
        pto += WC_DEL_ACK
    else:
        pto += 0.002  # a little slack for the peer's scheduling, as Linux does
    return min(pto, rto)


__all__ += ["probe_timeout"]
