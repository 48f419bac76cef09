"""RTT estimation for one TCP flow (RFC 6298), plus the minimum RTT RACK and CUBIC need.

Pure: every sample is an argument. :class:`RttEstimator` keeps SRTT, RTTVAR and the RTO
of RFC 6298 (§2 formulas, §5.5 exponential backoff, clamped to ``[min_rto, max_rto]``)
and ``min_rtt``, the smallest sample seen (RFC 8985 §6.2 uses it for the reordering
window). Samples come from timestamp echoes (RFC 7323 §4) or from Karn-safe timing of a
never-retransmitted segment.
"""

from __future__ import annotations

__all__ = ["CLOCK_GRANULARITY", "MAX_RTT_SAMPLE", "RttEstimator"]

#: clock granularity G of RFC 6298 (our timestamp clock ticks in ms).
CLOCK_GRANULARITY = 0.001
#: RTT samples above this (seconds) are treated as garbage (e.g. a bogus TSecr).
MAX_RTT_SAMPLE = 120.0


class RttEstimator:
    """RFC 6298 smoothed RTT and retransmission timeout, with exponential backoff."""

    __slots__ = ("srtt", "rttvar", "rto", "min_rtt", "latest", "_min", "_max")

    def __init__(self, *, initial_rto: float, min_rto: float, max_rto: float) -> None:
        #: smoothed RTT in seconds; None until the first sample.
        self.srtt: float | None = None
        #: RTT variation; meaningful once srtt is set.
        self.rttvar = 0.0
        #: current RTO, always within [min_rto, max_rto].
        self.rto = initial_rto
        #: smallest sample so far (seconds); None until the first sample.
        self.min_rtt: float | None = None
        #: the most recent sample; None until the first.
        self.latest: float | None = None
        self._min = min_rto
        self._max = max_rto

    def sample(self, rtt: float) -> None:
        """Feed one valid measurement (Karn's rule or a timestamp echo); resets backoff."""
        if rtt < 0 or rtt > MAX_RTT_SAMPLE:
            return
        self.latest = rtt
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        srtt = self.srtt
        if srtt is None:
            srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(srtt - rtt)
            srtt = 0.875 * srtt + 0.125 * rtt
        self.srtt = srtt
        rto = srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar)
        self.rto = min(max(rto, self._min), self._max)

    def backoff(self) -> None:
        """RFC 6298 §5.5: double the RTO on expiry, up to the maximum."""
        self.rto = min(self.rto * 2, self._max)
