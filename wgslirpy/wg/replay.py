"""Sliding-window anti-replay filter for transport counters (whitepaper §5.4.6, RFC 6479 idea).

Like wireguard-go's ``replay.Filter`` but with the check and the update split: the receive path
calls :meth:`ReplayFilter.check` before decrypting and :meth:`ReplayFilter.update` only after the
AEAD tag verified, so a forged packet can never move the window.

A counter is accepted once if it is newer than anything seen, or within ``window`` of the
newest and not seen before. Counters >= REJECT_AFTER_MESSAGES are always rejected.
"""

from __future__ import annotations

from ..constants import REJECT_AFTER_MESSAGES, REPLAY_WINDOW_SIZE


class ReplayFilter:
    __slots__ = ("window", "_mask", "last", "bitmap")

    def __init__(self, window: int = REPLAY_WINDOW_SIZE) -> None:
        #: how many counters back from ``last`` are remembered; constant.
        self.window = window
        self._mask = (1 << window) - 1
        #: the highest counter accepted so far (0 before the first one).
        self.last = 0
        #: bit i set <=> counter ``last - i`` was accepted; only the low ``window`` bits are used.
        self.bitmap = 0

    def check(self, counter: int) -> bool:
        """True if ``counter`` may be accepted (the caller still has to authenticate it)."""
        if counter >= REJECT_AFTER_MESSAGES:
            return False
        last = self.last
        if counter > last:
            return True
        diff = last - counter
        if diff >= self.window:
            return False
        return not (self.bitmap >> diff) & 1

    def update(self, counter: int) -> None:
        """Record an authenticated ``counter`` that :meth:`check` accepted."""
        last = self.last
        if counter > last:
            shift = counter - last
            self.bitmap = ((self.bitmap << shift) | 1) & self._mask if shift < self.window else 1
            self.last = counter
        else:
            self.bitmap |= 1 << (last - counter)

    def check_and_update(self, counter: int) -> bool:
        """Both steps at once (for callers that authenticated ``counter`` already)."""
        if not self.check(counter):
            return False
        self.update(counter)
        return True
