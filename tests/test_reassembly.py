"""ReassemblyQueue: the out-of-order queue (RFC 9293 §3.10.7.4, RFC 2018 §4, RFC 2883).

Costs are asserted with the queue's own operation counters (``copied_bytes``,
``moved_chunks``), never with wall time.
"""

from __future__ import annotations

import array
import itertools
import math
import random
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgslirpy.net.reassembly import (
    BLOCK_OVERHEAD,
    CHUNK_OVERHEAD,
    COALESCE_LIMIT,
    InsertResult,
    ReassemblyQueue,
)

BIG = 1 << 40


def stream(start: int, end: int) -> bytes:
    """The test stream's bytes [start, end): a function of the offset only."""
    return bytes((o * 7 + (o >> 8)) & 0xFF for o in range(start, end))


def check_invariants(q: ReassemblyQueue) -> None:
    """Everything the module documents next to its fields."""
    blocks = q._blocks
    assert q._starts == [b.start for b in blocks]
    assert q._ends == [b.end for b in blocks]
    chunks = 0
    payload = 0
    for k, blk in enumerate(blocks):
        assert blk.alive
        assert blk.start < blk.end
        assert blk.start >= q.base
        if k:
            assert blocks[k - 1].end < blk.start  # disjoint and non-adjacent
        sizes = [len(c) for c in blk.chunks.as_list()]
        assert all(sizes) and sum(sizes) == blk.end - blk.start
        # coalescing invariant: neighbouring chunks together exceed the limit
        assert all(a + b > COALESCE_LIMIT for a, b in itertools.pairwise(sizes))
        assert len(sizes) <= 2 * (blk.end - blk.start) // COALESCE_LIMIT + 1
        chunks += len(sizes)
        payload += blk.end - blk.start
    assert q.bytes == payload
    assert q.cost == payload + CHUNK_OVERHEAD * chunks + BLOCK_OVERHEAD * len(blocks)
    assert q.cost <= q._max_bytes
    assert q.blocks == len(blocks) <= q._max_blocks
    assert sorted(q.sack_blocks(len(blocks) + 1)) == q.held()


def joined(chunks: list[bytes]) -> bytes:
    return b"".join(chunks)


# --- basics ---------------------------------------------------------------------------


def test_out_of_order_then_fill_delivers_in_order() -> None:
    q = ReassemblyQueue(max_bytes=BIG)
    assert q.insert(20, stream(20, 30)) == InsertResult(True, None, 10, 0)
    assert q.insert(10, stream(10, 20)).stored == 10  # touches: one block
    assert q.held() == [(10, 30)] and q.blocks == 1 and q.end == 30 and q.start == 10
    assert q.pop_ready(5) == []  # a hole at 5..10 remains
    # the caller got 5..10 in order, its in-order point is now 10
    assert joined(q.pop_ready(10)) == stream(10, 30)
    assert q.blocks == 0 and q.bytes == 0 and q.cost == 0 and q.end is None
    check_invariants(q)


def test_pop_ready_trims_and_discards_below() -> None:
    q = ReassemblyQueue(max_bytes=BIG)
    q.insert(10, stream(10, 20))
    q.insert(30, stream(30, 40))
    q.insert(50, stream(50, 60))
    # the caller's in-order point jumped to 35 (it received 0..35 in order itself)
    assert joined(q.pop_ready(35)) == stream(35, 40)
    assert q.held() == [(50, 60)] and q.base == 35
    assert q.pop_ready(60) == []  # wholly below: discarded, nothing returned
    assert q.blocks == 0 and q.cost == 0
    check_invariants(q)


def test_pop_ready_never_moves_the_in_order_point_back() -> None:
    q = ReassemblyQueue(max_bytes=BIG)
    q.pop_ready(100)
    q.insert(100, stream(100, 110))
    assert q.pop_ready(50) == []
    assert q.base == 100
    assert joined(q.pop_ready(100)) == stream(100, 110)


# --- overlap: held bytes win, D-SACK range (RFC 2883) ----------------------------------


