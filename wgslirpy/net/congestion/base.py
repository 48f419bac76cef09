"""The congestion-controller contract shared by every algorithm (RFC 5681 vocabulary).

A :class:`CongestionControl` is one flow's controller. It is pure: no clock, no I/O; every
input is an argument (``now`` in seconds from the caller's monotonic clock). Windows are
**integer bytes**; sequence numbers never reach it (the connection passes monotonic stream
offsets: ``delivered`` and ``snd_max`` are Python ints that never wrap).

Episode state machine (kept here, once, for every algorithm)::

    OPEN --on_congestion_event--> RECOVERY --on_recovery_end--> OPEN   (cwnd = ssthresh)
    OPEN/RECOVERY --on_rto--> LOSS --on_recovery_end--> OPEN            (cwnd untouched)
    any --undo--> OPEN                                                  (state restored)

Call order the connection (``wgslirpy/net/tcp.py``) must follow:

* ``on_ack`` for every ACK that newly delivers data **outside** loss recovery (and also
  inside it when the class attribute ``ack_in_recovery`` is True: the BBR-style one), also
  after an RTO (the LOSS phase grows cwnd from 1 MSS by slow start, RFC 5681 §3.1). An ``on_ack``
  that arrives while the controller is in RECOVERY is taken as an implicit
  ``on_recovery_end`` first (so a forgotten end call can never freeze cwnd). In LOSS the
  first ``on_ack`` records its ``snd_max`` as the RTO's recovery point and the ACK whose
  ``delivered`` reaches it ends LOSS by itself, so a connection that does not call
  ``on_recovery_end`` after an RTO still gets a fresh undo snapshot at the next loss.
* ``on_congestion_event`` once when fast/SACK recovery starts. It sets ``ssthresh`` and
  leaves ``cwnd`` alone: during recovery the connection sizes sending with PRR (RFC 6937)
  towards ``ssthresh``. A second call inside the same RECOVERY is ignored.
* ``on_recovery_end`` when the recovery point is cumulatively acknowledged: after fast
  recovery it sets ``cwnd = ssthresh`` (RFC 6582 §3.2 step 3, RFC 6937 §3); after an RTO call
  it too (when the RTO's recovery point is acked) so the next loss starts a new episode.
* ``on_rto`` on every retransmission timeout: ``cwnd = 1 MSS`` (RFC 5681 eq. 4 loss window).
  ``ssthresh`` is reduced only by the first RTO of an episode: repeated RTOs hold it
  (RFC 5681 §3.1), and an RTO inside fast recovery keeps the already reduced value.
* ``undo`` when the last event proved spurious (F-RTO RFC 5682, D-SACK RFC 3708, Eifel
  RFC 3522/4015). The snapshot is taken when an episode starts from OPEN (later events of the
  same episode do not overwrite it), so undo restores the state from *before the episode*:
  ``cwnd = max(cwnd, saved cwnd)``, ``ssthresh = max(ssthresh, saved ssthresh)`` (undo never
  shrinks a window, as in Linux's tcp_undo_cwnd_reduction) plus each algorithm's own state.
  The snapshot is consumed; undo without one is a no-op.

Invariants (all algorithms, after every call): ``mss <= cwnd <= MAX_CWND``;
``2 * mss <= ssthresh <= INFINITE_SSTHRESH`` once set (``INFINITE_SSTHRESH`` until the first
event); both are ints. No method raises on odd inputs: non-positive ``acked``, ``rtt`` None,
zero, negative or not finite, huge counts, ``in_flight`` 0 are all tolerated.
"""

from __future__ import annotations

import abc
import enum
from typing import TYPE_CHECKING, ClassVar, TypeGuard

from wgslirpy.errors import ConfigError

if TYPE_CHECKING:
    from wgslirpy.net.congestion.hystart import HyStartPlusPlus, HyStartSnapshot

__all__ = [
    "INFINITE_SSTHRESH",
    "MAX_CWND",
    "CongestionControl",
    "Phase",
    "valid_rtt",
]

