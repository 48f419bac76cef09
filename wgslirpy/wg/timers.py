"""Per-peer WireGuard timers as data (whitepaper §6, wireguard-go ``timers.go``).

:class:`PeerTimers` holds one optional deadline per timer. The ``on_*`` hooks are called by the
endpoint at the events named in wireguard-go and only set or clear deadlines; :meth:`expire`
returns the :class:`TimerAction` s whose deadline passed, which the endpoint then performs.

=========================  ==================================================================
hook                        effect
=========================  ==================================================================
on_data_sent                arm NEW_HANDSHAKE (KEEPALIVE+REKEY_TIMEOUT+jitter) unless armed
on_data_received            arm SEND_KEEPALIVE (KEEPALIVE_TIMEOUT) or note another is needed
on_any_authenticated_       clear SEND_KEEPALIVE (whatever we send carries the ack)
packet_sent
on_any_authenticated_       clear NEW_HANDSHAKE (the peer is alive)
packet_received
on_any_authenticated_       re-arm PERSISTENT_KEEPALIVE
packet_traversal
on_handshake_initiated      arm RETRANSMIT_HANDSHAKE (REKEY_TIMEOUT + jitter)
on_handshake_complete       clear RETRANSMIT_HANDSHAKE, reset attempts
on_session_derived          arm ZERO_KEY_MATERIAL (3 * REJECT_AFTER_TIME)
=========================  ==================================================================

Retransmission gives up after MAX_TIMER_HANDSHAKES retries (REKEY_ATTEMPT_TIME / REKEY_TIMEOUT,
as wireguard-go counts them), which :meth:`expire` reports as GIVE_UP_HANDSHAKE.
:func:`should_rekey_on_send` and :func:`should_rekey_on_receive` are ``keepKeyFresh*``.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

from ..constants import (
    KEEPALIVE_TIMEOUT,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ATTEMPT_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
)
from .session import Keypair

MAX_TIMER_HANDSHAKES = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)


class TimerAction(enum.Enum):
    RETRANSMIT_HANDSHAKE = "retransmit_handshake"  # send an initiation again (a retry)
    GIVE_UP_HANDSHAKE = "give_up_handshake"  # flush staged packets; stop retrying
    SEND_KEEPALIVE = "send_keepalive"
    NEW_HANDSHAKE = "new_handshake"  # we sent data and heard nothing back
    ZERO_KEY_MATERIAL = "zero_key_material"
    PERSISTENT_KEEPALIVE = "persistent_keepalive"


def should_rekey_on_send(keypair: Keypair, now: float) -> bool:
    """keepKeyFreshSending: too many messages, or (as initiator) too old."""
    return keypair.send_counter > REKEY_AFTER_MESSAGES or (
        keypair.is_initiator and now - keypair.created >= REKEY_AFTER_TIME
    )


def should_rekey_on_receive(keypair: Keypair, now: float) -> bool:
    """keepKeyFreshReceiving: as initiator, the keys are about to be rejected."""
    return keypair.is_initiator and (now - keypair.created >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT)


class PeerTimers:
    """Deadlines (monotonic seconds, None = not armed) of one peer's timers."""

    __slots__ = (
        "retransmit_handshake",
        "send_keepalive",
        "new_handshake",
        "zero_key_material",
        "persistent_keepalive",
        "persistent_keepalive_interval",
        "handshake_attempts",
        "need_another_keepalive",
        "sent_last_minute_handshake",
        "last_sent_handshake",
        "_rng",  # random.Random, seeded from the endpoint's rng
    )

    def __init__(self, *, persistent_keepalive_interval: float | None = None, rng: Callable[[int], bytes]) -> None:
        self.retransmit_handshake: float | None = None
        self.send_keepalive: float | None = None
        self.new_handshake: float | None = None
        self.zero_key_material: float | None = None
        self.persistent_keepalive: float | None = None
        #: seconds; None or 0 disables persistent keepalives.
        self.persistent_keepalive_interval = persistent_keepalive_interval or None
        #: retries of the current handshake; reset by a new (non-retry) one and on completion.
        self.handshake_attempts = 0
        #: data arrived while SEND_KEEPALIVE was armed: re-arm it after it fires.
        self.need_another_keepalive = False
        #: keepKeyFreshReceiving already asked for a handshake for this keypair.
        self.sent_last_minute_handshake = False
        #: monotonic time of the last initiation we sent (one per REKEY_TIMEOUT at most).
        self.last_sent_handshake: float | None = None
        self._rng = random.Random(int.from_bytes(rng(8), "little"))

    def _jitter(self) -> float:
        # Not secret (wireguard-go uses fastrandn): a PRNG seeded once from ``rng``, because
        # a request/response exchange re-arms NEW_HANDSHAKE on nearly every send and
        # os.urandom is a system call each time.
        return self._rng.random() * REKEY_TIMEOUT_JITTER_MAX

    # --- hooks (wireguard-go timers*) ----------------------------------------------------

    def on_data_sent(self, now: float) -> None:
        """After an authenticated data packet is sent."""
        if self.new_handshake is None:
            self.new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()

    def on_data_received(self, now: float) -> None:
        """After an authenticated data packet is received."""
        if self.send_keepalive is None:
            self.send_keepalive = now + KEEPALIVE_TIMEOUT
        else:
            self.need_another_keepalive = True

    def on_any_authenticated_packet_sent(self, now: float) -> None:
        """After any authenticated packet (keepalive, data, handshake) is sent."""
        self.send_keepalive = None

    def on_any_authenticated_packet_received(self, now: float) -> None:
        """After any authenticated packet (keepalive, data, handshake) is received."""
        self.new_handshake = None

    def on_any_authenticated_packet_traversal(self, now: float) -> None:
        """Before an authenticated packet is sent, or after one is received."""
        if self.persistent_keepalive_interval:
            self.persistent_keepalive = now + self.persistent_keepalive_interval

    def on_handshake_initiated(self, now: float) -> None:
        """After an initiation is sent."""
        self.retransmit_handshake = now + REKEY_TIMEOUT + self._jitter()

    def on_handshake_complete(self, now: float) -> None:
        """After a response is consumed, or on key confirmation by the first transport packet."""
        self.retransmit_handshake = None
        self.handshake_attempts = 0
        self.sent_last_minute_handshake = False

    def on_session_derived(self, now: float) -> None:
        """After transport keys are derived (response created or consumed)."""
        self.zero_key_material = now + REJECT_AFTER_TIME * 3

    def after_keepalive_timer_sent(self, now: float) -> None:
        """After the keepalive SEND_KEEPALIVE asked for went out (sending it disarmed the timer)."""
        if self.need_another_keepalive:
            self.need_another_keepalive = False
            self.send_keepalive = now + KEEPALIVE_TIMEOUT

    def may_send_initiation(self, now: float) -> bool:
        """At most one initiation per REKEY_TIMEOUT (whitepaper §6.1)."""
        return self.last_sent_handshake is None or now - self.last_sent_handshake >= REKEY_TIMEOUT

    def clear(self) -> None:
        """Disarm everything (keys zeroed); the persistent keepalive stays armed."""
        self.retransmit_handshake = self.send_keepalive = self.new_handshake = None
        self.zero_key_material = None
        self.handshake_attempts = 0
        self.need_another_keepalive = False

    # --- expiry ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        ds = [
            d
            for d in (
                self.retransmit_handshake,
                self.send_keepalive,
                self.new_handshake,
                self.zero_key_material,
                self.persistent_keepalive,
            )
            if d is not None
        ]
        return min(ds) if ds else None

    def expire(self, now: float) -> list[TimerAction]:
        """Disarm the timers due at ``now`` and return what to do, in a fixed order."""
        actions: list[TimerAction] = []
        if self.retransmit_handshake is not None and now >= self.retransmit_handshake:
            self.retransmit_handshake = None
            if self.handshake_attempts >= MAX_TIMER_HANDSHAKES:
                self.send_keepalive = None
                if self.zero_key_material is None:
                    self.zero_key_material = now + REJECT_AFTER_TIME * 3
                actions.append(TimerAction.GIVE_UP_HANDSHAKE)
            else:
                self.handshake_attempts += 1
                actions.append(TimerAction.RETRANSMIT_HANDSHAKE)
        if self.send_keepalive is not None and now >= self.send_keepalive:
            self.send_keepalive = None
            actions.append(TimerAction.SEND_KEEPALIVE)
        if self.new_handshake is not None and now >= self.new_handshake:
            self.new_handshake = None
            actions.append(TimerAction.NEW_HANDSHAKE)
        if self.zero_key_material is not None and now >= self.zero_key_material:
            self.zero_key_material = None
            actions.append(TimerAction.ZERO_KEY_MATERIAL)
        if self.persistent_keepalive is not None and now >= self.persistent_keepalive:
            self.persistent_keepalive = None
            if self.persistent_keepalive_interval:
                actions.append(TimerAction.PERSISTENT_KEEPALIVE)
        return actions