def test_overlap_keeps_held_bytes_and_reports_first_duplicate() -> None:
    q = ReassemblyQueue(max_bytes=BIG)
    q.insert(10, b"A" * 10)
    q.insert(30, b"C" * 10)
    r = q.insert(5, b"B" * 40)  # covers 5..45: new 5..10, 20..30, 40..45
    assert r == InsertResult(True, (10, 20), 20, 0)  # the FIRST held sub-range
    assert q.held() == [(5, 45)]
    assert joined(q.pop_ready(5)) == b"B" * 5 + b"A" * 10 + b"B" * 10 + b"C" * 10 + b"B" * 5
    check_invariants(q)


def test_pure_duplicate_changes_nothing_but_reports() -> None:
    q = ReassemblyQueue(max_bytes=BIG)
    q.insert(10, stream(10, 30))
    before = (q.bytes, q.cost)
    assert q.insert(12, b"x" * 5) == InsertResult(True, (12, 17), 0, 0)
    assert (q.bytes, q.cost) == before
    assert joined(q.pop_ready(10)) == stream(10, 30)


def test_data_below_the_in_order_point_is_trimmed_and_reported() -> None:
    q = ReassemblyQueue(max_bytes=BIG)
    q.pop_ready(100)
    assert q.insert(80, b"z" * 10) == InsertResult(True, (80, 90))  # wholly old
    assert q.blocks == 0
    r = q.insert(95, stream(95, 110))
    assert r == InsertResult(True, (95, 100), 10, 0)
    assert q.held() == [(100, 110)]
    assert joined(q.pop_ready(100)) == stream(100, 110)


def test_touching_is_not_duplicate() -> None:
    q = ReassemblyQueue(max_bytes=BIG)
    q.insert(10, stream(10, 20))
    q.insert(30, stream(30, 40))
    assert q.insert(20, stream(20, 30)) == InsertResult(True, None, 10, 0)
    assert q.held() == [(10, 40)]


# --- SACK order (RFC 2018 §4) --------------------------------------------------------


def test_sack_blocks_most_recent_arrival_first() -> None:
    q = ReassemblyQueue(max_bytes=BIG)
    q.insert(30, stream(30, 40))
    q.insert(10, stream(10, 20))
    q.insert(50, stream(50, 60))
    assert q.sack_blocks(4) == [(50, 60), (10, 20), (30, 40)]
    assert q.sack_blocks(2) == [(50, 60), (10, 20)]
    assert q.sack_blocks(0) == [] and q.sack_blocks(-1) == []
    q.insert(20, stream(20, 25))  # extends 10..20: the merged block is the newest
    assert q.sack_blocks(4) == [(10, 25), (50, 60), (30, 40)]
    q.insert(25, stream(25, 30))  # joins 10..25 with 30..40
    assert q.sack_blocks(4) == [(10, 40), (50, 60)]
    q.insert(52, stream(52, 55))  # a duplicate inside 50..60 is the latest arrival
    assert q.sack_blocks(1) == [(50, 60)]


def test_sack_order_survives_many_blocks_and_pops() -> None:
    # more blocks than the recent list remembers: the rest come by arrival stamp
    q = ReassemblyQueue(max_bytes=BIG)
    order = [7, 3, 11, 1, 9, 5, 13, 15, 17, 19, 21, 2]
    for n in order:
        q.insert(n * 10, stream(n * 10, n * 10 + 5))
    want = [(n * 10, n * 10 + 5) for n in reversed(order)]
    assert q.sack_blocks(len(order)) == want
    q.pop_ready(40)  # discards 10.., 20.., 30..
    want = [b for b in want if b[0] >= 40]
    assert q.sack_blocks(4) == want[:4]
    assert q.sack_blocks(100) == want
    check_invariants(q)


def test_sack_order_with_repeated_touches_and_merges() -> None:
    """Far more touches than the recent list holds: order is still by latest arrival."""
    q = ReassemblyQueue(max_bytes=BIG)
    latest: dict[int, int] = {}  # block start -> arrival number
    rng = random.Random(3)
    for n in range(40):  # 40 blocks 100 bytes apart
        q.insert(n * 100, stream(n * 100, n * 100 + 10))
        latest[n * 100] = n
    for t in range(40, 140):  # duplicates inside random blocks, and extensions
        n = rng.randrange(40)
        if t % 3:
            q.insert(n * 100 + 2, b"dup")
        else:
            end = dict(q.held())[n * 100]
            q.insert(end, stream(end, end + 1))
        latest[n * 100] = t
        want = sorted(latest, key=lambda s: latest[s], reverse=True)
        assert [b[0] for b in q.sack_blocks(4)] == want[:4]
    assert [b[0] for b in q.sack_blocks(40)] == want
    check_invariants(q)


