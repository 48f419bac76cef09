"""Handshake intake: the bounded queue handshake messages wait in (wireguard-go ``device.go``,
``receive.go``: ``queue.handshake`` and ``IsUnderLoad``).

The reader classifies each datagram by its type byte before any crypto (:func:`is_handshake`):
transport data goes straight to the endpoint; initiations, responses and cookie replies are
:meth:`HandshakeIntake.offer`-ed here. A full queue drops the newest message and counts
WG_HANDSHAKE_QUEUE_FULL — before any hashing, so a flood costs one length check per datagram.
Messages from the peer's current authenticated endpoint go to a small lane of their own, so a
flood from elsewhere cannot crowd out its rekeys. Each reader turn :meth:`take` returns at most
``budget`` messages (the peer's lane first), which bounds the time a turn spends on handshakes
and keeps transport data flowing.

"Under load" (handshakes then need a valid mac2, or get a cookie reply) follows the queue depth
with hysteresis, as in wireguard-go: loaded while the queue holds at least ``load_mark``
messages, and for UNDER_LOAD_AFTER_TIME seconds after it last did.

Pure: ``now`` is a keyword argument; nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ..constants import (
    HANDSHAKE_LOAD_MARK,
    HANDSHAKE_PEER_QUEUE_SIZE,
    HANDSHAKE_QUEUE_SIZE,
    HANDSHAKE_TURN_BUDGET,
    MESSAGE_COOKIE_REPLY_TYPE,
    MESSAGE_INITIATION_TYPE,
    UNDER_LOAD_AFTER_TIME,
)
from ..errors import ConfigError, DropCounter, DropReason

Queued = tuple[bytes, Any]


def is_handshake(data: bytes) -> bool:
    """True for an initiation, response or cookie reply, judged by the first byte only
    (sizes, reserved bytes and macs are the endpoint's job)."""
    return bool(data) and MESSAGE_INITIATION_TYPE <= data[0] <= MESSAGE_COOKIE_REPLY_TYPE


class HandshakeIntake:
    """Bounded FIFO of handshake datagrams with a peer lane; see the module docstring."""

    __slots__ = ("capacity", "peer_capacity", "budget", "load_mark", "drops", "_queue", "_peer", "_loaded_until")

    def __init__(
        self,
        *,
        capacity: int = HANDSHAKE_QUEUE_SIZE,
        peer_capacity: int = HANDSHAKE_PEER_QUEUE_SIZE,
        budget: int = HANDSHAKE_TURN_BUDGET,
        load_mark: int = HANDSHAKE_LOAD_MARK,
    ) -> None:
        if capacity < 1 or peer_capacity < 1 or budget < 1 or not 1 <= load_mark <= capacity:
            raise ConfigError("handshake queue: sizes and budget must be positive, the load mark within the capacity")
        self.capacity = capacity
        self.peer_capacity = peer_capacity
        self.budget = budget
        self.load_mark = load_mark
        #: WG_HANDSHAKE_QUEUE_FULL counts.
        self.drops = DropCounter()
        #: messages from anyone else; len <= capacity. And the peer's lane; len <= peer_capacity.
        self._queue: deque[Queued] = deque()
        self._peer: deque[Queued] = deque()
        #: under load until this time (set while the depth is at or above load_mark).
        self._loaded_until = float("-inf")

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._peer)

    def offer(self, data: bytes, addr: Any, *, from_peer: bool = False) -> bool:
        """Queue one handshake datagram; False (counted) if its lane is full."""
        lane, cap = (self._peer, self.peer_capacity) if from_peer else (self._queue, self.capacity)
        if len(lane) >= cap:
            self.drops.add(DropReason.WG_HANDSHAKE_QUEUE_FULL)
            return False
        lane.append((data, addr))
        return True

    def under_load(self, *, now: float) -> bool:
        """Whether handshakes must carry a valid mac2 now (depth-based, with hysteresis)."""
        if len(self._queue) >= self.load_mark:
            self._loaded_until = now + UNDER_LOAD_AFTER_TIME
            return True
        return now < self._loaded_until

    def take(self, budget: int | None = None) -> list[Queued]:
        """Up to ``budget`` (default: the configured one) queued messages, the peer's lane
        first, oldest first."""
        out: list[Queued] = []
        n = self.budget if budget is None else budget
        for lane in (self._peer, self._queue):
            while lane and n:
                out.append(lane.popleft())
                n -= 1
        return out
