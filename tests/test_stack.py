"""The pure IP stack: dispatch, policy (loopback, -P/-D, RST for strays), events, timers."""

from __future__ import annotations

import ipaddress
from typing import Any

import dns.message
import dns.rdatatype
import pytest

from wgslirpy.errors import DropReason
from wgslirpy.net.build import build_icmp_echo, build_tcp, build_udp
from wgslirpy.net.packet import decode_ip
from wgslirpy.net.segments import (
    IcmpEcho,
    IcmpError,
    IPAddress,
    IpProto,
    TcpFlags,
    TcpSegment,
    UdpDatagram,
    Unreachable,
)
from wgslirpy.net.stack import (
    DnsLookup,
    DnsTcpRequested,
    FlowRefused,
    Stack,
    StackConfig,
    TcpConnectRequested,
    UdpSend,
)
from wgslirpy.net.tcp import State, TcpConnection, TcpCounters
from wgslirpy.net.udp_nat import BindingClosed, BindingOpened

from .conftest import seeded_rng

CLIENT = ipaddress.ip_address("10.0.0.2")
CLIENT6 = ipaddress.ip_address("fd00::2")
PING = ipaddress.ip_address("10.0.0.1")
PING6 = ipaddress.ip_address("fd00::1")
DNS = ipaddress.ip_address("10.0.0.53")
SERVER = ipaddress.ip_address("192.0.2.10")
SERVER6 = ipaddress.ip_address("2001:db8::10")
NOW = 100.0


def make_stack(**kw: object) -> Stack:
    cfg = StackConfig(
        mtu=1420,
        pingable=frozenset({PING, PING6}),
        dns=frozenset({(DNS, 53)}),
        **kw,  # type: ignore[arg-type]
    )
    return Stack(cfg, rng=seeded_rng(7))


def syn(
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address = SERVER,
    dport: int = 80,
    sport: int = 40000,
    src: ipaddress.IPv4Address | ipaddress.IPv6Address = CLIENT,
    seq: int = 1000,
) -> TcpSegment:
    return TcpSegment(
        src, dst, sport, dport, seq, 0, TcpFlags.SYN, 64240, mss=1380, wscale=7, sack_permitted=True, ts_val=1, ts_ecr=0
    )


def events(stack: Stack) -> list[Any]:
    out: list[Any] = []
    while (ev := stack.next_event()) is not None:
        out.append(ev)
    return out


def sent(stack: Stack, now: float = NOW) -> list[Any]:
    return [decode_ip(p) for p in stack.packets_to_send(now=now)]


# --- ICMP echo -------------------------------------------------------------------------


@pytest.mark.parametrize("src, dst", [(CLIENT, PING), (CLIENT6, PING6)])
def test_echo_at_pingable_address_is_answered(src: IPAddress, dst: IPAddress) -> None:
    s = make_stack()
    s.receive_ip(build_icmp_echo(IcmpEcho(src, dst, True, 7, 3, b"x" * 1000)), now=NOW)
    (reply,) = sent(s)
    assert reply == IcmpEcho(dst, src, False, 7, 3, b"x" * 1000)


def test_echo_elsewhere_is_dropped() -> None:
    s = make_stack()
    s.receive_ip(build_icmp_echo(IcmpEcho(CLIENT, SERVER, True, 7, 3, b"x")), now=NOW)
    assert sent(s) == []
    assert s.drops[DropReason.NOT_FOR_US] == 1


def test_garbage_is_counted_not_raised() -> None:
    s = make_stack()
    for junk in (b"", b"\x45", b"\x60" * 10, bytes(range(256)), b"\x45\x00\x00\x14" + bytes(16)):
        s.receive_ip(junk, now=NOW)
    assert sent(s) == []
    # Each input counted once, under its reason: four undecodable, one well-formed IPv4
    # header carrying protocol 0.
    assert s.drops.counts == {DropReason.MALFORMED: 4, DropReason.UNSUPPORTED_PROTOCOL: 1}


# --- TCP flows -------------------------------------------------------------------------


