"""CUBIC congestion control (RFC 9438) with HyStart++ (RFC 9406) for the initial slow start.

Units: the RFC's formulas count segments; here windows are bytes, so every window term is
multiplied by SMSS (``C`` stays 0.4 segments/s^3). cwnd is an int; the fraction of a byte
that one ACK's growth leaves is carried to the next ACK (``_carry``), so nothing drifts.

* Window function (§4.2, eq. 1/2): ``W_cubic(t) = C * (t - K)^3 + W_max`` with
  ``K = cbrt((W_max - cwnd_epoch) / C)``; ``t`` is the time since the congestion-avoidance
  epoch began. The epoch begins at recovery end (cwnd = ssthresh = cwnd_epoch) or, after an
  RTO or a slow-start exit without loss, on the first congestion-avoidance ACK with
  ``W_max = cwnd_epoch`` and ``K = 0`` (§4.8; also used when cwnd_epoch >= W_max, e.g.
  after undo). K needs one cube root per epoch; a congestion-avoidance ACK costs a few
  float operations.
* Concave and convex regions (§4.4, §4.5): per ACK ``target = W_cubic(t + RTT)`` clamped to
  ``[cwnd, 1.5 * cwnd]`` and ``cwnd += (target - cwnd) * acked / cwnd`` (never beyond
  target); RTT is a smoothed RTT the controller keeps (EWMA 1/8 of the samples passed in;
  ``min_rtt`` until the first sample, 0 without either).
* Reno-friendly region (§4.3): ``W_est`` starts at cwnd_epoch and grows
  ``alpha_cubic * acked / cwnd`` segments per ACK, ``alpha_cubic = 3 (1 - beta) / (1 + beta)``
  until ``W_est >= cwnd_prior``, then 1. When ``W_cubic(t) < W_est`` cwnd follows W_est.
* Multiplicative decrease (§4.6): ``ssthresh = max(cwnd * 0.7, 2 * SMSS)``,
  ``cwnd_prior = cwnd``; cwnd (not FlightSize) is the base, which §4.6 allows because an
  app-limited cwnd does not grow (below). Fast convergence (§4.7): if cwnd < the previous
  W_max, ``W_max = cwnd * (1 + beta) / 2``, else ``W_max = cwnd``.
* Timeout (§4.8): ssthresh as in §4.6 (first RTO of an episode), cwnd = 1 SMSS, standard
  slow start to ssthresh, then an epoch with ``W_max = cwnd_epoch`` and K = 0.
* Spurious congestion events (§4.9): undo restores cwnd, ssthresh, W_max, K, the epoch
  start, W_est, cwnd_prior and HyStart++'s state as saved when the episode began.
* Application-limited (§5.8): an ACK that may not grow cwnd (base-class rule: app-limited
  and the window was not really used) changes nothing, and the time until growth is allowed
  again is added to the epoch start so ``t`` excludes it.
* Slow start: RFC 5681 with HyStart++ (RFC 9406) while ssthresh is still infinite (see
  :mod:`~wgslirpy.net.congestion.hystart`), plain RFC 3465 slow start after an RTO.
"""

from __future__ import annotations

import math
from typing import ClassVar

from wgslirpy.net.congestion.base import MAX_CWND, CongestionControl, valid_rtt
from wgslirpy.net.congestion.hystart import HyStartPlusPlus

__all__ = ["ALPHA_CUBIC", "BETA_CUBIC", "C_CUBIC", "Cubic"]

C_CUBIC = 0.4  # segments / s^3 (RFC 9438 §5.1)
BETA_CUBIC = 0.7  # multiplicative decrease factor (RFC 9438 §4.6)
ALPHA_CUBIC = 3.0 * (1.0 - BETA_CUBIC) / (1.0 + BETA_CUBIC)  # Reno-friendly AIMD (§4.3)
_MAX_GROWTH = 1.5  # target clamp: at most +50 % per RTT (§4.2)


