"""TCP sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4, RFC 1982 style).

Sequence numbers are plain ints in ``0 .. 2**32-1``. Two numbers compare through their
signed distance, which is meaningful as long as they are less than 2**31 apart (smoltcp's
``SeqNumber``). Everything here is a pure function. ``net/tcp.py`` calls these helpers on
its cold paths (reopen checks, SACK edges, FIN and Eifel tests) and inlines the same
expressions with ``MASK``/``HALF`` on the per-segment path (``0 < (a - b) & MASK < HALF``
is ``seq_gt(a, b)``). Beyond the sequence space, the loss-recovery modules work in
monotonic stream offsets and need none of this.
"""

from __future__ import annotations

from typing import Final

MOD: Final = 1 << 32
MASK: Final = MOD - 1
HALF: Final = 1 << 31


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in ``-2**31 .. 2**31-1``."""
    d = (a - b) & MASK
    return d - MOD if d >= HALF else d


def seq_lt(a: int, b: int) -> bool:
    return ((a - b) & MASK) >= HALF


def seq_gt(a: int, b: int) -> bool:
    return a != b and ((a - b) & MASK) < HALF


def seq_ge(a: int, b: int) -> bool:
    return ((a - b) & MASK) < HALF
