"""Loss detection for one TCP sender: sent-segment records, SACK scoreboard, RACK (RFC 8985).

Pure, in monotonic stream offsets (offset 0 is the first byte after the SYN; a FIN takes
one offset) and seconds. ``net/tcp.py`` owns the byte buffer and the state machine; this
module owns *what is in flight*:

* one :class:`Sent` record per transmitted segment, in offset order (``records[head:]``,
  with a parallel list of start offsets for :func:`bisect`); a retransmission resends the
  same record, so SACK blocks (which the peer builds from our segments) cover whole
  records;
* the counters of RFC 6675's ``pipe`` in Linux's form: ``pipe = outstanding - sacked_out -
  lost_out + retrans_out`` (+ ``reno_sacked``, one MSS per duplicate ACK when the peer has
  no SACK, RFC 6582 / RFC 3042 limited transmit);
* the SACK scoreboard (:class:`~wgslirpy.net.sack.SackScoreboard`): only *newly* SACKed
  ranges touch records, so an ACK repeating its blocks costs O(log n);
* RACK (RFC 8985 §6): a deque of (send time, record) in send order (made by a send, dropped
  when drained, so an idle flow holds none); loss detection walks it
  from the oldest send and stops at the first segment not yet overdue, so each ACK costs
  amortized O(1) per segment, whatever the window;
* a heap of records marked lost and not yet retransmitted: the lowest goes first
  (RFC 6675 NextSeg rule 1); what the peer SACKed is never resent, also after an RTO.

Invariants (checked by the tests): ``sacked_out``, ``lost_out``, ``retrans_out`` equal the
byte sums over ``records[head:]`` of sacked, lost-and-not-sacked, and retransmitted-in-
flight records; ``una <= records[head].start`` when records remain; every record ends at or
below ``snd_max``.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass

from wgslirpy.net.rack import RackState
from wgslirpy.net.sack import SackScoreboard, classify_dsack

__all__ = ["Sent", "AckResult", "SentQueue"]

#: a reordering timer firing at its computed time must find the segment overdue even
#: when float rounding leaves a remainder of a few ulps.
_EPSILON = 1e-9


class Sent:
    """One transmitted segment: ``[start, end)`` in stream offsets (``fin``: end includes it)."""

    __slots__ = ("start", "end", "fin", "xmit_ts", "gen", "sacked", "lost", "retrans", "ever_retrans")

    def __init__(self, start: int, end: int, fin: bool, now: float) -> None:
        self.start = start
        self.end = end
        self.fin = fin
        #: time of the latest (re)transmission.
        self.xmit_ts = now
        #: bumped on every transmission; stale RACK queue entries carry an older one.
        self.gen = 0
        #: the peer SACKed all of it.
        self.sacked = False
        #: marked lost (counted in lost_out) until delivered.
        self.lost = False
        #: a retransmission of it is in flight (counted in retrans_out).
        self.retrans = False
        #: it was retransmitted at least once (Karn: no RTT sample from it).
        self.ever_retrans = False

    def __repr__(self) -> str:
        f = "S" * self.sacked + "L" * self.lost + "R" * self.retrans
        return f"<Sent {self.start}-{self.end} {f}>"


@dataclass(slots=True)
class AckResult:
    """What one ACK changed."""

    #: bytes newly delivered: cumulatively ACKed (not SACKed before) + newly SACKed.
    delivered: int = 0
    #: bytes newly SACKed.
    sacked: int = 0
    #: the D-SACK block (stream offsets) if the ACK carried one (RFC 2883).
    dsack: tuple[int, int] | None = None
    #: the D-SACK block covered a record we had retransmitted.
    dsack_retransmitted: bool = False
    #: a retransmitted record was delivered by this ACK.
    retransmitted_acked: bool = False
    #: RTT sample (seconds) from the newest never-retransmitted record this ACK delivered
    #: (Karn-safe, at the caller's clock resolution rather than the 1 ms of timestamps).
    rtt: float | None = None


class SentQueue:
    """Everything in flight for one sender; see the module docstring."""

    def __init__(self) -> None:
        self.records: list[Sent] = []
        self._starts: list[int] = []
        #: records[:head] are acknowledged and only wait for compaction.
        self.head = 0
        #: cumulative ACK point (stream offset).
        self.una = 0
        #: one past the highest offset ever sent.
        self.snd_max = 0
        self.sacked_out = 0
        self.lost_out = 0
        self.retrans_out = 0
        #: non-SACK peers: bytes assumed delivered by duplicate ACKs since the last new ACK.
        self.reno_sacked = 0
        #: monotonic count of bytes delivered (for congestion control rounds).
        self.delivered = 0
        #: monotonic count of bytes ever marked lost (a rate-based controller's loss rate).
        self.lost_total = 0
        #: monotonic count of those later shown needless (undo, D-SACK of a retransmission).
        self.spurious_lost = 0
        self.board = SackScoreboard()
        self.rack = RackState()
        #: RACK's send-order queue; None while nothing is in flight (an idle flow keeps no
        #: deque: an empty one costs ~0.7 KB).
        self._timeq: deque[tuple[float, int, Sent]] | None = None
        self._lostq: list[tuple[int, int, Sent]] = []
        self._lost_tie = 0

    # --- queries ----------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        return self.snd_max - self.una

    @property
    def pipe(self) -> int:
        """RFC 6675 pipe: bytes presumed in the network."""
        p = self.snd_max - self.una - self.sacked_out - self.lost_out + self.retrans_out - self.reno_sacked
        return p if p > 0 else 0

    def __len__(self) -> int:
        return len(self.records) - self.head

    def head_record(self) -> Sent | None:
        return self.records[self.head] if self.head < len(self.records) else None

    def last_unsacked(self) -> Sent | None:
        """Highest record the peer has not SACKed (the tail loss probe resends it)."""
        recs = self.records
        i = len(recs) - 1
        while i >= self.head:
            r = recs[i]
            if not r.sacked:
                return r
            i -= 1
        return None

    def next_lost(self) -> Sent | None:
        """Lowest record marked lost and not retransmitted since (RFC 6675 NextSeg rule 1)."""
        q = self._lostq
        una = self.una
        while q:
            r = q[0][2]
            if r.lost and not r.retrans and not r.sacked and r.end > una:
                return r
            heapq.heappop(q)
        return None

    # --- transmissions ----------------------------------------------------------------

    def on_send(self, start: int, end: int, fin: bool, now: float) -> Sent:
        """New data ``[start, end)`` went out (start == snd_max)."""
        r = Sent(start, end, fin, now)
        self.records.append(r)
        self._starts.append(start)
        self.snd_max = end
        self._timeq_for_append().append((now, 0, r))
        return r

    def _timeq_for_append(self) -> deque[tuple[float, int, Sent]]:
        q = self._timeq
        if q is None:
            q = self._timeq = deque()
        return q

    def on_retransmit(self, r: Sent, now: float) -> None:
        r.gen += 1
        r.xmit_ts = now
        r.ever_retrans = True
        self._timeq_for_append().append((now, r.gen, r))
        if r.lost and not r.retrans:
            r.retrans = True
            self.retrans_out += r.end - r.start

    # --- marking ----------------------------------------------------------------------

    def mark_lost(self, r: Sent) -> bool:
        """Mark ``r`` lost (again); True if that changed anything."""
        if r.sacked or (r.lost and not r.retrans):
            return False
        n = r.end - r.start
        if r.retrans:
            r.retrans = False  # the retransmission is lost too
            self.retrans_out -= n
        else:
            r.lost = True
            self.lost_out += n
        self.lost_total += n
        self._lost_tie += 1
        heapq.heappush(self._lostq, (r.start, self._lost_tie, r))
        return True

    def mark_all_lost(self) -> None:
        """After an RTO (RFC 5681 §3.1, RFC 6675 §5.1): everything not SACKed is lost."""
        lostq: list[tuple[int, int, Sent]] = []
        for r in self.records[self.head :]:
            if r.sacked:
                continue
            n = r.end - r.start
            if r.retrans:
                r.retrans = False
                self.retrans_out -= n
                self.lost_total += n
            if not r.lost:
                r.lost = True
                self.lost_out += n
                self.lost_total += n
            self._lost_tie += 1
            lostq.append((r.start, self._lost_tie, r))
        self._lostq = lostq  # ascending starts: already a heap
        self._timeq = None
        self.reno_sacked = 0

    def unmark_lost(self) -> None:
        """Undo of a spurious loss episode: nothing is presumed lost any more."""
        live = []
        for r in self.records[self.head :]:
            if r.lost:
                r.lost = False
                self.lost_out -= r.end - r.start
                self.spurious_lost += r.end - r.start
            if r.retrans:
                r.retrans = False
                self.retrans_out -= r.end - r.start
            if not r.sacked:
                live.append(r)
        self._lostq = []
        live.sort(key=lambda r: r.xmit_ts)
        self._timeq = deque((r.xmit_ts, r.gen, r) for r in live) if live else None

    # --- acknowledgements -------------------------------------------------------------

    def on_ack(self, una: int, blocks: list[tuple[int, int]], *, now: float, min_rtt: float | None) -> AckResult:
        """Process the cumulative ACK ``una`` and SACK ``blocks`` (stream offsets)."""
        res = AckResult()
        rack = self.rack
        old_una = self.una
        if blocks and classify_dsack(blocks, una):
            res.dsack = blocks[0]
            blocks = blocks[1:]
        recs = self.records
        h = self.head
        newest = -1.0  # send time of the newest never-retransmitted record delivered now
        if una > old_una:
            nrec = len(recs)
            while h < nrec:
                r = recs[h]
                if r.end <= una:
                    n = r.end - r.start
                    if r.sacked:
                        self.sacked_out -= n
                    else:
                        if r.lost:
                            self.lost_out -= n
                        if r.retrans:
                            self.retrans_out -= n
                        if r.ever_retrans:
                            res.retransmitted_acked = True
                        rack.on_delivered(
                            xmit_ts=r.xmit_ts, end=r.end, retransmitted=r.ever_retrans, now=now, min_rtt=min_rtt
                        )
                        if not r.ever_retrans and r.xmit_ts > newest:
                            newest = r.xmit_ts
                    h += 1
                elif r.start < una:
                    cut = una - r.start
                    if r.sacked:
                        self.sacked_out -= cut
                    else:
                        if r.lost:
                            self.lost_out -= cut
                        if r.retrans:
                            self.retrans_out -= cut
                    r.start = una
                    self._starts[h] = una
                    break
                else:
                    break
            board = self.board
            before = board.bytes
            board.advance(una)
            res.delivered = (una - old_una) - (before - board.bytes)
            self.una = una
            self.reno_sacked = 0
            if h > 64 and 2 * h > nrec:
                del recs[:h], self._starts[:h]
                h = 0
            self.head = h
        if blocks:
            snd_max = self.snd_max
            starts = self._starts
            board = self.board
            for s, e in blocks:
                if s < una:
                    s = una
                if e > snd_max:
                    e = snd_max
                if e <= s:
                    continue
                for a, b in board.add(s, e):
                    res.sacked += b - a
                    i = bisect_right(starts, a, h) - 1
                    if i < h:
                        i = h
                    nrec = len(recs)
                    while i < nrec:
                        r = recs[i]
                        if r.start >= b:
                            break
                        # a FIN takes an offset but is never inside a SACK block
                        if not r.sacked and board.covers(
                            r.start, r.end - 1 if r.fin and r.end - r.start > 1 else r.end
                        ):
                            n = r.end - r.start
                            r.sacked = True
                            self.sacked_out += n
                            if r.lost:
                                r.lost = False
                                self.lost_out -= n
                            if r.retrans:
                                r.retrans = False
                                self.retrans_out -= n
                            rack.on_delivered(
                                xmit_ts=r.xmit_ts, end=r.end, retransmitted=r.ever_retrans, now=now, min_rtt=min_rtt
                            )
                            if not r.ever_retrans and r.xmit_ts > newest:
                                newest = r.xmit_ts
                        i += 1
            res.delivered += res.sacked
        if res.dsack is not None:
            ds, de = res.dsack
            i = bisect_right(self._starts, ds, h) - 1
            if i >= h and recs[i].ever_retrans:
                res.dsack_retransmitted = True
            elif de <= una:
                res.dsack_retransmitted = True  # below una: the record is gone; assume ours
            if res.dsack_retransmitted:
                self.spurious_lost += de - ds
        self.delivered += res.delivered
        if newest >= 0.0:
            res.rtt = now - newest
        return res

    def on_dup_ack_reno(self, mss: int) -> None:
        """A duplicate ACK from a peer without SACK: one more segment left the network."""
        limit = self.outstanding - mss
        self.reno_sacked = min(self.reno_sacked + mss, max(limit, 0))

    # --- RACK loss detection -----------------------------------------------------------

    def detect_loss(self, now: float, reo_wnd: float) -> tuple[int, float | None]:
        """RFC 8985 §6.2 step 5: mark overdue segments lost.

        Returns (records newly marked lost, time the reordering timer should fire or None).
        """
        rack = self.rack
        if rack.xmit_ts is None:
            return 0, None
        q = self._timeq
        if q is None:
            return 0, None
        una = self.una
        marked = 0
        while q:
            ts, gen, r = q[0]
            if gen != r.gen or r.sacked or r.end <= una or (r.lost and not r.retrans):
                q.popleft()
                continue
            if not rack.sent_before_rack(ts, r.end):
                break
            remaining = ts + rack.rtt + reo_wnd - now
            if remaining > _EPSILON:
                return marked, now + remaining
            q.popleft()
            if self.mark_lost(r):
                marked += 1
        if not q:
            self._timeq = None
        return marked, None

    def check(self) -> None:
        """Recompute the counters from the records (tests and debugging only)."""
        sacked = lost = retrans = 0
        prev_end = self.una
        for r in self.records[self.head :]:
            n = r.end - r.start
            assert r.start >= prev_end - 0 and r.end > r.start, (r, prev_end)
            prev_end = r.end
            if r.sacked:
                sacked += n
                assert not r.lost and not r.retrans
            if r.lost:
                lost += n
            if r.retrans:
                retrans += n
                assert r.lost
        assert (sacked, lost, retrans) == (self.sacked_out, self.lost_out, self.retrans_out), (
            (sacked, lost, retrans),
            (self.sacked_out, self.lost_out, self.retrans_out),
        )
        assert prev_end <= self.snd_max
