"""Short connections: the setup and teardown paths send no more than they must.

A short connection (connect, one request, one answer, close) is a handful of segments,
and every segment costs the gateway a WireGuard encryption and a system call; these tests
pin down the segments a connection's end takes. Sans-IO, on a fake clock.
"""

from __future__ import annotations

import dataclasses

from wgslirpy.net.tcp import PeerFin, State, TcpConfig, TcpCounters

from .tcp_helpers import (
    ACK,
    BASE_CONFIG,
    FIN,
    LOCAL_SEQ,
    PSH,
    REMOTE_SEQ,
    T0,
    WIN_AFTER_FIN,
    established,
    events,
    recv,
    recv_nothing,
    rseg,
    seg,
    send,
)

DELAY = BASE_CONFIG.delayed_ack


def test_ack_of_the_peers_fin_rides_on_our_fin() -> None:
    # The host closes as soon as it reads EOF (what a short connection's server does):
    # one FIN|ACK that acknowledges the peer's FIN, not an ACK and then a FIN.
    conn = established()
    send(conn, seg(flags=FIN | ACK))
    assert conn.state is State.CLOSE_WAIT and events(conn) == [PeerFin()] and conn.peer_eof
    recv_nothing(conn)
    assert conn.next_deadline() == T0 + DELAY  # the delayed ACK bounds the wait
    conn.close(now=T0 + DELAY / 4)
    assert recv(conn, T0 + DELAY / 4) == [
        rseg(ack=REMOTE_SEQ + 2, flags=FIN | ACK, window=WIN_AFTER_FIN),
    ]
    recv_nothing(conn, T0 + 2 * DELAY)  # nothing left to ACK
    send(conn, seg(seq=REMOTE_SEQ + 2, ack=LOCAL_SEQ + 2), T0 + DELAY)
    assert conn.is_closed


def test_ack_of_the_peers_fin_rides_on_data() -> None:
    # The host answers after the peer's half-close: the answer carries the ACK.
    conn = established()
    send(conn, seg(payload=b"request", flags=FIN | ACK | PSH))
    assert conn.read() == b"request" and conn.peer_eof
    recv_nothing(conn)
    conn.send(b"answer", now=T0 + DELAY / 2)
    out = recv(conn, T0 + DELAY / 2)
    assert [(s.ack, s.payload) for s in out] == [(REMOTE_SEQ + 9, b"answer")]
    recv_nothing(conn, T0 + 2 * DELAY)


def test_ack_of_the_peers_fin_waits_at_most_the_delayed_ack_time() -> None:
    # A host that keeps its side open (half-close) still gets the FIN acknowledged in time.
    conn = established()
    send(conn, seg(flags=FIN | ACK))
    recv_nothing(conn, T0 + DELAY * 0.99)
    assert recv(conn, T0 + DELAY) == [rseg(ack=REMOTE_SEQ + 2, window=WIN_AFTER_FIN)]
    recv_nothing(conn, T0 + 2 * DELAY)
    assert conn.state is State.CLOSE_WAIT


def test_fin_after_unacked_data_keeps_the_earlier_deadline() -> None:
    conn = established()
    send(conn, seg(payload=b"x", flags=ACK | PSH))  # delayed ACK armed at T0 + DELAY
    send(conn, seg(seq=REMOTE_SEQ + 2, flags=FIN | ACK), T0 + DELAY / 2)
    assert conn.next_deadline() == T0 + DELAY
    assert recv(conn, T0 + DELAY) == [rseg(ack=REMOTE_SEQ + 3, window=WIN_AFTER_FIN - 1)]


def test_without_delayed_acks_the_fin_is_acked_at_once() -> None:
    conn = established(TcpConfig(delayed_ack=0))
    send(conn, seg(flags=FIN | ACK))
    assert recv(conn) == [rseg(ack=REMOTE_SEQ + 2, window=WIN_AFTER_FIN)]


def test_fin_after_our_fin_is_acked_at_once() -> None:
    # FIN-WAIT-2 -> TIME-WAIT and FIN-WAIT-1 -> CLOSING: the peer waits for this ACK
    # (nothing of ours could carry it), so it goes at once.
    conn = established()
    conn.close(now=T0)
    assert [s.flags for s in recv(conn)] == [FIN | ACK]
    send(conn, seg(flags=FIN | ACK))  # simultaneous close: our FIN not yet acked
    assert conn.state is State.CLOSING
    assert recv(conn) == [rseg(seq=LOCAL_SEQ + 2, ack=REMOTE_SEQ + 2, window=WIN_AFTER_FIN)]


def test_counters_as_dict_has_every_field() -> None:
    # Folded into the stack's totals for every closed flow: every field, by name.
    counters = TcpCounters(*range(1, len(dataclasses.fields(TcpCounters)) + 1))
    assert counters.as_dict() == dataclasses.asdict(counters)