def test_bare_syn_opens_one_flow_and_retransmits_are_absorbed() -> None:
    s = make_stack()
    s.receive_ip(build_tcp(syn()), now=NOW)
    s.receive_ip(build_tcp(syn()), now=NOW + 1)
    (ev,) = events(s)
    assert isinstance(ev, TcpConnectRequested)
    assert ev.conn.key == (CLIENT, 40000, SERVER, 80)
    assert sent(s) == []  # nothing until the shell accepts
    s.tcp_accept(ev.conn, now=NOW + 2)  # marks the flow: no s.mark() needed
    (synack,) = sent(s, NOW + 2)
    assert isinstance(synack, TcpSegment)
    assert synack.flags == TcpFlags.SYN | TcpFlags.ACK and synack.ack == 1001


def test_refused_flow_gets_rst() -> None:
    s = make_stack()
    s.receive_ip(build_tcp(syn()), now=NOW)
    (ev,) = events(s)
    s.tcp_refuse(ev.conn)
    (rst,) = sent(s)
    assert isinstance(rst, TcpSegment) and rst.flags & TcpFlags.RST and rst.ack == 1001
    assert s.open_flow_count() == 0


@pytest.mark.parametrize("flags", [TcpFlags.ACK, TcpFlags.ACK | TcpFlags.PSH, TcpFlags.FIN | TcpFlags.ACK])
def test_non_syn_for_unknown_flow_gets_rst_not_a_flow(flags: TcpFlags) -> None:
    s = make_stack()
    seg = TcpSegment(CLIENT, SERVER, 40000, 80, 5000, 777, flags, 1000, payload=b"hello")
    s.receive_ip(build_tcp(seg), now=NOW)
    assert events(s) == []
    (rst,) = sent(s)
    assert isinstance(rst, TcpSegment)
    assert rst.flags == TcpFlags.RST and rst.seq == 777
    assert s.drops[DropReason.TCP_NO_FLOW] == 1


def test_syn_ack_for_unknown_flow_gets_rst_and_rst_gets_nothing() -> None:
    s = make_stack()
    s.receive_ip(build_tcp(TcpSegment(CLIENT, SERVER, 1, 2, 10, 20, TcpFlags.SYN | TcpFlags.ACK, 100)), now=NOW)
    (rst,) = sent(s)
    assert isinstance(rst, TcpSegment) and rst.flags == TcpFlags.RST and rst.seq == 20
    s.receive_ip(build_tcp(TcpSegment(CLIENT, SERVER, 1, 2, 10, 0, TcpFlags.RST, 0)), now=NOW)
    assert sent(s) == []


def test_segment_without_ack_gets_rst_ack_covering_it() -> None:
    s = make_stack()
    s.receive_ip(build_tcp(TcpSegment(CLIENT, SERVER, 1, 2, 10, 0, TcpFlags.FIN, 100, payload=b"abc")), now=NOW)
    (rst,) = sent(s)
    assert isinstance(rst, TcpSegment)
    assert rst.flags == TcpFlags.RST | TcpFlags.ACK and rst.seq == 0 and rst.ack == 14


@pytest.mark.parametrize("dst", ["127.0.0.1", "127.1.2.3", "::1", "0.0.0.0", "::ffff:127.0.0.1"])
def test_loopback_is_refused_by_default(dst: str) -> None:
    s = make_stack()
    d = ipaddress.ip_address(dst)
    src = CLIENT6 if d.version == 6 else CLIENT
    s.receive_ip(build_tcp(syn(dst=d, src=src)), now=NOW)
    (refused,) = events(s)
    assert isinstance(refused, FlowRefused) and refused.proto is IpProto.TCP and refused.dst == (d, 80)
    (rst,) = sent(s)
    assert isinstance(rst, TcpSegment) and rst.flags & TcpFlags.RST
    assert s.drops[DropReason.TCP_LOOPBACK_REFUSED] == 1


