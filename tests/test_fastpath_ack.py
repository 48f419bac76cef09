"""ACK generation on the receive path: one pure ACK per burst, the RFC rules kept.

Each test is named after the rule it keeps. The receiver ACKs at least every second
full-sized segment and otherwise within the delayed-ACK time (RFC 1122 4.2.3.2, RFC 5681
§4.2) — with timestamps as without — and ACKs out-of-order data and filled holes at once
(RFC 5681 §4.2). ACKs are emitted when the shell drains the core, so a burst of segments
handled in one turn gets one cumulative ACK. A host read announces the larger window with
an ACK of its own only when the peer could be held back (its window at most half of what
we can offer, and the read at least doubles it: Linux's ``tcp_cleanup_rbuf``); otherwise
the next ACK carries the new edge.
"""

from __future__ import annotations

import pytest

from tests.tcp_helpers import (
    LOCAL_SEQ,
    REMOTE_SEQ,
    SYN_TEMPL,
    T0,
    established,
    recv,
    recv_nothing,
    seg,
    send,
)
from wgslirpy.net.segments import TcpFlags
from wgslirpy.net.tcp import TcpConfig, TcpConnection

MSS = 1360  # what the peer sends per segment here (<= our MSS either way)
#: Linux's SYN: every option (window scale, SACK-permitted, timestamps).
OPT_SYN_TS = seg(SYN_TEMPL, wscale=7, sack_permitted=True, ts_val=5000, ts_ecr=0)


def _conn(timestamps: bool, **config: float) -> TcpConnection:
    cfg = TcpConfig(**config)  # type: ignore[arg-type]
    # Without timestamps: no window scaling or SACK either (the helpers' plain SYN).
    if timestamps:
        return established(cfg, syn=OPT_SYN_TS)
    return established(cfg)


def _data(conn: TcpConnection, i: int, n: int = MSS, now: float = T0) -> None:
    s = seg(seq=REMOTE_SEQ + 1 + i * MSS, payload=bytes(n))
    if conn._ts_ok:
        s = s._replace(ts_val=6000 + i, ts_ecr=int(T0 * 1000))
    send(conn, s, now)


def _pure_acks(conn: TcpConnection, now: float = T0) -> list[int]:
    out = recv(conn, now)
    assert all(not s.payload and s.flags == TcpFlags.ACK for s in out)
    return [s.ack for s in out]


@pytest.mark.parametrize("timestamps", [False, True])
def test_rfc1122_ack_every_second_full_sized_segment(timestamps: bool) -> None:
    conn = _conn(timestamps)
    assert conn._ts_ok is timestamps
    _data(conn, 0)
    recv_nothing(conn)  # one segment: delayed
    _data(conn, 1)
    assert _pure_acks(conn) == [REMOTE_SEQ + 1 + 2 * MSS]  # the host has not read anything


@pytest.mark.parametrize("timestamps", [False, True])
def test_rfc1122_delayed_ack_within_the_delay(timestamps: bool) -> None:
    conn = _conn(timestamps, delayed_ack=0.04)
    _data(conn, 0)
    recv_nothing(conn)
    assert conn.next_deadline() == pytest.approx(T0 + 0.04)
    conn.handle_timer(now=T0 + 0.04)
    assert _pure_acks(conn, T0 + 0.04) == [REMOTE_SEQ + 1 + MSS]


@pytest.mark.parametrize("timestamps", [False, True])
def test_rfc5681_one_cumulative_ack_per_burst(timestamps: bool) -> None:
    conn = _conn(timestamps)
    for i in range(10):
        _data(conn, i)
    assert _pure_acks(conn) == [REMOTE_SEQ + 1 + 10 * MSS]
    recv_nothing(conn)


@pytest.mark.parametrize("timestamps", [False, True])
def test_rfc5681_out_of_order_data_acked_at_once(timestamps: bool) -> None:
    conn = _conn(timestamps)
    _data(conn, 1)  # a hole at segment 0
    out = recv(conn)
    assert len(out) == 1 and out[0].ack == REMOTE_SEQ + 1  # the duplicate ACK, at once
    assert out[0].sack_blocks == ((REMOTE_SEQ + 1 + MSS, REMOTE_SEQ + 1 + 2 * MSS),) or not conn._sack_ok
    _data(conn, 0)  # fills the hole: at once too
    assert _pure_acks(conn) == [REMOTE_SEQ + 1 + 2 * MSS]


@pytest.mark.parametrize("timestamps", [False, True])
def test_read_sends_no_window_update_while_the_peer_has_half_the_window(timestamps: bool) -> None:
    conn = _conn(timestamps, rcv_buffer=64 * 1024)
    for i in range(4):
        _data(conn, i)
    assert _pure_acks(conn) == [REMOTE_SEQ + 1 + 4 * MSS]
    left = conn.rcv_adv - conn.rcv_nxt
    assert 2 * left > conn._rcv_cap  # the peer can still send more than half the buffer
    assert len(conn.read()) == 4 * MSS
    recv_nothing(conn)  # no ACK for the read alone...
    _data(conn, 4)
    _data(conn, 5)
    out = recv(conn)  # ...the next one carries the edge the read opened
    assert len(out) == 1
    assert out[0].ack + (out[0].window << conn._rcv_ws) - conn.rcv_nxt >= conn._rcv_cap - 2 * MSS - (1 << conn._rcv_ws)


@pytest.mark.parametrize("timestamps", [False, True])
def test_read_sends_a_window_update_when_the_window_at_least_doubles(timestamps: bool) -> None:
    conn = _conn(timestamps, rcv_buffer=8 * MSS, delayed_ack=0)
    for i in range(6):
        _data(conn, i)
    out = recv(conn)
    small = out[-1].window << conn._rcv_ws
    assert small <= 2 * MSS  # the peer is nearly out of window
    conn.read()
    out = recv(conn)
    assert [s.ack for s in out] == [REMOTE_SEQ + 1 + 6 * MSS]
    assert out[0].window << conn._rcv_ws >= 2 * small


def test_read_after_a_zero_window_always_updates() -> None:
    conn = _conn(False, rcv_buffer=4 * MSS, delayed_ack=0)
    for i in range(4):
        _data(conn, i)
    assert recv(conn)[-1].window == 0
    conn.read(2 * MSS)  # more than the SWS threshold (RFC 1122 4.2.3.3: min(MSS, buffer / 2))
    out = recv(conn)
    assert [s.ack for s in out] == [REMOTE_SEQ + 1 + 4 * MSS]
    assert out[0].window << conn._rcv_ws >= 2 * MSS


def test_acks_for_our_data_are_unaffected() -> None:
    conn = _conn(True)
    conn.send(b"x" * 100, now=T0)
    (data,) = recv(conn)
    send(conn, seg(ack=LOCAL_SEQ + 101, ts_val=6001, ts_ecr=data.ts_val))
    assert conn.snd_una == LOCAL_SEQ + 101
    recv_nothing(conn)  # a pure ACK is not ACKed
