"""The pure IP stack: dispatch, policy (loopback, -P/-D, RST for strays), events, timers."""

from __future__ import annotations

import ipaddress

import dns.message
import dns.rdatatype
import pytest

from wgslirpy.errors import DropReason
from wgslirpy.net.build import build_icmp_echo, build_tcp, build_udp
from wgslirpy.net.packet import decode_ip
from wgslirpy.net.segments import IcmpEcho, IcmpError, TcpFlags, TcpSegment, UdpDatagram, Unreachable
from wgslirpy.net.stack import (
    DnsLookup,
    DnsTcpRequested,
    FlowRefused,
    Stack,
    StackConfig,
    TcpConnectRequested,
    UdpSend,
)
from wgslirpy.net.udp_nat import BindingClosed, BindingOpened
from wgslirpy.net.tcp import State

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


def syn(dst: ipaddress.IPv4Address | ipaddress.IPv6Address = SERVER, dport: int = 80, sport: int = 40000,
        src: ipaddress.IPv4Address | ipaddress.IPv6Address = CLIENT, seq: int = 1000) -> TcpSegment:
    return TcpSegment(src, dst, sport, dport, seq, 0, TcpFlags.SYN, 64240, mss=1380, wscale=7,
                      sack_permitted=True, ts_val=1, ts_ecr=0)


def events(stack: Stack) -> list[object]:
    out = []
    while (ev := stack.next_event()) is not None:
        out.append(ev)
    return out


def sent(stack: Stack, now: float = NOW) -> list[object]:
    return [decode_ip(p) for p in stack.packets_to_send(now=now)]


# --- ICMP echo -------------------------------------------------------------------------


@pytest.mark.parametrize("src, dst", [(CLIENT, PING), (CLIENT6, PING6)])
def test_echo_at_pingable_address_is_answered(src, dst) -> None:
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
    ev.conn.accept(now=NOW + 2)
    s.mark(ev.conn)
    (synack,) = sent(s, NOW + 2)
    assert isinstance(synack, TcpSegment)
    assert synack.flags == TcpFlags.SYN | TcpFlags.ACK and synack.ack == 1001


def test_refused_flow_gets_rst() -> None:
    s = make_stack()
    s.receive_ip(build_tcp(syn()), now=NOW)
    (ev,) = events(s)
    ev.conn.refuse()
    s.mark(ev.conn)
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
    assert isinstance(refused, FlowRefused) and refused.proto == "TCP" and refused.dst == (d, 80)
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
    ev.conn.accept(now=NOW)
    s.mark(ev.conn)
    (synack,) = sent(s)
    assert isinstance(synack, TcpSegment) and synack.src == SERVER6 and synack.mss == 1420 - 60


def test_flow_timer_retransmits_syn_ack() -> None:
    s = make_stack()
    s.receive_ip(build_tcp(syn()), now=NOW)
    (ev,) = events(s)
    ev.conn.accept(now=NOW)
    s.mark(ev.conn)
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
    send = [e for e in events(s) if isinstance(e, UdpSend)][0]
    s.udp_reply(send.binding.id, SERVER, 9, bytes(range(256)) * 125, now=NOW)
    packets = s.packets_to_send(now=NOW)
    assert len(packets) > 1 and all(len(p) <= 1420 for p in packets)
    from wgslirpy.net.fragments import Reassembler

    r = Reassembler()
    whole = [r.receive(p, now=NOW) for p in packets]
    done = [w for w in whole if isinstance(w, bytes)]
    assert len(done) == 1
    assert decode_ip(done[0]) == UdpDatagram(SERVER, CLIENT, 9, 5000, bytes(range(256)) * 125)


def test_udp_to_loopback_gets_port_unreachable() -> None:
    s = make_stack()
    s.receive_ip(build_udp(UdpDatagram(CLIENT, ipaddress.ip_address("127.0.0.1"), 5000, 53, b"q")), now=NOW)
    assert [e for e in events(s) if isinstance(e, UdpSend)] == []
    (err,) = sent(s)
    assert isinstance(err, IcmpError) and (err.type, err.code) == (3, 3)


def test_udp_port_unreachable_from_host_reaches_client() -> None:
    s = make_stack()
    s.receive_ip(build_udp(UdpDatagram(CLIENT6, SERVER6, 5000, 9, b"x")), now=NOW)
    send = [e for e in events(s) if isinstance(e, UdpSend)][0]
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
