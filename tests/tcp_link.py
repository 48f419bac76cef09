"""A simulated link between two TCP endpoints on a fake clock, for goodput and recovery tests.

* :class:`Pipe` is one direction: a bottleneck of ``rate`` bytes/s with a drop-tail queue
  of ``queue`` bytes, then ``delay`` seconds of propagation; seeded random loss, reordering
  (a segment is held back ``reorder_delay`` extra seconds) and duplication.
* :func:`run_link` connects a client (``TcpConnection.connect``, our active open) to a
  server (``TcpConnection`` made from the client's SYN, as the gateway does) and moves
  ``down`` (server host -> client host, what a download is for the gateway) and ``up``
  (client host -> server host) at the same time; each host reads everything at once and
  closes after sending. All times are simulated seconds, never wall time.

The result records when each byte count arrived at each receiving host, so tests can
measure goodput after slow start against the link's capacity.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Any

from wgslirpy.net.segments import TcpFlags, TcpSegment
from wgslirpy.net.tcp import TcpConfig, TcpConnection, TcpEvent

CLIENT_ADDR = IPv4Address("10.77.0.2")
SERVER_ADDR = IPv4Address("192.0.2.80")
CLIENT_PORT = 49152
SERVER_PORT = 443
#: IPv4 + TCP header bytes a segment costs on the link (options included roughly).
HEADER_BYTES = 52


@dataclasses.dataclass
class Pipe:
    """One direction of the link; see the module docstring."""

    rnd: random.Random
    delay: float = 0.02
    rate: float | None = 10e6
    queue: int = 400_000
    loss: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.005
    dup: float = 0.0
    #: drop exactly these (0-based) data-segment numbers (deterministic single losses).
    drop_data: frozenset[int] = frozenset()
    #: drop the retransmissions of those segments this many more times (lost retransmissions).
    drop_again: int = 0
    #: (start, end): the link freezes: whatever would arrive from ``start`` on comes
    #: ``end - start`` later, in order and with its spacing (a radio link in a handover).
    freeze: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        self.heap: list[tuple[float, int, TcpSegment]] = []
        self.busy_until = 0.0
        self.n = 0
        self.data_segments = 0
        self.dropped = 0
        self.queue_drops = 0
        self._again: dict[int, int] = {}
        self._last_arrive = 0.0

    def put(self, s: TcpSegment, now: float) -> None:
        if s.payload:
            k = self.data_segments
            self.data_segments += 1
            if k in self.drop_data:
                self.dropped += 1
                self._again[s.seq] = self.drop_again
                return
            if self._again.get(s.seq, 0) > 0:
                self._again[s.seq] -= 1
                self.dropped += 1
                return
        size = len(s.payload) + HEADER_BYTES
        depart = now
        if self.rate:
            start = self.busy_until if self.busy_until > now else now
            if (start - now) * self.rate + size > self.queue:
                self.queue_drops += 1
                return
            depart = start + size / self.rate
            self.busy_until = depart
        rnd = self.rnd
        if self.loss and rnd.random() < self.loss:
            self.dropped += 1
            return
        arrive = depart + self.delay
        if self.freeze is not None:
            start, end = self.freeze
            if start <= arrive < end:
                arrive += end - start
            if arrive < self._last_arrive:
                arrive = self._last_arrive  # FIFO behind the frozen ones
            self._last_arrive = arrive
        if self.reorder and rnd.random() < self.reorder:
            arrive += self.reorder_delay
        self._push(arrive, s)
        if self.dup and rnd.random() < self.dup:
            self._push(arrive + 0.0005, s)

    def _push(self, at: float, s: TcpSegment) -> None:
        self.n += 1
        heapq.heappush(self.heap, (at, self.n, s))

    def next_time(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def due(self, now: float) -> list[TcpSegment]:
        out = []
        heap = self.heap
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out


@dataclasses.dataclass
class Host:
    """The application on one end: sends ``data`` then closes; reads everything."""

    conn: TcpConnection | None
    data: bytes
    sent: int = 0
    closed: bool = False
    received: bytearray = dataclasses.field(default_factory=bytearray)
    #: (time, total bytes received) each time the total grew
    timeline: list[tuple[float, int]] = dataclasses.field(default_factory=list)
    events: list[TcpEvent] = dataclasses.field(default_factory=list)

    def step(self, now: float) -> None:
        conn = self.conn
        if conn is None:
            return
        if conn.accepted and not conn.is_closed:
            data = self.data
            while self.sent < len(data) and conn.send_space > 0:
                n = conn.send(memoryview(data)[self.sent : self.sent + 262144], now=now)
                if not n:
                    break
                self.sent += n
            if self.sent == len(data) and not self.closed and conn.state.name not in ("SYN_SENT", "SYN_RECEIVED"):
                conn.close(now=now)
                self.closed = True
        got = conn.read()
        if got:
            self.received += got
            self.timeline.append((now, len(self.received)))
        while (ev := conn.next_event()) is not None:
            self.events.append(ev)


@dataclasses.dataclass
class LinkResult:
    client: TcpConnection
    server: TcpConnection
    client_host: Host  # received = the download
    server_host: Host  # received = the upload
    to_client: Pipe
    to_server: Pipe
    end_time: float

    def goodput(self, host: Host, *, after_fraction: float = 0.25) -> float:
        """Bytes/s delivered to ``host`` from when ``after_fraction`` of the data had
        arrived (slow start is over by then) to the last byte."""
        tl = host.timeline
        assert tl, "nothing delivered"
        total = tl[-1][1]
        t0, b0 = next((t, b) for t, b in tl if b >= after_fraction * total)
        t1 = tl[-1][0]
        return (total - b0) / (t1 - t0) if t1 > t0 else float("inf")


def run_link(
    *,
    down: bytes = b"",
    up: bytes = b"",
    seed: int = 1,
    to_client: Mapping[str, Any] | None = None,
    to_server: Mapping[str, Any] | None = None,
    server_config: TcpConfig | None = None,
    client_config: TcpConfig | None = None,
    max_time: float = 120.0,
    max_steps: int = 2_000_000,
    loop_tick: float = 0.0,
) -> LinkResult:
    """Run a full connection (handshake, both transfers, both closes) over the link.

    ``loop_tick`` > 0 models a busy event loop with coarse timers (the gevent shell): the
    hosts run at most once per ``loop_tick`` to ``2 x loop_tick`` seconds (seeded), handling
    whatever arrived meanwhile as one batch, and timers fire that late."""
    rnd = random.Random(seed)
    pc = Pipe(random.Random(rnd.random()), **(to_client or {}))
    ps = Pipe(random.Random(rnd.random()), **(to_server or {}))
    scfg = server_config or TcpConfig(time_wait=1.0)
    ccfg = client_config or TcpConfig(time_wait=1.0)
    t = 0.0
    client = TcpConnection.connect(
        local=CLIENT_ADDR,
        lport=CLIENT_PORT,
        peer=SERVER_ADDR,
        pport=SERVER_PORT,
        config=ccfg,
        now=t,
        rng=random.Random(rnd.random()).randbytes,
    )
    ch = Host(client, up)
    sh = Host(None, down)
    server: TcpConnection | None = None
    tick_rnd = random.Random(rnd.random())
    for _ in range(max_steps):
        for s in ps.due(t):
            if server is None:
                if s.flags == TcpFlags.SYN:
                    server = TcpConnection(s, scfg, now=t, rng=random.Random(rnd.random()).randbytes)
                    server.accept(now=t)
                    sh.conn = server
                continue
            server.handle_segment(s, now=t)
        for s in pc.due(t):
            client.handle_segment(s, now=t)
        for conn in (client, server):
            if conn is not None:
                dl = conn.next_deadline()
                if dl is not None and dl <= t:
                    conn.handle_timer(now=t)
        ch.step(t)
        sh.step(t)
        for s in client.segments_to_send(now=t):
            ps.put(s, t)
        if server is not None:
            for s in server.segments_to_send(now=t):
                pc.put(s, t)
        if client.is_closed and server is not None and server.is_closed:
            break
        cands = [
            x
            for x in (
                pc.next_time(),
                ps.next_time(),
                client.next_deadline(),
                server.next_deadline() if server else None,
            )
            if x is not None
        ]
        if not cands:
            break
        if loop_tick > 0:
            t = max(t + loop_tick * (1.0 + tick_rnd.random()), min(cands))
        else:
            t = max(t, min(cands))
        if t > max_time:
            break
    assert server is not None, "no SYN arrived"
    return LinkResult(client, server, ch, sh, pc, ps, t)
