"""Out-of-order queue of one TCP receive stream (RFC 9293 §3.10.7.4, RFC 2018, RFC 2883).

Contract (pure: no I/O, no clock; everything is an argument):

* Positions are **monotonic stream offsets** (Python ints, never mod 2**32): the caller
  (``net/tcp.py``) converts sequence numbers before calling. The queue holds the bytes
  that arrived beyond the caller's in-order point as disjoint, non-adjacent *blocks*.
* :meth:`ReassemblyQueue.insert` stores a segment. Where it overlaps bytes already held,
  the **held bytes win** (the first copy is kept, RFC 9293 leaves the choice to us and
  Linux does the same) and the first already-held sub-range is reported in
  :attr:`InsertResult.duplicate` for a D-SACK block (RFC 2883 §4). Bytes below the
  in-order point (the highest offset ever given to :meth:`pop_ready`) were already
  delivered: they are trimmed off and reported as the duplicate; a segment wholly below
  it, or empty, changes nothing and returns ``accepted=True`` (nothing was *refused*).
* :meth:`ReassemblyQueue.pop_ready` hands back the block contiguous from the caller's new
  in-order point, as a list of chunks (no join), and discards blocks wholly below it.
* :meth:`ReassemblyQueue.sack_blocks` answers RFC 2018 §4 order: the block holding the
  most recent arrival first, then the blocks of the next most recent arrivals, no
  repeats; a block made by merging counts as its newest arrival.

Limits. ``max_blocks`` bounds the number of holes; ``max_bytes`` bounds memory as
*cost* = payload + :data:`CHUNK_OVERHEAD` per stored chunk + :data:`BLOCK_OVERHEAD` per
block, close to what CPython really spends (Linux charges ``truesize``, the skb overhead
included, against ``sk_rcvbuf`` for the same reason: 1-byte segments must not cost
unbounded memory; ``tests/test_reassembly.py`` checks the figures with tracemalloc).
When a segment does not fit, the queue keeps the blocks closest to the in-order point,
because they are the ones that unblock delivery: it
evicts data from the **highest** blocks above the new segment (whole tail chunks, then
whole blocks — Linux ``tcp_prune_ofo_queue`` prunes from the right the same way) and
reports the evicted payload in :attr:`InsertResult.evicted`; if even that cannot make
room (nothing above it), the segment is refused (``accepted=False``; the caller counts a
drop). Nothing is lost silently: refused or evicted bytes are never reported by
:meth:`sack_blocks` afterwards, so the peer retransmits them. Evicting bytes that an
earlier ACK already SACKed is *reneging*, which RFC 2018 §8 permits and obliges the
sender to survive (it keeps SACKed data until it is cumulatively acknowledged).

Cost (issue: a hostile peer sending 1-byte segments with 1-byte gaps, or random tiny
overlapping segments, must cost neither O(n²) time nor unbounded memory):

* Finding the blocks a segment touches is a bisection over the sorted block starts/ends,
  O(log n) for n blocks; adding/removing a block is one list insert/delete (a memmove
  of at most ``max_blocks`` pointers). A segment touching k blocks merges them: O(k),
  and each block is merged away once, so this is amortised O(1).
* A block holds its immutable ``bytes`` chunks in two lists (a reversed front and a
  back, so both ends take O(1) appends; a ``deque`` would cost 760 bytes per block).
  Data is never joined into a whole block: merging concatenates the chunk lists (the
  smaller one is moved into the larger, so every chunk moves O(log n) times at most).
  A ``bytes`` segment that is stored whole is kept without any copy; a segment partly
  held, or given as a ``memoryview``/``bytearray``, costs one copy of its *new* bytes.
* When a segment needs room, the blocks above it are summed from the top until they
  cover the need: O(blocks evicted), or at most ``max_blocks`` additions before a
  refusal (nothing is evicted for a segment that would not fit anyway).
* Fast paths (no allocation beyond a list slot, or one block for a new one) for a
  ``bytes`` segment that overlaps nothing and fits: extending a block at either end,
  or a new block.
  ``benchmarks/micro_reassembly.py`` measures the per-segment cost of each pattern.
* Tiny chunks are coalesced at the joints where a merge or insertion puts two chunks
  side by side, when the two together are at most :data:`COALESCE_LIMIT` bytes: each such
  copy is bounded by the limit, and there are at most two joints per merged block.
  Invariant: within a block, any two neighbouring chunks hold more than
  ``COALESCE_LIMIT`` bytes together, so a block of b bytes has at most
  ``2 * b // COALESCE_LIMIT + 1`` chunks and per-chunk overhead stays a bounded
  fraction of the payload.
* :attr:`ReassemblyQueue.copied_bytes` counts every byte copied (new-data copies,
  coalescing, trimming in :meth:`pop_ready`) and :attr:`ReassemblyQueue.moved_chunks`
  every chunk reference moved between blocks' lists, so tests can assert the bounds
  above with operation counts instead of wall time. Over a stream,
  ``copied_bytes <= bytes given to insert + bytes popped + 2 * COALESCE_LIMIT * inserts``.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Final

__all__ = ["BLOCK_OVERHEAD", "CHUNK_OVERHEAD", "COALESCE_LIMIT", "InsertResult", "ReassemblyQueue"]

#: Bytes charged against ``max_bytes`` per stored chunk on top of its payload: roughly
#: what CPython spends on a small ``bytes`` object plus its list slot.
CHUNK_OVERHEAD: Final = 64
#: Bytes charged per block: the block and chunk-list objects and the queue's list slots
#: (tests/test_reassembly.py compares cost with tracemalloc).
BLOCK_OVERHEAD: Final = 320
#: Neighbouring chunks are joined when together they hold at most this many bytes.
COALESCE_LIMIT: Final = 512
#: How many recently touched blocks are remembered for SACK ordering (>= the 4 blocks a
#: TCP option can carry); older ones are found by their arrival stamp.
_RECENT: Final = 8


@dataclass(frozen=True, slots=True)
class InsertResult:
    """What :meth:`ReassemblyQueue.insert` did with one segment."""

    #: False: new bytes were refused by a limit (the caller counts a drop). True also for
    #: a segment that brought nothing new (empty, or wholly duplicate).
    accepted: bool
    #: First already-held (or already-delivered) ``[start, end)`` sub-range of the
    #: segment, for a D-SACK block (RFC 2883), else None. Reported even when refused.
    duplicate: tuple[int, int] | None
    #: New payload bytes stored by this insert (0 when refused or wholly duplicate).
    stored: int = 0
    #: Payload bytes evicted from higher blocks to make room (never SACKed again).
    evicted: int = 0


_NOTHING: Final = InsertResult(True, None)
#: ``bytes`` under another name: inside ReassemblyQueue the name is its property.
_Bytes = bytes


class _Chunks:
    """The chunks of one block, in order ``reversed(front) + back``; O(1) at both ends.

    Invariants: no chunk is empty; owned by one block (or one insert) at a time.
    """

    __slots__ = ("front", "back")

    def __init__(self, chunk: bytes) -> None:
        #: chunks put in front of the block, last one first (front[-1] is the first chunk).
        self.front: list[bytes] = []
        #: chunks in order after those of ``front``.
        self.back = [chunk]

    def __len__(self) -> int:
        return len(self.front) + len(self.back)

    def first(self) -> bytes:
        return self.front[-1] if self.front else self.back[0]

    def last(self) -> bytes:
        return self.back[-1] if self.back else self.front[0]

    def set_first(self, chunk: bytes) -> None:
        if self.front:
            self.front[-1] = chunk
        else:
            self.back[0] = chunk

    def set_last(self, chunk: bytes) -> None:
        if self.back:
            self.back[-1] = chunk
        else:
            self.front[0] = chunk

    def push_first(self, chunk: bytes) -> None:
        self.front.append(chunk)

    def push_last(self, chunk: bytes) -> None:
        self.back.append(chunk)

    def pop_first(self) -> bytes:
        """Only on the smaller side of a merge: O(its length) at worst."""
        return self.front.pop() if self.front else self.back.pop(0)

    def pop_last(self) -> bytes:
        if not self.back:  # all in front: turn it around once (amortised O(1))
            self.back = self.front[::-1]
            self.front = []
        return self.back.pop()

    def extend_last(self, other: _Chunks) -> None:
        """Append ``other``'s chunks after ours (O(len(other)))."""
        self.back.extend(reversed(other.front))
        self.back.extend(other.back)

    def extend_first(self, other: _Chunks) -> None:
        """Put ``other``'s chunks before ours (O(len(other)))."""
        self.front.extend(reversed(other.back))
        self.front.extend(other.front)

    def as_list(self) -> list[bytes]:
        if not self.front:
            return self.back
        out = self.front[::-1]
        out.extend(self.back)
        return out