# --- limits --------------------------------------------------------------------------


def test_max_blocks_refuses_higher_and_evicts_for_lower() -> None:
    q = ReassemblyQueue(max_blocks=3, max_bytes=BIG)
    for n in (10, 20, 30):
        assert q.insert(n, b"x").accepted
    r = q.insert(40, b"y")  # above everything: nothing to evict for it
    assert r == InsertResult(False, None)
    assert q.refused_bytes == 1
    r = q.insert(5, b"w")  # lower: the highest block (30) makes room
    assert r == InsertResult(True, None, 1, 1)
    assert q.held() == [(5, 6), (10, 11), (20, 21)]
    assert (30, 31) not in q.sack_blocks(4)  # evicted bytes are never SACKed
    assert q.evicted_bytes == 1
    r = q.insert(11, b"m" * 4)  # merging into a held block needs no new hole
    assert r.accepted and r.evicted == 0 and q.held() == [(5, 6), (10, 15), (20, 21)]
    check_invariants(q)


def test_max_bytes_counts_chunk_overhead_and_evicts_tail_chunks() -> None:
    mss = 1000
    q = ReassemblyQueue(max_bytes=4 * (mss + CHUNK_OVERHEAD) + BLOCK_OVERHEAD)
    for k in range(4):  # one block 10000..14000 of four chunks
        assert q.insert(10_000 + k * mss, stream(10_000 + k * mss, 10_000 + (k + 1) * mss)).accepted
    assert q.cost == q._max_bytes
    assert not q.insert(20_000, b"\0" * 10).accepted  # higher than all: refused
    # lower: a new block needs mss + both overheads: two tail chunks of the high block go
    r = q.insert(1_000, stream(1_000, 1_000 + mss))
    assert r.accepted and r.evicted == 2 * mss
    assert q.held() == [(1_000, 2_000), (10_000, 12_000)]
    # needs more than its two chunks without the block: the whole high block goes
    r = q.insert(3_000, stream(3_000, 3_000 + 2 * mss))
    assert r.accepted and r.evicted == 2 * mss
    assert q.held() == [(1_000, 2_000), (3_000, 5_000)]
    # nothing above it to evict: refused, nothing evicted
    r = q.insert(8_000, stream(8_000, 9_000))
    assert r == InsertResult(False, None) and q.held() == [(1_000, 2_000), (3_000, 5_000)]
    # a lower one that would not fit even with everything above it gone: the same
    r = q.insert(2_100, stream(2_100, 2_900))  # lower: tail chunk(s) of 3000..5000 go
    assert r.accepted and r.evicted in (mss, 2 * mss)
    assert q.held()[:2] == [(1_000, 2_000), (2_100, 2_900)]
    assert q.held()[2:] == ([(3_000, 4_000)] if r.evicted == mss else [])
    check_invariants(q)
    per_block = CHUNK_OVERHEAD + BLOCK_OVERHEAD
    q = ReassemblyQueue(max_bytes=110 + 2 * per_block + 170)
    q.insert(1_000, stream(1_000, 1_100))
    q.insert(5_000, stream(5_000, 5_010))
    # above 1000..1100 only 5000..5010 could go, and that would not make room
    r = q.insert(2_000, stream(2_000, 2_300))
    assert r == InsertResult(False, None) and q.held() == [(1_000, 1_100), (5_000, 5_010)]
    check_invariants(q)


def test_segment_larger_than_the_budget_is_refused_whole() -> None:
    q = ReassemblyQueue(max_bytes=100 + BLOCK_OVERHEAD)
    assert not q.insert(0, b"x" * 100).accepted  # 100 + overheads > the budget
    assert q.blocks == 0 and q.cost == 0
    assert q.insert(0, b"x" * (100 - CHUNK_OVERHEAD)).accepted


def test_refused_segment_still_reports_its_duplicate() -> None:
    q = ReassemblyQueue(max_bytes=10 + CHUNK_OVERHEAD + BLOCK_OVERHEAD + 5)
    q.insert(10, stream(10, 20))
    r = q.insert(15, stream(15, 45))  # 25 new bytes do not fit; 15..20 was held
    assert r == InsertResult(False, (15, 20))
    assert q.held() == [(10, 20)] and q.refused_bytes == 25
    check_invariants(q)