INFINITE_SSTHRESH = 1 << 30
"""ssthresh before the first congestion event (RFC 5681 §3.1 "arbitrarily high")."""

MAX_CWND = 1 << 30
"""Upper bound of cwnd in bytes (1 GiB: far beyond any window the peer can advertise)."""

_ABC_L_SEGMENTS = 2  # RFC 3465 §2.2: at most L = 2 SMSS of growth per slow-start ACK
_MAX_RTT = 600.0  # seconds: RTT samples above this are nonsense and ignored


def valid_rtt(rtt: float | None) -> TypeGuard[float]:
    """True when ``rtt`` is a usable sample: a finite number of seconds in (0, 600]."""
    return rtt is not None and 0.0 < rtt <= _MAX_RTT


class Phase(enum.IntEnum):
    """Where the flow is in the loss-episode state machine."""

    OPEN = 0  # normal operation: on_ack grows cwnd
    RECOVERY = 1  # fast/SACK recovery after on_congestion_event (PRR owns sending)
    LOSS = 2  # after on_rto, until on_recovery_end (on_ack slow-starts from 1 MSS)


class CongestionControl(abc.ABC):
    """One flow's congestion controller (RFC 5681 vocabulary). Pure; every input is an argument.

    Subclasses implement ``_on_delivery`` (growth per ACK), ``_reduce`` (the new ssthresh at
    a congestion event), name their extra undo state in ``_UNDO_FIELDS`` and optionally
    override ``_restore``, ``_after_recovery`` and ``_after_rto``.
    """

    name: ClassVar[str]
    #: the algorithm's own attributes that undo() puts back as they were before the
    #: reduction (immutable values: ints, floats, enums, None).
    _UNDO_FIELDS: ClassVar[tuple[str, ...]] = ()
    # True: the controller wants on_ack for every delivering ACK, also during fast recovery
    # (rate-based models must keep measuring); the connection then still runs PRR towards
    # ssthresh but must call on_ack as well. False (loss-based ones): as described above.
    ack_in_recovery: ClassVar[bool] = False
    # True: during fast recovery the connection sizes sending by PRR (RFC 6937) towards
    # ssthresh. False (the BBR-style one, like Linux BBR, which bypasses PRR): by
    # ``cwnd - pipe``, the controller's model-based window (paced), retransmissions first.
    prr_in_recovery: ClassVar[bool] = True

    cwnd: int  # bytes that may be in flight; mss <= cwnd <= MAX_CWND
    ssthresh: int  # bytes; INFINITE_SSTHRESH until the first event, else >= 2 * mss
    pacing_rate: float | None  # bytes/s when the algorithm wants pacing, else None
    mss: int  # sender MSS in bytes, > 0
    phase: Phase
    # State from before the current/last episode for undo(), or None:
    # (cwnd, ssthresh, the algorithm's _snapshot(), the HyStart++ snapshot or None).
    _undo: tuple[int, int, tuple[object, ...], HyStartSnapshot | None] | None
    # In LOSS: the recovery point (snd_max seen by the first ACK after the RTO), else None.
    _loss_end: int | None
    # HyStart++ helper of the initial slow start (set by subclasses that use it), else None.
    _hystart: HyStartPlusPlus | None = None

    def __init__(self, *, mss: int, initial_window: int | None = None) -> None:
        if not isinstance(mss, int) or mss <= 0:
            raise ConfigError(f"congestion control: MSS must be a positive integer, not {mss!r}")
        if initial_window is None:
            initial_window = 10 * mss  # RFC 6928
        elif not isinstance(initial_window, int) or initial_window <= 0:
            raise ConfigError(f"congestion control: initial window must be a positive integer, not {initial_window!r}")
        self.mss = mss
        self.cwnd = min(max(initial_window, mss), MAX_CWND)
        self.ssthresh = INFINITE_SSTHRESH
        self.pacing_rate = None
        self.phase = Phase.OPEN
        self._undo = None
        self._loss_end = None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} cwnd={self.cwnd} ssthresh={self.ssthresh} phase={self.phase.name} mss={self.mss}>"
        )

    @property
    def in_slow_start(self) -> bool:
        """True while cwnd < ssthresh (RFC 5681 §3.1)."""
        return self.cwnd < self.ssthresh

    # ---- per ACK --------------------------------------------------------------------------

    def on_ack(
        self,
        *,
        acked: int,
        delivered: int,
        snd_max: int,
        in_flight: int,
        rtt: float | None,
        min_rtt: float | None,
        app_limited: bool,
        delivery_rate: float | None = None,
        lost: int | None = None,
        now: float,
    ) -> None:
        """An ACK newly delivered ``acked`` bytes outside loss recovery (see module docstring).

        Optional extras (None when the connection does not track them; only the rate-based
        controller uses them): ``delivery_rate`` -- a delivery-rate sample in bytes/s;
        ``lost`` -- the monotonic total of bytes the connection has marked lost so far
        (every marking counts, never decreases, also across recoveries).
        """
        if self.phase:  # RECOVERY or LOSS (Phase.OPEN is 0)
            self._ack_in_episode(delivered, snd_max, now)
        if acked <= 0:
            return
        if acked > MAX_CWND:
            acked = MAX_CWND
        self._on_delivery(acked, delivered, snd_max, in_flight, rtt, min_rtt, app_limited, delivery_rate, lost, now)

    @abc.abstractmethod
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
        """The algorithm's growth for an ACK that delivered 0 < ``acked`` <= MAX_CWND bytes,
        after the episode bookkeeping :meth:`on_ack` does for every algorithm."""

    def _ack_in_episode(self, delivered: int, snd_max: int, now: float) -> None:
        """An ``on_ack`` outside OPEN: end RECOVERY implicitly, or track the end of LOSS."""
        if self.phase is Phase.RECOVERY:
            self.on_recovery_end(now=now)
            return
        end = self._loss_end
        if end is None:
            end = self._loss_end = snd_max
        if delivered >= end:
            self.phase = Phase.OPEN
            self._loss_end = None

    # ---- events ---------------------------------------------------------------------------

    def on_congestion_event(self, *, in_flight: int, now: float) -> None:
        """Loss detected, fast/SACK recovery begins: set ssthresh, leave cwnd to PRR."""
        phase = self.phase
        if phase is Phase.RECOVERY:
            return  # once per recovery episode
        if phase is Phase.OPEN:
            self._save_undo()
        self.ssthresh = self._clamp_ssthresh(self._reduce(max(int(in_flight), 0), now))
        self.phase = Phase.RECOVERY
        if self._hystart is not None:
            self._hystart.finish()

    def on_recovery_end(self, *, now: float) -> None:
        """Recovery (or the RTO's recovery) finished."""
        phase = self.phase
        if phase is Phase.OPEN:
            return
        self.phase = Phase.OPEN
        self._loss_end = None
        if phase is Phase.RECOVERY:
            self.cwnd = max(min(self.ssthresh, MAX_CWND), self.mss)
            self._after_recovery(now)

    def on_rto(self, *, in_flight: int, now: float) -> None:
        """Retransmission timeout: cwnd = 1 MSS; ssthresh reduced once per episode."""
        if self.phase is Phase.OPEN:
            self._save_undo()
            self.ssthresh = self._clamp_ssthresh(self._reduce(max(int(in_flight), 0), now))
        # RECOVERY: ssthresh was already reduced for this episode; LOSS: repeated RTO for the
        # same data holds ssthresh constant (RFC 5681 §3.1).
        self.cwnd = self.mss
        self.phase = Phase.LOSS
        self._loss_end = None
        if self._hystart is not None:
            self._hystart.finish()
        self._after_rto(now)

    def undo(self, *, now: float) -> None:
        """The last episode was spurious: restore the state saved when it began."""
        saved = self._undo
        if saved is None:
            return
        self._undo = None
        cwnd, ssthresh, extra, hs_saved = saved
        self.phase = Phase.OPEN
        self._loss_end = None
        if self._hystart is not None and hs_saved is not None:
            self._hystart.restore(hs_saved)
        self._restore(extra, now)
        self.cwnd = min(max(self.cwnd, cwnd, self.mss), MAX_CWND)
        self.ssthresh = max(self.ssthresh, ssthresh)

    def on_mss_change(self, mss: int) -> None:
        """The sender's MSS changed; windows stay in bytes, re-clamped to the new MSS."""
        if not isinstance(mss, int) or mss <= 0:
            return
        self.mss = mss
        if self.cwnd < mss:
            self.cwnd = mss
        if self.ssthresh < 2 * mss:
            self.ssthresh = 2 * mss

    # ---- helpers and hooks ----------------------------------------------------------------

    def _clamp_ssthresh(self, value: int) -> int:
        return min(max(value, 2 * self.mss), INFINITE_SSTHRESH)

    def _save_undo(self) -> None:
        hs = self._hystart
        self._undo = (
            self.cwnd,
            self.ssthresh,
            self._snapshot(),
            hs.snapshot() if hs is not None else None,
        )

    def _may_grow(self, app_limited: bool, in_flight: int, acked: int) -> bool:
        """May this ACK grow cwnd? (RFC 7661 spirit, the rule of Linux tcp_is_cwnd_limited.)

        Yes when the sender is not app-limited. An app-limited sender still grows while the
        window was really used before this ACK (``in_flight + acked`` bytes): in slow start
        while cwnd < 2 x that, in congestion avoidance while that is within one MSS of cwnd.
        So a sender whose buffer empties after every ACK but that fills the window keeps
        growing, and an idle or trickling one does not inflate a window it never tests.
        """
        if not app_limited:
            return True
        flight = in_flight + acked
        cwnd = self.cwnd
        if cwnd < self.ssthresh:
            return cwnd < 2 * flight
        return flight + self.mss > cwnd

    def _slow_start(
        self,
        acked: int,
        delivered: int,
        snd_max: int,
        in_flight: int,
        rtt: float | None,
        app_limited: bool,
    ) -> None:
        """One slow-start ACK (cwnd < ssthresh), with HyStart++ if the algorithm has one.

        RFC 5681 §3.1 with RFC 3465 byte counting: cwnd += min(acked, L * SMSS), L = 2;
        under HyStart++ (RFC 9406 §4.2) L = 8 and the increase is divided by the CSS growth
        divisor; HyStart++ may end slow start here (ssthresh = cwnd).
        """
        cwnd = self.cwnd
        limit = _ABC_L_SEGMENTS
        divisor = 1
        hs = self._hystart
        if hs is not None and hs.state != hs.DONE:
            if self.ssthresh != INFINITE_SSTHRESH:
                hs.finish()  # RFC 9406 §4.3: only the initial slow start
            else:
                if hs.on_ack(delivered=delivered, snd_max=snd_max, rtt=rtt):
                    self.ssthresh = self._clamp_ssthresh(cwnd)
                    return
                limit = hs.L_SEGMENTS
                divisor = hs.growth_divisor
        if not self._may_grow(app_limited, in_flight, acked):
            return
        inc = (acked if acked < limit * self.mss else limit * self.mss) // divisor
        cwnd += inc
        self.cwnd = cwnd if cwnd < MAX_CWND else MAX_CWND

    @abc.abstractmethod
    def _reduce(self, in_flight: int, now: float) -> int:
        """The new ssthresh at a congestion event or first RTO (may update internal state)."""

    def _snapshot(self) -> tuple[object, ...]:
        """The ``_UNDO_FIELDS`` values that undo() must restore."""
        return tuple(getattr(self, name) for name in self._UNDO_FIELDS)

    def _restore(self, extra: tuple[object, ...], now: float) -> None:
        """Put back what :meth:`_snapshot` returned."""
        for name, value in zip(self._UNDO_FIELDS, extra, strict=True):
            setattr(self, name, value)

    # Optional hooks: no-ops unless an algorithm needs them.

    def _after_recovery(self, now: float) -> None:
        """Fast recovery ended; cwnd == ssthresh now."""
        return

    def _after_rto(self, now: float) -> None:
        """An RTO set cwnd to 1 MSS."""
        return