def test_allow_loopback() -> None:
    s = make_stack(allow_loopback=True)
    s.receive_ip(build_tcp(syn(dst=ipaddress.ip_address("127.0.0.1"))), now=NOW)
    (ev,) = events(s)
    assert isinstance(ev, TcpConnectRequested)


def test_tcp_to_dns_address_is_served_in_process() -> None:
    s = make_stack()
    s.receive_ip(build_tcp(syn(dst=DNS, dport=53)), now=NOW)
    (ev,) = events(s)
    assert isinstance(ev, DnsTcpRequested)
    s.receive_ip(build_tcp(syn(dst=DNS, dport=80, sport=1)), now=NOW)
    s.receive_ip(build_tcp(syn(dst=PING, dport=80, sport=2)), now=NOW)
    assert events(s) == []
    # Only port 53 at a -D address is served; other ports there, and -P addresses, refuse.
    rsts = sent(s)
    assert [type(p) for p in rsts] == [TcpSegment, TcpSegment]
    assert [(p.src, p.sport, p.dport, p.flags) for p in rsts if isinstance(p, TcpSegment)] == [
        (DNS, 80, 1, TcpFlags.RST | TcpFlags.ACK),
        (PING, 80, 2, TcpFlags.RST | TcpFlags.ACK),
    ]


def test_unreachable_destination_gets_icmp_quoting_the_syn() -> None:
    s = make_stack()
    s.receive_ip(build_tcp(syn()), now=NOW)
    (ev,) = events(s)
    s.tcp_unreachable(ev.conn, Unreachable.HOST)
    (err,) = sent(s)
    assert isinstance(err, IcmpError)
    assert err.src == SERVER and err.dst == CLIENT and (err.type, err.code) == (3, 1)
    assert err.quoted[:20] == build_tcp(syn())[:20]
    assert s.open_flow_count() == 0


def test_ipv6_flow() -> None:
    s = make_stack()
    s.receive_ip(build_tcp(syn(src=CLIENT6, dst=SERVER6)), now=NOW)
    (ev,) = events(s)
    s.tcp_accept(ev.conn, now=NOW)
    (synack,) = sent(s)
    assert isinstance(synack, TcpSegment) and synack.src == SERVER6 and synack.mss == 1420 - 60


def test_flow_timer_retransmits_syn_ack() -> None:
    s = make_stack()
    s.receive_ip(build_tcp(syn()), now=NOW)
    (ev,) = events(s)
    s.tcp_accept(ev.conn, now=NOW)
    assert len(sent(s)) == 1
    deadline = s.next_deadline()
    assert deadline is not None and NOW < deadline < NOW + 5
    s.handle_timer(now=deadline)
    again = sent(s, deadline)
    assert len(again) == 1 and isinstance(again[0], TcpSegment) and again[0].flags & TcpFlags.SYN
    assert ev.conn.state is State.SYN_RECEIVED


# --- UDP ---------------------------------------------------------------------------------


def test_udp_binding_full_cone_and_expiry() -> None:
    s = make_stack(udp_idle_timeout=92.0)
    s.receive_ip(build_udp(UdpDatagram(CLIENT, SERVER, 5000, 9, b"ping")), now=NOW)
    evs = events(s)
    assert isinstance(evs[0], BindingOpened)
    send = evs[1]
    assert isinstance(send, UdpSend) and send.dst == SERVER and send.dport == 9 and send.payload == b"ping"
    other = ipaddress.ip_address("198.51.100.7")
    s.udp_reply(send.binding.id, other, 1234, b"pong", now=NOW + 1)
    (reply,) = sent(s)
    assert reply == UdpDatagram(other, CLIENT, 1234, 5000, b"pong")
    s.handle_timer(now=NOW + 1 + 92.5)
    (closed,) = events(s)
    assert isinstance(closed, BindingClosed) and closed.reason == "idle"


