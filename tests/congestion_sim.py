"""A tiny ACK-clocked sender for congestion-controller tests (no TCP, fake clock).

The sender always has data, sends whole MSS segments while ``in_flight + mss <= cwnd``, and
every segment's ACK arrives ``rtt`` seconds after it was sent (one ACK per segment, FIFO).
Between ACKs nothing happens, so the controller sees exactly the ACK clock of RFC 5681: a
window's ACKs arrive one RTT after the window left. With ``bottleneck`` (bytes/s) each
segment also waits for the link to be free and takes ``mss / bottleneck`` seconds on it,
so a window larger than the path's BDP builds a queue (the RTT rises, the ACK rate is the
link's rate). The sender does not pace.

:func:`ack` is one hand-made ACK for tests that drive a controller step by step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from wgslirpy.net.congestion import CongestionControl


def ack(
    cc: CongestionControl,
    acked: int,
    *,
    now: float = 0.0,
    in_flight: int = 10**9,
    app_limited: bool = False,
    rtt: float | None = 0.1,
) -> None:
    """An ACK outside recovery that delivered ``acked`` bytes, with ``rtt`` as its sample and
    the path's minimum, from a sender whose flight (default: huge) never limits growth."""
    cc.on_ack(
        acked=acked,
        delivered=0,
        snd_max=0,
        in_flight=in_flight,
        rtt=rtt,
        min_rtt=rtt,
        app_limited=app_limited,
        now=now,
    )


class AckClock:
    def __init__(
        self,
        cc: CongestionControl,
        *,
        rtt: float | Callable[[float], float] = 0.1,
        now: float = 0.0,
        pass_rtt: bool = True,
        bottleneck: float | None = None,
    ) -> None:
        self.cc = cc
        self.rtt = rtt
        self.now = now
        self.pass_rtt = pass_rtt
        self.bottleneck = bottleneck
        self._link_free = now  # when the bottleneck finishes the last queued segment
        self.snd_max = 0  # monotonic offset one past the highest byte sent
        self.delivered = 0  # monotonic bytes acknowledged
        self.min_rtt: float | None = None
        self.acks = 0
        self._flight: deque[tuple[float, float, int]] = deque()  # (arrival, sent, end offset)
        self._fill()

    @property
    def in_flight(self) -> int:
        return self.snd_max - self.delivered

    def _rtt_at(self, t: float) -> float:
        return self.rtt(t) if callable(self.rtt) else self.rtt

    def _fill(self) -> None:
        mss = self.cc.mss
        last = self._flight[-1][0] if self._flight else self.now
        while self.in_flight + mss <= self.cc.cwnd:
            depart = self.now
            if self.bottleneck is not None:
                depart = self._link_free = max(self._link_free, self.now) + mss / self.bottleneck
            arrival = max(depart + self._rtt_at(self.now), last)
            self.snd_max += mss
            self._flight.append((arrival, self.now, self.snd_max))
            last = arrival

    def step(self) -> None:
        """Deliver the next ACK, then send what cwnd allows."""
        arrival, sent, end = self._flight.popleft()
        self.now = arrival
        acked = end - self.delivered
        self.delivered = end
        sample = arrival - sent
        self.min_rtt = sample if self.min_rtt is None else min(self.min_rtt, sample)
        self.acks += 1
        self.cc.on_ack(
            acked=acked,
            delivered=self.delivered,
            snd_max=self.snd_max,
            in_flight=self.in_flight,
            rtt=sample if self.pass_rtt else None,
            min_rtt=self.min_rtt if self.pass_rtt else None,
            app_limited=False,
            now=self.now,
        )
        self._fill()

    def run_until(self, t_end: float, *, max_acks: int = 2_000_000) -> None:
        """Process every ACK that arrives at or before ``t_end`` (bounded by ``max_acks``)."""
        for _ in range(max_acks):
            if not self._flight or self._flight[0][0] > t_end:
                break
            self.step()
        self.now = max(self.now, t_end)

    def restart_flight(self) -> None:
        """Forget what is in flight (after a simulated loss event) and send afresh."""
        self._flight.clear()
        self.delivered = self.snd_max
        self._fill()
