"""Receive-buffer autotuning: dynamic right-sizing of one flow's advertised window.

Model: Linux ``tcp_rcv_space_adjust`` ("DRS", Fisk & Feng, *Dynamic right-sizing in TCP*)
and ``tcp_rcv_rtt_measure``/``tcp_rcv_rtt_update``. Pure: no clock, no I/O; times come
in as arguments (seconds, floats); every size is an ``int`` of payload bytes.

:class:`ReceiveBufferTuner` — the buffer the connection may advertise
(:attr:`~ReceiveBufferTuner.size`):

* Once per receiver-measured RTT it looks at the bytes the *application* consumed in
  that RTT — here the host-socket writer of the gevent shell taking data out of the
  connection's receive buffer — because only what is consumed frees window: a host side
  that drains slowly gains nothing from a bigger window but memory use.
* If that amount exceeds the largest per-RTT amount seen so far (``space``, which starts
  at ``min(initial, 10 * mss)`` like Linux's ``rcvq_space.space``), the target is
  ``2 * copied + 16 * mss`` (2x to keep the pipe full through a loss episode, 16 MSS of
  cushion), doubled when ``copied >= 1.5 * space`` and times 1.5 when
  ``copied >= 1.25 * space`` (the sender is still growing, e.g. in slow start: the window
  we advertise now serves the *next* RTT). This is the bounded rule of Linux 3.x-4.18;
  later kernels scale by ``copied / space`` without a bound, which jumps straight to
  ``tcp_rmem[2]`` on any rate step — we keep the bound because per-flow memory matters
  with thousands of flows. The target is rounded up to whole MSS.
* ``size = min(max(size, target), maximum)``: it grows monotonically and never shrinks
  (a window once advertised must not be withdrawn, RFC 9293 §3.8.6.2.2, and shrinking
  the buffer behind it gains nothing).
* Deviation from Linux, on purpose: when the measurement spans more than one RTT (the
  host writer reports in bursts, or was blocked), ``copied`` is scaled down to one RTT
  (``copied * rtt / elapsed``). Linux counts everything copied since the epoch began,
  so a reader that wakes rarely and drains a full buffer looks fast and grows the
  buffer; here a flow whose host side consumes slowly never grows.
* Without any RTT sample nothing grows: ``size`` stays ``initial`` (Linux returns early
  while ``rcv_rtt_est.rtt_us == 0``). Measurement epochs only start once an RTT is
  known, so bytes consumed before it never count.

RTT, as the receiver sees it (:meth:`ReceiveBufferTuner.on_rtt_sample`), smoothed as
``tcp_rcv_rtt_update`` does: a sample below the current estimate replaces it; a larger
one moves it by 1/8 (EWMA) when it came from timestamps, and is ignored when it came from
the window-based :class:`ReceiverRttEstimator` (those only overestimate, so Linux keeps
their minimum).

How ``net/tcp.py`` feeds them (it converts sequence numbers to monotonic byte counts):

* With timestamps (RFC 7323): on an arriving in-order data segment of at least the
  receive MSS whose TSecr differs from the last one used, ``rtt = now - (time we sent
  the TSval it echoes)`` → ``tuner.on_rtt_sample(rtt)`` (Linux
  ``tcp_rcv_rtt_measure_ts``).
* Without timestamps: on every in-order data arrival,
  ``s = estimator.on_data(rcv_total=<in-order bytes received>, window=<bytes we
  advertised>, now=now)`` and, when ``s`` is not None,
  ``tuner.on_rtt_sample(s, window_based=True)``.
* Whenever the shell takes data out of the receive buffer:
  ``tuner.on_consumed(total=<monotonic bytes taken so far>, now=now)``; then advertise
  from ``tuner.size`` (free space = ``size`` minus bytes buffered).
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["ReceiveBufferTuner", "ReceiverRttEstimator"]

#: Linux TCP_INIT_CWND: the first ``space`` is at most this many MSS.
_INIT_SPACE_SEGMENTS: Final = 10
#: Cushion added to 2x the consumed bytes, in MSS (Linux: ``16 * tp->advmss``).
_SLACK_SEGMENTS: Final = 16


def _positive_time(value: float) -> bool:
    return value > 0.0 and math.isfinite(value)


class ReceiveBufferTuner:
    """Dynamic right-sizing of the receive buffer (the model is Linux tcp_rcv_space_adjust)."""

    def __init__(self, *, mss: int, initial: int, maximum: int) -> None:
        # Nonsense is clamped, not raised: mss >= 1, 1 <= initial <= maximum.
        self._mss = max(1, mss)
        self._maximum = max(1, maximum)
        #: initial <= _size <= _maximum; only ever grows.
        self._size = min(max(1, initial), self._maximum)
        #: largest bytes-consumed-per-RTT seen so far (Linux rcvq_space.space); > 0.
        self._space = max(1, min(self._size, _INIT_SPACE_SEGMENTS * self._mss))
        #: smoothed receiver RTT in seconds (> 0), None until the first sample.
        self._rtt: float | None = None
        #: the current measurement epoch: consumed total and time at its start; None
        #: until an RTT is known and the first on_consumed after it opens an epoch.
        self._epoch_total: int | None = None
        self._epoch_time = 0.0
        #: highest consumed total and latest time seen (inputs going back are ignored).
        self._total = 0
        self._now = -math.inf
        #: bytes consumed in the last completed epoch, scaled to one RTT.
        self._last_per_rtt = 0

    @property
    def size(self) -> int:
        """Buffer the connection may advertise now: initial <= size <= maximum, never shrinks."""
        return self._size

    @property
    def maximum(self) -> int:
        return self._maximum

    @property
    def rtt(self) -> float | None:
        """The smoothed receiver-side RTT (seconds), None before any sample."""
        return self._rtt

    @property
    def consumed_per_rtt(self) -> int:
        """Bytes the host consumed in the last measured RTT (0 before the first)."""
        return self._last_per_rtt

    def on_rtt_sample(self, rtt: float, *, window_based: bool = False) -> None:
        """A receiver-side RTT sample in seconds; non-positive or non-finite ones are ignored.

        ``window_based``: the sample came from :class:`ReceiverRttEstimator` (no
        timestamps); such samples can only lower the estimate.
        """
        if not _positive_time(rtt):
            return
        old = self._rtt
        if old is None or rtt < old:
            self._rtt = rtt
        elif not window_based:
            self._rtt = old + (rtt - old) / 8.0

    def on_consumed(self, *, total: int, now: float) -> None:
        """The host has now taken ``total`` bytes (monotonic) out of the receive buffer."""
        if total < self._total or not now >= self._now:
            return  # counters or clock going back (or NaN): ignore the call
        self._total = total
        self._now = now
        rtt = self._rtt
        if rtt is None:
            return  # no RTT, no growth
        if self._epoch_total is None:
            self._epoch_total = total
            self._epoch_time = now
            return
        elapsed = now - self._epoch_time
        if elapsed < rtt:
            return
        copied = total - self._epoch_total
        if elapsed > rtt:
            copied = int(copied * (rtt / elapsed))
        self._last_per_rtt = copied
        self._epoch_total = total
        self._epoch_time = now
        space = self._space
        if copied <= space:
            return
        window = 2 * copied + _SLACK_SEGMENTS * self._mss
        if 4 * copied >= 5 * space:  # copied >= 1.25 * space: still accelerating
            if 2 * copied >= 3 * space:
                window *= 2
            else:
                window += window // 2
        mss = self._mss
        target = -(-window // mss) * mss  # whole segments, rounded up
        if target > self._size:
            self._size = min(target, self._maximum)
        self._space = copied


class ReceiverRttEstimator:
    """RTT as the receiver sees it without timestamps (Linux tcp_rcv_rtt_measure).

    The time from advertising a window until one window's worth of in-order data has
    arrived is at least one RTT (more when the sender is not window-limited), so the
    samples overestimate and the tuner keeps their minimum. A measurement starts at the
    first call, ends at the first call where ``rcv_total`` reached ``start + window``,
    and the next one starts there. Windows below ``min_window`` (e.g. a closed window)
    start no measurement: the next segment would arrive "within the window" at once.
    """

    def __init__(self, *, min_window: int = 1) -> None:
        self._min_window = max(1, min_window)
        #: in-order total that ends the current measurement; None: none running.
        self._target: int | None = None
        self._start = 0.0

    def on_data(self, *, rcv_total: int, window: int, now: float) -> float | None:
        """Returns a sample (seconds) when one window's worth arrived, else None."""
        target = self._target
        if target is not None and rcv_total < target:
            if now < self._start:  # clock went back: restart below
                target = None
            else:
                return None
        sample: float | None = None
        if target is not None:
            elapsed = now - self._start
            if _positive_time(elapsed):
                sample = elapsed
        if window >= self._min_window and math.isfinite(now):
            self._target = rcv_total + window
            self._start = now
        else:
            self._target = None
        return sample