def test_big_udp_reply_is_fragmented_to_the_mtu() -> None:
    s = make_stack()
    s.receive_ip(build_udp(UdpDatagram(CLIENT, SERVER, 5000, 9, b"x")), now=NOW)
    send = next(e for e in events(s) if isinstance(e, UdpSend))
    s.udp_reply(send.binding.id, SERVER, 9, bytes(range(256)) * 125, now=NOW)
    packets = s.packets_to_send(now=NOW)
    assert len(packets) > 1 and all(len(p) <= 1420 for p in packets)
    from wgslirpy.net.fragments import Reassembler

    r = Reassembler()
    whole = [r.receive(p, now=NOW) for p in packets]
    done = [w for w in whole if isinstance(w, bytes)]
    assert len(done) == 1
    assert decode_ip(done[0]) == UdpDatagram(SERVER, CLIENT, 9, 5000, bytes(range(256)) * 125)


@pytest.mark.parametrize(
    "src, dst, type_code",
    [
        (CLIENT, "127.0.0.1", (3, 13)),
        (CLIENT, "169.254.169.254", (3, 13)),
        (CLIENT6, "::1", (1, 1)),
        (CLIENT6, "fe80::1", (1, 1)),
    ],
)
def test_denied_udp_gets_administratively_prohibited(src: IPAddress, dst: str, type_code: tuple[int, int]) -> None:
    s = make_stack()
    s.receive_ip(build_udp(UdpDatagram(src, ipaddress.ip_address(dst), 5000, 53, b"q")), now=NOW)
    evs = events(s)
    assert [e for e in evs if isinstance(e, UdpSend)] == []
    (refused,) = [e for e in evs if isinstance(e, FlowRefused)]
    assert refused.proto is IpProto.UDP and "--allow" in refused.why
    (err,) = sent(s)
    assert isinstance(err, IcmpError) and (err.type, err.code) == type_code
    assert s.nat.get(1) is None  # no binding was made


@pytest.mark.parametrize("dst", ["224.0.0.251", "255.255.255.255", "ff02::fb"])
def test_denied_multicast_and_broadcast_udp_get_no_icmp(dst: str) -> None:
    s = make_stack()
    src = CLIENT6 if ":" in dst else CLIENT
    s.receive_ip(build_udp(UdpDatagram(src, ipaddress.ip_address(dst), 5353, 5353, b"q")), now=NOW)
    assert sent(s) == []
    assert s.drops[DropReason.UDP_DENIED] == 1
    assert events(s) == []  # clients send these in normal use: counted, not logged


@pytest.mark.parametrize("dst", ["169.254.169.254", "fe80::1", "224.0.0.1", "255.255.255.255"])
def test_denied_tcp_gets_rst(dst: str) -> None:
    s = make_stack()
    src = CLIENT6 if ":" in dst else CLIENT
    s.receive_ip(build_tcp(syn(dst=ipaddress.ip_address(dst), src=src)), now=NOW)
    evs = events(s)
    assert not any(isinstance(e, TcpConnectRequested) for e in evs)
    assert any(isinstance(e, FlowRefused) and e.reason is DropReason.TCP_DENIED for e in evs)
    (rst,) = sent(s)
    assert isinstance(rst, TcpSegment) and rst.flags & TcpFlags.RST
    assert s.open_flow_count() == 0


def test_allow_and_deny_rules_reach_the_stack() -> None:
    from wgslirpy.net.policy import parse_rules

    s = make_stack(rules=parse_rules([("allow", "169.254.169.254:80"), ("deny", "192.0.2.0/24:25")]))
    s.receive_ip(build_tcp(syn(dst=ipaddress.ip_address("169.254.169.254"))), now=NOW)
    assert any(isinstance(e, TcpConnectRequested) for e in events(s))
    s.receive_ip(build_tcp(syn(dport=25, sport=40001)), now=NOW)
    (ev,) = events(s)
    assert isinstance(ev, FlowRefused) and ev.why == "denied by --deny 192.0.2.0/24:25"
    s.receive_ip(build_udp(UdpDatagram(CLIENT, SERVER, 5000, 25, b"q")), now=NOW)
    assert s.drops[DropReason.UDP_DENIED] == 1


