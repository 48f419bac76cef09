"""Hardening of the gevent shell and the configuration, in process on loopback: a handshake
flood goes through the bounded queue, a full WireGuard socket never stalls the reader, the
endpoint file, and no key material in any repr, str or log line."""

from __future__ import annotations

import base64
import functools
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest

from tests.test_server import ME, PING, TunnelClient, make_config
from tests.wg_helpers import WgPair, record_calls
from wgslirpy import Config, Gateway
from wgslirpy.cli import config_from_options, parse_args
from wgslirpy.constants import MESSAGE_INITIATION_SIZE
from wgslirpy.io import server as server_mod
from wgslirpy.io.endpoint_file import EndpointFile, format_endpoint, read_endpoint_file
from wgslirpy.net.build import build_icmp_echo
from wgslirpy.net.segments import IcmpEcho
from wgslirpy.wg import crypto
from wgslirpy.wg.cookie import CookieChecker, CookieGenerator
from wgslirpy.wg.endpoint import PeerConfig


def flood_initiations(gateway_public: bytes, n: int, seed: int = 1) -> list[bytes]:
    """``n`` initiations with a valid mac1 for ``gateway_public`` and random bodies (an
    attacker who knows the gateway's public key but not the peer's private key)."""
    gen = CookieGenerator(gateway_public)
    rnd = __import__("random").Random(seed)
    out = []
    for _ in range(n):
        body = struct.pack("<I", 1) + rnd.randbytes(MESSAGE_INITIATION_SIZE - 4 - 32) + bytes(32)
        out.append(gen.add_macs(body, now=0.0))
    return out


def _is_echo_reply(x: object, *, seq: int) -> bool:
    return isinstance(x, IcmpEcho) and x.seq == seq


# --- the flood, in process -------------------------------------------------------------------------


def test_handshake_flood_is_queued_bounded_and_the_tunnel_keeps_working(monkeypatch: pytest.MonkeyPatch) -> None:
    dh_calls = record_calls(monkeypatch, crypto, "dh")
    gw = Gateway(make_config())
    gw.start()
    client = TunnelClient(gw.address)
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.send(build_icmp_echo(IcmpEcho(ME, PING, True, 7, 0, b"x")))
        client.expect(lambda x: isinstance(x, IcmpEcho))
        dh_calls.clear()
        inits = flood_initiations(gw.endpoint.public_key, 500)
        for _ in range(6):  # 3000 datagrams, faster than one reader turn's budget
            for m in inits:
                flooder.sendto(m, gw.address)
            gevent.sleep(0)
        for seq in range(1, 4):
            client.send(build_icmp_echo(IcmpEcho(ME, PING, True, 7, seq, b"x")))
            client.expect(functools.partial(_is_echo_reply, seq=seq))
        gevent.sleep(0.2)
        drops = gw.stats()["drops"]
        # Per-source token bucket: the burst reached the DH, nothing else did.
        assert drops.get("wg_handshake_failed", 0) <= 10, drops
        assert len(dh_calls) <= 10
        assert (
            drops.get("wg_rate_limited", 0)
            + drops.get("wg_handshake_queue_full", 0)
            + drops.get("wg_under_load", 0)
            + drops.get("wg_cookie_budget", 0)
            >= 2900
        ), drops
    finally:
        flooder.close()
        client.close()
        gw.stop()


# --- a full WireGuard socket -----------------------------------------------------------------------


class _FakeGsocket:
    """Stands in for the server module's ``gevent.socket`` with one replaced ``wait_write``."""

    def __init__(self, wait_write: Any) -> None:
        self.wait_write = wait_write


class _FullSocket:
    """A socket whose send buffer never drains."""

    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: Any) -> int:
        raise BlockingIOError(11, "full")

    def fileno(self) -> int:
        return 0

    def close(self) -> None:
        pass


def test_a_full_wireguard_socket_costs_one_bounded_wait_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    def fake_wait_write(fd: int, timeout: float, timeout_exc: type[BaseException]) -> None:
        waits.append(timeout)
        raise timeout_exc()

    monkeypatch.setattr(server_mod, "gsocket", _FakeGsocket(fake_wait_write))
    gw = Gateway(make_config())
    gw.socket = _FullSocket()  # type: ignore[assignment]
    gw.endpoint._outbox = [(b"d%d" % i, ("127.0.0.1", 9)) for i in range(50)]
    gw.flush()
    assert sum(waits) <= gw.send_wait, waits  # was: a 1 s wait for each datagram
    assert gw.stats()["drops"]["wg_send_blocked"] == 50
    gw.socket = None


def test_granted_socket_buffers_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wgslirpy")
    gw = Gateway(make_config())
    gw.init_socket()
    try:
        assert any("socket buffers granted: receive" in r.getMessage() for r in caplog.records)
    finally:
        gw.close()


# --- the endpoint file ---------------------------------------------------------------------------


def test_endpoint_file_round_trip_formats_and_garbage(tmp_path: Path) -> None:
    path = str(tmp_path / "peer-endpoint")
    assert read_endpoint_file(path) is None
    f = EndpointFile(path, min_interval=5.0)
    f.changed(("::ffff:10.1.2.3", 51821))
    f.poll(now=100.0)
    assert Path(path).read_text() == "10.1.2.3:51821\n"
    assert read_endpoint_file(path) == ("10.1.2.3", 51821)
    assert format_endpoint(("fd00::1", 5)) == "[fd00::1]:5"
    f.changed(("fd00::1", 5))
    f.poll(now=101.0)  # rate-limited: not yet
    assert read_endpoint_file(path) == ("10.1.2.3", 51821)
    f.poll(now=105.0)
    assert read_endpoint_file(path) == ("fd00::1", 5)
    assert sorted(os.listdir(tmp_path)) == ["peer-endpoint"]  # no temporary file left behind
    Path(path).write_text("not an address\n")
    assert read_endpoint_file(path) is None


