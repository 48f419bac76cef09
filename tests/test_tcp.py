"""TcpConnection, smoltcp style: one section per state, then data, windows, timers, fuzz
and a two-sided transfer over a lossy fake link. Everything runs on explicit ``now``."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgslirpy.errors import ConfigError, DropReason
from wgslirpy.net.segments import TcpSegment
from wgslirpy.net.seq import MASK
from wgslirpy.net.tcp import (
    Closed,
    PeerFin,
    PeerReset,
    Recovery,
    RttEstimator,
    State,
    TcpConfig,
    TcpConnection,
    TimedOut,
    TimeoutReason,
)

from .tcp_helpers import (
    ACK,
    BASE_CONFIG,
    FIN,
    LOCAL_ADDR,
    LOCAL_ADDR6,
    LOCAL_SEQ,
    PEER_ADDR6,
    PSH,
    REMOTE_SEQ,
    RST,
    SEND_TEMPL,
    SYN,
    SYN_TEMPL,
    T0,
    WIN_AFTER_FIN,
    accepted,
    close_wait,
    closing,
    established,
    events,
    fin_wait_1,
    fin_wait_2,
    last_ack,
    recv,
    recv_nothing,
    rseg,
    run_transfer,
    seg,
    send,
    state,
    syn_received,
    time_wait,
)

MSS = 1380  # 1420 - 40
OPT_SYN = seg(SYN_TEMPL, wscale=7, sack_permitted=True, ts_val=5000, ts_ecr=0)


# ----------------------------------------------------------------------------------------
# Handshake


def test_syn_received_waits_for_accept() -> None:
    conn = syn_received()
    assert conn.state is State.SYN_RECEIVED and not conn.accepted
    assert conn.key == (SYN_TEMPL.src, SYN_TEMPL.sport, SYN_TEMPL.dst, SYN_TEMPL.dport)
    assert conn.accepts(SEND_TEMPL) and not conn.accepts(seg(sport=1))
    recv_nothing(conn)
    assert conn.next_deadline() is None
    assert conn.iss == LOCAL_SEQ


def test_constructor_needs_bare_syn() -> None:
    with pytest.raises(ConfigError):
        TcpConnection(SEND_TEMPL, TcpConfig(), now=T0)
    with pytest.raises(ConfigError):
        TcpConnection(seg(SYN_TEMPL, flags=SYN | ACK), TcpConfig(), now=T0)


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        TcpConfig(mtu=100)
    with pytest.raises(ConfigError):
        TcpConfig(rcv_buffer=0)
    with pytest.raises(ConfigError):
        TcpConfig(min_rto=2.0, initial_rto=1.0)


def test_accept_sends_syn_ack() -> None:
    conn = syn_received()
    conn.accept(now=T0)
    assert recv(conn) == [rseg(seq=LOCAL_SEQ, flags=SYN | ACK, mss=MSS)]
    assert conn.next_deadline() == T0 + 1.0
    with pytest.raises(ConfigError):
        conn.accept(now=T0)


def test_syn_ack_options_only_if_offered() -> None:
    conn = accepted(syn=OPT_SYN)
    conn2 = syn_received(syn=OPT_SYN)
    conn2.accept(now=T0)
    (synack,) = recv(conn2)
    # RFC 7323 §2.2: the shift is the one the largest buffer (4 MiB by default) needs, so
    # the window can grow later; the SYN-ACK's own window is never scaled.
    assert synack.wscale == 7 and synack.sack_permitted and synack.window == 65535
    assert synack.ts_ecr == 5000 and synack.ts_val == int(T0 * 1000) & MASK
    assert conn.state is State.SYN_RECEIVED
    # Offered but disabled by config: nothing.
    conn3 = syn_received(TcpConfig(window_scale=False, sack=False, timestamps=False), syn=OPT_SYN)
    conn3.accept(now=T0)
    (synack3,) = recv(conn3)
    assert synack3.wscale is None and not synack3.sack_permitted and synack3.ts_val is None


def test_window_scale_shift_fits_buffer() -> None:
    conn = syn_received(TcpConfig(rcv_buffer=1 << 20), syn=OPT_SYN)
    conn.accept(now=T0)
    (synack,) = recv(conn)
    assert synack.wscale == 5  # 2**20 >> 5 = 32768 fits, >> 4 does not
    assert synack.window == 0xFFFF  # a SYN's window is never scaled


@pytest.mark.parametrize(
    ("v6", "peer_mss", "ours", "advertised"),
    [
        (False, 1460, 1380, 1380),
        (False, None, 536, 1380),
        (False, 500, 500, 1380),
        (True, 1440, 1360, 1360),
        (True, None, 1220, 1360),
    ],
)
def test_mss_clamp(v6: bool, peer_mss: int | None, ours: int, advertised: int) -> None:
    syn = seg(SYN_TEMPL, mss=peer_mss)
    if v6:
        syn = seg(syn, src=PEER_ADDR6, dst=LOCAL_ADDR6)
    conn = established(syn=syn)
    assert conn.mss == ours
    conn2 = syn_received(syn=syn)
    conn2.accept(now=T0)
    assert recv(conn2)[0].mss == advertised
    conn.send(bytes(5000), now=T0)
    sizes = [len(s.payload) for s in recv(conn)]
    assert max(sizes) == ours and sum(sizes) == 5000


def test_mss_accounts_for_timestamp_option() -> None:
    conn = established(syn=OPT_SYN)
    conn.send(bytes(3000), now=T0)
    assert [len(s.payload) for s in recv(conn)] == [1368, 1368, 264]


def test_refuse_sends_rst_ack() -> None:
    conn = syn_received()
    conn.refuse()
    assert recv(conn) == [rseg(seq=0, ack=REMOTE_SEQ + 1, flags=RST | ACK, window=0)]
    assert conn.is_closed and events(conn) == [Closed()]
    conn.refuse()  # idempotent once closed
    conn.accept(now=T0)  # a late dial result is ignored too
    recv_nothing(conn)


def test_refuse_after_accept_is_misuse() -> None:
    with pytest.raises(ConfigError):
        accepted().refuse()


def test_duplicate_syn_absorbed_while_dialling() -> None:
    conn = syn_received()
    send(conn, SYN_TEMPL)
    recv_nothing(conn)
    assert conn.drops[DropReason.TCP_DUPLICATE_SYN] == 1
    assert conn.state is State.SYN_RECEIVED


def test_duplicate_syn_after_accept_resends_syn_ack() -> None:
    conn = accepted()
    send(conn, SYN_TEMPL)
    assert recv(conn) == [rseg(seq=LOCAL_SEQ, flags=SYN | ACK, mss=MSS)]


def test_rst_while_dialling_closes() -> None:
    conn = syn_received()
    send(conn, seg(flags=RST, ack=0))
    assert conn.is_closed and events(conn) == [PeerReset(), Closed()]
    conn.accept(now=T0)
    recv_nothing(conn)


def test_rst_in_syn_received_after_accept() -> None:
    conn = accepted()
    send(conn, seg(flags=RST, seq=REMOTE_SEQ + 5))  # not exact: ignored
    assert conn.state is State.SYN_RECEIVED
    send(conn, seg(flags=RST))
    assert conn.is_closed and events(conn) == [PeerReset(), Closed()]


def test_bad_ack_in_syn_received_gets_rst() -> None:
    conn = accepted()
    send(conn, seg(ack=LOCAL_SEQ + 77))
    assert recv(conn) == [rseg(seq=LOCAL_SEQ + 77, ack=0, flags=RST, window=0)]
    assert conn.state is State.SYN_RECEIVED
    assert conn.drops[DropReason.TCP_BAD_ACK] == 1


def test_ack_before_accept_dropped() -> None:
    conn = syn_received()
    send(conn, seg())
    recv_nothing(conn)
    assert conn.drops[DropReason.TCP_BAD_STATE] == 1


def test_syn_ack_retransmit_backoff_then_timeout() -> None:
    conn = accepted()
    now = T0
    for delay in (1, 2, 4, 8, 16):
        assert conn.next_deadline() == pytest.approx(now + delay)
        now += delay
        conn.handle_timer(now=now)
        assert [s.flags for s in recv(conn, now)] == [SYN | ACK]
    now += 32
    conn.handle_timer(now=now)
    assert recv(conn, now) == [rseg(flags=RST | ACK, window=0, seq=LOCAL_SEQ + 1)]
    assert events(conn) == [TimedOut(TimeoutReason.SYN_ACK), Closed()]


def test_establishing_ack_may_carry_data() -> None:
    conn = accepted()
    send(conn, seg(payload=b"hello", flags=ACK | PSH))
    assert conn.state is State.ESTABLISHED
    assert conn.read() == b"hello"


def test_rtt_sampled_from_handshake() -> None:
    conn = accepted()
    send(conn, seg(), now=T0 + 0.1)
    assert conn.rtt.srtt == pytest.approx(0.1)


def test_fin_in_syn_received() -> None:
    conn = syn_received()
    send(conn, seg(flags=FIN | ACK))  # before accept: nothing to ACK yet
    assert conn.drops[DropReason.TCP_BAD_STATE] == 1 and conn.state is State.SYN_RECEIVED
    conn = accepted()
    send(conn, seg(flags=FIN | ACK, payload=b"q"))  # establishes, then the FIN
    assert state(conn) is State.CLOSE_WAIT and conn.read() == b"q"
    assert events(conn) == [PeerFin()]
    recv_nothing(conn)  # the ACK of the FIN waits (delayed ACK) for our FIN to ride on
    assert recv(conn, T0 + BASE_CONFIG.delayed_ack) == [rseg(ack=REMOTE_SEQ + 3, window=65535 - 2)]


def test_close_in_syn_received_sends_fin_after_establishment() -> None:
    conn = accepted()
    conn.send(b"bye", now=T0)
    conn.close(now=T0)
    recv_nothing(conn)  # nothing until the peer ACKs our SYN
    send(conn, seg())
    assert conn.state is State.FIN_WAIT_1
    assert recv(conn) == [rseg(payload=b"bye", flags=FIN | ACK | PSH)]


def test_send_before_accept_is_misuse() -> None:
    with pytest.raises(ConfigError):
        syn_received().send(b"x", now=T0)
    with pytest.raises(ConfigError):
        syn_received().close(now=T0)


# ----------------------------------------------------------------------------------------
# ESTABLISHED: receiving


def test_recv_in_order_data_delayed_ack() -> None:
    conn = established()
    send(conn, seg(payload=b"abc"))
    assert conn.readable == 3
    recv_nothing(conn)  # delayed
    assert conn.next_deadline() == pytest.approx(T0 + 0.04)
    conn.handle_timer(now=T0 + 0.04)
    assert recv(conn, T0 + 0.04) == [rseg(ack=REMOTE_SEQ + 4, window=65535 - 3)]
    assert conn.read() == b"abc"
    assert conn.read() == b""


def test_delayed_ack_deadline_seen_by_segments_to_send() -> None:
    conn = established()
    send(conn, seg(payload=b"abc"))
    assert recv(conn, T0 + 0.05) == [rseg(ack=REMOTE_SEQ + 4, window=65535 - 3)]


def test_every_second_full_segment_acked_at_once() -> None:
    conn = established()
    send(conn, seg(payload=bytes(MSS)))
    recv_nothing(conn)
    send(conn, seg(seq=REMOTE_SEQ + 1 + MSS, payload=bytes(MSS)))
    assert recv(conn) == [rseg(ack=REMOTE_SEQ + 1 + 2 * MSS, window=65535 - 2 * MSS)]


def test_zero_delayed_ack_acks_everything() -> None:
    conn = established(TcpConfig(delayed_ack=0))
    send(conn, seg(payload=b"x"))
    assert recv(conn) == [rseg(ack=REMOTE_SEQ + 2, window=65534)]


def test_ack_merged_into_data() -> None:
    conn = established()
    send(conn, seg(payload=b"ping"))
    conn.send(b"pong", now=T0)
    assert recv(conn) == [rseg(ack=REMOTE_SEQ + 5, payload=b"pong", flags=ACK | PSH, window=65535 - 4)]
    assert conn.next_deadline() != pytest.approx(T0 + 0.04)  # no ACK left pending


def test_read_partial() -> None:
    conn = established()
    send(conn, seg(payload=b"0123456789"))
    assert conn.read(4) == b"0123"
    assert conn.readable == 6
    assert conn.read() == b"456789"


def test_duplicate_data_acked_and_ignored() -> None:
    conn = established()
    send(conn, seg(payload=b"abc"))
    recv(conn, T0 + 1)
    send(conn, seg(payload=b"abc"), T0 + 1)
    assert recv(conn, T0 + 1) == [rseg(ack=REMOTE_SEQ + 4, window=65532)]
    assert conn.read() == b"abc"
    assert conn.drops[DropReason.TCP_OUT_OF_WINDOW] == 1


def test_partially_duplicate_data_trimmed() -> None:
    conn = established()
    send(conn, seg(payload=b"abc"))
    send(conn, seg(payload=b"abcdef"))
    assert conn.read() == b"abcdef"


def test_out_of_window_segment_dup_ack() -> None:
    conn = established()
    send(conn, seg(seq=REMOTE_SEQ + 1 + 70000, payload=b"far"))
    assert recv(conn) == [rseg()]
    assert conn.readable == 0
    assert conn.drops[DropReason.TCP_OUT_OF_WINDOW] == 1


def test_ack_of_unsent_data_acked_and_dropped() -> None:
    conn = established()
    send(conn, seg(ack=LOCAL_SEQ + 1000, payload=b"x"))
    assert recv(conn) == [rseg()]
    assert conn.readable == 0
    assert conn.drops[DropReason.TCP_BAD_ACK] == 1


def test_old_ack_ignored_but_data_taken() -> None:
    conn = established()
    send(conn, seg(ack=LOCAL_SEQ - 50, payload=b"x"))
    assert conn.read() == b"x"
    assert conn.snd_una == LOCAL_SEQ + 1


def test_segment_without_ack_dropped() -> None:
    conn = established()
    send(conn, seg(flags=PSH, payload=b"x"))
    assert conn.readable == 0
    assert conn.drops[DropReason.TCP_BAD_STATE] == 1


def test_keepalive_probe_answered() -> None:
    conn = established()
    send(conn, seg(seq=REMOTE_SEQ, payload=b"\x00"))  # Linux keep-alive: one old byte
    assert recv(conn) == [rseg()]
    assert conn.readable == 0


# ----------------------------------------------------------------------------------------
# ESTABLISHED: sending


def test_send_segments_mss_sized_psh_on_last() -> None:
    conn = established()
    assert conn.send(bytes(3000), now=T0) == 3000
    out = recv(conn)
    assert [(s.seq - LOCAL_SEQ, len(s.payload), s.flags) for s in out] == [
        (1, MSS, ACK),
        (1 + MSS, MSS, ACK),
        (1 + 2 * MSS, 3000 - 2 * MSS, ACK | PSH),
    ]
    recv_nothing(conn)
    send(conn, seg(ack=LOCAL_SEQ + 1 + 3000))
    assert conn.snd_una == LOCAL_SEQ + 1 + 3000 and not conn.tx


def test_initial_cwnd_is_ten_segments() -> None:
    conn = established()
    conn.send(bytes(20 * MSS), now=T0)
    assert len(recv(conn)) == 10
    send(conn, seg(ack=LOCAL_SEQ + 1 + 2 * MSS))  # slow start, RFC 3465 byte counting (L = 2)
    assert len(recv(conn)) == 4


def test_send_respects_peer_window() -> None:
    conn = established()
    send(conn, seg(window=3000))
    conn.send(bytes(5000), now=T0)
    # Two full segments fit; the 240-byte sliver waits (sender SWS avoidance).
    assert [len(s.payload) for s in recv(conn)] == [MSS, MSS]
    send(conn, seg(ack=LOCAL_SEQ + 1 + 2 * MSS, window=1000))
    assert [len(s.payload) for s in recv(conn)] == [1000]  # nothing in flight: send what fits


def test_sender_sws_avoidance_waits_for_full_segment() -> None:
    conn = established()
    send(conn, seg(window=MSS + 10))
    conn.send(bytes(5000), now=T0)
    assert [len(s.payload) for s in recv(conn)] == [MSS]  # not the 10-byte sliver
    send(conn, seg(ack=LOCAL_SEQ + 1 + MSS, window=MSS + 10))
    assert [len(s.payload) for s in recv(conn)] == [MSS]


def test_peer_window_is_scaled() -> None:
    conn = established(syn=seg(OPT_SYN, wscale=3, ts_val=None))
    send(conn, seg(window=1000))
    assert conn.snd_wnd == 8000


def test_send_space_is_backpressure() -> None:
    conn = established(TcpConfig(snd_buffer=1000))
    assert conn.send_space == 1000
    assert conn.send(bytes(1500), now=T0) == 1000
    assert conn.send_space == 0 and conn.send(b"x", now=T0) == 0
    recv(conn)
    send(conn, seg(ack=LOCAL_SEQ + 1 + 400))
    assert conn.send_space == 400


def test_send_accepts_memoryview() -> None:
    conn = established()
    assert conn.send(memoryview(b"abcdef")[2:], now=T0) == 4
    assert recv(conn)[0].payload == b"cdef"


# ----------------------------------------------------------------------------------------
# Receive window


def test_window_fills_to_zero_and_reopens_on_read() -> None:
    conn = established(TcpConfig(rcv_buffer=4000, delayed_ack=0))
    for i in range(0, 4000, 1000):
        send(conn, seg(seq=REMOTE_SEQ + 1 + i, payload=bytes(1000)))
    assert recv(conn)[-1] == rseg(ack=REMOTE_SEQ + 4001, window=0)
    # The peer's probe (one byte at rcv_nxt) is answered, the byte not taken.
    send(conn, seg(seq=REMOTE_SEQ + 4001, payload=b"z", ack=LOCAL_SEQ + 1))
    assert recv(conn) == [rseg(ack=REMOTE_SEQ + 4001, window=0)]
    assert conn.readable == 4000
    conn.read(100)
    recv_nothing(conn)  # 100 bytes is not worth a window update (SWS avoidance)
    conn.read(1900)
    assert recv(conn) == [rseg(ack=REMOTE_SEQ + 4001, window=2000)]


def test_data_beyond_window_trimmed() -> None:
    conn = established(TcpConfig(rcv_buffer=1000))
    send(conn, seg(payload=bytes(1500), flags=ACK | FIN))
    assert conn.readable == 1000
    assert conn.state is State.ESTABLISHED  # the FIN was beyond the window
    assert recv(conn) == [rseg(ack=REMOTE_SEQ + 1001, window=0)]


def test_zero_window_still_processes_ack_and_fin() -> None:
    conn = established(TcpConfig(rcv_buffer=10, delayed_ack=0))
    conn.send(b"data", now=T0)
    recv(conn)
    send(conn, seg(payload=bytes(10)))
    recv(conn)
    send(conn, seg(seq=REMOTE_SEQ + 11, ack=LOCAL_SEQ + 5, flags=ACK | FIN))
    assert conn.snd_una == LOCAL_SEQ + 5
    assert conn.state is State.CLOSE_WAIT


def test_window_never_shrinks_with_scaling() -> None:
    conn = established(TcpConfig(rcv_buffer=200_000, delayed_ack=0), syn=seg(OPT_SYN, ts_val=None))
    assert conn._rcv_ws == 2
    rnd = random.Random(5)
    seq = REMOTE_SEQ + 1
    right = conn.rcv_adv
    for _ in range(300):
        n = rnd.randrange(1, 1400)
        if conn.rcv_adv - conn.rcv_nxt >= n:
            send(conn, seg(seq=seq, payload=bytes(n)))
            seq += n
        if rnd.random() < 0.3:
            conn.read(rnd.randrange(1, 5000))
        for s in recv(conn):
            edge = s.ack + (s.window << 2)
            assert edge >= right
            right = edge
        assert conn.readable < 200_000 + 4


def test_window_update_after_zero_window_on_read() -> None:
    conn = established(TcpConfig(rcv_buffer=MSS * 2, delayed_ack=0))
    send(conn, seg(payload=bytes(MSS * 2)))
    assert recv(conn)[-1].window == 0
    conn.read()
    assert recv(conn) == [rseg(ack=REMOTE_SEQ + 1 + 2 * MSS, window=2 * MSS)]


# ----------------------------------------------------------------------------------------
# Zero peer window: persist timer


def test_zero_peer_window_persist_probes_backoff() -> None:
    conn = established()
    send(conn, seg(window=0))
    conn.send(b"hello", now=T0)
    recv_nothing(conn)
    now = T0
    rto0 = conn.rtt.rto
    for factor in (1, 2, 4, 8):
        assert conn.next_deadline() == pytest.approx(now + rto0 * factor)
        delay = rto0 * factor
        now += delay
        conn.handle_timer(now=now)
        assert recv(conn, now) == [rseg(seq=LOCAL_SEQ)]  # probe below snd_una
        send(conn, seg(window=0), now)  # the peer answers: still zero
    assert conn.state is State.ESTABLISHED
    send(conn, seg(window=1000), now)
    assert recv(conn, now) == [rseg(payload=b"hello", flags=ACK | PSH)]


def test_zero_window_never_aborts_while_peer_answers() -> None:
    conn = established()
    send(conn, seg(window=0))
    conn.send(b"hello", now=T0)
    now = T0
    for _ in range(40):
        dl = conn.next_deadline()
        assert dl is not None
        now = dl
        conn.handle_timer(now=now)
        recv(conn, now)
        send(conn, seg(window=0), now)
    assert conn.state is State.ESTABLISHED and events(conn) == []
    assert conn.next_deadline() == pytest.approx(now + 60)  # capped at max_rto


def test_zero_window_unanswered_probes_time_out() -> None:
    conn = established(TcpConfig(max_retransmits=3))
    send(conn, seg(window=0))
    conn.send(b"hello", now=T0)
    now = T0
    for _ in range(4):
        dl = conn.next_deadline()
        assert dl is not None
        now = dl
        conn.handle_timer(now=now)
    assert events(conn) == [TimedOut(TimeoutReason.PERSIST), Closed()]
    assert recv(conn, now)[0].flags == RST | ACK


def test_rto_with_zero_window_is_a_probe_while_peer_answers() -> None:
    conn = established(TcpConfig(max_retransmits=2))
    conn.send(bytes(100), now=T0)
    recv(conn)
    now = T0
    for _ in range(6):
        send(conn, seg(window=0), now)  # acks nothing, window closed
        now = conn.next_deadline() or now
        conn.handle_timer(now=now)
        assert len(recv(conn, now)) == 1
    assert conn.state is State.ESTABLISHED


# ----------------------------------------------------------------------------------------
# Retransmission


def test_rto_go_back_n_with_backoff() -> None:
    """RFC 6298 §5.4-5.6 + RFC 5681 §3.1 (NewReno's ssthresh): resend the first segment,
    back off, then slow start from 1 MSS resends the rest (RFC 6675 §5.1: all presumed lost)."""
    conn = established(TcpConfig(congestion="newreno"))
    conn.send(bytes(3 * MSS), now=T0)
    assert len(recv(conn)) == 3
    rto0 = conn.rtt.rto
    assert conn.next_deadline() == pytest.approx(T0 + rto0)
    conn.handle_timer(now=T0 + 1.0)
    assert conn.cwnd == MSS and conn.ssthresh == 2 * MSS  # flight/2 = 1.5 MSS -> 2 MSS floor
    out = recv(conn, T0 + 1.0)
    assert [(s.seq - LOCAL_SEQ, len(s.payload)) for s in out] == [(1, MSS)]
    assert conn.next_deadline() == pytest.approx(T0 + 1.0 + 2 * rto0)
    send(conn, seg(ack=LOCAL_SEQ + 1 + MSS), T0 + 1.5)
    out = recv(conn, T0 + 1.5)  # cwnd 2 MSS: the rest goes again
    assert [(s.seq - LOCAL_SEQ, len(s.payload)) for s in out] == [(1 + MSS, MSS), (1 + 2 * MSS, MSS)]


def test_rto_resends_only_what_was_sent() -> None:
    """A window-limited partial segment, then RTO: the retransmission must not carry
    never-sent bytes (beyond snd_max and the peer's window). It once did, the peer ACKed
    them, and that ACK was then refused as "acks unsent data": both sides deadlocked.
    (Window-based controller: the segment counts below follow CUBIC's window.)"""
    conn = established(TcpConfig(congestion="cubic"))
    send(conn, seg(window=1000))
    conn.send(bytes(5000), now=T0)
    assert [len(s.payload) for s in recv(conn)] == [1000]
    conn.handle_timer(now=T0 + 1.0)
    out = recv(conn, T0 + 1.0)
    assert [(s.seq - LOCAL_SEQ, len(s.payload)) for s in out] == [(1, 1000)]
    # The peer got it all and opens its window: the ACK is accepted and new data flows.
    send(conn, seg(ack=LOCAL_SEQ + 1 + 1000, window=64000), T0 + 1.1)
    assert conn.snd_una == LOCAL_SEQ + 1 + 1000
    assert not conn.drops.as_dict()
    assert [len(s.payload) for s in recv(conn, T0 + 1.1)] == [MSS]  # cwnd after the RTO: 1 MSS


def test_rto_backoff_doubles_to_max_then_abort() -> None:
    conn = established(TcpConfig(max_retransmits=8, max_rto=10.0))
    conn.send(b"data", now=T0)
    recv(conn)
    now = T0
    rto0 = conn.rtt.rto
    delays = []
    for _ in range(8):
        dl = conn.next_deadline()
        assert dl is not None
        delays.append(round(dl - now, 6))
        now = dl
        conn.handle_timer(now=now)
        assert recv(conn, now) == [rseg(payload=b"data", flags=ACK | PSH)]
    assert delays == [round(min(rto0 * 2**i, 10.0), 6) for i in range(8)]
    assert delays[-1] == 10.0
    now = conn.next_deadline() or now
    conn.handle_timer(now=now)
    assert events(conn) == [TimedOut(TimeoutReason.RETRANSMIT), Closed()]
    assert recv(conn, now) == [rseg(seq=LOCAL_SEQ + 5, flags=RST | ACK, window=0)]


def test_progress_resets_retransmit_count() -> None:
    conn = established(TcpConfig(max_retransmits=2))
    conn.send(bytes(10), now=T0)
    recv(conn)
    now = T0
    for i in range(5):
        now = conn.next_deadline() or now
        conn.handle_timer(now=now)
        recv(conn, now)
        send(conn, seg(ack=LOCAL_SEQ + 2 + i), now)
        conn.send(b"x", now=now)
        recv(conn, now)
    assert conn.state is State.ESTABLISHED


def test_karn_no_rtt_sample_from_retransmission() -> None:
    conn = established()
    conn.send(b"abc", now=T0)
    recv(conn)
    srtt = conn.rtt.srtt
    conn.handle_timer(now=T0 + 1)
    recv(conn, T0 + 1)
    send(conn, seg(ack=LOCAL_SEQ + 4), T0 + 1.05)
    assert conn.rtt.srtt == srtt


def test_rtt_sample_from_new_data() -> None:
    conn = established()
    conn.send(b"abc", now=T0)
    recv(conn)
    send(conn, seg(ack=LOCAL_SEQ + 4), T0 + 0.3)
    expected = RttEstimator(initial_rto=1.0, min_rto=0.2, max_rto=60.0)
    expected.sample(0.0)  # the handshake (ACK at once on the fake clock)
    expected.sample(0.3)
    assert conn.rtt.srtt == pytest.approx(expected.srtt)
    assert conn.rtt.rto == pytest.approx(expected.rto)


def test_timestamps_echoed_and_sampled() -> None:
    conn = established(syn=OPT_SYN)
    send(conn, seg(payload=b"x", ts_val=6000, ts_ecr=int(T0 * 1000)))
    conn.send(b"abc", now=T0 + 0.01)
    (out,) = recv(conn, T0 + 0.01)
    assert out.ts_ecr == 6000 and out.ts_val == int((T0 + 0.01) * 1000) & MASK
    send(conn, seg(ack=LOCAL_SEQ + 4, seq=REMOTE_SEQ + 2, ts_val=6100, ts_ecr=out.ts_val), T0 + 0.26)
    expected = RttEstimator(initial_rto=1.0, min_rto=0.2, max_rto=60.0)
    expected.sample(0.0)  # handshake echo
    expected.sample(0.25)
    assert conn.rtt.srtt == pytest.approx(expected.srtt, abs=0.002)


def test_paws_drops_old_timestamp() -> None:
    conn = established(syn=OPT_SYN)
    send(conn, seg(payload=b"a", ts_val=7000))
    send(conn, seg(seq=REMOTE_SEQ + 2, payload=b"b", ts_val=6000))
    assert conn.read() == b"a"
    assert recv(conn)[-1].ack == REMOTE_SEQ + 2


def test_rtt_estimator_rfc6298() -> None:
    est = RttEstimator(initial_rto=1.0, min_rto=0.2, max_rto=60.0)
    assert est.rto == 1.0
    est.sample(0.1)
    assert est.srtt == 0.1 and est.rttvar == 0.05 and est.rto == pytest.approx(0.3)
    est.sample(0.3)
    assert est.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.2)
    assert est.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.3)
    est.backoff()
    est.backoff()
    assert est.rto == pytest.approx(4 * (est.srtt + 4 * est.rttvar))
    for _ in range(20):
        est.backoff()
    assert est.rto == 60.0
    est.sample(0.001)
    assert est.rto >= 0.2


# ----------------------------------------------------------------------------------------
# Fast retransmit and fast recovery (NewReno)


def _in_flight(conn: TcpConnection, segments: int) -> list[TcpSegment]:
    conn.send(bytes(segments * MSS), now=T0)
    out = recv(conn)
    assert len(out) == segments
    return out


def _recovery(conn: TcpConnection) -> Recovery:
    """``conn.recovery`` through a call, so mypy does not narrow it across assertions."""
    return conn.recovery


def test_fast_retransmit_on_third_dup_ack() -> None:
    """RFC 5681 §3.2 / RFC 6582 for a peer without SACK: the third duplicate ACK resends
    the first segment and starts recovery; the controller sets ssthresh (NewReno: half)."""
    conn = established(TcpConfig(congestion="newreno"))
    _in_flight(conn, 8)
    for _ in range(2):
        send(conn, seg())
        recv_nothing(conn)
    send(conn, seg())
    assert [(s.seq, len(s.payload)) for s in recv(conn)] == [(LOCAL_SEQ + 1, MSS)]
    assert conn.ssthresh == 4 * MSS and conn.recovery is Recovery.RECOVERY
    assert conn.counters.fast_recovery == 1 and conn.counters.retransmitted_bytes == MSS


def test_limited_transmit_on_first_dup_acks() -> None:
    """RFC 3042: each of the first two duplicate ACKs lets one new segment out."""
    conn = established()
    conn.send(bytes(12 * MSS), now=T0)
    assert len(recv(conn)) == 10
    send(conn, seg())
    assert [s.seq for s in recv(conn)] == [LOCAL_SEQ + 1 + 10 * MSS]
    send(conn, seg())
    assert [s.seq for s in recv(conn)] == [LOCAL_SEQ + 1 + 11 * MSS]
    assert conn.counters.fast_recovery == 0


def test_partial_ack_retransmits_next_hole_full_ack_exits() -> None:
    """RFC 6582 §3.2 step 4 (no SACK): a partial ACK resends the next hole at once; the
    full ACK ends recovery with cwnd at ssthresh (RFC 6937 ends there too). CUBIC: a
    window-based controller, whose cwnd after recovery is ssthresh."""
    conn = established(TcpConfig(congestion="cubic"))
    conn.send(bytes(12 * MSS), now=T0)
    assert len(recv(conn)) == 10
    for _ in range(3):
        send(conn, seg())
    recv(conn)
    # Partial ACK: the first hole is filled, the next one is resent at once.
    send(conn, seg(ack=LOCAL_SEQ + 1 + 3 * MSS))
    out = recv(conn)
    assert out[0].seq == LOCAL_SEQ + 1 + 3 * MSS
    assert conn.recovery is Recovery.RECOVERY
    send(conn, seg(ack=LOCAL_SEQ + 1 + 10 * MSS))  # covers the recovery point
    assert _recovery(conn) is Recovery.OPEN and conn.cwnd <= conn.ssthresh


def test_dup_acks_with_data_or_window_change_do_not_count() -> None:
    conn = established()
    _in_flight(conn, 5)
    send(conn, seg(window=1000 + 64240))
    send(conn, seg(seq=REMOTE_SEQ + 1, payload=b"x"))
    send(conn, seg(seq=REMOTE_SEQ + 2, payload=b"y", window=65240))
    assert conn._dupacks == 0


# ----------------------------------------------------------------------------------------
# Out-of-order reassembly and SACK


def test_out_of_order_reassembly() -> None:
    conn = established()
    send(conn, seg(seq=REMOTE_SEQ + 4, payload=b"def"))
    assert recv(conn) == [rseg()]  # immediate duplicate ACK
    assert conn.readable == 0
    send(conn, seg(seq=REMOTE_SEQ + 10, payload=b"jk"))
    recv(conn)
    send(conn, seg(seq=REMOTE_SEQ + 1, payload=b"abc"))
    assert recv(conn) == [rseg(ack=REMOTE_SEQ + 7, window=65535 - 6)]  # gap filled: ACK now
    send(conn, seg(seq=REMOTE_SEQ + 7, payload=b"ghi"))
    assert conn.read() == b"abcdefghijk"


def test_out_of_order_overlaps_merge() -> None:
    conn = established()
    send(conn, seg(seq=REMOTE_SEQ + 5, payload=b"efg"))
    send(conn, seg(seq=REMOTE_SEQ + 10, payload=b"jkl"))
    send(conn, seg(seq=REMOTE_SEQ + 6, payload=b"fghijklmn"))
    send(conn, seg(seq=REMOTE_SEQ + 3, payload=b"cde"))
    assert conn._ooo is not None and conn._ooo.blocks == 1
    send(conn, seg(seq=REMOTE_SEQ + 1, payload=b"ab"))
    assert conn.read() == b"abcdefghijklmn"


def test_sack_blocks_most_recent_first() -> None:
    conn = established(syn=seg(OPT_SYN, ts_val=None, wscale=None))
    send(conn, seg(seq=REMOTE_SEQ + 101, payload=bytes(10)))
    assert recv(conn) == [rseg(sack_blocks=((REMOTE_SEQ + 101, REMOTE_SEQ + 111),))]
    send(conn, seg(seq=REMOTE_SEQ + 201, payload=bytes(10)))
    assert recv(conn)[0].sack_blocks == ((REMOTE_SEQ + 201, REMOTE_SEQ + 211), (REMOTE_SEQ + 101, REMOTE_SEQ + 111))
    send(conn, seg(seq=REMOTE_SEQ + 111, payload=bytes(10)))  # extends the first block
    assert recv(conn)[0].sack_blocks == ((REMOTE_SEQ + 101, REMOTE_SEQ + 121), (REMOTE_SEQ + 201, REMOTE_SEQ + 211))
    for i in range(4):
        send(conn, seg(seq=REMOTE_SEQ + 301 + 100 * i, payload=bytes(10)))
    assert len(recv(conn)[0].sack_blocks) == 4  # no timestamps: room for 4
    send(conn, seg(payload=bytes(100)))
    out = recv(conn)
    assert out[0].ack == REMOTE_SEQ + 121
    assert out[0].sack_blocks[0] == (REMOTE_SEQ + 601, REMOTE_SEQ + 611)  # latest out-of-order arrival


def test_sack_blocks_limited_with_timestamps_and_shrink_payload() -> None:
    conn = established(syn=OPT_SYN)
    for i in range(5):
        send(conn, seg(seq=REMOTE_SEQ + 101 + 100 * i, payload=bytes(10), ts_val=5001))
    recv(conn)
    conn.send(bytes(3000), now=T0)
    out = recv(conn)
    assert all(len(s.sack_blocks) == 3 for s in out)
    assert max(len(s.payload) for s in out) == MSS - 12 - 28


def test_no_sack_blocks_without_permission() -> None:
    conn = established()
    send(conn, seg(seq=REMOTE_SEQ + 101, payload=bytes(10)))
    assert recv(conn)[0].sack_blocks == ()


def test_out_of_order_fin() -> None:
    conn = established()
    send(conn, seg(seq=REMOTE_SEQ + 4, payload=b"def", flags=ACK | FIN))
    assert conn.state is State.ESTABLISHED
    send(conn, seg(payload=b"abc"))
    assert state(conn) is State.CLOSE_WAIT and conn.read() == b"abcdef"
    assert events(conn) == [PeerFin()] and conn.peer_eof


# ----------------------------------------------------------------------------------------
# FIN in every state


def test_fin_established_to_close_wait_after_data() -> None:
    conn = established()
    send(conn, seg(payload=b"tail", flags=ACK | FIN | PSH))
    assert conn.state is State.CLOSE_WAIT
    recv_nothing(conn)
    assert recv(conn, T0 + BASE_CONFIG.delayed_ack) == [rseg(ack=REMOTE_SEQ + 6, window=65535 - 5)]
    assert events(conn) == [PeerFin()]
    assert not conn.peer_eof
    assert conn.read() == b"tail" and conn.peer_eof


def test_close_wait_can_still_send_then_last_ack() -> None:
    conn = close_wait()
    conn.send(b"reply", now=T0)
    assert recv(conn) == [rseg(ack=REMOTE_SEQ + 2, payload=b"reply", flags=ACK | PSH, window=WIN_AFTER_FIN)]
    conn.close(now=T0)
    assert conn.state is State.LAST_ACK
    assert recv(conn) == [rseg(seq=LOCAL_SEQ + 6, ack=REMOTE_SEQ + 2, flags=FIN | ACK, window=WIN_AFTER_FIN)]
    send(conn, seg(seq=REMOTE_SEQ + 2, ack=LOCAL_SEQ + 7))
    assert conn.is_closed and events(conn) == [PeerFin(), Closed()]


def test_close_wait_retransmitted_fin_reacked() -> None:
    conn = close_wait()
    send(conn, seg(flags=FIN | ACK))
    assert recv(conn) == [rseg(ack=REMOTE_SEQ + 2, window=WIN_AFTER_FIN)]
    assert events(conn) == [PeerFin()]


def test_fin_wait_1_fin_then_closing() -> None:
    conn = closing()
    assert events(conn) == [PeerFin()]
    send(conn, seg(seq=REMOTE_SEQ + 2, ack=LOCAL_SEQ + 2))
    assert conn.state is State.TIME_WAIT


def test_fin_wait_1_fin_ack_to_time_wait() -> None:
    conn = fin_wait_1()
    send(conn, seg(flags=FIN | ACK, ack=LOCAL_SEQ + 2))
    assert conn.state is State.TIME_WAIT
    assert recv(conn) == [rseg(seq=LOCAL_SEQ + 2, ack=REMOTE_SEQ + 2, window=WIN_AFTER_FIN)]


def test_fin_wait_1_sends_queued_data_first() -> None:
    conn = established()
    conn.send(bytes(2 * MSS), now=T0)
    conn.close(now=T0)
    assert conn.state is State.FIN_WAIT_1
    out = recv(conn)
    assert [s.flags for s in out] == [ACK, ACK | PSH | FIN]
    send(conn, seg(ack=LOCAL_SEQ + 1 + 2 * MSS))
    assert conn.state is State.FIN_WAIT_1
    send(conn, seg(ack=LOCAL_SEQ + 2 + 2 * MSS))
    assert state(conn) is State.FIN_WAIT_2


def test_fin_retransmitted_on_rto() -> None:
    conn = fin_wait_1()
    conn.handle_timer(now=T0 + 1)
    assert recv(conn, T0 + 1) == [rseg(flags=FIN | ACK)]


def test_closing_retransmitted_fin_reacked() -> None:
    conn = closing()
    send(conn, seg(flags=FIN | ACK))
    assert recv(conn) == [rseg(seq=LOCAL_SEQ + 2, ack=REMOTE_SEQ + 2, window=WIN_AFTER_FIN)]


def test_fin_wait_2_fin_to_time_wait() -> None:
    conn = time_wait()
    assert events(conn) == [PeerFin()]


def test_last_ack_retransmitted_fin_reacked() -> None:
    conn = last_ack()
    send(conn, seg(flags=FIN | ACK))
    assert recv(conn) == [rseg(seq=LOCAL_SEQ + 2, ack=REMOTE_SEQ + 2, window=WIN_AFTER_FIN)]
    assert conn.state is State.LAST_ACK


def test_last_ack_fin_retransmitted_on_rto() -> None:
    conn = last_ack()
    conn.handle_timer(now=T0 + 1)
    assert recv(conn, T0 + 1) == [rseg(flags=FIN | ACK, ack=REMOTE_SEQ + 2, window=WIN_AFTER_FIN)]


def test_close_is_idempotent_and_send_after_close_is_misuse() -> None:
    conn = fin_wait_1()
    conn.close(now=T0)
    recv_nothing(conn)
    with pytest.raises(ConfigError):
        conn.send(b"x", now=T0)
    assert conn.send_space == 0


# ----------------------------------------------------------------------------------------
# TIME-WAIT and timeouts


def test_time_wait_expires_once() -> None:
    conn = time_wait()
    assert conn.next_deadline() == pytest.approx(T0 + 30)
    conn.handle_timer(now=T0 + 29)
    assert conn.state is State.TIME_WAIT
    conn.handle_timer(now=T0 + 30)
    assert conn.is_closed and events(conn) == [PeerFin(), Closed()]
    recv_nothing(conn, T0 + 30)
    conn.handle_timer(now=T0 + 60)
    assert events(conn) == []
    assert conn.next_deadline() is None


def test_time_wait_retransmitted_fin_restarts_timer() -> None:
    conn = time_wait()
    send(conn, seg(flags=FIN | ACK, ack=LOCAL_SEQ + 2), T0 + 10)
    assert recv(conn, T0 + 10) == [rseg(seq=LOCAL_SEQ + 2, ack=REMOTE_SEQ + 2, window=WIN_AFTER_FIN)]
    assert conn.next_deadline() == pytest.approx(T0 + 40)


def test_time_wait_new_syn_gets_challenge_ack() -> None:
    conn = time_wait()
    new_syn = seg(SYN_TEMPL, seq=REMOTE_SEQ + 100000)
    assert conn.can_reopen(new_syn)
    assert not conn.can_reopen(seg(SYN_TEMPL, seq=REMOTE_SEQ - 5))
    send(conn, new_syn)
    assert recv(conn) == [rseg(seq=LOCAL_SEQ + 2, ack=REMOTE_SEQ + 2, window=WIN_AFTER_FIN)]
    # The client's RST for that ACK ends TIME-WAIT; its next SYN opens a new flow.
    send(conn, seg(flags=RST, seq=REMOTE_SEQ + 2, ack=0))
    assert conn.is_closed and events(conn) == [PeerFin(), Closed()]


def test_fin_wait_2_times_out_without_peer_traffic() -> None:
    conn = fin_wait_2()
    assert conn.next_deadline() == pytest.approx(T0 + 60)
    send(conn, seg(payload=b"still here"), T0 + 50)  # half-closed peer keeps sending
    assert conn.read() == b"still here"
    recv(conn, T0 + 51)  # after the delayed ACK
    assert conn.next_deadline() == pytest.approx(T0 + 110)
    conn.handle_timer(now=T0 + 110)
    assert events(conn) == [TimedOut(TimeoutReason.FIN_WAIT_2), Closed()]
    assert recv(conn, T0 + 110)[0].flags == RST | ACK


def test_idle_timeout_aborts() -> None:
    conn = established(TcpConfig(idle_timeout=100))
    assert conn.next_deadline() == pytest.approx(T0 + 100)
    send(conn, seg(payload=b"x"), T0 + 50)
    recv(conn, T0 + 51)
    assert conn.next_deadline() == pytest.approx(T0 + 150)
    conn.handle_timer(now=T0 + 150)
    assert events(conn) == [TimedOut(TimeoutReason.IDLE), Closed()]
    assert recv(conn, T0 + 150) == [rseg(seq=LOCAL_SEQ + 1, ack=REMOTE_SEQ + 2, flags=RST | ACK, window=0)]


@pytest.mark.parametrize("garbage", [b"", b"\x00"])
def test_keepalive_probe_refreshes_idle_timer_and_is_acked(garbage: bytes) -> None:
    """RFC 1122 4.2.3.6 keep-alives (seq = RCV.NXT - 1, no data or one garbage byte) fail
    the RFC 9293 acceptance test but show the peer is alive: ACK them and restart the
    idle timer (issue 9: the flow used to be cut off after idle_timeout anyway)."""
    conn = established(TcpConfig(idle_timeout=100))
    send(conn, seg(seq=REMOTE_SEQ, payload=garbage), T0 + 90)
    assert recv(conn, T0 + 90) == [rseg(window=65535)]
    assert conn.next_deadline() == pytest.approx(T0 + 190)
    conn.handle_timer(now=T0 + 150)
    assert events(conn) == [] and conn.state is State.ESTABLISHED
    assert not conn.drops.as_dict()


def test_close_wait_idle_timeout() -> None:
    conn = close_wait(TcpConfig(idle_timeout=10))
    conn.handle_timer(now=T0 + 10)
    assert events(conn)[-2:] == [TimedOut(TimeoutReason.IDLE), Closed()]


# ----------------------------------------------------------------------------------------
# RST in every state

SYNCHRONIZED = {
    "established": established,
    "fin_wait_1": fin_wait_1,
    "fin_wait_2": fin_wait_2,
    "closing": closing,
    "close_wait": close_wait,
    "last_ack": last_ack,
}


def _rcv_nxt(conn: TcpConnection) -> int:
    return conn.rcv_nxt


@pytest.mark.parametrize("name", sorted(SYNCHRONIZED))
def test_exact_rst_resets(name: str) -> None:
    conn = SYNCHRONIZED[name]()
    events(conn)
    send(conn, seg(flags=RST, seq=_rcv_nxt(conn), ack=0))
    assert conn.is_closed
    assert events(conn) == [PeerReset(), Closed()]
    recv_nothing(conn)


@pytest.mark.parametrize("name", sorted(SYNCHRONIZED))
def test_in_window_rst_gets_challenge_ack(name: str) -> None:
    conn = SYNCHRONIZED[name]()
    send(conn, seg(flags=RST, seq=_rcv_nxt(conn) + 10, ack=0))
    assert not conn.is_closed
    out = recv(conn)
    assert len(out) == 1 and out[0].flags == ACK and out[0].ack == conn.rcv_nxt


@pytest.mark.parametrize("name", sorted(SYNCHRONIZED))
def test_out_of_window_rst_ignored(name: str) -> None:
    conn = SYNCHRONIZED[name]()
    send(conn, seg(flags=RST, seq=_rcv_nxt(conn) + 100_000, ack=0))
    send(conn, seg(flags=RST, seq=_rcv_nxt(conn) - 1, ack=0))
    assert not conn.is_closed
    recv_nothing(conn)
    assert conn.drops[DropReason.TCP_OUT_OF_WINDOW] == 2


@pytest.mark.parametrize("name", sorted(SYNCHRONIZED))
def test_syn_in_synchronized_state_gets_challenge_ack(name: str) -> None:
    conn = SYNCHRONIZED[name]()
    send(conn, seg(SYN_TEMPL, seq=REMOTE_SEQ + 5000))
    out = recv(conn)
    assert len(out) == 1 and out[0].flags == ACK
    assert not conn.is_closed


def test_time_wait_exact_rst_closes_without_peer_reset() -> None:
    conn = time_wait()
    events(conn)
    send(conn, seg(flags=RST, seq=REMOTE_SEQ + 2, ack=0))
    assert events(conn) == [Closed()]


def test_challenge_acks_rate_limited() -> None:
    conn = established()
    for i in range(30):
        send(conn, seg(flags=RST, seq=REMOTE_SEQ + 50, ack=0))
        # RFC 5961 §3.2: each in-window RST earns one challenge ACK, up to the limit per second.
        challenge = [(LOCAL_SEQ + 1, REMOTE_SEQ + 1, ACK, b"")] if i < 10 else []
        assert [(x.seq, x.ack, x.flags, x.payload) for x in recv(conn)] == challenge, i
    assert not conn.is_closed and events(conn) == []
    sent = 0
    conn2 = established()
    for _ in range(30):
        send(conn2, seg(flags=RST, seq=REMOTE_SEQ + 50, ack=0))
        sent += len(recv(conn2))
    assert sent == 10
    send(conn2, seg(flags=RST, seq=REMOTE_SEQ + 50, ack=0), T0 + 1.5)
    assert len(recv(conn2, T0 + 1.5)) == 1


def test_segment_to_closed_connection_answered_with_rst() -> None:
    conn = established()
    conn.abort()
    recv(conn)
    send(conn, seg(payload=b"late", ack=LOCAL_SEQ + 1))
    assert recv(conn) == [rseg(seq=LOCAL_SEQ + 1, ack=0, flags=RST, window=0)]
    send(conn, seg(flags=RST))
    recv_nothing(conn)


# ----------------------------------------------------------------------------------------
# Abort


def test_abort_sends_rst_and_closes_once() -> None:
    conn = established()
    conn.send(b"pending", now=T0)
    conn.abort()
    assert recv(conn) == [rseg(seq=LOCAL_SEQ + 1, flags=RST | ACK, window=0)]
    assert events(conn) == [Closed()]
    conn.abort()
    assert events(conn) == [] and conn.send(b"x", now=T0) == 0
    assert conn.next_deadline() is None


def test_abort_before_accept_is_refuse() -> None:
    conn = syn_received()
    conn.abort()
    assert recv(conn) == [rseg(seq=0, ack=REMOTE_SEQ + 1, flags=RST | ACK, window=0)]


def test_data_readable_after_close() -> None:
    # Host closes first: what the peer sent before stays readable in FIN-WAIT-1.
    conn = established()
    send(conn, seg(payload=b"unread"))
    conn.close(now=T0)
    assert [(x.seq, x.ack, x.flags) for x in recv(conn)] == [(LOCAL_SEQ + 1, REMOTE_SEQ + 7, FIN | ACK)]
    assert state(conn) is State.FIN_WAIT_1 and conn.read() == b"unread" and not conn.peer_eof
    # Peer closes first: still readable once the connection is closed.
    conn2 = established()
    send(conn2, seg(payload=b"unread", flags=ACK | FIN))
    conn2.close(now=T0)
    recv(conn2)
    send(conn2, seg(seq=REMOTE_SEQ + 8, ack=LOCAL_SEQ + 2))
    assert conn2.is_closed and conn2.read() == b"unread" and conn2.peer_eof


# ----------------------------------------------------------------------------------------
# Half-close both ways


def test_half_close_peer_fin_while_host_sends() -> None:
    conn = established()
    send(conn, seg(flags=FIN | ACK))
    assert events(conn) == [PeerFin()] and conn.peer_eof
    recv(conn)
    total = 0
    for _ in range(5):
        conn.send(bytes(1000), now=T0)
        out = recv(conn)
        total += sum(len(s.payload) for s in out)
        send(conn, seg(seq=REMOTE_SEQ + 2, ack=LOCAL_SEQ + 1 + total))
    assert total == 5000 and conn.state is State.CLOSE_WAIT
    conn.close(now=T0)
    (fin,) = recv(conn)
    send(conn, seg(seq=REMOTE_SEQ + 2, ack=fin.seq + 1))
    assert conn.is_closed


def test_half_close_host_eof_while_peer_sends() -> None:
    conn = fin_wait_2(TcpConfig(delayed_ack=0))
    got = bytearray()
    for i in range(20):
        send(conn, seg(seq=REMOTE_SEQ + 1 + 1000 * i, ack=LOCAL_SEQ + 2, payload=bytes([i]) * 1000))
        got += conn.read()
        assert recv(conn)[-1].ack == REMOTE_SEQ + 1 + 1000 * (i + 1)
    assert len(got) == 20000 and conn.state is State.FIN_WAIT_2
    send(conn, seg(seq=REMOTE_SEQ + 20001, ack=LOCAL_SEQ + 2, flags=FIN | ACK))
    assert state(conn) is State.TIME_WAIT


# ----------------------------------------------------------------------------------------
# Sequence wrap-around


def test_wraparound_both_directions() -> None:
    peer_isn = (1 << 32) - 1000
    our_isn = (1 << 32) - 500
    syn = seg(SYN_TEMPL, seq=peer_isn)
    conn = accepted(syn=syn, isn=our_isn)
    send(conn, seg(seq=(peer_isn + 1) & MASK, ack=(our_isn + 1) & MASK))
    assert conn.state is State.ESTABLISHED
    data = os.urandom(3000)
    seq = (peer_isn + 1) & MASK
    for i in range(0, 3000, 1000):
        send(conn, seg(seq=(seq + i) & MASK, ack=(our_isn + 1) & MASK, payload=data[i : i + 1000]))
    assert conn.read() == data
    assert conn.rcv_nxt == (peer_isn + 3001) & MASK
    conn.send(data, now=T0)
    out = recv(conn)
    assert b"".join(s.payload for s in out) == data
    assert out[-1].seq == (our_isn + 1 + 2 * MSS) & MASK
    send(conn, seg(seq=conn.rcv_nxt, ack=(our_isn + 3001) & MASK))
    assert not conn.tx and conn.snd_una == (our_isn + 3001) & MASK
    # Out-of-order across the wrap too.
    base = conn.rcv_nxt
    send(conn, seg(seq=(base + 10) & MASK, ack=conn.snd_una, payload=b"later"))
    send(conn, seg(seq=base, ack=conn.snd_una, payload=b"0123456789"))
    assert conn.read() == b"0123456789later"


# ----------------------------------------------------------------------------------------
# Fuzz: nothing a peer sends makes the core raise

STATES: dict[str, Callable[..., TcpConnection]] = {
    "syn_received": syn_received,
    "accepted": accepted,
    "established": established,
    "fin_wait_1": fin_wait_1,
    "fin_wait_2": fin_wait_2,
    "closing": closing,
    "time_wait": time_wait,
    "close_wait": close_wait,
    "last_ack": last_ack,
}

_u32 = st.integers(0, MASK)
_near = st.integers(-70000, 70000)
_segment = st.fixed_dictionaries(
    {
        "seq": st.one_of(_u32, _near.map(lambda d: (REMOTE_SEQ + 1 + d) & MASK)),
        "ack": st.one_of(_u32, _near.map(lambda d: (LOCAL_SEQ + 1 + d) & MASK)),
        "flags": st.integers(0, 0xFF).map(lambda f: type(SYN)(f)),
        "window": st.integers(0, 0xFFFF),
        "payload": st.binary(max_size=1500),
        "mss": st.one_of(st.none(), st.integers(0, 0xFFFF)),
        "wscale": st.one_of(st.none(), st.integers(0, 255)),
        "sack_permitted": st.booleans(),
        "sack_blocks": st.lists(st.tuples(_u32, _u32), max_size=4).map(tuple),
        "ts_val": st.one_of(st.none(), _u32),
        "ts_ecr": st.one_of(st.none(), _u32),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.sampled_from(sorted(STATES)),
    options=st.booleans(),
    segments=st.lists(st.tuples(_segment, st.floats(0, 5)), max_size=12),
    host_ops=st.lists(st.sampled_from(["send", "read", "close", "abort", "timer"]), max_size=6),
)
def test_fuzz_never_raises(
    start: str, options: bool, segments: list[tuple[dict[str, Any], float]], host_ops: list[str]
) -> None:
    syn = OPT_SYN if options else SYN_TEMPL
    make = STATES[start]
    conn = (
        make(BASE_CONFIG_FUZZ, syn) if start in ("syn_received", "accepted", "established") else make(BASE_CONFIG_FUZZ)
    )
    now = T0
    ops = iter(host_ops)
    for fields, dt in segments:
        now += dt
        conn.handle_segment(seg(**fields), now=now)
        op = next(ops, None)
        if op == "send" and conn.accepted and not conn._host_closed:
            conn.send(b"x" * 3000, now=now)
        elif op == "read":
            conn.read(700)
        elif op == "close" and conn.accepted:
            conn.close(now=now)
        elif op == "abort":
            conn.abort()
        elif op == "timer":
            dl = conn.next_deadline()
            if dl is not None:
                now = max(now, dl)
            conn.handle_timer(now=now)
        for out in conn.segments_to_send(now=now):
            assert out.src == LOCAL_ADDR and 0 <= out.seq <= MASK and 0 <= out.ack <= MASK
            assert 0 <= out.window <= 0xFFFF
            assert len(out.payload) <= conn.mss
        assert conn.readable <= BASE_CONFIG_FUZZ.rcv_buffer + (1 << 14)
        assert len(conn.tx) <= BASE_CONFIG_FUZZ.snd_buffer
        while conn.next_event() is not None:
            pass


BASE_CONFIG_FUZZ = TcpConfig(rcv_buffer=4000, snd_buffer=5000)


# ----------------------------------------------------------------------------------------
# Two-sided: a scripted client over a lossy fake link moves 1 MiB each way


@pytest.mark.parametrize(
    ("seed", "loss", "dup", "options"),
    [(1, 0.0, 0.0, False), (2, 0.05, 0.02, False), (3, 0.05, 0.02, True), (4, 0.1, 0.05, True)],
)
def test_two_sided_transfer_lossy_link(seed: int, loss: float, dup: float, options: bool) -> None:
    rnd = random.Random(seed)
    up = rnd.randbytes(1 << 20)
    down = rnd.randbytes(1 << 20)
    res = run_transfer(up, down, seed=seed, loss=loss, dup=dup, options=options)
    assert res.host_received == up
    assert res.client_received == down
    assert res.client.done
    assert res.conn.is_closed
    assert res.events.count(Closed()) == 1 and PeerFin() in res.events
    assert not any(isinstance(e, (PeerReset, TimedOut)) for e in res.events)
    if options and loss:
        assert res.client.sack_blocks_seen > 0


def test_two_sided_transfer_across_sequence_wrap() -> None:
    rnd = random.Random(9)
    up = rnd.randbytes(300_000)
    down = rnd.randbytes(300_000)
    res = run_transfer(
        up, down, seed=9, loss=0.03, dup=0.01, options=True, isn=(1 << 32) - 100_000, client_isn=(1 << 32) - 50_000
    )
    assert res.host_received == up and res.client_received == down and res.conn.is_closed


def test_two_sided_transfer_slow_host_reader_zero_window() -> None:
    rnd = random.Random(11)
    up = rnd.randbytes(200_000)
    res = run_transfer(
        up, b"", seed=11, loss=0.02, host_read_chunk=500, config=TcpConfig(rcv_buffer=8000, time_wait=1.0)
    )
    assert res.host_received == up
    assert res.conn.is_closed and res.client.done