def test_pending_connect_limit_gets_rst_and_frees_up() -> None:
    s = make_stack(max_pending_connects=2)
    conns = []
    for sport in (40000, 40001):
        s.receive_ip(build_tcp(syn(sport=sport)), now=NOW)
        (ev,) = events(s)
        conns.append(ev.conn)
    assert s.pending_connect_count() == 2
    s.receive_ip(build_tcp(syn(sport=40002)), now=NOW)
    (ev,) = events(s)
    assert isinstance(ev, FlowRefused) and ev.reason is DropReason.TCP_CONNECT_LIMIT
    assert "--max-pending-connects" in ev.why
    (rst,) = sent(s)
    assert isinstance(rst, TcpSegment) and rst.flags & TcpFlags.RST
    s.tcp_accept(conns[0], now=NOW)  # one dial finished: room for a new one
    s.tcp_unreachable(conns[1], Unreachable.HOST)  # the other failed
    sent(s)
    assert s.pending_connect_count() == 0
    s.receive_ip(build_tcp(syn(sport=40003)), now=NOW)
    assert isinstance(events(s)[0], TcpConnectRequested)


def test_tcp_flow_limit_gets_rst() -> None:
    s = make_stack(max_tcp_flows=1)
    s.receive_ip(build_tcp(syn(sport=40000)), now=NOW)
    events(s)
    s.receive_ip(build_tcp(syn(sport=40001)), now=NOW)
    (ev,) = events(s)
    assert isinstance(ev, FlowRefused) and ev.reason is DropReason.TCP_FLOW_LIMIT
    assert s.all_drops()[DropReason.TCP_FLOW_LIMIT] == 1


def test_udp_port_unreachable_from_host_reaches_client() -> None:
    s = make_stack()
    s.receive_ip(build_udp(UdpDatagram(CLIENT6, SERVER6, 5000, 9, b"x")), now=NOW)
    send = next(e for e in events(s) if isinstance(e, UdpSend))
    s.udp_port_unreachable(send.binding.id, SERVER6, 9, 1, now=NOW)
    (err,) = sent(s)
    assert isinstance(err, IcmpError) and (err.type, err.code) == (1, 4)
    quoted = decode_ip(err.quoted)
    assert isinstance(quoted, UdpDatagram)
    assert (quoted.src, quoted.sport, quoted.dst, quoted.dport) == (CLIENT6, 5000, SERVER6, 9)


# --- DNS ---------------------------------------------------------------------------------


def test_dns_query_becomes_a_lookup_and_the_answer_goes_back() -> None:
    s = make_stack()
    q = dns.message.make_query("example.test", "A")
    s.receive_ip(build_udp(UdpDatagram(CLIENT, DNS, 5353, 53, q.to_wire())), now=NOW)
    (ev,) = events(s)
    assert isinstance(ev, DnsLookup) and ev.question.name == "example.test"
    s.dns_udp_reply(ev.client, ev.server, s.dns.answer(ev.question, ["192.0.2.1"]))
    (reply,) = sent(s)
    assert isinstance(reply, UdpDatagram) and reply.src == DNS and reply.sport == 53 and reply.dport == 5353
    r = dns.message.from_wire(reply.payload)
    assert r.answer[0][0].address == "192.0.2.1"


def test_dns_localhost_is_answered_at_once() -> None:
    s = make_stack()
    q = dns.message.make_query("localhost", "AAAA")
    s.receive_ip(build_udp(UdpDatagram(CLIENT, DNS, 5353, 53, q.to_wire())), now=NOW)
    assert events(s) == []
    (reply,) = sent(s)
    assert isinstance(reply, UdpDatagram)
    assert dns.message.from_wire(reply.payload).answer[0][0].address == "::1"


# --- TIME-WAIT reuse, the deadline heap, TCP drop folding --------------------------------


