"""Sliding-window anti-replay filter for transport counters (whitepaper §5.4.6, RFC 6479 idea).

Like wireguard-go's ``replay.Filter`` but with the check and the update split: the receive path
calls :meth:`ReplayFilter.check` before decrypting and :meth:`ReplayFilter.update` only after the
AEAD tag verified, so a forged packet can never move the window.

A counter is accepted once if it is newer than anything seen, or within ``window`` of the
newest and not seen before. Counters >= REJECT_AFTER_MESSAGES are always rejected.
"""

from __future__ import annotations

from ..constants import REJECT_AFTER_MESSAGES, REPLAY_WINDOW_SIZE

_BLOCK_BITS = 64


class ReplayFilter:
    """Bitmap over a ring of 64-bit blocks (wireguard-go layout): O(1) per packet."""

    __slots__ = ("window", "_ring", "_ring_mask", "last")

    def __init__(self, window: int = REPLAY_WINDOW_SIZE) -> None:
        #: how many counters back from ``last`` are accepted; constant.
        self.window = window
        blocks = 1
        while blocks * _BLOCK_BITS < window + _BLOCK_BITS:  # +1 block: the one being filled
            blocks *= 2
        #: bit (c % 64) of block (c // 64) % len(ring) is set <=> counter c was accepted, for
        #: every c in (last - window, last]; blocks ahead of ``last`` are kept zero.
        self._ring = [0] * blocks
        self._ring_mask = blocks - 1
        #: the highest counter accepted so far (0 before the first one).
        self.last = 0

    def check(self, counter: int) -> bool:
        """True if ``counter`` may be accepted (the caller still has to authenticate it)."""
        if counter >= REJECT_AFTER_MESSAGES:
            return False
        if counter > self.last:
            return True
        if self.last - counter >= self.window:
            return False
        return not (self._ring[(counter >> 6) & self._ring_mask] >> (counter & 63)) & 1

    def update(self, counter: int) -> None:
        """Record an authenticated ``counter`` that :meth:`check` accepted."""
        ring, mask = self._ring, self._ring_mask
        if counter > self.last:
            current = self.last >> 6
            block = counter >> 6
            if block != current:  # the common in-order case stays in the current block
                # Zero the blocks we move into (all of them after a jump past the whole ring).
                for i in range(current + 1, min(block, current + len(ring)) + 1):
                    ring[i & mask] = 0
            self.last = counter
        ring[(counter >> 6) & mask] |= 1 << (counter & 63)

    def check_and_update(self, counter: int) -> bool:
        """Both steps at once (for callers that authenticated ``counter`` already)."""
        if not self.check(counter):
            return False
        self.update(counter)
        return True
