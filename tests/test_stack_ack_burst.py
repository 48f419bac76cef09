"""Stack.receive_ips: a burst of tunnel packets, where a pure ACK that the next ACK of its
flow makes redundant is absorbed (net/stack.py). Everything else is receive_ip one by one."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from tests.conftest import seeded_rng
from wgslirpy.net.build import build_tcp
from wgslirpy.net.packet import decode_ip
from wgslirpy.net.segments import TcpFlags, TcpSegment
from wgslirpy.net.stack import Stack, StackConfig, TcpConnectRequested
from wgslirpy.net.tcp import TcpConnection

CLIENT = ipaddress.ip_address("10.0.0.2")
SERVER = ipaddress.ip_address("192.0.2.10")
NOW = 100.0
ACK = TcpFlags.ACK


class Flow:
    """A stack with one established flow that has ``segments`` full segments in flight."""

    def __init__(self, segments: int = 20, *, sack: bool = True, sport: int = 40000) -> None:
        self.stack = Stack(StackConfig(mtu=1420), rng=seeded_rng(7))
        self.sport = sport
        self.sack = sack
        syn = TcpSegment(
            CLIENT, SERVER, sport, 80, 1000, 0, TcpFlags.SYN, 64240, mss=1380, wscale=7, sack_permitted=sack
        )
        self.stack.receive_ip(build_tcp(syn), now=NOW)
        ev = self.stack.next_event()
        assert isinstance(ev, TcpConnectRequested)
        self.conn: TcpConnection = ev.conn
        self.stack.tcp_accept(self.conn, now=NOW)
        (synack,) = self.sent()
        self.iss = synack.seq
        self.stack.receive_ip(self.ack_packet(0), now=NOW)
        self.stack.tcp_send(self.conn, bytes(1380 * segments), now=NOW)
        self.data = [s for s in self.sent() if s.payload]
        assert len(self.data) == min(segments, 10)  # the initial window

    def sent(self) -> list[TcpSegment]:
        out = [decode_ip(p) for p in self.stack.packets_to_send(now=NOW)]
        assert all(isinstance(s, TcpSegment) for s in out)
        return out  # type: ignore[return-value]

    def ack_packet(self, acked: int, *, window: int = 500, sack: tuple[tuple[int, int], ...] = (), **kw: Any) -> bytes:
        """The client's pure ACK of ``acked`` bytes of our data."""
        fields: dict[str, Any] = {"sack_blocks": sack} | kw
        return build_tcp(
            TcpSegment(CLIENT, SERVER, self.sport, 80, 1001, (self.iss + 1 + acked) & 0xFFFFFFFF, ACK, window, **fields)
        )

    def state(self) -> tuple[int, ...]:
        c = self.conn
        return (c.snd_una, c.snd_nxt, c.snd_max, c.snd_wnd, c.cwnd, c.ssthresh)


def test_a_run_of_cumulative_acks_is_absorbed_by_the_last() -> None:
    one, burst = Flow(), Flow()
    acks = [(1380 * k, 500 + k) for k in (1, 2, 4, 6)]
    for acked, wnd in acks:
        one.stack.receive_ip(one.ack_packet(acked, window=wnd), now=NOW + 0.01)
    burst.stack.receive_ips([(burst.ack_packet(acked, window=wnd), NOW + 0.01) for acked, wnd in acks])
    assert burst.conn.snd_una == one.conn.snd_una == (one.iss + 1 + 1380 * 6) & 0xFFFFFFFF
    assert burst.conn.snd_wnd == one.conn.snd_wnd  # the last ACK's window
    assert burst.stack.stats.tcp_acks_absorbed == 3 and one.stack.stats.tcp_acks_absorbed == 0
    assert burst.stack.stats.rx_packets == one.stack.stats.rx_packets
    assert "tcp_acks_absorbed" in burst.stack.stats.as_dict()
    assert "tcp_acks_absorbed" not in one.stack.stats.as_dict()  # reported once it happened


@pytest.mark.parametrize("sack", [True, False])
def test_duplicate_acks_are_never_absorbed(sack: bool) -> None:
    """Without SACK, the third duplicate ACK is what starts fast retransmit (RFC 5681)."""
    one, burst = Flow(sack=sack), Flow(sack=sack)
    dups = [one.ack_packet(1380)] * 4
    for p in dups:
        one.stack.receive_ip(p, now=NOW + 0.01)
    burst.stack.receive_ips([(p, NOW + 0.01) for p in dups])
    assert burst.stack.stats.tcp_acks_absorbed == 0
    assert burst.state() == one.state()
    assert [s.seq for s in burst.sent()] == [s.seq for s in one.sent()]


def test_acks_with_sack_blocks_or_out_of_order_are_not_absorbed() -> None:
    f = Flow()
    base = f.iss + 1
    sacked = ((base + 1380 * 3) & 0xFFFFFFFF, (base + 1380 * 4) & 0xFFFFFFFF)
    f.stack.receive_ips(
        [
            (f.ack_packet(1380, sack=(sacked,)), NOW),  # carries scoreboard news
            (f.ack_packet(1380 * 2), NOW),  # reordered: the next one acknowledges less
            (f.ack_packet(1380), NOW),
        ]
    )
    assert f.stack.stats.tcp_acks_absorbed == 0


def test_acks_are_absorbed_only_within_their_own_flow_and_run() -> None:
    a = Flow(sport=40000)
    b = Flow(sport=40001)  # only its packets are used: a flow a's stack does not know
    stack = a.stack
    data = build_tcp(
        TcpSegment(CLIENT, SERVER, 40000, 80, 1001, (a.iss + 1 + 1380) & 0xFFFFFFFF, ACK | TcpFlags.PSH, 500, b"x")
    )
    stack.receive_ips(
        [
            (a.ack_packet(1380), NOW),
            (b.ack_packet(1380 * 2), NOW),  # another flow between (unknown here: answered with RST)
            (a.ack_packet(1380 * 2), NOW),
            (data, NOW),  # data breaks the run
            (a.ack_packet(1380 * 3), NOW),
        ]
    )
    assert stack.stats.tcp_acks_absorbed == 0
    assert a.conn.snd_una == (a.iss + 1 + 1380 * 3) & 0xFFFFFFFF


def test_a_newer_timestamp_is_required() -> None:
    f = Flow()
    f.stack.receive_ips(
        [(f.ack_packet(1380, ts_val=50, ts_ecr=0), NOW), (f.ack_packet(1380 * 2, ts_val=49, ts_ecr=0), NOW)]
    )
    assert f.stack.stats.tcp_acks_absorbed == 0
    g = Flow()
    g.stack.receive_ips(
        [(g.ack_packet(1380, ts_val=50, ts_ecr=0), NOW), (g.ack_packet(1380 * 2, ts_val=50, ts_ecr=0), NOW)]
    )
    assert g.stack.stats.tcp_acks_absorbed == 1


def test_bad_packets_in_a_burst_are_counted_like_receive_ip() -> None:
    f = Flow()
    f.stack.receive_ips([(b"\x45garbage", NOW), (f.ack_packet(1380), NOW), (b"", NOW), (f.ack_packet(2760), NOW)])
    assert f.stack.drops.total() >= 1
    assert f.conn.snd_una == (f.iss + 1 + 2760) & 0xFFFFFFFF