# --- copies ---------------------------------------------------------------------------


def test_whole_bytes_segments_are_stored_without_copy() -> None:
    q = ReassemblyQueue(max_bytes=BIG)
    mss = 1448
    segs = [stream(mss * k, mss * (k + 1)) for k in range(1, 200)]
    for k, seg in enumerate(segs, start=1):
        q.insert(mss * k, seg)  # each extends the last block
    assert q.copied_bytes == 0
    assert q.blocks == 1
    out = q.pop_ready(mss)
    assert all(a is b for a, b in zip(out, segs))  # the very objects, not copies
    assert q.moved_chunks <= 200


def test_memoryview_and_bytearray_input_are_copied_not_aliased() -> None:
    q = ReassemblyQueue(max_bytes=BIG)
    buf = bytearray(b"hello world")
    q.insert(10, memoryview(buf)[6:])  # "world" at 10..15
    q.insert(0, buf)  # "hello world" at 0..11: the held "w" at 10 wins
    buf[:] = b"XXXXXXXXXXX"
    assert joined(q.pop_ready(0)) == b"hello worlworld"
    q2 = ReassemblyQueue(max_bytes=BIG)
    words = array.array("H", [0x4142, 0x4344])
    q2.insert(5, memoryview(words))  # a non-byte format counts bytes, not items
    assert q2.held() == [(5, 9)]
    assert joined(q2.pop_ready(5)) == words.tobytes()


def test_memoryview_content_is_snapshotted() -> None:
    q = ReassemblyQueue(max_bytes=BIG)
    buf = bytearray(b"abcdef")
    q.insert(3, memoryview(buf))
    buf[:] = b"zzzzzz"
    assert joined(q.pop_ready(3)) == b"abcdef"


def test_odd_inputs_never_raise() -> None:
    q = ReassemblyQueue(max_blocks=0, max_bytes=-5)  # clamped: 1 block, 0 bytes
    assert q.insert(0, b"") == InsertResult(True, None)
    assert q.insert(-10, b"") == InsertResult(True, None)
    assert not q.insert(10, b"x").accepted
    q = ReassemblyQueue(max_bytes=BIG)
    assert q.insert(-5, b"abcdefgh") == InsertResult(True, (-5, 0), 3, 0)
    assert joined(q.pop_ready(0)) == b"fgh"
    assert q.pop_ready(-100) == []
    q.insert(10, b"x")
    q.clear()
    assert q.blocks == 0 and q.cost == 0 and q.sack_blocks(4) == [] and q.end is None
    q.insert(10, b"y")
    assert q.sack_blocks(4) == [(10, 11)]


# --- hostile patterns: operation counts, bounded memory -----------------------------


def _hostile_gaps(n: int, max_blocks: int, max_bytes: int) -> ReassemblyQueue:
    """1-byte segments with 1-byte gaps, then the gaps, in a shuffled order."""
    q = ReassemblyQueue(max_blocks=max_blocks, max_bytes=max_bytes)
    rng = random.Random(n)
    evens = list(range(2, 2 * n, 2))
    rng.shuffle(evens)
    odds = list(range(1, 2 * n, 2))
    rng.shuffle(odds)
    for o in evens + odds:
        q.insert(o, stream(o, o + 1))
        assert q.cost <= max_bytes and q.blocks <= max_blocks
    return q


@pytest.mark.parametrize("n", [1000, 4000])
def test_hostile_one_byte_gaps_cost_is_linear(n: int) -> None:
    q = _hostile_gaps(n, max_blocks=BIG, max_bytes=BIG)
    inserts = 2 * n - 1
    check_invariants(q)
    assert q.held() == [(1, 2 * n)]
    data = joined(q.pop_ready(1))
    assert data == stream(1, 2 * n)
    # linear: input bytes + popped bytes + a bounded coalescing copy per insert
    assert q.copied_bytes <= inserts + len(data) + 2 * COALESCE_LIMIT * inserts
    # smaller-into-larger merging: O(n log n) chunk moves at most
    assert q.moved_chunks <= inserts * (math.log2(inserts) + 1)


