"""Incoming forwards (-t/-u), pure parts: spec parsing, port allocation, and the stack's
active open and incoming UDP bindings driven with byte strings and a fake clock."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from wgslirpy.config import Config, parse_incoming
from wgslirpy.errors import ConfigError, DropReason
from wgslirpy.net.build import build_icmp_unreachable, build_tcp, build_udp
from wgslirpy.net.fragments import Reassembler
from wgslirpy.net.incoming import (
    IncomingForward,
    IncomingUdpTable,
    PortAllocator,
    parse_port_range,
    quoted_tcp,
    tunnel_source,
)
from wgslirpy.net.packet import decode_ip
from wgslirpy.net.segments import IPAddress, TcpFlags, TcpSegment, UdpDatagram, Unreachable
from wgslirpy.net.stack import IncomingUdpClosed, IncomingUdpReply, Stack, StackConfig
from wgslirpy.net.tcp import PeerReset, State, TcpConfig, TcpConnection, TcpEvent, TimedOut, TimeoutReason

ip = ipaddress.ip_address
SRC = ip("10.0.0.1")
DST = ip("10.0.0.2")
SRC6 = ip("fd00::1")
DST6 = ip("fd00::2")
T0 = 100.0
OUR_ISN = 7000
PEER_ISN = 90000

KEY = bytes(range(32))
PEER = bytes(range(1, 33))


def fixed_rng() -> Callable[[int], bytes]:
    chunks = [OUR_ISN.to_bytes(4, "big"), (0).to_bytes(4, "big")]
    return lambda n: chunks.pop(0)[:n] if chunks else bytes(n)


def make_stack(**kw: object) -> Stack:
    return Stack(StackConfig(**kw), rng=fixed_rng())  # type: ignore[arg-type]


def tcp_out(stack: Stack, now: float = T0) -> list[TcpSegment]:
    out = [decode_ip(p) for p in stack.packets_to_send(now=now)]
    return [s for s in out if isinstance(s, TcpSegment)]


def synack(syn: TcpSegment, *, options: bool = True, ack: int | None = None) -> bytes:
    s = TcpSegment(
        syn.dst,
        syn.src,
        syn.dport,
        syn.sport,
        PEER_ISN,
        syn.seq + 1 if ack is None else ack,
        TcpFlags.SYN | TcpFlags.ACK,
        65535,
        mss=1380 if options else None,
        wscale=7 if options else None,
        sack_permitted=options,
        ts_val=555 if options else None,
        ts_ecr=syn.ts_val if options else None,
    )
    return build_tcp(s)


def st(conn: TcpConnection) -> State:
    """The state, read through a call (so mypy does not narrow it across steps)."""
    return conn.state


def events(conn: TcpConnection) -> list[TcpEvent]:
    out: list[TcpEvent] = []
    while (ev := conn.next_event()) is not None:
        out.append(ev)
    return out


# --- spec parsing ---------------------------------------------------------------------------


def test_parse_three_forms() -> None:
    f = parse_incoming("127.0.0.1:2222,10.0.0.1:0,10.0.0.2:22", "tcp")
    assert f == IncomingForward("tcp", (ip("127.0.0.1"), 2222), (DST, 22), (SRC, 0))
    assert parse_incoming("127.0.0.1:2222,10.0.0.2:22", "tcp").src is None
    assert parse_incoming("127.0.0.1:2222,,10.0.0.2:22", "udp").src is None
    mixed = parse_incoming("127.0.0.1:53,[fd00::1]:0,[fd00::2]:53", "udp")
    assert mixed.dst == (DST6, 53) and mixed.proto == "udp"


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("127.0.0.1:2222", "expected HOST_ADDR,[SRC_ADDR],DST_ADDR"),
        ("127.0.0.1:2222,,", "expected HOST_ADDR,[SRC_ADDR],DST_ADDR"),
        ("a,b,c,d", "expected HOST_ADDR,[SRC_ADDR],DST_ADDR"),
        ("127.0.0.1:2222,10.0.0.2", "DST_ADDR: '10.0.0.2': expected address:port"),
        ("127.0.0.1:x,10.0.0.2:22", "HOST_ADDR: port 'x' is not a number"),
        ("nothost:1,10.0.0.2:22", "is not an IPv4 or IPv6 address"),
        ("127.0.0.1:1,10.0.0.2:0", "needs a port"),
        ("127.0.0.1:1,[fd00::1]:0,10.0.0.2:22", "different address families"),
        ("[::1]:1,10.0.0.2:22", "mixes address families"),
        ("127.0.0.1:1,0.0.0.0:0,10.0.0.2:22", "unicast"),
        ("127.0.0.1:1,10.0.0.1:0,224.0.0.1:22", "unicast"),
        ("127.0.0.1:1,10.0.0.2:70000", "out of range"),
    ],
)
def test_bad_specs_have_one_clear_line(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_incoming(spec, "tcp")
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith("--incoming-tcp")


def test_config_create_and_duplicate_listeners() -> None:
    c = Config.create(
        private_key=KEY,
        peer_key=PEER,
        incoming_tcp=["127.0.0.1:1,10.0.0.2:22"],
        incoming_udp=["127.0.0.1:1,10.0.0.2:53"],
        incoming_port_range="2000-2010",
    )
    assert [f.proto for f in c.incoming] == ["tcp", "udp"] and c.incoming_port_range == (2000, 2010)
    with pytest.raises(ConfigError, match="same host address"):
        Config.create(private_key=KEY, peer_key=PEER, incoming_tcp=["127.0.0.1:1,10.0.0.2:22"] * 2)
    with pytest.raises(ConfigError, match="port range"):
        parse_port_range("9-3")
    with pytest.raises(ConfigError, match="port range"):
        parse_port_range("a-b")


def test_tunnel_source() -> None:
    f = IncomingForward("tcp", (ip("::"), 1), (DST, 22))
    assert tunnel_source(f, (ip("::ffff:192.0.2.7"), 555)) == (ip("192.0.2.7"), 555)
    assert tunnel_source(f, (ip("2001:db8::7"), 555)) is None
    g = IncomingForward("tcp", (ip("::1"), 1), (DST6, 22), (SRC6, 0))
    assert tunnel_source(g, (ip("::1"), 9)) == (SRC6, 0)


# --- port allocation ------------------------------------------------------------------------


def test_port_allocator_round_robin_skips_taken_and_exhausts() -> None:
    a = PortAllocator(10, 13)
    taken: set[int] = set()
    got = []
    for _ in range(4):
        p = a.allocate(taken.__contains__)
        assert p is not None and p not in taken
        taken.add(p)
        got.append(p)
    assert got == [10, 11, 12, 13]
    assert a.allocate(taken.__contains__) is None
    taken.discard(11)
    assert a.allocate(taken.__contains__) == 11
    taken.discard(13)
    taken.discard(10)
    assert a.allocate(taken.__contains__) == 13  # round-robin: after the last one handed out


def test_open_tcp_ports_never_collide_with_live_flows() -> None:
    stack = make_stack(incoming_ports=(5000, 5002))
    # an existing flow of the tunnel's own (its key is the one port 5001 would make)
    existing = TcpConnection.connect(local=SRC, lport=5001, peer=DST, pport=22, config=TcpConfig(), now=T0)
    stack.flows[(DST, 22, SRC, 5001)] = existing
    a = stack.open_tcp(SRC, 0, DST, 22, now=T0)
    b = stack.open_tcp(SRC, 0, DST, 22, now=T0)
    assert a is not None and b is not None
    assert {a.key[3], b.key[3]} == {5000, 5002}
    assert stack.open_tcp(SRC, 0, DST, 22, now=T0) is None
    assert stack.drops.counts[DropReason.INCOMING_NO_PORT] == 1
    # another destination may reuse the ports
    c = stack.open_tcp(SRC, 0, DST, 23, now=T0)
    assert c is not None
    # an explicit port that is live is refused
    assert stack.open_tcp(SRC, 5001, DST, 22, now=T0) is None
    assert stack.drops.counts[DropReason.INCOMING_TUPLE_IN_USE] == 1


def test_open_tcp_respects_max_tcp_flows() -> None:
    stack = make_stack(max_tcp_flows=1)
    assert stack.open_tcp(SRC, 0, DST, 22, now=T0) is not None
    assert stack.open_tcp(SRC, 0, DST, 22, now=T0) is None
    assert stack.drops.counts[DropReason.TCP_FLOW_LIMIT] == 1


# --- the stack's active open against a scripted peer ----------------------------------------


@pytest.mark.parametrize("src, dst", [(SRC, DST), (SRC6, DST6)])
def test_active_open_with_options(src: IPAddress, dst: IPAddress) -> None:
    stack = make_stack()
    conn = stack.open_tcp(src, 40000, dst, 22, now=T0)
    assert conn is not None and st(conn) is State.SYN_SENT
    [syn] = tcp_out(stack)
    assert syn.flags == TcpFlags.SYN and (syn.src, syn.sport, syn.dst, syn.dport) == (src, 40000, dst, 22)
    assert syn.seq == OUR_ISN and syn.mss == conn.local_mss and syn.sack_permitted
    assert syn.wscale is not None and syn.ts_val is not None
    stack.receive_ip(synack(syn), now=T0 + 0.01)
    assert st(conn) is State.ESTABLISHED
    assert conn.mss == min(1380, conn.local_mss) and conn.snd_wnd == 65535
    [ack] = tcp_out(stack, T0 + 0.01)
    assert ack.flags == TcpFlags.ACK and ack.ack == PEER_ISN + 1 and ack.seq == OUR_ISN + 1
    assert ack.ts_ecr == 555
    # data both ways, the peer's window scaled by its shift of 7
    assert stack.tcp_send(conn, b"hello", now=T0 + 0.02) == 5
    [data] = tcp_out(stack, T0 + 0.02)
    assert data.payload == b"hello"
    back = TcpSegment(
        dst,
        src,
        22,
        40000,
        PEER_ISN + 1,
        OUR_ISN + 6,
        TcpFlags.ACK | TcpFlags.PSH,
        100,
        payload=b"world",
        ts_val=556,
        ts_ecr=data.ts_val,
    )
    stack.receive_ip(build_tcp(back), now=T0 + 0.03)
    assert conn.read() == b"world" and conn.snd_wnd == 100 << 7


def test_active_open_without_options() -> None:
    stack = make_stack()
    conn = stack.open_tcp(SRC, 40000, DST, 22, now=T0)
    assert conn is not None
    [syn] = tcp_out(stack)
    stack.receive_ip(synack(syn, options=False), now=T0 + 0.01)
    assert st(conn) is State.ESTABLISHED
    assert conn.mss == 536  # RFC 9293 default without an MSS option
    [ack] = tcp_out(stack, T0 + 0.01)
    assert ack.ts_val is None and not ack.sack_blocks
    assert stack.tcp_send(conn, b"x" * 3000, now=T0 + 0.02) == 3000
    sent = tcp_out(stack, T0 + 0.02)
    assert sent and all(len(s.payload) <= 536 for s in sent) and sent[0].window <= 0xFFFF


def test_syn_ack_with_a_wrong_ack_gets_rst_and_keeps_waiting() -> None:
    stack = make_stack()
    conn = stack.open_tcp(SRC, 40000, DST, 22, now=T0)
    assert conn is not None
    [syn] = tcp_out(stack)
    stack.receive_ip(synack(syn, ack=syn.seq + 77), now=T0)
    [rst] = tcp_out(stack)
    assert rst.flags == TcpFlags.RST and rst.seq == syn.seq + 77
    assert st(conn) is State.SYN_SENT


def test_rst_fails_the_active_open() -> None:
    stack = make_stack()
    conn = stack.open_tcp(SRC, 40000, DST, 22, now=T0)
    assert conn is not None
    [syn] = tcp_out(stack)
    rst = TcpSegment(DST, SRC, 22, 40000, 0, syn.seq + 1, TcpFlags.RST | TcpFlags.ACK, 0)
    stack.receive_ip(build_tcp(rst), now=T0)
    assert conn.is_closed
    evs = events(conn)
    assert any(isinstance(e, PeerReset) for e in evs)
    assert tcp_out(stack) == [] and stack.open_flow_count() == 0


@pytest.mark.parametrize(
    "src, dst, kind",
    [
        (SRC, DST, Unreachable.PORT),
        (SRC, DST, Unreachable.HOST),
        (SRC6, DST6, Unreachable.PORT),
        (SRC6, DST6, Unreachable.ADMIN),
    ],
)
def test_icmp_unreachable_fails_the_active_open(src: IPAddress, dst: IPAddress, kind: Unreachable) -> None:
    stack = make_stack()
    conn = stack.open_tcp(src, 40000, dst, 22, now=T0)
    assert conn is not None
    [syn] = tcp_out(stack)
    stack.receive_ip(build_icmp_unreachable(dst, src, kind, build_tcp(syn)), now=T0)
    assert conn.is_closed and any(isinstance(e, PeerReset) for e in events(conn))
    assert stack.stats.tcp_incoming_unreachable == 1


def test_icmp_unreachable_needs_our_syn() -> None:
    """A quote with another sequence number (RFC 5927 §4.1), and any error once
    established (a soft error, RFC 5461), leave the flow alone."""
    stack = make_stack()
    conn = stack.open_tcp(SRC, 40000, DST, 22, now=T0)
    assert conn is not None
    [syn] = tcp_out(stack)
    forged = build_tcp(syn._replace(seq=syn.seq + 12345))
    stack.receive_ip(build_icmp_unreachable(DST, SRC, Unreachable.PORT, forged), now=T0)
    assert st(conn) is State.SYN_SENT
    assert stack.drops.counts[DropReason.ICMP_ERROR_FROM_PEER] == 1
    stack.receive_ip(synack(syn), now=T0)
    stack.receive_ip(build_icmp_unreachable(DST, SRC, Unreachable.HOST, build_tcp(syn)), now=T0)
    assert st(conn) is State.ESTABLISHED


def test_quoted_tcp_rejects_short_and_other_protocols() -> None:
    syn = TcpSegment(SRC, DST, 1, 2, 3, 0, TcpFlags.SYN, 100)
    assert quoted_tcp(build_tcp(syn)) == (SRC, 1, DST, 2, 3)
    assert quoted_tcp(build_tcp(syn)[:24]) is None
    assert quoted_tcp(build_udp(UdpDatagram(SRC, DST, 1, 2, b"x"))) is None
    assert quoted_tcp(b"\x00" * 40) is None


def test_lost_syn_is_retransmitted_then_times_out() -> None:
    cfg = TcpConfig(initial_rto=1.0, syn_ack_retries=3)
    stack = make_stack(tcp=cfg)
    conn = stack.open_tcp(SRC, 40000, DST, 22, now=T0)
    assert conn is not None
    [syn] = tcp_out(stack)
    now = T0
    gaps = []
    for _ in range(3):
        deadline = stack.next_deadline()
        assert deadline is not None
        gaps.append(round(deadline - now, 3))
        now = deadline
        stack.handle_timer(now=now)
        [again] = tcp_out(stack, now)
        assert again.flags == TcpFlags.SYN and again.seq == syn.seq
    assert gaps == [1.0, 2.0, 4.0]  # exponential backoff (RFC 6298 §5.5)
    deadline = stack.next_deadline()
    assert deadline is not None
    stack.handle_timer(now=deadline)
    assert tcp_out(stack, deadline) == []  # no RST for a SYN nobody answered
    assert conn.is_closed
    assert TimedOut(TimeoutReason.SYN_ACK) in events(conn)


def test_simultaneous_close() -> None:
    stack = make_stack(tcp=TcpConfig(time_wait=5.0))
    conn = stack.open_tcp(SRC, 40000, DST, 22, now=T0)
    assert conn is not None
    [syn] = tcp_out(stack)
    stack.receive_ip(synack(syn, options=False), now=T0)
    tcp_out(stack)
    stack.tcp_close(conn, now=T0 + 1)
    [fin] = tcp_out(stack, T0 + 1)
    assert fin.flags & TcpFlags.FIN and st(conn) is State.FIN_WAIT_1
    # the peer's FIN crosses ours: it does not acknowledge our FIN
    peer_fin = TcpSegment(DST, SRC, 22, 40000, PEER_ISN + 1, fin.seq, TcpFlags.FIN | TcpFlags.ACK, 65535)
    stack.receive_ip(build_tcp(peer_fin), now=T0 + 1.01)
    assert st(conn) is State.CLOSING
    out = tcp_out(stack, T0 + 1.01)
    assert out and out[-1].ack == PEER_ISN + 2
    ack_of_ours = TcpSegment(DST, SRC, 22, 40000, PEER_ISN + 2, fin.seq + 1, TcpFlags.ACK, 65535)
    stack.receive_ip(build_tcp(ack_of_ours), now=T0 + 1.02)
    assert st(conn) is State.TIME_WAIT
    stack.handle_timer(now=T0 + 10)
    tcp_out(stack, T0 + 10)
    assert conn.is_closed and stack.open_flow_count() == 0


# --- incoming UDP bindings ------------------------------------------------------------------

CLIENT_A = (ip("127.0.0.1"), 5555)
CLIENT_B = (ip("127.0.0.1"), 5556)


def test_udp_binding_per_client_replies_and_fragments() -> None:
    stack = make_stack(incoming_ports=(6000, 6001), mtu=1420)
    a = stack.incoming_udp_send(0, CLIENT_A, (SRC, 0), (DST, 53), b"q" * 4000, now=T0)
    assert a is not None and a.src == (SRC, 6000)
    packets = stack.packets_to_send(now=T0)
    assert len(packets) == 3 and all(len(p) <= 1420 for p in packets)
    r = Reassembler()
    whole = [w for p in packets if isinstance(w := r.receive(p, now=T0), bytes)]
    assert decode_ip(whole[0]) == UdpDatagram(SRC, DST, 6000, 53, b"q" * 4000)
    # the same client keeps its binding; another gets the next port
    assert stack.incoming_udp_send(0, CLIENT_A, (SRC, 0), (DST, 53), b"x", now=T0) is a
    b = stack.incoming_udp_send(0, CLIENT_B, (SRC, 0), (DST, 53), b"y", now=T0)
    assert b is not None and b.src == (SRC, 6001)
    assert stack.incoming_udp_send(0, (ip("127.0.0.1"), 7), (SRC, 0), (DST, 53), b"z", now=T0) is None
    assert stack.drops.counts[DropReason.INCOMING_NO_PORT] == 1
    stack.packets_to_send(now=T0)
    # replies go to the binding's client, not through the NAT
    stack.receive_ip(build_udp(UdpDatagram(DST, SRC, 53, 6001, b"answer")), now=T0 + 1)
    ev = stack.next_event()
    assert isinstance(ev, IncomingUdpReply) and ev.binding is b and ev.payload == b"answer"
    assert stack.next_event() is None  # no NAT binding, no UdpSend


def test_udp_binding_idle_expiry() -> None:
    stack = make_stack(udp_idle_timeout=30.0)
    a = stack.incoming_udp_send(0, CLIENT_A, (SRC, 7777), (DST, 53), b"x", now=T0)
    assert a is not None
    stack.receive_ip(build_udp(UdpDatagram(DST, SRC, 53, 7777, b"r")), now=T0 + 20)
    assert isinstance(stack.next_event(), IncomingUdpReply)
    assert stack.next_deadline() == T0 + 50
    stack.handle_timer(now=T0 + 49)
    assert stack.next_event() is None
    stack.handle_timer(now=T0 + 50)
    ev = stack.next_event()
    assert isinstance(ev, IncomingUdpClosed) and ev.binding is a
    assert len(stack.incoming_udp) == 0
    # a late reply is no longer for a binding: it goes the ordinary way (NAT, policy)
    stack.receive_ip(build_udp(UdpDatagram(DST, SRC, 53, 7777, b"late")), now=T0 + 51)
    assert not isinstance(stack.next_event(), IncomingUdpReply)


def test_udp_table_tuple_collision_and_close_forward() -> None:
    t = IncomingUdpTable(idle_timeout=10)
    assert t.open(0, CLIENT_A, (SRC, 1), (DST, 2), now=T0) is not None
    assert t.open(1, CLIENT_B, (SRC, 1), (DST, 2), now=T0) is None
    assert t.open(1, CLIENT_B, (SRC, 3), (DST, 2), now=T0) is not None
    assert [b.client for b in t.close_forward(0)] == [CLIENT_A]
    assert len(t) == 1 and t.match(DST, 2, SRC, 1) is None and t.match(DST, 2, SRC, 3) is not None


# --- command line ---------------------------------------------------------------------------


def _keys() -> list[str]:
    import base64

    return ["-k", base64.b64encode(KEY).decode(), "-K", base64.b64encode(PEER).decode(), "-b", "127.0.0.1:0"]


@pytest.mark.parametrize(
    "args",
    [
        ["-t", "127.0.0.1:2222"],
        ["-u", "127.0.0.1:53,[fd00::1]:0,10.0.0.2:53"],
        ["--incoming-tcp", "127.0.0.1:1,10.0.0.2:0"],
        ["--incoming-port-range", "9-3"],
    ],
)
def test_cli_bad_specs_exit_2_with_one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from wgslirpy import cli

    assert cli.main(_keys() + args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wgslirpy: error: --incoming") and "\n" not in err


def test_cli_options_reach_the_config() -> None:
    from wgslirpy import cli

    opts = cli.parse_args(
        _keys()
        + [
            "-t",
            "127.0.0.1:2222,10.0.0.1:0,10.0.0.2:22",
            "-t",
            "127.0.0.1:2223,10.0.0.2:23",
            "-u",
            "[::1]:53,[fd00::1]:0,[fd00::2]:53",
            "--incoming-port-range",
            "40000-40100",
        ]
    )
    c = cli.config_from_options(opts)
    assert [(f.proto, f.host[1]) for f in c.incoming] == [("tcp", 2222), ("tcp", 2223), ("udp", 53)]
    assert c.incoming_port_range == (40000, 40100)


def test_help_documents_the_forwards(capsys: pytest.CaptureFixture[str]) -> None:
    from wgslirpy import cli

    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "-t SPEC, --incoming-tcp SPEC" in out and "-u SPEC, --incoming-udp SPEC" in out
    assert "HOST_ADDR,[SRC_ADDR],DST_ADDR" in out and "--incoming-port-range" in out