class Cubic(CongestionControl):
    """RFC 9438 CUBIC (see the module docstring)."""

    _UNDO_FIELDS = ("_w_max", "_k", "_epoch_start", "_w_est", "_cwnd_prior", "_carry", "_app_limited_since")

    name: ClassVar[str] = "cubic"

    # Invariants: _w_max >= 0.0 bytes (0.0 = "unset": the next epoch takes cwnd_epoch);
    # _k >= 0.0 seconds; _epoch_start is None outside a congestion-avoidance epoch;
    # 0.0 <= _w_est <= MAX_CWND bytes; 0.0 <= _carry < 1.0 bytes; _srtt None or > 0 seconds.
    _w_max: float
    _k: float
    _epoch_start: float | None
    _w_est: float
    _cwnd_prior: int
    _carry: float
    _srtt: float | None
    _app_limited_since: float | None  # when growth was last refused in an epoch, else None

    def __init__(
        self,
        *,
        mss: int,
        initial_window: int | None = None,
        hystart: bool = True,
        fast_convergence: bool = True,
    ) -> None:
        super().__init__(mss=mss, initial_window=initial_window)
        self.fast_convergence = fast_convergence
        self._w_max = 0.0
        self._k = 0.0
        self._epoch_start = None
        self._w_est = 0.0
        self._cwnd_prior = 0
        self._carry = 0.0
        self._srtt = None
        self._app_limited_since = None
        if hystart:
            self._hystart = HyStartPlusPlus()

    # ---- the window function ----------------------------------------------------------------

    def w_cubic(self, t: float) -> float:
        """RFC 9438 eq. 1 in bytes for the current epoch: C * (t - K)^3 + W_max."""
        d = t - self._k
        return C_CUBIC * self.mss * d * d * d + self._w_max

    @property
    def w_max(self) -> float:
        """W_max in bytes (0.0 until the first epoch or event sets it)."""
        return self._w_max

    @property
    def k(self) -> float:
        """K in seconds for the current epoch."""
        return self._k

    @property
    def epoch_start(self) -> float | None:
        return self._epoch_start

    @property
    def w_est(self) -> float:
        return self._w_est

    def _start_epoch(self, now: float) -> None:
        cwnd = self.cwnd
        if self._w_max <= cwnd:
            self._w_max = float(cwnd)
            self._k = 0.0
        else:
            self._k = math.cbrt((self._w_max - cwnd) / (C_CUBIC * self.mss))
        self._epoch_start = now
        self._w_est = float(cwnd)
        self._carry = 0.0
        self._app_limited_since = None

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
        if valid_rtt(rtt):
            srtt = self._srtt
            self._srtt = rtt if srtt is None else srtt + (rtt - srtt) * 0.125
        cwnd = self.cwnd
        if cwnd < self.ssthresh:
            self._slow_start(acked, delivered, snd_max, in_flight, rtt, app_limited)
            return

        if not self._may_grow(app_limited, in_flight, acked):
            if self._app_limited_since is None and self._epoch_start is not None:
                self._app_limited_since = now
            return
        start = self._epoch_start
        if start is None:
            self._start_epoch(now)
            start = now
        else:
            since = self._app_limited_since
            if since is not None:
                self._app_limited_since = None
                if now > since:
                    start += now - since  # §5.8: t excludes the app-limited time
                    self._epoch_start = start
        t = now - start
        if not t > 0.0:
            t = 0.0  # the caller's clock went backwards (or is not a number)

        mss = self.mss
        # Reno-friendly estimate (§4.3).
        w_est = self._w_est
        alpha = 1.0 if w_est >= self._cwnd_prior else ALPHA_CUBIC
        w_est += alpha * mss * acked / cwnd
        if not w_est <= MAX_CWND:
            w_est = float(MAX_CWND)
        self._w_est = w_est

        if self.w_cubic(t) < w_est:
            # Reno-friendly region: cwnd follows W_est (never shrinks here).
            new = int(w_est)
            if new > cwnd:
                self.cwnd = new if new < MAX_CWND else MAX_CWND
            return

        rtt_s = self._srtt
        if rtt_s is None:
            rtt_s = min_rtt if valid_rtt(min_rtt) else 0.0
        target = self.w_cubic(t + rtt_s)
        cap = _MAX_GROWTH * cwnd
        if not target > cwnd:
            return  # concave plateau reached for now (or NaN): no growth
        if not target <= cap:
            target = cap
        grow = (target - cwnd) * acked / cwnd + self._carry
        if grow > target - cwnd:
            grow = target - cwnd
        whole = int(grow)
        self._carry = grow - whole if whole < grow else 0.0
        if whole:
            cwnd += whole
            self.cwnd = cwnd if cwnd < MAX_CWND else MAX_CWND

    # ---- events -------------------------------------------------------------------------------

    def _reduce(self, in_flight: int, now: float) -> int:
        cwnd = self.cwnd
        self._cwnd_prior = cwnd
        if self.fast_convergence and cwnd < self._w_max:
            self._w_max = cwnd * (1.0 + BETA_CUBIC) / 2.0  # §4.7
        else:
            self._w_max = float(cwnd)
        self._epoch_start = None
        self._app_limited_since = None
        self._carry = 0.0
        return int(cwnd * BETA_CUBIC)

    def _after_recovery(self, now: float) -> None:
        self._start_epoch(now)

    def _after_rto(self, now: float) -> None:
        # §4.8: the first epoch after a timeout takes W_max = cwnd_epoch and K = 0.
        self._w_max = 0.0
        self._k = 0.0
        self._epoch_start = None
        self._app_limited_since = None
        self._carry = 0.0
