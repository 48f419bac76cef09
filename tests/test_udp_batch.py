"""Batched UDP I/O on the WireGuard socket (``wgslirpy/io/udp_batch.py``): the GSO run rule,
GSO sends and GRO reads on loopback sockets, the per-datagram fallback paths, the fallback
when the kernel refuses GSO, and the gateway end to end with batching on and off.

Loopback carries UDP_SEGMENT (Linux >= 4.18) and UDP_GRO (Linux >= 5.0); the tests that need
them skip, saying so, on an older kernel. No root.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from tests.test_server import ME, PING, TunnelClient, make_config
from tests.test_wg_hardening import flood_initiations
from wgslirpy import Gateway
from wgslirpy.io import udp_batch
from wgslirpy.io.udp_batch import (
    GSO_MAX_BYTES,
    GSO_MAX_SEGMENTS,
    BatchReceiver,
    BatchSender,
    enable_gro,
    gso_runs,
    gso_supported,
)
from wgslirpy.net.build import build_icmp_echo
from wgslirpy.net.segments import IcmpEcho

A = ("127.0.0.1", 9)
B = ("127.0.0.1", 10)


def _udp(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # a test burst must not overflow it
    s.bind((host, 0))
    s.setblocking(False)
    return s


def _kernel_has_gso() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return gso_supported(s)


def _kernel_has_gro() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return enable_gro(s)


needs_gso = pytest.mark.skipif(not _kernel_has_gso(), reason="the kernel lacks UDP_SEGMENT (Linux >= 4.18)")
needs_gro = pytest.mark.skipif(not _kernel_has_gro(), reason="the kernel lacks UDP_GRO (Linux >= 5.0)")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    tx, rx = _udp(), _udp()
    try:
        yield tx, rx
    finally:
        tx.close()
        rx.close()


def _drain(receiver: BatchReceiver, expected: int) -> list[bytes]:
    """Every datagram the receiver has, reading until ``expected`` arrived (bounded)."""
    got: list[bytes] = []
    for _ in range(10 * expected + 100):
        try:
            parts, _addr = receiver.recv()
        except BlockingIOError:
            if len(got) >= expected:
                break
            gevent.sleep(0.001)
            continue
        got.extend(parts)
    return got


def _mixed(addr: tuple[str, int]) -> list[tuple[bytes, tuple[str, int]]]:
    """Full-sized datagrams (distinct contents), a short tail, ACK-sized ones, a lone odd one."""
    out = [(bytes([i]) * 1452, addr) for i in range(100)]
    out.append((b"t" * 700, addr))
    out += [(bytes([200 + i]) * 80, addr) for i in range(10)]
    out.append((b"z" * 33, addr))
    return out


# --- the run rule (pure) ---------------------------------------------------------------------------


def test_runs_group_equal_sizes_to_one_address_and_a_shorter_tail_ends_a_run() -> None:
    out = [(b"a" * 100, A)] * 3 + [(b"b" * 40, A)] + [(b"c" * 100, A)] * 2 + [(b"d" * 100, B)] * 2
    assert gso_runs(out) == [(0, 4), (4, 6), (6, 8)]
    # A longer datagram never joins a run (the kernel cuts every segment at the first one's size).
    assert gso_runs([(b"a" * 10, A), (b"b" * 20, A), (b"c" * 20, A)]) == [(0, 1), (1, 3)]
    assert gso_runs([]) == []
    assert gso_runs(out, 6) == [(6, 8)]


def test_runs_respect_the_kernel_segment_and_byte_limits() -> None:
    small = [(b"x" * 80, A)] * (GSO_MAX_SEGMENTS * 2 + 1)
    assert gso_runs(small) == [(0, 64), (64, 128), (128, 129)]
    big = [(b"x" * 1452, A)] * 100
    runs = gso_runs(big)
    assert all((j - i) * 1452 <= GSO_MAX_BYTES for i, j in runs)
    assert runs[0] == (0, GSO_MAX_BYTES // 1452)
    assert sum(j - i for i, j in runs) == 100


# --- loopback: both paths each way ----------------------------------------------------------------


@pytest.mark.parametrize(
    "gso,gro",
    [
        pytest.param(True, True, marks=[needs_gso, needs_gro], id="gso-gro"),
        pytest.param(True, False, marks=needs_gso, id="gso-recvfrom"),
        pytest.param(False, True, marks=needs_gro, id="sendto-gro"),
        pytest.param(False, False, id="sendto-recvfrom"),
    ],
)
def test_every_datagram_arrives_intact_and_in_order(
    pair: tuple[socket.socket, socket.socket], gso: bool, gro: bool
) -> None:
    tx, rx = pair
    sender = BatchSender(tx, gso=gso)
    receiver = BatchReceiver(rx, gro=gro)
    assert sender.gso is gso and receiver.gro is gro
    out = _mixed(rx.getsockname())
    assert sender.send(out) == len(out)
    got = _drain(receiver, len(out))
    assert got == [d for d, _ in out]
    if gso:
        # 100 full ones need three runs (byte limit: 45 a run), the 700-byte tail rides the
        # third; the ACK-sized ones and their shorter tail a fourth.
        assert sender.gso_sends == 4 and sender.gso_datagrams == len(out)
    else:
        assert sender.gso_sends == 0
    if gso and gro:
        # Loopback hands a GSO send to a GRO socket in one piece: split back by the cmsg size.
        assert receiver.gro_reads >= 1 and receiver.gro_datagrams > 1
    if not gro:
        assert receiver.gro_reads == 0


@pytest.mark.parametrize("gso", [pytest.param(True, marks=needs_gso, id="gso"), pytest.param(False, id="sendto")])
def test_dual_stack_socket_sends_to_ipv4_peers_as_mapped_addresses(gso: bool) -> None:
    try:
        tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError:
        pytest.skip("no IPv6 sockets here")
    rx = _udp()
    try:
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            tx.bind(("::", 0))
        except OSError:
            pytest.skip("cannot bind [::]")
        tx.setblocking(False)
        sender = BatchSender(tx, gso=gso, mapped=True)
        out = [(b"m" * 500, rx.getsockname())] * 5
        assert sender.send(out) == 5
        assert _drain(BatchReceiver(rx, gro=False), 5) == [b"m" * 500] * 5
        assert sender.gso_sends == (1 if gso else 0)
    finally:
        tx.close()
        rx.close()


def test_sockets_without_the_options_take_the_per_datagram_paths() -> None:
    class Plain:
        def sendto(self, data: bytes, addr: Any) -> int:
            return len(data)

    assert not BatchSender(Plain()).gso
    assert not BatchReceiver(Plain()).gro


def test_the_environment_forces_the_fallback_on_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WGSLIRPY_UDP_BATCH", "0")
    gw = Gateway(make_config())
    gw.init_socket()
    try:
        assert gw._sender is not None and not gw._sender.gso
        assert gw._receiver is not None and not gw._receiver.gro
    finally:
        gw.close()


# --- a full socket and kernel refusals (fake sockets) ---------------------------------------------


class _FakeSocket:
    """Records sends; ``sendmsg`` and ``sendto`` follow the scripted outcomes (None = sent)."""

    def __init__(self, sendmsg_errors: list[OSError | None], sendto_full_after: int | None = None) -> None:
        self.sendmsg_errors = sendmsg_errors
        self.sendto_full_after = sendto_full_after
        self.sendmsg_calls: list[list[bytes]] = []
        self.sendto_calls: list[bytes] = []

    def getsockopt(self, level: int, opt: int) -> int:
        return 0

    def sendmsg(self, buffers: list[bytes], cmsgs: Any, flags: int, addr: Any) -> int:
        err = self.sendmsg_errors.pop(0) if self.sendmsg_errors else None
        if err is not None:
            raise err
        self.sendmsg_calls.append(list(buffers))
        return sum(map(len, buffers))

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.sendto_full_after is not None and len(self.sendto_calls) >= self.sendto_full_after:
            raise BlockingIOError(errno.EAGAIN, "full")
        self.sendto_calls.append(data)
        return len(data)


def _run(n: int, size: int = 100, addr: tuple[str, int] = A) -> list[tuple[bytes, tuple[str, int]]]:
    return [(bytes([i]) * size, addr) for i in range(n)]


def test_a_full_socket_stops_at_the_first_unsent_datagram() -> None:
    full = BlockingIOError(errno.EAGAIN, "full")
    sock = _FakeSocket([None, full])
    sender = BatchSender(sock)
    out = _run(10) + _run(10, 50, B)
    assert sender.send(out) == 10  # the first run left, the second would block: nothing of it sent
    assert sender.send(out, 10) == 20
    assert len(sock.sendmsg_calls) == 2
    fallback = _FakeSocket([], sendto_full_after=3)
    assert BatchSender(fallback, gso=False).send(out) == 3


def test_eio_turns_gso_off_for_good_and_resends_the_run_datagram_by_datagram(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wgslirpy")
    sock = _FakeSocket([OSError(errno.EIO, "Input/output error")])
    sender = BatchSender(sock)
    out = _run(5)
    assert sender.send(out) == 5
    assert not sender.gso
    assert sock.sendto_calls == [d for d, _ in out] and sock.sendmsg_calls == []
    assert sender.send(out) == 5  # no second try
    assert sock.sendmsg_calls == []
    assert sum("UDP GSO unavailable" in r.getMessage() for r in caplog.records) == 1


def test_einval_before_any_gso_success_turns_gso_off() -> None:
    sock = _FakeSocket([OSError(errno.EINVAL, "Invalid argument")])
    sender = BatchSender(sock)
    assert sender.send(_run(4)) == 4
    assert not sender.gso and len(sock.sendto_calls) == 4


def test_einval_after_a_gso_success_resends_only_that_run_unbatched() -> None:
    sock = _FakeSocket([None, OSError(errno.EINVAL, "Invalid argument"), None])
    sender = BatchSender(sock)
    out = _run(4) + _run(3, 1400, B) + _run(2, 60)
    assert sender.send(out) == len(out)
    assert sender.gso  # still on: only the refused run went one by one
    assert [len(c) for c in sock.sendmsg_calls] == [4, 2]
    assert sock.sendto_calls == [d for d, _ in out[4:7]]
    # That size is not offered to GSO again; the others still are.
    assert sender.send(out) == len(out)
    assert [len(c) for c in sock.sendmsg_calls] == [4, 2, 4, 2]
    assert sock.sendto_calls == [d for d, _ in out[4:7]] * 2


def test_other_send_errors_skip_the_run_like_a_lost_datagram() -> None:
    sock = _FakeSocket([None, OSError(errno.EPERM, "Operation not permitted")])
    sender = BatchSender(sock)
    out = _run(4) + _run(3, 50, B) + _run(1, 10)
    assert sender.send(out) == len(out)
    assert sender.gso and len(sock.sendmsg_calls) == 1 and len(sock.sendto_calls) == 1


# --- the gateway end to end, batched and not -------------------------------------------------------


def _is_reply(x: object, *, seq: int) -> bool:
    return isinstance(x, IcmpEcho) and x.seq == seq


def _echo_reply_seqs(client: TunnelClient, n: int) -> set[int]:
    """The sequence numbers of the next ``n`` echo replies (seq > 0) the client receives."""
    seen = set()
    for _ in range(n):
        item = client.expect(lambda x: isinstance(x, IcmpEcho) and x.seq > 0)
        assert isinstance(item, IcmpEcho)
        seen.add(item.seq)
    return seen


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "fallback"])
def test_gateway_answers_a_burst_through_both_paths(batching: bool) -> None:
    gw = Gateway(make_config())
    gw.udp_batching = batching
    gw.start()
    client = TunnelClient(gw.address)
    try:
        client.send(build_icmp_echo(IcmpEcho(ME, PING, True, 7, 0, b"x")))
        client.expect(functools.partial(_is_reply, seq=0))
        assert gw._sender is not None and gw._receiver is not None
        assert gw._sender.gso is (batching and _kernel_has_gso())
        assert gw._receiver.gro is (batching and _kernel_has_gro())
        # 40 equal-sized requests in one go: their replies leave in one flush, as GSO runs.
        for seq in range(1, 41):
            client.ep.send_ip(build_icmp_echo(IcmpEcho(ME, PING, True, 7, seq, b"p" * 1000)), now=time.monotonic())
        client.flush()
        assert _echo_reply_seqs(client, 40) == set(range(1, 41))
        batch = gw.stats()["udp_batch"]
        assert batch["gso"] is gw._sender.gso and batch["gro"] is gw._receiver.gro
        assert batch["gso_datagrams"] == gw._sender.gso_datagrams
        if batching and _kernel_has_gso():
            assert gw._sender.gso_datagrams >= 2
        if not batching:
            assert gw._sender.gso_sends == 0 and gw._receiver.gro_reads == 0
    finally:
        client.close()
        gw.stop()


@needs_gso
@needs_gro
def test_a_coalesced_read_reaches_the_endpoint_and_the_handshake_intake_datagram_by_datagram() -> None:
    gw = Gateway(make_config())
    gw.start()
    client = TunnelClient(gw.address)
    flooder = _udp()
    try:
        client.send(build_icmp_echo(IcmpEcho(ME, PING, True, 7, 0, b"x")))
        client.expect(functools.partial(_is_reply, seq=0))
        gevent.sleep(0.05)
        before = gw.endpoint.stats.as_dict()
        # Transport data: 30 requests in one GSO send from the client's own socket.
        for seq in range(1, 31):
            client.ep.send_ip(build_icmp_echo(IcmpEcho(ME, PING, True, 7, seq, b"q" * 900)), now=time.monotonic())
        data = client.ep.datagrams_to_send()
        assert len({len(d) for d, _ in data}) == 1
        assert BatchSender(client.sock, gso=True).send(data) == 30
        assert _echo_reply_seqs(client, 30) == set(range(1, 31))
        # Handshake initiations (a flood's worth, from a stranger) in one GSO send: each one is
        # classified and queued on its own, then reaches the endpoint within the turn budgets.
        inits = [(m, gw.address) for m in flood_initiations(gw.endpoint.public_key, 40)]
        flooder_sender = BatchSender(flooder, gso=True)
        assert flooder_sender.send(inits) == 40 and flooder_sender.gso_sends == 1
        for _ in range(200):
            gevent.sleep(0.01)
            if gw.endpoint.stats.rx_datagrams - before["rx_datagrams"] >= 70 and not gw.intake.pending:
                break
        assert gw.endpoint.stats.rx_datagrams - before["rx_datagrams"] == 70
        assert gw.endpoint.stats.rx_packets - before["rx_packets"] == 30
        assert gw._receiver is not None and gw._receiver.gro_reads >= 2
        assert gw.stats()["drops"].get("wg_handshake_queue_full", 0) == 0
    finally:
        flooder.close()
        client.close()
        gw.stop()


def test_module_constants_match_the_kernel_abi() -> None:
    # linux/udp.h; Python exposes the names only on some builds.
    assert (udp_batch.SOL_UDP, udp_batch.UDP_SEGMENT, udp_batch.UDP_GRO) == (17, 103, 104)
    assert getattr(socket, "UDP_SEGMENT", 103) == 103 and getattr(socket, "UDP_GRO", 104) == 104
