"""Stand-ins: a congestion controller (NewReno, RFC 5681) with the agreed interface of
``wgslirpy.net.congestion``, and a receive-buffer tuner, used until those modules are merged. Pure, in bytes."""

from __future__ import annotations

from wgslirpy.errors import ConfigError

INFINITE_SSTHRESH = 1 << 30
CONGESTION_CONTROLS: tuple[str, ...] = ("newreno",)
DEFAULT_CONGESTION_CONTROL = "newreno"


class CongestionControl:
    name = "newreno"

    def __init__(self, *, mss: int, initial_window: int | None = None) -> None:
        self.mss = mss
        self.cwnd = initial_window if initial_window is not None else 10 * mss
        self.ssthresh = INFINITE_SSTHRESH
        self.pacing_rate: float | None = None
        self._acc = 0
        self._saved: tuple[int, int] | None = None

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def on_ack(self, *, acked: int, delivered: int, snd_max: int, in_flight: int, rtt: float | None,
               min_rtt: float | None, app_limited: bool, delivery_rate: float | None = None, now: float) -> None:
        if app_limited and in_flight + acked < self.cwnd // 2:
            return
        if self.cwnd < self.ssthresh:
            self.cwnd = min(self.cwnd + min(acked, self.mss), INFINITE_SSTHRESH)
        else:
            self._acc += acked
            if self._acc >= self.cwnd:
                self._acc -= self.cwnd
                self.cwnd = min(self.cwnd + self.mss, INFINITE_SSTHRESH)

    def on_congestion_event(self, *, in_flight: int, now: float) -> None:
        self._saved = (self.cwnd, self.ssthresh)
        self.ssthresh = max(in_flight // 2, 2 * self.mss)

    def on_recovery_end(self, *, now: float) -> None:
        self.cwnd = self.ssthresh
        self._acc = 0

    def on_rto(self, *, in_flight: int, now: float) -> None:
        if self._saved is None or self.cwnd > self.mss:
            self._saved = (self.cwnd, self.ssthresh)
        self.ssthresh = max(in_flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self._acc = 0

    def undo(self, *, now: float) -> None:
        if self._saved is not None:
            cwnd, ssthresh = self._saved
            self.cwnd = max(self.cwnd, cwnd)
            self.ssthresh = max(self.ssthresh, ssthresh)
            self._saved = None

    def on_mss_change(self, mss: int) -> None:
        self.mss = mss


def make_congestion_control(name: str, *, mss: int, initial_window: int | None = None) -> CongestionControl:
    if name not in CONGESTION_CONTROLS:
        raise ConfigError(f"unknown congestion control {name!r}; choose one of {', '.join(CONGESTION_CONTROLS)}")
    return CongestionControl(mss=mss, initial_window=initial_window)


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
