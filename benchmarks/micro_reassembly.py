"""Micro-benchmark of the TCP out-of-order queue (``wgslirpy.net.reassembly``).

Usage: ``python benchmarks/micro_reassembly.py [--segments N] [--repeat N]``

Prints microseconds per segment (best of ``--repeat`` runs, so other load on the machine
inflates the figures as little as possible) for several arrival patterns, each for the
:class:`ReassemblyQueue` and for a baseline measured in the same run: the list-of-blocks
algorithm ``net/tcp.py`` used before (``_ooo_insert``/``_reassemble``: a linear scan per
segment and ``bytes`` concatenation on every merge), rewritten here on stream offsets.

Patterns (MSS 1448 unless said otherwise):

* ``extend``: one hole at the front, every later segment extends the last block (the
  common case while a loss is being repaired);
* ``reorder``: the receive path of a link with 10 % reordering (a segment displaced by
  up to 3 positions): in-order data is taken directly, the rest is queued, and the queue
  is drained (``pop_ready``) whenever a hole fills;
* ``sack``: ``sack_blocks(3)`` after each segment of the ``reorder`` pattern (extra cost);
* ``gaps``: a hostile peer: 1-byte segments with 1-byte gaps in random order, then the
  gaps (baseline: unbounded list, quadratic; queue: default ``max_blocks`` 256 and a
  256 KiB budget, so most are refused or evict);
* ``overlap``: random tiny (1-8 byte) overlapping segments within a 4 KiB window.

No network and no files are touched.
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wgslirpy.net.reassembly import ReassemblyQueue

MSS = 1448
Segments = list[tuple[int, bytes]]


class LegacyOoo:
    """The previous algorithm of net/tcp.py, on stream offsets (the baseline)."""

    def __init__(self) -> None:
        self.ooo: list[tuple[int, bytes]] = []  # sorted, disjoint, non-adjacent
        self.last = 0

    @property
    def blocks(self) -> int:
        return len(self.ooo)

    def insert(self, start: int, data: bytes) -> None:
        end = start + len(data)
        merged = data
        out: list[tuple[int, bytes]] = []
        placed = False
        for bstart, bdata in self.ooo:
            bend = bstart + len(bdata)
            if bend < start:
                out.append((bstart, bdata))
            elif bstart > end:
                if not placed:
                    out.append((start, merged))
                    placed = True
                out.append((bstart, bdata))
            else:
                if bstart < start:
                    merged = bdata[: start - bstart] + merged
                    start = bstart
                if bend > end:
                    merged = merged + bdata[end - bstart :]
                    end = bend
        if not placed:
            out.append((start, merged))
        self.ooo = out
        self.last = start

    def pop_ready(self, rcv: int) -> list[bytes]:
        got: list[bytes] = []
        while self.ooo:
            bstart, bdata = self.ooo[0]
            if bstart > rcv:
                break
            del self.ooo[0]
            skip = rcv - bstart
            if skip < len(bdata):
                got.append(bdata[skip:])
                rcv += len(bdata) - skip
        return got

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        blocks = [(s, s + len(d)) for s, d in self.ooo]
        for i, (left, right) in enumerate(blocks):
            if left <= self.last < right:
                if i:
                    blocks.insert(0, blocks.pop(i))
                break
        return blocks[:limit]


def extend_pattern(n: int) -> Segments:
    return [(k * MSS, bytes(MSS)) for k in range(1, n + 1)]


def reorder_pattern(n: int, rng: random.Random) -> Segments:
    order = list(range(n))
    for i in range(n - 1):
        if rng.random() < 0.10:
            j = min(n - 1, i + rng.randint(1, 3))
            order[i], order[j] = order[j], order[i]
    return [(k * MSS, bytes(MSS)) for k in order]


def gaps_pattern(n: int, rng: random.Random) -> Segments:
    evens = list(range(2, 2 * n, 2))
    odds = list(range(1, 2 * n, 2))
    rng.shuffle(evens)
    rng.shuffle(odds)
    return [(o, b"x") for o in evens + odds]


def overlap_pattern(n: int, rng: random.Random) -> Segments:
    out: Segments = []
    for _ in range(n):
        start = 1 + rng.randrange(4096)
        out.append((start, bytes(rng.randint(1, 8))))
    return out


def run_receiver(make: Callable[[], object], segs: Segments, *, sack: bool) -> None:
    """The receive path: take in-order data, queue the rest, drain when a hole fills."""
    q = make()
    insert = q.insert  # type: ignore[attr-defined]
    pop_ready = q.pop_ready  # type: ignore[attr-defined]
    sack_blocks = q.sack_blocks  # type: ignore[attr-defined]
    rcv = 0
    for start, data in segs:
        if start == rcv:
            rcv += len(data)
            if q.blocks:  # type: ignore[attr-defined]
                for chunk in pop_ready(rcv):
                    rcv += len(chunk)
        elif start > rcv:
            insert(start, data)
        if sack:
            sack_blocks(3)


def run_inserts(make: Callable[[], object], segs: Segments, *, sack: bool) -> None:
    q = make()
    insert = q.insert  # type: ignore[attr-defined]
    for start, data in segs:
        insert(start, data)


def queued(segs: Segments) -> int:
    """How many segments of the receive path go into the queue (not in order)."""
    rcv = 0
    held: dict[int, int] = {}
    count = 0
    for start, data in segs:
        if start == rcv:
            rcv += len(data)
            while rcv in held:
                rcv += held.pop(rcv)
        elif start > rcv:
            held[start] = len(data)
            count += 1
    return count


def best_us(run: Callable[[], None], ops: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best / ops * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segments", type=int, default=4000, help="segments per pattern")
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure (best is shown)")
    args = ap.parse_args()
    n = max(10, args.segments)
    rng = random.Random(8)

    def queue() -> ReassemblyQueue:
        return ReassemblyQueue(max_bytes=1 << 40)

    def bounded() -> ReassemblyQueue:
        return ReassemblyQueue(max_blocks=256, max_bytes=256 * 1024)

    reorder = reorder_pattern(n, rng)
    cases: list[tuple[str, Segments, Callable[..., None], Callable[[], object], bool]] = [
        ("extend", extend_pattern(n), run_inserts, queue, False),
        ("reorder", reorder, run_receiver, queue, False),
        ("reorder+sack", reorder, run_receiver, queue, True),
        ("gaps", gaps_pattern(n // 2, rng), run_inserts, bounded, False),
        ("overlap", overlap_pattern(n, rng), run_inserts, bounded, False),
    ]
    print(
        "us per queued segment (inserted into the queue; the reorder pattern takes most"
        " segments in order, and its figure includes the in-order path and pop_ready)"
    )
    print(f"{'pattern':14} {'segments':>8} {'queued':>7} {'queue us':>9} {'baseline us':>12} {'ratio':>7}")
    for name, segs, runner, make, sack in cases:
        ops = queued(segs) if runner is run_receiver else len(segs)
        new = best_us(functools.partial(runner, make, segs, sack=sack), ops, args.repeat)
        old = best_us(functools.partial(runner, LegacyOoo, segs, sack=sack), ops, args.repeat)
        print(f"{name:14} {len(segs):8d} {ops:7d} {new:9.2f} {old:12.2f} {old / new:6.1f}x")
    q = ReassemblyQueue(max_bytes=1 << 40)
    for start, data in gaps_pattern(n // 2, rng):
        q.insert(start, data)
    print(
        f"gaps, unbounded queue: {q.copied_bytes} bytes copied for {n - 1} one-byte"
        f" segments, {q.moved_chunks} chunk moves, cost {q.cost} bytes"
    )


if __name__ == "__main__":
    main()
