"""The sender's SACK scoreboard: which stream ranges the peer reported holding (RFC 6675 §3).

Pure and in monotonic stream offsets (tcp-core converts sequence numbers first). The
scoreboard is a sorted list of disjoint, non-adjacent ``[start, end)`` ranges kept as two
parallel lists of edges, so a lookup is a :func:`bisect` (O(log n)) and adding a block
touches only the ranges it overlaps. :meth:`SackScoreboard.add` returns the sub-ranges
that were *newly* SACKed, so the caller walks only segments whose state really changed:
per-ACK work does not grow with the window even though every ACK repeats its blocks.

:func:`classify_dsack` implements the receiver-side D-SACK rule of RFC 2883 §4: the first
block of an ACK reports a duplicate when it lies below the cumulative ACK or inside the
second block.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

__all__ = ["SackScoreboard", "classify_dsack"]


class SackScoreboard:
    """Disjoint SACKed ranges above the cumulative ACK point."""

    __slots__ = ("_starts", "_ends", "bytes")

    def __init__(self) -> None:
        #: left edges, ascending; _starts[i] < _ends[i] < _starts[i + 1] (never adjacent).
        self._starts: list[int] = []
        #: right edges (exclusive), parallel to _starts.
        self._ends: list[int] = []
        #: total bytes covered (sum of end - start).
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def highest(self) -> int | None:
        """One past the highest SACKed byte, None when empty (RFC 6675 HighSACK + 1)."""
        return self._ends[-1] if self._ends else None

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends))

    def add(self, start: int, end: int) -> list[tuple[int, int]]:
        """Record ``[start, end)`` as SACKed; return the newly covered sub-ranges, ascending."""
        if end <= start:
            return []
        starts, ends = self._starts, self._ends
        # first range that ends at or after start (could merge/overlap), last that starts <= end
        i = bisect_left(ends, start)
        j = bisect_right(starts, end)
        if i == j:  # touches nothing: plain insert
            starts.insert(i, start)
            ends.insert(i, end)
            self.bytes += end - start
            return [(start, end)]
        new: list[tuple[int, int]] = []
        pos = start
        for k in range(i, j):
            s, e = starts[k], ends[k]
            if s > pos:
                new.append((pos, min(s, end)))
            if e > pos:
                pos = e
        if pos < end:
            new.append((pos, end))
        if not new:
            return new
        lo = min(start, starts[i])
        hi = max(end, ends[j - 1])
        self.bytes -= sum(ends[k] - starts[k] for k in range(i, j))
        starts[i:j] = [lo]
        ends[i:j] = [hi]
        self.bytes += hi - lo
        return new

    def covers(self, start: int, end: int) -> bool:
        """True if all of ``[start, end)`` is SACKed."""
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def advance(self, una: int) -> None:
        """Forget everything below the cumulative ACK point ``una``."""
        starts, ends = self._starts, self._ends
        if not starts or starts[0] >= una:
            return
        k = bisect_right(ends, una)
        if k:
            self.bytes -= sum(ends[x] - starts[x] for x in range(k))
            del starts[:k], ends[:k]
        if starts and starts[0] < una:
            self.bytes -= una - starts[0]
            starts[0] = una

    def clear(self) -> None:
        self._starts.clear()
        self._ends.clear()
        self.bytes = 0


def classify_dsack(blocks: list[tuple[int, int]], una: int) -> bool:
    """RFC 2883 §4: True if the first of ``blocks`` (stream offsets) is a D-SACK block."""
    if not blocks:
        return False
    s0, e0 = blocks[0]
    if e0 <= una:
        return True
    if len(blocks) > 1:
        s1, e1 = blocks[1]
        return s1 <= s0 and e0 <= e1
    return False