def test_gateway_initiates_to_the_remembered_endpoint_unless_p_is_given(tmp_path: Path) -> None:
    path = tmp_path / "peer-endpoint"
    path.write_text("127.0.0.1:40000\n")
    gw = Gateway(make_config(endpoint_file=str(path)))
    assert gw.endpoint.endpoint == ("127.0.0.1", 40000)
    gw = Gateway(make_config(endpoint_file=str(path), peer_endpoint=(ipaddress.ip_address("127.0.0.2"), 1)))
    assert gw.endpoint.endpoint == ("127.0.0.2", 1)
    path.write_text("[::1]:40000\n")  # IPv6 with an IPv4 bind: ignored, not fatal
    assert Gateway(make_config(endpoint_file=str(path))).endpoint.endpoint is None


def test_gateway_writes_the_authenticated_endpoint_and_recovers_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "peer-endpoint"
    gw = Gateway(make_config(endpoint_file=str(path)))
    gw.start()
    client = TunnelClient(gw.address)
    try:
        client.send(build_icmp_echo(IcmpEcho(ME, PING, True, 7, 0, b"x")))
        client.expect(lambda x: isinstance(x, IcmpEcho))
        gevent.sleep(0.1)
        assert read_endpoint_file(str(path)) == client.sock.getsockname()
        port = gw.server_port
        gw.stop()
        # A new gateway instance on the same port starts the handshake to the client itself.
        gw2 = Gateway(make_config(endpoint_file=str(path)), listener=("127.0.0.1", port))
        gw2.start()
        try:
            deadline = gevent.get_hub().loop.now() + 5
            while not client.ep.keypairs.current or client.ep.stats.handshake_responses_sent == 0:
                assert gevent.get_hub().loop.now() < deadline, "the new gateway did not initiate"
                gevent.sleep(0.02)
            assert client.ep.stats.handshake_responses_sent >= 1
        finally:
            gw2.stop()
    finally:
        client.close()
        if gw.started:
            gw.stop()


def test_endpoint_file_option() -> None:
    opts = parse_args(
        [
            "-k",
            base64.b64encode(bytes(range(32))).decode(),
            "-K",
            base64.b64encode(bytes(range(1, 33))).decode(),
            "--endpoint-file",
            "/tmp/x",
        ]
    )
    assert config_from_options(opts).endpoint_file == "/tmp/x"


# --- secrets ---------------------------------------------------------------------------------------


def _secret_forms(key: bytes) -> list[str]:
    return [base64.b64encode(key).decode(), key.hex(), repr(key)[2:-1][:24], str(list(key[:8]))[1:-1]]


def _assert_no_secret(text: str, *keys: bytes) -> None:
    for key in keys:
        assert len(key) == 32
        for form in _secret_forms(key):
            assert form not in text, f"key material {form!r} in {text!r}"


def test_config_repr_and_str_redact_keys() -> None:
    psk = bytes(range(200, 232))
    cfg = Config.create(private_key=bytes(range(32)), peer_key=bytes(range(1, 33)), preshared_key=psk)
    for text in (repr(cfg), str(cfg), f"{cfg}", f"{cfg!s} {cfg!r}"):
        _assert_no_secret(text, cfg.private_key, psk)
        assert "private_key=<redacted>" in text and "mtu=1420" in text
    assert "preshared_key=None" in repr(make_config())


def test_key_objects_repr_redact_keys() -> None:
    p = WgPair(psk=bytes(range(200, 232)))
    p.handshake()
    kp = p.a.keypairs.current
    assert kp is not None
    secrets = [
        kp.send_key,
        kp.recv_key,
        bytes(range(200, 232)),
        p.a._handshake.local_private,
        p.a._handshake.precomputed_static_static,
    ]
    objs: list[object] = [
        p.a,
        p.a.peer,
        kp,
        p.a.keypairs,
        p.a._handshake,
        p.a._checker,
        p.a._generator,
        CookieChecker(b"k" * 32, os.urandom),
    ]
    for obj in objs:
        _assert_no_secret(repr(obj) + str(obj), *secrets)
    assert "preshared_key=<redacted>" in repr(p.a.peer)
    assert isinstance(p.a.peer, PeerConfig)


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def test_debug_log_contains_no_key_material(debug_log: pytest.LogCaptureFixture) -> None:
    cfg = make_config()
    gw = Gateway(cfg)
    gw.start()
    client = TunnelClient(gw.address)
    try:
        client.send(build_icmp_echo(IcmpEcho(ME, PING, True, 7, 0, b"x")))
        client.expect(lambda x: isinstance(x, IcmpEcho))
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"\x01" + bytes(147), gw.address)
        gevent.sleep(0.1)
        kp = gw.endpoint.keypairs.current
        assert kp is not None
        text = debug_log.text + gw.stats_line()
    finally:
        client.close()
        gw.stop()
    assert "handshake completed" in text
    _assert_no_secret(text, cfg.private_key, kp.send_key, kp.recv_key)
