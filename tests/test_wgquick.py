"""wg-quick files: parsing with line-numbered errors, the gateway's reading, rendering."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from wgslirpy.errors import ConfigError
from wgslirpy.wgquick import client_config, gateway_options, parse, render

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(1, 33))).decode()
KEY_C = base64.b64encode(bytes(range(2, 34))).decode()

GATEWAY = f"""\
# a gateway
[Interface]
PrivateKey = {KEY_A}
ListenPort = 51999
BindAddress = ::
mtu = 1380                       # keys are case-insensitive
Pingable = 10.0.2.1, fd00::1
DNSResponder = 10.0.2.53
DNSResponder = [fd00::53]:5353
TcpBufferSize = 262144
ConnectTimeout = 2.5
AllowLoopback = true

[peer]
PublicKey = {KEY_B}
PresharedKey = {KEY_C}
Endpoint = 192.0.2.7:51820
PersistentKeepalive = 25
AllowedIPs = 10.0.2.15/32, fd00::15/128
"""


def test_parse_sections_entries_and_lines() -> None:
    sections = parse(GATEWAY, "gw.conf")
    assert [s.name for s in sections] == ["Interface", "Peer"]
    iface, peer = sections
    assert iface.line == 2 and peer.line == 14
    assert iface.get("MTU") == "1380"
    assert iface.values("dnsresponder") == ["10.0.2.53", "[fd00::53]:5353"]
    assert peer.all("endpoint")[0].line == 17


def test_gateway_options() -> None:
    opts = gateway_options(parse(GATEWAY, "gw.conf"), "gw.conf")
    assert opts["--private-key"] == KEY_A and opts["--peer-key"] == KEY_B
    assert opts["preshared_key"] == KEY_C
    assert opts["listen_port"] == 51999 and opts["bind_address"] == "::"
    assert opts["--mtu"] == "1380" and opts["--tcp-buffer-size"] == "262144"
    assert opts["--connect-timeout"] == "2.5" and opts["--allow-loopback"] is True
    assert opts["--pingable"] == ["10.0.2.1", "fd00::1"]
    assert opts["--dns"] == ["10.0.2.53", "[fd00::53]:5353"]
    assert opts["--peer-endpoint"] == "192.0.2.7:51820" and opts["--keepalive-interval"] == "25"
    assert opts["allowed_ips"] == [ipaddress.ip_network("10.0.2.15/32"), ipaddress.ip_network("fd00::15/128")]


def test_keepalive_off() -> None:
    text = f"[Interface]\nPrivateKey = {KEY_A}\n[Peer]\nPublicKey = {KEY_B}\nPersistentKeepalive = off\n"
    assert gateway_options(parse(text))["--keepalive-interval"] is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("PrivateKey = x\n", "f.conf:1: 'PrivateKey' comes before any [Interface]"),
        ("[Interface]\n[Bogus]\n", "f.conf:2: unknown section"),
        ("[Interface\n", "f.conf:1: a section header must end with ']'"),
        ("[Interface]\n\nnot a pair\n", "f.conf:3: expected 'Key = Value'"),
        ("[Interface]\nPrivateKey = nope!\n", "f.conf:2: PrivateKey: not valid base64"),
        ("[Interface]\nListenPort = 70000\n", "f.conf:2: ListenPort: port 70000 is out of range"),
        ("[Interface]\nMTU = big\n", "f.conf:2: MTU: 'big' is not a whole number"),
        ("[Interface]\nPingable = 10.0.2.1, nonsense\n", "f.conf:2: Pingable: 'nonsense' is not an IPv4"),
        ("[Interface]\nAddress = 10.0.2.1/24\n", "f.conf:2: Address: not used by wgslirpy (the gateway has no"),
        ("[Interface]\nDNS = 1.1.1.1\n", "use DNSResponder"),
        ("[Interface]\nFrobnicate = 1\n", "f.conf:2: Frobnicate: unknown key in [Interface]"),
        ("[Interface]\nAllowLoopback = maybe\n", "expected true or false"),
        (
            f"[Interface]\nPrivateKey = {KEY_A}\nPrivateKey = {KEY_A}\n",
            "f.conf:3: PrivateKey: given twice (first on line 2)",
        ),
        ("[Interface]\n[Interface]\n", "f.conf:2: a second [Interface]"),
        (f"[Peer]\nPublicKey = {KEY_B}\n[Peer]\nPublicKey = {KEY_C}\n", "f.conf:3: a second [Peer]"),
        ("[Peer]\nEndpoint = gateway.example\n", "f.conf:2: Endpoint:"),
        ("[Peer]\nPersistentKeepalive = 99999\n", "f.conf:2: PersistentKeepalive: must be between 1 and 65535"),
        ("[Peer]\nAllowedIPs = 10.0.0.0/33\n", "f.conf:2: AllowedIPs: '10.0.0.0/33' is not an address or prefix"),
        ("[Peer]\nListenPort = 1\n", "f.conf:2: ListenPort: unknown key in [Peer]"),
    ],
)
def test_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        gateway_options(parse(text, "f.conf"), "f.conf")
    assert message in str(e.value)


def test_render_and_client_config_round_trip() -> None:
    text = client_config(
        private_key=KEY_A,
        addresses=["10.0.2.15/32", "fd00::15/128"],
        dns=["10.0.2.53", "fd00::53"],
        mtu=1420,
        peer_public_key=KEY_B,
        endpoint="[2001:db8::1]:51820",
        preshared_key=KEY_C,
        keepalive=25,
    )
    assert text == (
        "[Interface]\n"
        f"PrivateKey = {KEY_A}\n"
        "Address = 10.0.2.15/32, fd00::15/128\n"
        "DNS = 10.0.2.53, fd00::53\n"
        "MTU = 1420\n"
        "\n"
        "[Peer]\n"
        f"PublicKey = {KEY_B}\n"
        f"PresharedKey = {KEY_C}\n"
        "Endpoint = [2001:db8::1]:51820\n"
        "AllowedIPs = 0.0.0.0/0, ::/0\n"
        "PersistentKeepalive = 25\n"
    )
    iface, peer = parse(text)
    assert iface.values("Address") == ["10.0.2.15/32", "fd00::15/128"]
    assert peer.get("Endpoint") == "[2001:db8::1]:51820"
    assert render([("Interface", [("A", "1")])]) == "[Interface]\nA = 1\n"
