"""Test helpers for ``net/tcp.py``, smoltcp style.

* Constants for the two endpoints and the two ISNs, segment templates ``SYN``,
  ``SEND_TEMPL`` (peer -> us) and ``RECV_TEMPL`` (us -> peer), and ``seg(**overrides)``.
* ``send(conn, seg, now)`` / ``recv(conn, now)`` / ``recv_nothing(conn, now)``.
* Fixtures that start a connection in a given state: ``established()``, ``fin_wait_1()``...
* ``ClientTcp``: a small scripted client TCP, and ``run_transfer`` which moves data both
  ways through a ``TcpConnection`` over a lossy, reordering, duplicating fake link on a
  fake clock.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from wgslirpy.net.segments import IPAddress, TcpFlags, TcpSegment
from wgslirpy.net.seq import MASK
from wgslirpy.net.tcp import State, TcpConfig, TcpConnection, TcpEvent

PEER_ADDR = IPv4Address("10.77.0.2")
PEER_PORT = 49152
LOCAL_ADDR = IPv4Address("192.0.2.80")
LOCAL_PORT = 80
PEER_ADDR6 = IPv6Address("fd77::2")
LOCAL_ADDR6 = IPv6Address("2001:db8::80")

REMOTE_SEQ = 10_000  # the peer's ISN
LOCAL_SEQ = 20_000  # ours (fixed through the rng)
T0 = 1000.0

ACK = TcpFlags.ACK
SYN = TcpFlags.SYN
FIN = TcpFlags.FIN
RST = TcpFlags.RST
PSH = TcpFlags.PSH

# After the peer's FIN our right edge stays put, so the window shows one byte less.
WIN_AFTER_FIN = 65534

# Options off unless a test turns them on (smoltcp's templates are option-free too).
BASE_CONFIG = TcpConfig()

SYN_TEMPL = TcpSegment(PEER_ADDR, LOCAL_ADDR, PEER_PORT, LOCAL_PORT, REMOTE_SEQ, 0, SYN, 64240, mss=1460)
SEND_TEMPL = TcpSegment(PEER_ADDR, LOCAL_ADDR, PEER_PORT, LOCAL_PORT, REMOTE_SEQ + 1, LOCAL_SEQ + 1, ACK, 64240)
RECV_TEMPL = TcpSegment(LOCAL_ADDR, PEER_ADDR, LOCAL_PORT, PEER_PORT, LOCAL_SEQ + 1, REMOTE_SEQ + 1, ACK, 65535)


def fixed_rng(isn: int = LOCAL_SEQ, ts_offset: int = 0) -> Callable[[int], bytes]:
    """First 4 bytes give the ISN, the next 4 the timestamp offset, then zeros."""
    chunks = [isn.to_bytes(4, "big"), ts_offset.to_bytes(4, "big")]

    def rng(n: int) -> bytes:
        return chunks.pop(0)[:n] if chunks else bytes(n)

    return rng


def seg(template: TcpSegment = SEND_TEMPL, **overrides: Any) -> TcpSegment:
    return template._replace(**overrides)


def rseg(**overrides: Any) -> TcpSegment:
    """A segment we expect to receive from the connection."""
    return RECV_TEMPL._replace(**overrides)


def send(conn: TcpConnection, s: TcpSegment, now: float = T0) -> None:
    conn.handle_segment(s, now=now)


def recv(conn: TcpConnection, now: float = T0) -> list[TcpSegment]:
    return conn.segments_to_send(now=now)


def recv_nothing(conn: TcpConnection, now: float = T0) -> None:
    out = conn.segments_to_send(now=now)
    assert out == [], out


def state(conn: TcpConnection) -> State:
    """``conn.state`` through a call, so mypy does not narrow it across assertions."""
    return conn.state


def no_window(segs: list[TcpSegment]) -> list[TcpSegment]:
    """``segs`` with the window zeroed: fixtures work with any buffer size."""
    return [x._replace(window=0) for x in segs]


def events(conn: TcpConnection) -> list[TcpEvent]:
    out: list[TcpEvent] = []
    while (ev := conn.next_event()) is not None:
        out.append(ev)
    return out


def syn_received(
    config: TcpConfig = BASE_CONFIG, syn: TcpSegment = SYN_TEMPL, now: float = T0, isn: int = LOCAL_SEQ
) -> TcpConnection:
    return TcpConnection(syn, config, now=now, rng=fixed_rng(isn))


def accepted(
    config: TcpConfig = BASE_CONFIG, syn: TcpSegment = SYN_TEMPL, now: float = T0, isn: int = LOCAL_SEQ
) -> TcpConnection:
    conn = syn_received(config, syn, now, isn)
    conn.accept(now=now)
    out = recv(conn, now)
    assert len(out) == 1 and out[0].flags == SYN | ACK
    return conn


def established(
    config: TcpConfig = BASE_CONFIG, syn: TcpSegment = SYN_TEMPL, now: float = T0, isn: int = LOCAL_SEQ
) -> TcpConnection:
    conn = accepted(config, syn, now, isn)
    ack = seg(seq=(syn.seq + 1) & MASK, ack=(isn + 1) & MASK)
    if conn._ts_ok:  # echo what the SYN-ACK carried
        ack = seg(ack, ts_val=(syn.ts_val or 0) + 1, ts_ecr=int(now * 1000) & MASK)
    send(conn, ack, now)
    assert conn.state is State.ESTABLISHED
    recv_nothing(conn, now)
    return conn


def fin_wait_1(config: TcpConfig = BASE_CONFIG) -> TcpConnection:
    conn = established(config)
    conn.close(now=T0)
    assert no_window(recv(conn)) == [rseg(flags=FIN | ACK, window=0)]
    assert conn.state is State.FIN_WAIT_1
    return conn


def fin_wait_2(config: TcpConfig = BASE_CONFIG) -> TcpConnection:
    conn = fin_wait_1(config)
    send(conn, seg(ack=LOCAL_SEQ + 2))
    assert conn.state is State.FIN_WAIT_2
    recv_nothing(conn)
    return conn


def closing(config: TcpConfig = BASE_CONFIG) -> TcpConnection:
    conn = fin_wait_1(config)
    send(conn, seg(flags=FIN | ACK))  # does not ack our FIN
    assert conn.state is State.CLOSING
    assert no_window(recv(conn)) == [rseg(seq=LOCAL_SEQ + 2, ack=REMOTE_SEQ + 2, window=0)]
    return conn


def time_wait(config: TcpConfig = BASE_CONFIG) -> TcpConnection:
    conn = fin_wait_2(config)
    send(conn, seg(flags=FIN | ACK, ack=LOCAL_SEQ + 2))
    assert conn.state is State.TIME_WAIT
    assert no_window(recv(conn)) == [rseg(seq=LOCAL_SEQ + 2, ack=REMOTE_SEQ + 2, window=0)]
    return conn


def close_wait(config: TcpConfig = BASE_CONFIG) -> TcpConnection:
    conn = established(config)
    send(conn, seg(flags=FIN | ACK))
    assert conn.state is State.CLOSE_WAIT
    # The ACK of the FIN waits for the host's FIN to ride on, at most the delayed-ACK time.
    recv_nothing(conn)
    assert no_window(recv(conn, T0 + config.delayed_ack)) == [rseg(ack=REMOTE_SEQ + 2, window=0)]
    return conn


def last_ack(config: TcpConfig = BASE_CONFIG) -> TcpConnection:
    conn = close_wait(config)
    conn.close(now=T0)
    assert conn.state is State.LAST_ACK
    assert no_window(recv(conn)) == [rseg(flags=FIN | ACK, ack=REMOTE_SEQ + 2, window=0)]
    return conn


# ----------------------------------------------------------------------------------------
# A scripted client TCP and a lossy link


def _gt(a: int, b: int) -> bool:
    return a != b and ((a - b) & MASK) < (1 << 31)


class ClientTcp:
    """A deliberately simple client: fixed congestion window, go-back-N on a fixed RTO,
    immediate ACKs, out-of-order buffering, RFC-style 1-byte zero-window probes.

    With ``options`` it offers window scaling (shift 2), SACK and timestamps, and checks
    that our SACK blocks make sense.
    """

    def __init__(
        self,
        data: bytes,
        *,
        isn: int,
        options: bool,
        src: IPAddress = PEER_ADDR,
        dst: IPAddress = LOCAL_ADDR,
        mss: int = 1380,
        rto: float = 0.3,
        flight_segments: int = 24,
    ) -> None:
        self.data = data
        self.iss = isn
        self.options = options
        self.src, self.dst = src, dst
        self.mss = mss
        self.rto = rto
        self.flight = flight_segments * mss
        self.rcv_wnd = 200_000 if options else 65535
        self.ws = 2 if options else 0
        self.snd_una = isn
        self.snd_nxt = isn
        self.snd_max = isn
        self.fin_seq = (isn + 1 + len(data)) & MASK
        self.established = False
        self.peer_ws = 0
        self.peer_wnd = 0
        self.peer_mss = 536
        self.rcv_nxt: int | None = None
        self.received = bytearray()
        self.ooo: dict[int, bytes] = {}
        self.fin_received = False
        self.ts_recent = 0
        self.rto_at: float | None = None
        self.ack_due = False
        self.syn_due = True
        self.sack_blocks_seen = 0
        self.dsack_blocks_seen = 0

    @property
    def done(self) -> bool:
        return self.fin_received and self.snd_una == ((self.fin_seq + 1) & MASK)

    def _opts(self, now: float) -> dict[str, Any]:
        if not self.options:
            return {}
        return {"ts_val": int(now * 1000) & MASK, "ts_ecr": self.ts_recent}

    def _seg(self, seq: int, flags: TcpFlags, payload: bytes, now: float) -> TcpSegment:
        return TcpSegment(
            self.src,
            self.dst,
            PEER_PORT,
            LOCAL_PORT,
            seq,
            self.rcv_nxt or 0,
            flags,
            min(self.rcv_wnd >> self.ws, 0xFFFF),
            payload,
            **self._opts(now),
        )

    def handle(self, s: TcpSegment, now: float) -> None:
        if s.flags & RST:
            raise AssertionError(f"unexpected RST {s}")
        if s.ts_val is not None:
            self.ts_recent = s.ts_val
        if s.flags & SYN:
            assert s.flags & ACK and s.ack == (self.iss + 1) & MASK
            if self.options:
                assert s.wscale is not None and s.sack_permitted and s.ts_val is not None
                self.peer_ws = s.wscale
            self.peer_mss = s.mss or 536
            self.rcv_nxt = (s.seq + 1) & MASK
            if not self.established:
                self.established = True
                self.snd_una = self.snd_nxt = self.snd_max = (self.iss + 1) & MASK
                self.peer_wnd = s.window
                self.rto_at = None
            self.ack_due = True
            return
        if not self.established or self.rcv_nxt is None:
            return
        # ACK processing
        assert not _gt(s.ack, self.snd_max), "ACK of data never sent"
        if _gt(s.ack, self.snd_una):
            self.snd_una = s.ack
            if _gt(self.snd_una, self.snd_nxt):
                self.snd_nxt = self.snd_una
            self.rto_at = now + self.rto if self.snd_una != self.snd_max else None
        self.peer_wnd = s.window << self.peer_ws
        for i, (left, right) in enumerate(s.sack_blocks):
            self.sack_blocks_seen += 1
            assert _gt(right, left), s.sack_blocks
            if i == 0 and not _gt(right, s.ack):
                self.dsack_blocks_seen += 1  # RFC 2883 D-SACK: a duplicate below the ACK
                continue
            assert _gt(left, s.ack) or (i == 0 and len(s.sack_blocks) > 1), s.sack_blocks
        # data
        off = (s.seq - self.rcv_nxt) & MASK
        if s.payload or s.flags & FIN:
            self.ack_due = True
            if off < self.rcv_wnd:
                if s.payload:
                    self.ooo.setdefault(s.seq, s.payload)
                if s.flags & FIN:
                    self.ooo.setdefault((s.seq + len(s.payload)) & MASK, b"FIN")
            elif off >= (1 << 31) and s.payload:
                pass  # old duplicate: just ACK again
            self._reassemble()

    def _reassemble(self) -> None:
        assert self.rcv_nxt is not None
        progress = True
        while progress:
            progress = False
            for seq in list(self.ooo):
                data = self.ooo[seq]
                skip = (self.rcv_nxt - seq) & MASK
                if skip >= (1 << 31):
                    continue
                del self.ooo[seq]
                if data == b"FIN":
                    if skip == 0 and not self.fin_received:
                        self.fin_received = True
                        self.rcv_nxt = (self.rcv_nxt + 1) & MASK
                        progress = True
                    continue
                if skip < len(data):
                    self.received += data[skip:]
                    self.rcv_nxt = (self.rcv_nxt + len(data) - skip) & MASK
                    progress = True

    def deadline(self) -> float | None:
        return self.rto_at

    def on_timer(self, now: float) -> list[TcpSegment]:
        """Fire the RTO if due: SYN again, a zero-window probe, or go-back-N."""
        if self.rto_at is None or now < self.rto_at:
            return []
        self.rto_at = now + self.rto
        if not self.established:
            self.syn_due = True
            return []
        off = (self.snd_una - ((self.iss + 1) & MASK)) & MASK
        if self.peer_wnd == 0 and self.snd_max == self.snd_una and off < len(self.data):
            # RFC-style zero-window probe: one byte of new data at snd_una.
            return [self._seg(self.snd_una, ACK, self.data[off : off + 1], now)]
        self.snd_nxt = self.snd_una  # go-back-N
        return []

    def output(self, now: float) -> list[TcpSegment]:
        out: list[TcpSegment] = []
        if not self.established:
            if self.syn_due:
                self.syn_due = False
                extra: dict[str, Any] = {}
                if self.options:
                    extra = {"wscale": self.ws, "sack_permitted": True, "ts_val": int(now * 1000) & MASK, "ts_ecr": 0}
                out.append(
                    TcpSegment(
                        self.src, self.dst, PEER_PORT, LOCAL_PORT, self.iss, 0, SYN, 0xFFFF, mss=self.mss, **extra
                    )
                )
                self.rto_at = now + self.rto
            return out
        base = (self.iss + 1) & MASK
        seg_size = min(self.mss, self.peer_mss) - (12 if self.options else 0)
        limit = min(self.peer_wnd, self.flight)
        while True:
            sent = (self.snd_nxt - self.snd_una) & MASK
            off = (self.snd_nxt - base) & MASK
            if off > len(self.data):
                break  # FIN already sent
            avail = len(self.data) - off
            if avail == 0:
                if self.snd_nxt == self.fin_seq:
                    out.append(self._seg(self.snd_nxt, FIN | ACK, b"", now))
                    self.snd_nxt = (self.snd_nxt + 1) & MASK
                break
            n = min(avail, seg_size, limit - sent)
            if n <= 0:
                if self.peer_wnd == 0 and sent == 0 and self.rto_at is None:
                    self.rto_at = now + self.rto  # zero-window probe on the timer
                break
            out.append(self._seg(self.snd_nxt, ACK, self.data[off : off + n], now))
            self.snd_nxt = (self.snd_nxt + n) & MASK
        if _gt(self.snd_nxt, self.snd_max):
            self.snd_max = self.snd_nxt
        if self.snd_max != self.snd_una and self.rto_at is None:
            self.rto_at = now + self.rto
        if out:
            self.ack_due = False
        elif self.ack_due:
            self.ack_due = False
            out.append(self._seg(self.snd_nxt, ACK, b"", now))
        return out


class LossyLink:
    """Both directions of a fake link: seeded loss, duplication and reordering (jitter)."""

    def __init__(
        self, rnd: random.Random, *, loss: float, dup: float, delay: float = 0.01, jitter: float = 0.02
    ) -> None:
        self.rnd = rnd
        self.loss = loss
        self.dup = dup
        self.delay = delay
        self.jitter = jitter
        self.queue: list[tuple[float, int, str, TcpSegment]] = []
        self.n = 0

    def put(self, dest: str, s: TcpSegment, now: float) -> None:
        copies = 0 if self.rnd.random() < self.loss else 1
        if copies and self.rnd.random() < self.dup:
            copies = 2
        for _ in range(copies):
            self.n += 1
            at = now + self.delay + self.rnd.random() * self.jitter
            heapq.heappush(self.queue, (at, self.n, dest, s))

    def next_time(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def due(self, now: float) -> list[tuple[str, TcpSegment]]:
        out = []
        while self.queue and self.queue[0][0] <= now:
            _, _, dest, s = heapq.heappop(self.queue)
            out.append((dest, s))
        return out


@dataclasses.dataclass
class TransferResult:
    conn: TcpConnection
    client: ClientTcp
    host_received: bytes
    client_received: bytes
    end_time: float
    events: list[object]


def run_transfer(
    up: bytes,
    down: bytes,
    *,
    seed: int,
    loss: float = 0.0,
    dup: float = 0.0,
    jitter: float = 0.02,
    options: bool = False,
    config: TcpConfig | None = None,
    isn: int = LOCAL_SEQ,
    client_isn: int = REMOTE_SEQ,
    host_read_chunk: int | None = None,
    max_time: float = 900.0,
    max_steps: int = 400_000,
) -> TransferResult:
    """Send ``up`` client->host and ``down`` host->client; both ends close when done.

    The host side sends everything, then close()s (it does not wait for the peer), and
    reads at most ``host_read_chunk`` bytes per step (None: everything).
    """
    cfg = config or TcpConfig(time_wait=2.0, delayed_ack=0.02)
    rnd = random.Random(seed)
    link = LossyLink(rnd, loss=loss, dup=dup, jitter=jitter)
    client = ClientTcp(up, isn=client_isn, options=options)
    conn: TcpConnection | None = None
    t = 0.0
    host_sent = 0
    host_closed = False
    host_rx = bytearray()
    evs: list[object] = []
    for s in client.output(t):
        link.put("server", s, t)
    for _ in range(max_steps):
        for dest, s in link.due(t):
            if dest == "client":
                client.handle(s, t)
                continue
            if conn is None:
                if s.flags == SYN:
                    conn = TcpConnection(s, cfg, now=t, rng=fixed_rng(isn, ts_offset=12345))
                    conn.accept(now=t)
                continue
            conn.handle_segment(s, now=t)
        if conn is not None:
            dl = conn.next_deadline()
            if dl is not None and dl <= t:
                conn.handle_timer(now=t)
            while host_sent < len(down) and conn.send_space and not conn.is_closed:
                host_sent += conn.send(down[host_sent : host_sent + 16384], now=t)
            if host_sent == len(down) and not host_closed and not conn.is_closed:
                conn.close(now=t)
                host_closed = True
            host_rx += conn.read(host_read_chunk)
            for s in conn.segments_to_send(now=t):
                link.put("client", s, t)
            while (ev := conn.next_event()) is not None:
                evs.append(ev)
            if conn.is_closed and client.done:
                break
        for s in client.on_timer(t):
            link.put("server", s, t)
        for s in client.output(t):
            link.put("server", s, t)
        candidates = [
            x for x in (link.next_time(), client.deadline(), conn.next_deadline() if conn else None) if x is not None
        ]
        if host_read_chunk is not None and conn is not None and conn.readable:
            candidates.append(t + 0.001)
        if not candidates:
            break
        t = max(t, min(candidates))
        if t > max_time:
            break
    assert conn is not None
    return TransferResult(conn, client, bytes(host_rx), bytes(client.received), t, evs)