def test_hostile_one_byte_gaps_bounded_by_limits() -> None:
    max_bytes = 64 * 1024
    q = _hostile_gaps(20_000, max_blocks=256, max_bytes=max_bytes)
    check_invariants(q)
    assert q.blocks <= 256 and q.cost <= max_bytes
    # what is held is the stream, whatever was evicted or refused
    for lo, hi in q.held():
        assert joined(q.pop_ready(lo)) == stream(lo, hi)


def test_random_tiny_overlapping_segments_stay_bounded_and_linear() -> None:
    rng = random.Random(8)
    max_bytes = 32 * 1024
    q = ReassemblyQueue(max_blocks=64, max_bytes=max_bytes)
    rcv = 0
    given_bytes = 0
    popped = 0
    inserts = 0
    for step in range(20_000):
        start = rcv + rng.randrange(1, 4000)
        size = rng.randrange(1, 9)
        q.insert(start, stream(start, start + size))
        inserts += 1
        given_bytes += size
        assert q.cost <= max_bytes and q.blocks <= 64
        if step % 50 == 0:  # the in-order stream moves on
            rcv += rng.randrange(0, 200)
            got = joined(q.pop_ready(rcv))
            assert got == stream(rcv, rcv + len(got))
            rcv += len(got)
            popped += len(got)
        if step % 1000 == 0:
            check_invariants(q)
    check_invariants(q)
    assert q.copied_bytes <= given_bytes + popped + 2 * COALESCE_LIMIT * inserts
    for lo, hi in q.held():
        assert joined(q.pop_ready(lo)) == stream(lo, hi)


def test_coalescing_bounds_chunk_count() -> None:
    q = ReassemblyQueue(max_bytes=BIG)
    for o in range(1, 5001):  # 1-byte segments, each extending the block
        q.insert(o, stream(o, o + 1))
    check_invariants(q)
    assert len(q._blocks[0].chunks) <= 2 * 5000 // COALESCE_LIMIT + 1
    q = ReassemblyQueue(max_bytes=BIG)
    for o in range(5000, 0, -1):  # 1-byte segments, each in front of the block
        q.insert(o, stream(o, o + 1))
    check_invariants(q)
    assert len(q._blocks[0].chunks) <= 2 * 5000 // COALESCE_LIMIT + 1
    assert joined(q.pop_ready(1)) == stream(1, 5001)
    assert q.cost < 5000 * 2  # not 5000 * (1 + CHUNK_OVERHEAD)
    assert q.copied_bytes <= 5000 * COALESCE_LIMIT


@pytest.mark.parametrize("pattern", ["gaps", "tiny_extend", "mss_extend", "mss_gaps"])
def test_cost_tracks_real_memory(pattern: str) -> None:
    """The charged cost is close to what tracemalloc sees the queue allocate."""
    n = 2000
    segs: dict[str, Callable[[int], tuple[int, bytes]]] = {
        "gaps": lambda k: (2 * k + 2, bytes([k & 255])),
        "tiny_extend": lambda k: (k + 2, bytes([k & 255])),
        "mss_extend": lambda k: ((k + 1) * 1448, bytes([k & 255]) * 1448),
        "mss_gaps": lambda k: ((2 * k + 1) * 1448, bytes([k & 255]) * 1448),
    }
    make = segs[pattern]
    tracemalloc.start()
    try:
        q = ReassemblyQueue(max_blocks=BIG, max_bytes=BIG)
        before = tracemalloc.get_traced_memory()[0]
        for k in range(n):
            q.insert(*make(k))  # the segment is made while traced: it is held
        real = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.6 * q.cost <= real <= 1.4 * q.cost


# --- property: against a bytearray + presence bitmap -----------------------------------

N = 256
SPAN = 4096  # > every offset a generated sequence can reach

_insert = st.tuples(st.just("ins"), st.integers(-8, N - 1), st.integers(0, 40), st.integers(0, 255))
_advance = st.tuples(st.just("adv"), st.integers(0, 30), st.just(0), st.just(0))
_ops = st.lists(st.one_of(_insert, _insert, _advance), max_size=60)


