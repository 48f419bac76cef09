"""config.py and keys.py: the rules a configuration must satisfy, each stated once."""

from __future__ import annotations

import base64
from ipaddress import ip_address

import pytest

from wgslirpy import constants as C
from wgslirpy.config import Config, parse_key
from wgslirpy.errors import ConfigError
from wgslirpy.keys import KEY_SIZE, check_key

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def test_check_key_accepts_exactly_32_raw_bytes() -> None:
    assert KEY_SIZE == 32
    assert check_key(KEY_A, "k") is KEY_A
    for bad, why in ((bytes(31), "this one has 31"), (bytes(33), "this one has 33"), ("x" * 32, "not str")):
        with pytest.raises(ConfigError, match=rf"^k: a key must be 32 bytes, {why}$"):
            check_key(bad, "k")


def test_every_key_goes_through_the_one_check() -> None:
    with pytest.raises(ConfigError, match=r"^--peer-key: a key must be 32 bytes, this one has 5$"):
        parse_key(base64.b64encode(b"short").decode(), "--peer-key")
    for field in ("private_key", "peer_public_key", "preshared_key"):
        keys = {"private_key": KEY_A, "peer_public_key": KEY_B, field: bytes(16)}
        with pytest.raises(ConfigError, match=rf"^{field}: a key must be 32 bytes, this one has 16$"):
            Config(**keys)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "mtu, ok", [(C.MIN_MTU - 1, False), (C.MIN_MTU, True), (C.MAX_MTU, True), (C.MAX_MTU + 1, False)]
)
def test_mtu_bounds_are_the_constants(mtu: int, ok: bool) -> None:
    assert (C.MIN_MTU, C.MAX_MTU) == (1280, 65535)  # IPv6's minimum link MTU (RFC 8200 §5)
    if ok:
        assert Config(private_key=KEY_A, peer_public_key=KEY_B, mtu=mtu).mtu == mtu
    else:
        with pytest.raises(ConfigError, match=r"^--mtu: must be between 1280 and 65535"):
            Config(private_key=KEY_A, peer_public_key=KEY_B, mtu=mtu)


@pytest.mark.parametrize("mtu, ok", [(C.MIN_MTU - 1, False), (C.MIN_MTU, True), (C.MAX_MTU + 1, False)])
def test_the_cores_check_the_same_mtu_bounds(mtu: int, ok: bool) -> None:
    """WireGuardEndpoint and TcpConfig hold the one MTU rule, not floors of their own."""
    from wgslirpy.net.tcp import TcpConfig
    from wgslirpy.wg.endpoint import PeerConfig, WireGuardEndpoint

    peer_key = WireGuardEndpoint(KEY_B, PeerConfig(public_key=KEY_A), now=0.0, wall_clock=lambda: 0.0).public_key

    builders = (
        lambda: TcpConfig(mtu=mtu),
        lambda: WireGuardEndpoint(KEY_A, PeerConfig(public_key=peer_key), now=0.0, wall_clock=lambda: 0.0, mtu=mtu),
    )
    for build in builders:
        if ok:
            build()
        else:
            with pytest.raises(ConfigError, match=rf"MTU {mtu} out of range \({C.MIN_MTU}..{C.MAX_MTU}\)"):
                build()


def test_the_wireguard_core_checks_keys_with_the_one_rule() -> None:
    from wgslirpy.wg.endpoint import PeerConfig, WireGuardEndpoint

    with pytest.raises(ConfigError, match=r"^peer public key: a key must be 32 bytes, this one has 31$"):
        PeerConfig(public_key=bytes(31))
    with pytest.raises(ConfigError, match=r"^preshared key: a key must be 32 bytes, this one has 3$"):
        PeerConfig(public_key=KEY_A, preshared_key=bytes(3))
    with pytest.raises(ConfigError, match=r"^private key: a key must be 32 bytes, not str$"):
        WireGuardEndpoint("x" * 32, PeerConfig(public_key=KEY_A), now=0.0, wall_clock=lambda: 0.0)  # type: ignore[arg-type]


def test_pingable_and_dns_take_any_number_of_addresses_of_either_family() -> None:
    # -P/-D are repeatable without a per-family limit (the stack answers at every one);
    # repeats of one address are folded, order is kept.
    c = Config.create(
        private_key=KEY_A,
        peer_key=KEY_B,
        pingable=["10.0.2.1", "10.0.2.2", "fd00::1", "10.0.2.1"],
        dns=["10.0.2.53", "10.0.2.3:5353", "[fd00::53]", "10.0.2.53:53"],
    )
    assert c.pingable == (ip_address("10.0.2.1"), ip_address("10.0.2.2"), ip_address("fd00::1"))
    assert c.dns == ((ip_address("10.0.2.53"), 53), (ip_address("10.0.2.3"), 5353), (ip_address("fd00::53"), 53))


_CORES_WITHOUT_GEVENT = """
import sys
from ipaddress import ip_address as ip

from wgslirpy.config import Config
from wgslirpy.net.build import build_icmp_echo
from wgslirpy.net.packet import decode_ip
from wgslirpy.net.segments import IcmpEcho
from wgslirpy.net.stack import Stack
from wgslirpy.wg.crypto import public_key

peer = public_key(bytes(range(1, 33)))
cfg = Config.create(
    private_key=bytes(range(32)), peer_key=peer, pingable=["10.0.2.1"], dns=["10.0.2.53"],
    mtu=1400, tcp_buffer_size=65536, congestion="newreno", udp_idle_timeout=7.0, allow_loopback=True,
)
sc = cfg.stack_config()
assert (sc.mtu, sc.tcp.mtu, sc.tcp.rcv_buffer, sc.tcp.snd_buffer) == (1400, 1400, 65536, 65536)
assert sc.tcp.congestion == "newreno"
assert (sc.udp_idle_timeout, sc.allow_loopback, sc.dns) == (7.0, True, frozenset({(ip("10.0.2.53"), 53)}))
stack = Stack(sc)
stack.receive_ip(build_icmp_echo(IcmpEcho(ip("10.0.2.15"), ip("10.0.2.1"), True, 1, 2, b"hi")), now=0.0)
[reply] = stack.packets_to_send(now=0.0)
assert decode_ip(reply) == IcmpEcho(ip("10.0.2.1"), ip("10.0.2.15"), False, 1, 2, b"hi"), decode_ip(reply)
ep = cfg.wireguard_endpoint(("127.0.0.1", 9), now=0.0, wall_clock=lambda: 1e9)
assert ep.peer.public_key == peer and ep.peer.endpoint == ("127.0.0.1", 9)
ep.initiate_handshake(now=0.0)
[(msg, addr)] = ep.datagrams_to_send()
assert len(msg) == 148 and addr == ("127.0.0.1", 9)
shell = sorted(m for m in sys.modules if m.split(".")[0] == "gevent" or m.startswith("wgslirpy.io"))
assert not shell, shell
print("ok")
"""


def test_cores_are_built_from_a_config_without_gevent() -> None:
    """Config maps itself onto the cores' configurations (stack, TCP, WireGuard peer): the
    cores are built and driven from a Config in a process that never imports gevent."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _CORES_WITHOUT_GEVENT], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
