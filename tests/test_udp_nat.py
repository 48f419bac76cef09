"""UdpNatTable: bindings, full-cone replies, idle expiry, LRU eviction, events."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from tests.conftest import FakeClock
from wgslirpy.errors import ConfigError, DropReason
from wgslirpy.net.segments import IPAddress, UdpDatagram
from wgslirpy.net.udp_nat import BindingClosed, BindingOpened, UdpBinding, UdpNatTable

CLIENT = IPv4Address("10.0.0.2")
CLIENT6 = IPv6Address("fd00::2")
SERVER = IPv4Address("192.0.2.10")
SERVER6 = IPv6Address("2001:db8::10")


def dgram(
    src: IPAddress = CLIENT,
    sport: int = 5000,
    dst: IPAddress = SERVER,
    dport: int = 53,
    payload: bytes = b"hello",
) -> UdpDatagram:
    return UdpDatagram(src=src, dst=dst, sport=sport, dport=dport, payload=payload)


def events(table: UdpNatTable) -> list[BindingOpened | BindingClosed]:
    out: list[BindingOpened | BindingClosed] = []
    while (ev := table.next_event()) is not None:
        out.append(ev)
    return out


def closed(table: UdpNatTable) -> list[tuple[int, str]]:
    return [(e.binding.id, e.reason) for e in events(table) if isinstance(e, BindingClosed)]


# --- creation and reuse --------------------------------------------------------------


def test_first_datagram_creates_binding_and_queues_opened(clock: FakeClock) -> None:
    t = UdpNatTable()
    b = t.outbound(dgram(), now=clock.now)
    assert (b.client_addr, b.client_port) == (CLIENT, 5000)
    assert b.created == b.last_seen == clock.now
    assert (b.tx_datagrams, b.tx_bytes, b.rx_datagrams, b.rx_bytes) == (1, 5, 0, 0)
    assert len(t) == 1 and t.get(b.id) is b
    assert events(t) == [BindingOpened(b)]
    assert t.next_event() is None


def test_same_client_endpoint_reuses_binding_for_any_destination(clock: FakeClock) -> None:
    t = UdpNatTable()
    b = t.outbound(dgram(dport=53), now=clock.now)
    clock.advance(1)
    other = dgram(dst=IPv4Address("198.51.100.1"), dport=123, payload=b"xy")
    assert t.outbound(other, now=clock.now) is b
    assert len(t) == 1
    assert (b.tx_datagrams, b.tx_bytes) == (2, 7)
    assert b.last_seen == clock.now and b.created == clock.now - 1
    assert [type(e) for e in events(t)] == [BindingOpened]


def test_different_ports_and_addresses_get_separate_bindings(clock: FakeClock) -> None:
    t = UdpNatTable()
    a = t.outbound(dgram(sport=5000), now=clock.now)
    b = t.outbound(dgram(sport=5001), now=clock.now)
    c = t.outbound(dgram(src=IPv4Address("10.0.0.3"), sport=5000), now=clock.now)
    assert len({a.id, b.id, c.id}) == 3 and len(t) == 3


# --- full cone replies ---------------------------------------------------------------


def test_replies_from_any_remote_reach_the_client_with_that_source(clock: FakeClock) -> None:
    t = UdpNatTable()
    b = t.outbound(dgram(dst=SERVER, dport=3478), now=clock.now)
    remotes = [(SERVER, 3478), (SERVER, 9999), (IPv4Address("203.0.113.7"), 40000)]
    for i, (addr, port) in enumerate(remotes):
        reply = t.inbound(b.id, addr, port, b"r%d" % i, now=clock.now)
        assert reply == UdpDatagram(addr, CLIENT, sport=port, dport=5000, payload=b"r%d" % i)
    assert (b.rx_datagrams, b.rx_bytes) == (3, 6)


def test_ipv6_binding_and_reply(clock: FakeClock) -> None:
    t = UdpNatTable()
    b = t.outbound(dgram(src=CLIENT6, dst=SERVER6, sport=6000), now=clock.now)
    b4 = t.outbound(dgram(src=CLIENT, sport=6000), now=clock.now)
    assert b is not b4 and b.client_addr.version == 6
    reply = t.inbound(b.id, ip_address("2001:db8::99"), 443, b"x", now=clock.now)
    assert reply == UdpDatagram(IPv6Address("2001:db8::99"), CLIENT6, 443, 6000, b"x")


def test_ipv4_reply_on_an_ipv6_binding_comes_from_the_mapped_address(clock: FakeClock) -> None:
    # A dual-stack socket receives from IPv4 remotes (the shell unmaps ::ffff:a.b.c.d).
    t = UdpNatTable()
    b = t.outbound(dgram(src=CLIENT6, dst=SERVER6), now=clock.now)
    d = t.inbound(b.id, SERVER, 53, b"x", now=clock.now)
    assert d is not None and d.src == ip_address(f"::ffff:{SERVER}") and d.dst == CLIENT6
    assert b.rx_datagrams == 1


def test_ipv6_reply_on_an_ipv4_binding_is_dropped_and_counted(clock: FakeClock) -> None:
    t = UdpNatTable()
    b = t.outbound(dgram(), now=clock.now)
    assert t.inbound(b.id, SERVER6, 53, b"x", now=clock.now) is None
    assert t.drops[DropReason.UDP_FAMILY_MISMATCH] == 1
    mapped = t.inbound(b.id, ip_address(f"::ffff:{SERVER}"), 53, b"x", now=clock.now)
    assert mapped is not None and mapped.src == SERVER


def test_reply_for_unknown_binding_is_counted(clock: FakeClock) -> None:
    t = UdpNatTable()
    assert t.inbound(42, SERVER, 53, b"x", now=clock.now) is None
    b = t.outbound(dgram(), now=clock.now)
    t.close(b.id)
    assert t.inbound(b.id, SERVER, 53, b"x", now=clock.now) is None
    assert t.drops[DropReason.UDP_NO_BINDING] == 2
    assert t.drops.total() == 2


# --- idle expiry -----------------------------------------------------------------------


def test_idle_binding_expires_at_its_deadline(clock: FakeClock) -> None:
    t = UdpNatTable(idle_timeout=30.0)
    assert t.next_deadline() is None
    b = t.outbound(dgram(), now=clock.now)
    events(t)
    assert t.next_deadline() == clock.now + 30.0
    t.handle_timer(now=clock.advance(29.9))
    assert len(t) == 1 and t.next_event() is None
    t.handle_timer(now=clock.now + 0.1)  # exactly the deadline
    assert len(t) == 0 and t.get(b.id) is None
    assert closed(t) == [(b.id, "idle")]
    assert t.next_deadline() is None


@pytest.mark.parametrize("direction", ["outbound", "inbound"])
def test_activity_in_either_direction_refreshes(clock: FakeClock, direction: str) -> None:
    t = UdpNatTable(idle_timeout=30.0)
    b = t.outbound(dgram(), now=clock.now)
    clock.advance(20)
    if direction == "outbound":
        t.outbound(dgram(), now=clock.now)
    else:
        t.inbound(b.id, SERVER, 53, b"r", now=clock.now)
    assert b.last_seen == clock.now
    assert t.next_deadline() == clock.now + 30.0
    t.handle_timer(now=clock.advance(20))  # 40 s after creation, 20 s after activity
    assert len(t) == 1
    t.handle_timer(now=clock.advance(10))
    assert len(t) == 0


def test_expiry_closes_only_idle_bindings_and_deadline_moves_on(clock: FakeClock) -> None:
    t = UdpNatTable(idle_timeout=10.0)
    a = t.outbound(dgram(sport=1), now=clock.now)
    b = t.outbound(dgram(sport=2), now=clock.advance(3))
    c = t.outbound(dgram(sport=3), now=clock.advance(3))
    t.outbound(dgram(sport=1), now=clock.advance(3))  # a refreshed at +9
    events(t)
    assert t.next_deadline() == b.last_seen + 10
    t.handle_timer(now=clock.now + 4)  # +13: only b (seen at +3) is idle
    assert closed(t) == [(b.id, "idle")]
    assert t.next_deadline() == c.last_seen + 10
    t.handle_timer(now=clock.now + 100)
    assert sorted(closed(t)) == [(a.id, "idle"), (c.id, "idle")]


def test_outbound_after_deadline_gets_a_fresh_binding(clock: FakeClock) -> None:
    t = UdpNatTable(idle_timeout=10.0)
    old = t.outbound(dgram(), now=clock.now)
    events(t)
    new = t.outbound(dgram(), now=clock.advance(10))  # no handle_timer in between
    assert new is not old and new.id > old.id
    assert [(type(e), e.binding.id) for e in events(t)] == [
        (BindingClosed, old.id),
        (BindingOpened, new.id),
    ]


def test_clock_going_backwards_does_not_break_the_order(clock: FakeClock) -> None:
    t = UdpNatTable(idle_timeout=10.0)
    a = t.outbound(dgram(sport=1), now=clock.now)
    t.outbound(dgram(sport=2), now=clock.now - 5)  # clamped to clock.now
    assert t.next_deadline() == a.last_seen + 10


# --- limits, eviction, ids -----------------------------------------------------------------


def test_lru_binding_evicted_at_the_limit(clock: FakeClock) -> None:
    t = UdpNatTable(max_bindings=3)
    a = t.outbound(dgram(sport=1), now=clock.now)
    b = t.outbound(dgram(sport=2), now=clock.advance(1))
    c = t.outbound(dgram(sport=3), now=clock.advance(1))
    t.inbound(a.id, SERVER, 53, b"r", now=clock.advance(1))  # a is now the most recent
    events(t)
    d = t.outbound(dgram(sport=4), now=clock.advance(1))
    assert len(t) == 3 and t.get(b.id) is None
    assert {t.get(i) for i in (a.id, c.id, d.id)} == {a, c, d}
    assert [(type(e), e.binding.id) for e in events(t)] == [
        (BindingClosed, b.id),
        (BindingOpened, d.id),
    ]
    t.outbound(dgram(sport=5), now=clock.advance(1))
    assert closed(t) == [(c.id, "evicted")]


def test_reusing_a_binding_at_the_limit_evicts_nothing(clock: FakeClock) -> None:
    t = UdpNatTable(max_bindings=2)
    t.outbound(dgram(sport=1), now=clock.now)
    t.outbound(dgram(sport=2), now=clock.now)
    events(t)
    t.outbound(dgram(sport=1), now=clock.advance(1))
    assert len(t) == 2 and t.next_event() is None


def test_ids_are_never_reused(clock: FakeClock) -> None:
    t = UdpNatTable(max_bindings=2, idle_timeout=5.0)
    seen: set[int] = set()
    for i in range(50):
        b = t.outbound(dgram(sport=1000 + i % 3), now=clock.advance(1))
        if i % 7 == 0:
            t.close(b.id)
        if i % 11 == 0:
            t.handle_timer(now=clock.advance(6))
        seen.add(b.id)
    opened = [e.binding.id for e in events(t) if isinstance(e, BindingOpened)]
    assert len(opened) == len(set(opened))
    assert set(opened) == seen


def test_many_bindings_expire_in_lru_order(clock: FakeClock) -> None:
    t = UdpNatTable(idle_timeout=100.0, max_bindings=5000)
    ids = [t.outbound(dgram(sport=i), now=clock.advance(0.01)).id for i in range(1, 4001)]
    events(t)
    deadline = t.next_deadline()
    assert deadline is not None
    t.handle_timer(now=deadline)
    assert closed(t) == [(ids[0], "idle")]
    t.handle_timer(now=clock.now + 100)
    assert [i for i, _ in closed(t)] == ids[1:]


# --- shell close and config ------------------------------------------------------------


def test_shell_close_queues_closed_and_is_idempotent(clock: FakeClock) -> None:
    t = UdpNatTable()
    b = t.outbound(dgram(), now=clock.now)
    events(t)
    t.close(b.id)
    t.close(b.id)
    t.close(12345)
    assert closed(t) == [(b.id, "closed")]
    assert len(t) == 0
    # The client endpoint can come back and gets a new binding.
    assert t.outbound(dgram(), now=clock.now).id != b.id


def test_binding_compares_by_identity() -> None:
    a = UdpBinding(1, CLIENT, 1, 0.0, 0.0)
    assert a != UdpBinding(1, CLIENT, 1, 0.0, 0.0) and a == a


@pytest.mark.parametrize("kwargs", [{"idle_timeout": 0.0}, {"idle_timeout": -1.0}, {"max_bindings": 0}])
def test_bad_config_raises(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        UdpNatTable(**kwargs)  # type: ignore[arg-type]
