"""Stand-in for ``wgslirpy.net.rcvbuf.ReceiveBufferTuner`` (agreed interface), used until
that module is merged. Pure, in bytes."""

from __future__ import annotations


class ReceiveBufferTuner:
    """Stand-in for ``wgslirpy.net.rcvbuf.ReceiveBufferTuner`` (Linux dynamic right-sizing)."""

    def __init__(self, *, mss: int, initial: int, maximum: int) -> None:
        self.mss = mss
        self.maximum = maximum
        self._size = min(initial, maximum)
        self._rtt: float | None = None
        self._mark: tuple[int, float] | None = None

    @property
    def size(self) -> int:
        return self._size

    def on_rtt_sample(self, rtt: float) -> None:
        if rtt > 0:
            self._rtt = rtt if self._rtt is None else min(rtt, 0.875 * self._rtt + 0.125 * rtt)

    def on_consumed(self, *, total: int, now: float) -> None:
        if self._rtt is None:
            return
        if self._mark is None:
            self._mark = (total, now)
            return
        c0, t0 = self._mark
        if now - t0 < self._rtt:
            return
        copied = total - c0
        self._mark = (total, now)
        target = 2 * copied + 16 * self.mss
        target = -(-target // self.mss) * self.mss
        if target > self._size:
            self._size = min(target, self.maximum)
