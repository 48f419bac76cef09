"""TCP sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4, RFC 1982 style).

Sequence numbers are plain ints in ``0 .. 2**32-1``. Two numbers compare through their
signed distance, which is meaningful as long as they are less than 2**31 apart (smoltcp's
``SeqNumber``). Everything here is a pure function. ``net/tcp.py`` is hot-path code and
inlines the same expressions with ``MASK``/``HALF`` (``0 < (a - b) & MASK < HALF`` is
``seq_gt(a, b)``) instead of calling these helpers.
"""

from __future__ import annotations

from typing import Final

MOD: Final = 1 << 32
MASK: Final = MOD - 1
HALF: Final = 1 << 31


def seq_add(a: int, n: int) -> int:
    """``a + n`` wrapped into sequence space (``n`` may be negative)."""
    return (a + n) & MASK


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in ``-2**31 .. 2**31-1``."""
    d = (a - b) & MASK
    return d - MOD if d >= HALF else d


def seq_lt(a: int, b: int) -> bool:
    return ((a - b) & MASK) >= HALF


def seq_le(a: int, b: int) -> bool:
    return a == b or ((a - b) & MASK) >= HALF


def seq_gt(a: int, b: int) -> bool:
    return a != b and ((a - b) & MASK) < HALF


def seq_ge(a: int, b: int) -> bool:
    return ((a - b) & MASK) < HALF


def seq_max(a: int, b: int) -> int:
    return b if seq_lt(a, b) else a


def seq_min(a: int, b: int) -> int:
    return a if seq_lt(a, b) else b


def seq_in_window(s: int, left: int, size: int) -> bool:
    """True if ``left <= s < left + size`` in sequence space (``size`` < 2**31)."""
    return ((s - left) & MASK) < size