class _Block:
    """One contiguous held range ``[start, end)``; owned and mutated by its queue only."""

    __slots__ = ("start", "end", "chunks", "stamp", "alive")

    def __init__(self, start: int, end: int, chunks: _Chunks, stamp: int) -> None:
        #: start < end; the chunks hold exactly the bytes [start, end).
        self.start = start
        self.end = end
        self.chunks = chunks
        #: arrival counter of the newest segment stored in (or duplicated inside) it.
        self.stamp = stamp
        #: False once merged away, popped, evicted or cleared (stale _recent entries).
        self.alive = True

    def cost(self) -> int:
        return self.end - self.start + CHUNK_OVERHEAD * len(self.chunks) + BLOCK_OVERHEAD


class ReassemblyQueue:
    """Out-of-order data of one receive stream, keyed by monotonic stream offsets."""

    def __init__(self, *, max_blocks: int = 256, max_bytes: int) -> None:
        # Nonsense limits are clamped, not raised: 1 block, 0 bytes (= refuse everything).
        self._max_blocks = max(1, max_blocks)
        self._max_bytes = max(0, max_bytes)
        # Parallel, sorted lists: _starts[k] < _ends[k] < _starts[k+1] (disjoint and
        # non-adjacent: touching blocks are merged); _blocks[k] spans them; all >= _base.
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._blocks: list[_Block] = []
        #: highest offset given to pop_ready: everything below it was delivered.
        self._base = 0
        #: sum of block sizes; _cost = _bytes + CHUNK_OVERHEAD * chunks
        #: + BLOCK_OVERHEAD * blocks <= _max_bytes.
        self._bytes = 0
        self._cost = 0
        #: arrival counter (stamps); strictly increasing.
        self._arrivals = 0
        #: recently touched blocks, newest first (a block's first entry is its latest
        #: touch), len <= 2 * _RECENT; may hold dead blocks and repeats. Every live block
        #: not in it is older (smaller stamp) than every live block in it.
        self._recent: list[_Block] = []
        # Operation counters for tests and benchmarks (monotonic).
        self._copied = 0
        self._moved = 0
        self._evicted_total = 0
        self._refused_total = 0
        #: the last plain "stored n bytes" result (immutable, so it can be handed out again)
        self._last_stored = _NOTHING

    # --- queries ------------------------------------------------------------------------

    @property
    def blocks(self) -> int:
        """Number of disjoint held blocks (<= max_blocks)."""
        return len(self._blocks)

    @property
    def bytes(self) -> int:
        """Payload bytes held."""
        return self._bytes

    @property
    def cost(self) -> int:
        """Bytes charged against max_bytes: payload + per-chunk and per-block overhead."""
        return self._cost

    @property
    def end(self) -> int | None:
        """One past the highest held offset, None when empty."""
        return self._ends[-1] if self._ends else None

    @property
    def start(self) -> int | None:
        """Lowest held offset, None when empty."""
        return self._starts[0] if self._starts else None

    @property
    def base(self) -> int:
        """The in-order point: the highest offset given to :meth:`pop_ready` (0 at first)."""
        return self._base

    @property
    def copied_bytes(self) -> int:
        """Total bytes this queue has copied (see the module docstring for the bound)."""
        return self._copied

    @property
    def moved_chunks(self) -> int:
        """Total chunk references moved from one deque to another when blocks merged."""
        return self._moved

    @property
    def evicted_bytes(self) -> int:
        """Total payload evicted to admit lower data."""
        return self._evicted_total

    @property
    def refused_bytes(self) -> int:
        """Total new payload refused by the limits."""
        return self._refused_total

    def held(self) -> list[tuple[int, int]]:
        """Every held ``[start, end)`` range in offset order (diagnostics and tests)."""
        return list(zip(self._starts, self._ends))

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """At most ``limit`` held ranges, most recent arrival's block first (RFC 2018 §4)."""
        if limit <= 0 or not self._blocks:
            return []
        picked: list[_Block] = []
        for blk in self._recent:
            if blk.alive and blk not in picked:
                picked.append(blk)
                if len(picked) >= limit:
                    break
        want = min(limit, len(self._blocks)) - len(picked)
        if want > 0:  # fewer recent live blocks than asked: the rest by arrival stamp
            rest = (b for b in self._blocks if b not in picked)
            picked.extend(heapq.nlargest(want, rest, key=_stamp))
        return [(b.start, b.end) for b in picked]

    # --- insertion ----------------------------------------------------------------------

    def insert(self, start: int, data: _Bytes | bytearray | memoryview) -> InsertResult:
        """Store ``data`` at stream offset ``start``; see the module docstring."""
        ends = self._ends
        if type(data) is bytes and data and start >= self._base:
            # Fast paths for a bytes segment that fits and overlaps nothing.
            n = len(data)
            room = self._max_bytes - self._cost - n - CHUNK_OVERHEAD
            if room >= 0:
                last = len(ends) - 1
                if last >= 0 and start == ends[last]:  # the common case: extends the top
                    return self._append(last, data, n)
                i = bisect_left(ends, start)  # the first block ending at or after start
                end = start + n
                if i <= last and ends[i] == start:  # extends block i...
                    if i == last or self._starts[i + 1] > end:  # ...and reaches no other
                        return self._append(i, data, n)
                elif i > last or self._starts[i] > end:  # touches no block
                    if last + 1 < self._max_blocks and room >= BLOCK_OVERHEAD:
                        self._new_block(i, start, data, n)
                        return self._stored(n)
                elif self._starts[i] == end:  # just below block i (i-1 ends before start)
                    return self._prepend(i, data, n)
        src, whole = _source(data)
        n = len(src)
        if n == 0:
            return _NOTHING
        origin = start  # offset of src[0]
        end = start + n
        dup: tuple[int, int] | None = None
        if start < self._base:
            if end <= self._base:
                return InsertResult(True, (start, end))
            dup = (start, self._base)
            start = self._base
        starts = self._starts
        blocks = self._blocks
        i = bisect_left(ends, start)  # first block ending at or after start
        j = bisect_right(starts, end, i)  # blocks i..j-1 overlap or touch [start, end)
        pieces: list[tuple[int, int]] = []  # the new (not yet held) ranges, in order
        pos = start
        for k in range(i, j):
            bstart = starts[k]
            bend = ends[k]
            if bstart > pos:
                pieces.append((pos, bstart))
            if dup is None:
                lo = bstart if bstart > pos else pos
                hi = bend if bend < end else end
                if lo < hi:
                    dup = (lo, hi)
            if bend > pos:
                pos = bend
        if pos < end:
            pieces.append((pos, end))
        if not pieces:  # wholly inside the one block i: a pure duplicate
            self._touch(blocks[i])
            return InsertResult(True, dup)
        new = 0
        for lo, hi in pieces:
            new += hi - lo
        # Admission: an upper bound (coalescing only lowers the cost afterwards).
        over_blocks = len(blocks) + 1 - (j - i) - self._max_blocks
        over_cost = self._cost + new + CHUNK_OVERHEAD * len(pieces) + BLOCK_OVERHEAD * (1 - (j - i)) - self._max_bytes
        evicted = 0
        if over_cost > 0 or over_blocks > 0:
            if not self._can_free(j, over_cost, over_blocks):
                self._refused_total += new
                return InsertResult(False, dup)
            evicted = self._evict(over_cost, over_blocks)
        if i == j:  # a new block between i-1 and i
            self._new_block(i, start, self._take(src, whole, origin, start, end), new)
        else:  # one block from blocks i..j-1 and the pieces between/around them
            self._arrivals += 1
            self._bytes += new
            # (_join subtracts what coalescing saves; j - i blocks become one)
            self._cost += new + CHUNK_OVERHEAD * len(pieces) - BLOCK_OVERHEAD * (j - i - 1)
            chunks: _Chunks | None = None
            p = 0
            for k in range(i, j):
                old = blocks[k]
                old.alive = False
                if p < len(pieces) and pieces[p][0] < old.start:
                    lo, hi = pieces[p]
                    p += 1
                    chunks = self._join(chunks, _Chunks(self._take(src, whole, origin, lo, hi)))
                chunks = self._join(chunks, old.chunks)
            if p < len(pieces):
                lo, hi = pieces[p]
                chunks = self._join(chunks, _Chunks(self._take(src, whole, origin, lo, hi)))
            assert chunks is not None  # i < j: at least one block joined
            bstart = min(start, starts[i])
            bend = max(end, ends[j - 1])
            blk = _Block(bstart, bend, chunks, self._arrivals)
            starts[i:j] = (bstart,)
            ends[i:j] = (bend,)
            blocks[i:j] = (blk,)
            self._touch(blk, stamp=False)
        if dup is None and not evicted:
            return self._stored(new)
        return InsertResult(True, dup, new, evicted)

    def _new_block(self, i: int, start: int, chunk: _Bytes, n: int) -> None:
        """Insert a block of one chunk at index ``i`` (the caller checked the limits)."""
        self._arrivals += 1
        self._bytes += n
        self._cost += n + CHUNK_OVERHEAD + BLOCK_OVERHEAD
        blk = _Block(start, start + n, _Chunks(chunk), self._arrivals)
        self._starts.insert(i, start)
        self._ends.insert(i, start + n)
        self._blocks.insert(i, blk)
        self._touch(blk, stamp=False)

    def _append(self, i: int, data: _Bytes, n: int) -> InsertResult:
        """Append ``data`` (n > 0 bytes, fits the budget) at the end of block ``i``."""
        blk = self._blocks[i]
        chunks = blk.chunks
        last = chunks.last()
        if len(last) + n <= COALESCE_LIMIT:
            chunks.set_last(last + data)
            self._copied += len(last) + n
            self._cost += n
        else:
            chunks.push_last(data)
            self._cost += n + CHUNK_OVERHEAD
        blk.end += n
        self._ends[i] = blk.end
        return self._grown(blk, n)

    def _prepend(self, i: int, data: _Bytes, n: int) -> InsertResult:
        """Put ``data`` (n > 0 bytes, fits the budget) in front of block ``i``."""
        blk = self._blocks[i]
        chunks = blk.chunks
        first = chunks.first()
        if len(first) + n <= COALESCE_LIMIT:
            chunks.set_first(data + first)
            self._copied += len(first) + n
            self._cost += n
        else:
            chunks.push_first(data)
            self._cost += n + CHUNK_OVERHEAD
        blk.start -= n
        self._starts[i] = blk.start
        return self._grown(blk, n)

    def _grown(self, blk: _Block, n: int) -> InsertResult:
        self._bytes += n
        self._arrivals += 1
        blk.stamp = self._arrivals
        recent = self._recent
        if not recent or recent[0] is not blk:
            self._touch(blk, stamp=False)
        return self._stored(n)

    def _stored(self, n: int) -> InsertResult:
        """``InsertResult(True, None, n, 0)``, reused while segments keep one size."""
        result = self._last_stored
        if result.stored != n:
            result = self._last_stored = InsertResult(True, None, n, 0)
        return result

    def _take(self, src: _Bytes | memoryview, whole: bool, origin: int, lo: int, hi: int) -> _Bytes:
        """The stream bytes ``[lo, hi)`` of a segment starting at ``origin``, as bytes."""
        if whole and lo == origin and hi - lo == len(src):
            assert isinstance(src, _Bytes)
            return src  # an immutable bytes object stored whole: no copy
        self._copied += hi - lo
        return bytes(src[lo - origin : hi - origin])

    def _join(self, left: _Chunks | None, right: _Chunks) -> _Chunks:
        """Concatenate chunk lists (smaller into larger), coalescing tiny chunks at the joint."""
        if left is None:
            return right
        tail = left.last()
        head = right.first()
        if len(tail) + len(head) <= COALESCE_LIMIT:
            joined = tail + head
            self._copied += len(joined)
            self._cost -= CHUNK_OVERHEAD
            if len(left) >= len(right):
                left.set_last(joined)
                right.pop_first()
            else:
                right.set_first(joined)
                left.pop_last()
        if len(left) >= len(right):
            self._moved += len(right)
            left.extend_last(right)
            return left
        self._moved += len(left)
        right.extend_first(left)
        return right

    def _can_free(self, lowest: int, need_cost: int, need_blocks: int) -> bool:
        """Whether evicting blocks ``lowest..`` (from the top) can cover both needs."""
        freed_cost = 0
        freed_blocks = 0
        k = len(self._blocks) - 1
        while k >= lowest and (freed_cost < need_cost or freed_blocks < need_blocks):
            freed_cost += self._blocks[k].cost()
            freed_blocks += 1
            k -= 1
        return freed_cost >= need_cost and freed_blocks >= need_blocks

    def _evict(self, need_cost: int, need_blocks: int) -> int:
        """Free from the top: whole blocks, then tail chunks. Returns the payload evicted."""
        evicted = 0
        blocks = self._blocks
        while need_cost > 0 or need_blocks > 0:
            top = blocks[-1]
            if need_blocks > 0 or top.cost() <= need_cost or len(top.chunks) == 1:
                size = top.end - top.start
                cost = top.cost()
                self._drop_top()
                need_blocks -= 1
            else:  # the top block alone covers the rest: cut chunks off its tail
                chunk = top.chunks.pop_last()
                size = len(chunk)
                cost = size + CHUNK_OVERHEAD
                top.end -= size
                self._ends[-1] = top.end
                self._bytes -= size
                self._cost -= cost
            need_cost -= cost
            evicted += size
        self._evicted_total += evicted
        return evicted

    def _drop_top(self) -> None:
        blk = self._blocks.pop()
        self._starts.pop()
        self._ends.pop()
        blk.alive = False
        self._bytes -= blk.end - blk.start
        self._cost -= blk.cost()

    def _touch(self, blk: _Block, *, stamp: bool = True) -> None:
        """Make ``blk`` the most recent arrival's block (first SACK block)."""
        if stamp:
            self._arrivals += 1
            blk.stamp = self._arrivals
        recent = self._recent
        recent.insert(0, blk)
        if len(recent) > 2 * _RECENT:  # compact: the _RECENT newest distinct live blocks
            kept: list[_Block] = []
            for other in recent:
                if other.alive and other not in kept:
                    kept.append(other)
                    if len(kept) >= _RECENT:
                        break
            self._recent = kept

    # --- delivery -----------------------------------------------------------------------

    def pop_ready(self, offset: int) -> list[_Bytes]:
        """Remove and return the data contiguous from ``offset``, trimmed to start there.

        ``offset`` is the caller's new in-order point; it becomes :attr:`base` (it never
        moves back). Blocks wholly below it are discarded. ``[]`` if no held block starts
        at or before it.
        """
        if offset > self._base:
            self._base = offset
        starts = self._starts
        ends = self._ends
        blocks = self._blocks
        below = bisect_right(ends, offset)  # blocks 0..below-1 end at or before offset
        if below:
            for blk in blocks[:below]:
                blk.alive = False
                self._bytes -= blk.end - blk.start
                self._cost -= blk.cost()
            del starts[:below], ends[:below], blocks[:below]
        if not blocks or starts[0] > offset:
            return []
        blk = blocks[0]
        del starts[0], ends[0], blocks[0]
        blk.alive = False
        self._bytes -= blk.end - blk.start
        self._cost -= blk.cost()
        chunks = blk.chunks.as_list()
        skip = offset - blk.start
        k = 0
        while skip > 0:
            first = chunks[k]
            if len(first) <= skip:
                k += 1
                skip -= len(first)
            else:
                chunks[k] = first[skip:]
                self._copied += len(first) - skip
                skip = 0
        return chunks[k:] if k else chunks

    def clear(self) -> None:
        """Drop everything held (the in-order point and the counters stay)."""
        for blk in self._blocks:
            blk.alive = False
        self._starts.clear()
        self._ends.clear()
        self._blocks.clear()
        self._recent = []
        self._bytes = 0
        self._cost = 0


def _stamp(blk: _Block) -> int:
    return blk.stamp


def _source(data: bytes | bytearray | memoryview) -> tuple[bytes | memoryview, bool]:
    """A sliceable byte view of ``data`` and whether it may be stored as is (immutable)."""
    if type(data) is bytes:
        return data, True
    try:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        return view, False
    except (TypeError, ValueError):  # non-contiguous or exotic buffer: one copy
        return bytes(data), True