class Reference:
    """The simplest model: one byte array, a presence bitmap, arrival stamps."""

    def __init__(self) -> None:
        self.data = bytearray(SPAN)
        self.present = [False] * SPAN
        self.base = 0
        self.arrivals: list[tuple[int, int, int]] = []  # (stamp, start, end)

    def insert(self, start: int, payload: bytes) -> tuple[int, int] | None:
        end = start + len(payload)
        if not payload:
            return None
        if end <= self.base:
            return (start, end)
        dup: tuple[int, int] | None = (start, self.base) if start < self.base else None
        lo = max(start, self.base)
        for o in range(lo, end):
            if dup is None and self.present[o]:
                hi = o
                while hi < end and self.present[hi]:
                    hi += 1
                dup = (o, hi)
        for o in range(lo, end):
            if not self.present[o]:
                self.present[o] = True
                self.data[o] = payload[o - start]
        self.arrivals.append((len(self.arrivals), lo, end))
        return dup

    def ranges(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        o = 0
        while o < len(self.present):
            if self.present[o]:
                s = o
                while o < len(self.present) and self.present[o]:
                    o += 1
                out.append((s, o))
            o += 1
        return out

    def sack_order(self) -> list[tuple[int, int]]:
        def stamp(r: tuple[int, int]) -> int:
            return max(a for a, s, e in self.arrivals if r[0] <= s and e <= r[1])

        return sorted(self.ranges(), key=stamp, reverse=True)

    def pop(self, offset: int) -> bytes:
        self.base = max(self.base, offset)
        end = offset
        while end < len(self.present) and self.present[end]:
            end += 1
        out = bytes(self.data[offset:end]) if end > offset else b""
        for o in range(0, max(end, self.base)):
            self.present[o] = False
        self.base = max(self.base, end)
        return out


@settings(max_examples=400, deadline=None)
@given(_ops)
def test_property_matches_reference_model(ops: list[tuple[str, int, int, int]]) -> None:
    q = ReassemblyQueue(max_bytes=BIG)
    ref = Reference()
    rcv = 0
    for kind, a, b, c in ops:
        if kind == "ins":
            payload = bytes((c + i) & 0xFF for i in range(b))
            start = rcv + a  # a < 0: partly or wholly below the in-order point
            want_dup = ref.insert(start, payload)
            data: bytes | bytearray | memoryview = payload
            if c % 3 == 1:
                data = memoryview(payload)  # the copying (general) path
            elif c % 3 == 2:
                data = bytearray(payload)
            r = q.insert(start, data)
            assert r.accepted and r.evicted == 0
            assert r.duplicate == want_dup
        else:
            rcv += a  # in-order data the caller took itself, then what the queue has
            got = joined(q.pop_ready(rcv))
            assert got == ref.pop(rcv)
            rcv += len(got)
            if got:
                assert q.pop_ready(rcv) == [] and ref.pop(rcv) == b""
        check_invariants(q)
        assert q.held() == ref.ranges()
        assert q.sack_blocks(N) == ref.sack_order()
        assert q.sack_blocks(3) == ref.sack_order()[:3]


@settings(max_examples=300, deadline=None)
@given(_ops, st.integers(1, 4), st.integers(0, 400))
def test_property_with_limits_holds_only_stream_bytes(
    ops: list[tuple[str, int, int, int]], max_blocks: int, max_bytes: int
) -> None:
    """Under eviction/refusal: bounded, and whatever is held or popped is the stream."""
    q = ReassemblyQueue(max_blocks=max_blocks, max_bytes=max_bytes)
    rcv = 0
    for kind, a, b, _ in ops:
        if kind == "ins":
            before = q.held()
            start, end = rcv + a, rcv + a + b
            r = q.insert(start, stream(start, end))
            if not r.accepted:
                assert q.held() == before
            # eviction only ever takes bytes above the new segment (lowest blocks kept)
            lost = _byte_set(before) - _byte_set(q.held())
            assert all(o >= end for o in lost)
            assert len(lost) == r.evicted
        else:
            rcv += a
            got = joined(q.pop_ready(rcv))
            assert got == stream(rcv, rcv + len(got))
            rcv += len(got)
        check_invariants(q)
        for lo, hi in q.held():
            assert joined(list(_peek(q, lo))) == stream(lo, hi)


def _byte_set(ranges: list[tuple[int, int]]) -> set[int]:
    return {o for lo, hi in ranges for o in range(lo, hi)}


def _peek(q: ReassemblyQueue, start: int) -> list[bytes]:
    k = q._starts.index(start)
    return q._blocks[k].chunks.as_list()