def _time_wait_flow(s: Stack, *, ts: bool = True) -> tuple[TcpConnection, int, int]:
    """Drive one flow through a close we start into TIME-WAIT; returns (conn, peer seq, peer ts)."""
    first = syn()
    if not ts:
        first = first._replace(ts_val=None, ts_ecr=None)
    s.receive_ip(build_tcp(first), now=NOW)
    (ev,) = events(s)
    conn = ev.conn
    s.tcp_accept(conn, now=NOW)
    (synack,) = sent(s)
    assert isinstance(synack, TcpSegment)
    our = (synack.seq + 1) & 0xFFFFFFFF
    peer = 1001

    def seg(flags: TcpFlags, seq: int, ack: int, tsv: int) -> TcpSegment:
        return TcpSegment(
            CLIENT,
            SERVER,
            40000,
            80,
            seq,
            ack,
            flags,
            64240,
            ts_val=tsv if ts else None,
            ts_ecr=synack.ts_val if ts else None,
        )

    s.receive_ip(build_tcp(seg(TcpFlags.ACK, peer, our, 2)), now=NOW)
    s.tcp_close(conn, now=NOW)  # the host closed first: we send FIN
    sent(s)
    s.receive_ip(build_tcp(seg(TcpFlags.ACK, peer, our + 1, 3)), now=NOW)
    s.receive_ip(build_tcp(seg(TcpFlags.FIN | TcpFlags.ACK, peer, our + 1, 4)), now=NOW)
    sent(s)
    assert conn.state is State.TIME_WAIT
    return conn, peer + 1, 4


@pytest.mark.parametrize("ts", [True, False])
def test_acceptable_syn_in_time_wait_reopens_at_once(ts: bool) -> None:
    s = make_stack()
    old, next_seq, last_ts = _time_wait_flow(s, ts=ts)
    new_syn = syn(seq=next_seq + 100000)._replace(ts_val=last_ts + 10 if ts else None, ts_ecr=0 if ts else None)
    s.receive_ip(build_tcp(new_syn), now=NOW + 1)
    (ev,) = events(s)
    assert isinstance(ev, TcpConnectRequested) and ev.conn is not old
    assert s.flows[ev.conn.key] is ev.conn
    assert sent(s, NOW + 1) == []  # no challenge ACK: the shell dials the new flow
    assert s.stats.tcp_time_wait_reopened == 1


def test_old_syn_in_time_wait_still_gets_a_challenge_ack() -> None:
    s = make_stack()
    old, next_seq, last_ts = _time_wait_flow(s)
    stale = syn(seq=next_seq - 10)._replace(ts_val=last_ts - 1, ts_ecr=0)
    s.receive_ip(build_tcp(stale), now=NOW + 1)
    assert events(s) == []
    assert s.flows[old.key] is old  # type: ignore[attr-defined]
    (ack,) = sent(s, NOW + 1)
    assert isinstance(ack, TcpSegment) and ack.flags == TcpFlags.ACK


def _established(s: Stack, sport: int = 40000) -> TcpConnection:
    s.receive_ip(build_tcp(syn(sport=sport)), now=NOW)
    (ev,) = events(s)
    s.tcp_accept(ev.conn, now=NOW)
    sent(s)
    conn: TcpConnection = ev.conn
    return conn


def test_deadline_heap_stays_bounded_when_deadlines_move_later() -> None:
    s = make_stack()
    conn = _established(s)
    for i in range(5000):
        # Every turn pushes the flow's deadline later (as each ACK restarts the RTO).
        conn._timer_at = NOW + 10 + i  # type: ignore[attr-defined]
        s.mark(conn)
        s.packets_to_send(now=NOW)
    assert s.timer_entries() <= 2
    assert s.next_deadline() == NOW + 10 + 4999


def test_deadline_heap_stays_bounded_when_deadlines_move_earlier() -> None:
    s = make_stack()
    conns = [_established(s, sport=41000 + i) for i in range(4)]
    for i in range(5000):
        conn = conns[i % 4]
        conn._timer_at = NOW + 10000 - i  # type: ignore[attr-defined]
        s.mark(conn)
        s.packets_to_send(now=NOW)
    assert s.timer_entries() <= 2 * 4 + 64
    assert s.next_deadline() == NOW + 10000 - 4999


def test_moved_deadline_fires_at_its_new_time_only() -> None:
    s = make_stack()
    conn = _established(s)
    conn._timer_at = NOW + 1  # type: ignore[attr-defined]
    s.mark(conn)
    s.packets_to_send(now=NOW)
    conn._timer_at = NOW + 3  # type: ignore[attr-defined]
    s.mark(conn)
    s.packets_to_send(now=NOW)
    fired: list[float] = []
    conn.handle_timer = lambda *, now: fired.append(now)  # type: ignore[method-assign]
    s.handle_timer(now=NOW + 1)
    assert fired == [] and s.next_deadline() == NOW + 3
    s.handle_timer(now=NOW + 3)
    assert fired == [NOW + 3]


def test_tcp_drops_and_counters_survive_their_flow() -> None:
    s = make_stack()
    conn = _established(s)
    conn.drops.add(DropReason.TCP_OUT_OF_WINDOW, 3)  # type: ignore[attr-defined]
    conn.counters = TcpCounters(rto=2, tlp=1)
    counted = TcpCounters(rto=2, tlp=1).as_dict()
    assert s.all_drops()[DropReason.TCP_OUT_OF_WINDOW] == 3  # live flows count
    assert s.tcp_counters() == counted
    s.tcp_abort(conn)  # type: ignore[arg-type]
    sent(s)
    assert s.open_flow_count() == 0
    assert s.all_drops()[DropReason.TCP_OUT_OF_WINDOW] == 3
    assert s.tcp_counters() == counted
    s.forget(conn)  # type: ignore[arg-type]  # forgetting twice folds once
    assert s.all_drops()[DropReason.TCP_OUT_OF_WINDOW] == 3


def test_host_icmp_error_for_an_ipv6_client_of_an_ipv4_remote_is_translated() -> None:
    from wgslirpy.net.stack import HostIcmpError

    s = make_stack()
    s.receive_ip(build_udp(UdpDatagram(CLIENT6, ipaddress.ip_address(f"::ffff:{SERVER}"), 5000, 9, b"hi")), now=NOW)
    binding = next(ev.binding for ev in events(s) if isinstance(ev, UdpSend))
    sent(s)
    router = ipaddress.ip_address("198.51.100.1")
    s.udp_icmp_error(binding.id, SERVER, 9, 2, HostIcmpError(False, 3, 13), offender=router, now=NOW)
    (err,) = sent(s)
    mapped = ipaddress.ip_address(f"::ffff:{SERVER}")
    # administratively prohibited -> ICMPv6 type 1 code 1; the IPv4 router cannot be an
    # IPv6 source other than mapped, so the error comes from it as ::ffff:198.51.100.1
    assert isinstance(err, IcmpError) and (err.type, err.code) == (1, 1) and err.dst == CLIENT6
    assert err.src == ipaddress.ip_address("::ffff:198.51.100.1")
    assert err.quoted[24:40] == mapped.packed  # the quoted datagram is the client's own


# --- host-side operations: each one's output leaves with the next flush, no mark() ---------


def _open_established(s: Stack) -> tuple[TcpConnection, TcpSegment]:
    """One flow the shell accepted and the client ACKed; returns it and our SYN-ACK."""
    s.receive_ip(build_tcp(syn()), now=NOW)
    (ev,) = events(s)
    s.tcp_accept(ev.conn, now=NOW)
    (synack,) = sent(s)
    assert isinstance(synack, TcpSegment) and synack.flags == TcpFlags.SYN | TcpFlags.ACK
    s.receive_ip(build_tcp(_from_client(synack, TcpFlags.ACK, 1001)), now=NOW)
    assert sent(s) == [] and ev.conn.state is State.ESTABLISHED
    conn: TcpConnection = ev.conn
    return conn, synack


def _from_client(synack: TcpSegment, flags: TcpFlags, seq: int, payload: bytes = b"") -> TcpSegment:
    ack = (synack.seq + 1) & 0xFFFFFFFF
    return TcpSegment(CLIENT, SERVER, 40000, 80, seq, ack, flags, 502, ts_val=2, ts_ecr=synack.ts_val, payload=payload)


def test_tcp_send_and_close_leave_with_the_next_flush() -> None:
    s = make_stack()
    conn, _ = _open_established(s)
    assert s.tcp_send(conn, b"hello", now=NOW) == 5
    (data,) = sent(s)
    assert isinstance(data, TcpSegment) and data.payload == b"hello"
    s.tcp_close(conn, now=NOW)
    (fin,) = sent(s)
    assert isinstance(fin, TcpSegment) and fin.flags & TcpFlags.FIN and conn.state is State.FIN_WAIT_1


def test_tcp_read_sends_the_window_update_it_opens() -> None:
    from wgslirpy.net.tcp import TcpConfig

    s = make_stack(tcp=TcpConfig(rcv_buffer=2000))
    conn, synack = _open_established(s)
    s.receive_ip(build_tcp(_from_client(synack, TcpFlags.ACK, 1001, b"a" * 1000)), now=NOW)
    s.receive_ip(build_tcp(_from_client(synack, TcpFlags.ACK, 2001, b"b" * 1000)), now=NOW)
    sent(s)  # whatever the data itself was answered with
    assert s.tcp_read(conn) == b"a" * 1000 + b"b" * 1000
    (update,) = sent(s)
    assert isinstance(update, TcpSegment) and update.flags == TcpFlags.ACK
    assert update.ack == 3001 and update.window == 2000  # the whole buffer is free again
    assert s.tcp_read(conn) == b"" and sent(s) == []  # nothing read: nothing to say


def test_tcp_abort_emits_the_rst_on_the_next_flush_and_forgets_the_flow() -> None:
    s = make_stack()
    conn, synack = _open_established(s)
    s.tcp_abort(conn)
    (rst,) = sent(s)
    assert isinstance(rst, TcpSegment) and rst.flags & TcpFlags.RST and rst.seq == synack.seq + 1
    assert s.open_flow_count() == 0 and conn.is_closed
    s.tcp_abort(conn)  # a no-op once closed
    assert sent(s) == []


def test_tcp_refuse_before_the_dial_answers_rst() -> None:
    s = make_stack()
    s.receive_ip(build_tcp(syn()), now=NOW)
    (ev,) = events(s)
    assert s.pending_connect_count() == 1
    s.tcp_refuse(ev.conn)
    (rst,) = sent(s)
    assert isinstance(rst, TcpSegment) and rst.flags == TcpFlags.RST | TcpFlags.ACK and rst.ack == 1001
    assert s.open_flow_count() == 0 and s.pending_connect_count() == 0


def test_host_operations_wake_the_flow() -> None:
    """Each operation marks the flow: its greenlet is woken with the flush (touched_flows)."""
    s = make_stack()
    conn, _ = _open_established(s)
    s.touched_flows()
    s.tcp_send(conn, b"x", now=NOW)
    assert s.next_deadline() == float("-inf")  # output pending: flush now
    assert s.touched_flows() == [conn]


def test_stack_stats_keep_their_reported_names() -> None:
    """The typed counters give the stats line the names it always had; the -t counters
    appear once used."""
    s = make_stack()
    s.receive_ip(build_icmp_echo(IcmpEcho(CLIENT, PING, True, 7, 3, b"x")), now=NOW)
    sent(s)
    assert s.stats.as_dict() == {
        "rx_packets": 1,
        "tx_packets": 1,
        "tcp_flows_opened": 0,
        "icmp_echo_replies": 1,
        "dns_queries": 0,
        "tcp_time_wait_reopened": 0,
        "udp_icmp_errors_relayed": 0,
    }
    assert s.open_tcp(CLIENT, 5000, SERVER, 80, now=NOW) is not None
    assert s.stats.as_dict()["tcp_incoming_opened"] == 1 and "tcp_incoming_unreachable" not in s.stats.as_dict()
