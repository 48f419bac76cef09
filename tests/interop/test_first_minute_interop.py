"""The first minute, end to end: ``wgslirpy`` with only a state directory, the printed client
config applied to the wireguard-go client as a user would import it, then ping, DNS and an
HTTP fetch through the tunnel; ``wg show`` / ``wg set`` against our UAPI socket.

The gateway gets only ``--state-dir`` plus what the namespace bed needs: ``-b`` (its veth
address), ``--endpoint`` (the address the client dials; a guess would find no default route
in ns gw) and ``--interface`` (a name unique to this run: wireguard-go's sockets share
/var/run/wireguard/).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Generator
from pathlib import Path

import pytest

from wgslirpy.wgquick import Section, parse

from . import servers
from .servers import HTTP_PORT
from .topology import (
    GATEWAY_PORT,
    GW_UNDERLAY_V4,
    HOSTS_NAME,
    PYTHON,
    REPO_ROOT,
    SRV_V4,
    Topology,
    TopologyError,
    WgSlirpyGateway,
    genkey,
    wait_until,
)

pytestmark = pytest.mark.interop

CONFIG_HEADER = "# wgslirpy client config"


class ZeroConfigGateway(WgSlirpyGateway):
    """wgslirpy started as a new user would: no keys, no addresses, only a state directory."""

    def __init__(self, topo: Topology) -> None:
        # A placeholder the base class wants; wgslirpy is given no key and makes its own.
        super().__init__(topo, genkey()[0])
        self.state_dir = topo.workdir / "state"
        self.ifname = f"wgs{topo.tag}"
        self.printed: str = ""

    def command(self, *, initiate_to: str | None = None) -> list[str]:
        return [
            PYTHON,
            "-m",
            "wgslirpy",
            "--state-dir",
            str(self.state_dir),
            "-b",
            self.endpoint,
            "--endpoint",
            self.endpoint,
            "--interface",
            self.ifname,
        ]

    def start(self, *, initiate_to: str | None = None, timeout: float = 20.0) -> None:
        super().start(timeout=timeout)
        wait_until(
            lambda: "Print it again" in self._current_log() or self.pid is None,
            timeout=timeout,
            what="the printed client config",
        )
        if self.pid is None:
            raise TopologyError(f"wgslirpy exited:\n{self.log_tail()}")
        self.printed = self._current_log()
        self.public_key = printed_config(self.printed)[1].get("PublicKey") or ""


def printed_config(log: str) -> list[Section]:
    """The client config as printed: from the header line to the QR code."""
    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(CONFIG_HEADER))
    body = []
    for line in lines[start + 1 :]:
        if line.startswith(("\u2588", "\u2580", "\u2584")):  # the QR code's block characters
            break
        body.append(line)
    sections = parse("\n".join(body), "printed config")
    assert [s.name for s in sections] == ["Interface", "Peer"], body
    return sections


@pytest.fixture(scope="module")
def zc(socket_buffers: None) -> Generator[Topology, None, None]:
    t = Topology("wgslirpy", keep_workdir=os.environ.get("WGSLIRPY_INTEROP_KEEP") == "1")
    t.gateway = ZeroConfigGateway(t)
    with t:  # up() cleans up after itself if it fails; down() at the end (also if this fails)
        apply_client_config(t, printed_config(t.gateway.printed))
        yield t


def apply_client_config(t: Topology, sections: list[Section]) -> None:
    """Configure the wireguard-go client from the config, as wg-quick would (addresses,
    MTU, DNS, the one peer, routes for its AllowedIPs)."""
    iface, peer = sections
    wg, ns = t.client_wg, t.client
    key_file = t.workdir / "client-from-config.key"
    key_file.write_text(str(iface.get("PrivateKey")) + "\n")
    key_file.chmod(0o600)
    ns.run(["wg", "set", wg.ifname, "private-key", str(key_file)])
    ns.run(["wg", "set", wg.ifname, "peer", t.gateway.public_key, "remove"])
    ns.run(["ip", "addr", "flush", "dev", wg.ifname])
    for cidr in iface.values("Address"):
        wg.add_address(cidr)
    ns.run(["ip", "link", "set", wg.ifname, "mtu", str(iface.get("MTU"))])
    ns.write_etc("resolv.conf", "".join(f"nameserver {d}\n" for d in iface.values("DNS")))
    args = [
        "wg",
        "set",
        wg.ifname,
        "peer",
        str(peer.get("PublicKey")),
        "endpoint",
        str(peer.get("Endpoint")),
        "allowed-ips",
        ",".join(peer.values("AllowedIPs")),
    ]
    if peer.get("PersistentKeepalive"):
        args += ["persistent-keepalive", str(peer.get("PersistentKeepalive"))]
    ns.run(args)
    for prefix in peer.values("AllowedIPs"):  # the underlay's connected route stays more specific
        ns.run(["ip", "-6" if ":" in prefix else "-4", "route", "replace", prefix, "dev", wg.ifname])
    wg.public_key = ns.run(["wg", "show", wg.ifname, "public-key"]).stdout.strip()


def test_printed_config_is_the_written_one_and_keys_persist(zc: Topology) -> None:
    gw = zc.gateway
    assert isinstance(gw, ZeroConfigGateway)
    conf = (gw.state_dir / "client.conf").read_text()
    assert conf in gw.printed
    iface, peer = printed_config(gw.printed)
    assert iface.values("Address") == ["10.0.2.15/32", "fd00::15/128"]
    assert iface.values("DNS") == ["10.0.2.53", "fd00::53"]
    assert peer.get("Endpoint") == f"{GW_UNDERLAY_V4}:{GATEWAY_PORT}"
    assert peer.values("AllowedIPs") == ["0.0.0.0/0", "::/0"]
    assert "our public key: " + gw.public_key in gw.printed


@pytest.mark.parametrize("host", ["10.0.2.1", "fd00::1"])
def test_ping_through_the_printed_config(zc: Topology, host: str) -> None:
    assert zc.wait_for_ping(host, timeout=15) is not None, zc.gateway.log_tail()
    _, rx, out = zc.ping(host, count=3, interval=0.2, wait=2)
    assert rx == 3, out


def test_dns_and_http_through_the_printed_config(zc: Topology) -> None:
    assert zc.wait_for_ping("10.0.2.1", timeout=15) is not None
    # The client's resolver is the config's DNS = 10.0.2.53 (the gateway's responder).
    out = zc.client.run(["dig", "+short", "+time=2", "+tries=3", HOSTS_NAME, "A"], timeout=20).stdout.split()
    assert out == [SRV_V4]
    size, seed = 200_000, 5
    cmd = zc.client.cmd(
        ["curl", "-sS", "--fail", "--max-time", "30", "-o", "-", f"http://{HOSTS_NAME}:{HTTP_PORT}/blob/{size}/{seed}"]
    )
    proc = subprocess.run(cmd, capture_output=True, timeout=45)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) == size
    assert hashlib.sha256(proc.stdout).hexdigest() == servers.blob_sha256(size, seed)


def _wg(*args: str) -> str:
    return subprocess.run(["wg", *args], capture_output=True, text=True, timeout=10, check=True).stdout


def test_wg_show_and_wg_set(zc: Topology) -> None:
    gw = zc.gateway
    assert isinstance(gw, ZeroConfigGateway)
    assert zc.wait_for_ping("10.0.2.1", timeout=15) is not None
    shown = _wg("show", gw.ifname)
    assert f"public key: {gw.public_key}" in shown
    assert f"listening port: {GATEWAY_PORT}" in shown
    assert f"peer: {zc.client_wg.public_key}" in shown
    assert "endpoint: 10.201.0.1:51821" in shown
    assert "latest handshake: " in shown and "transfer: " in shown
    handshake = int(_wg("show", gw.ifname, "latest-handshakes").split()[-1])
    assert abs(handshake - time.time()) < 200
    rx, tx = (int(x) for x in _wg("show", gw.ifname, "transfer").split()[1:3])
    assert rx > 0 and tx > 0
    # Run-time changes through `wg set`.
    subprocess.run(
        ["wg", "set", gw.ifname, "peer", zc.client_wg.public_key, "persistent-keepalive", "7"], check=True, timeout=10
    )
    assert "persistent keepalive: every 7 seconds" in _wg("show", gw.ifname)
    assert _wg("show", gw.ifname, "persistent-keepalive").split()[-1] == "7"
    bad = subprocess.run(["wg", "set", gw.ifname, "listen-port", "1"], capture_output=True, text=True, timeout=10)
    assert bad.returncode != 0
    assert zc.ping("10.0.2.1", count=2, interval=0.2, wait=2)[1] == 2
    # The same without root or wg: `wgslirpy show` on the state directory's socket.
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run(
        [PYTHON, "-m", "wgslirpy", "show", "--state-dir", str(gw.state_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert f"public key: {gw.public_key}" in out and f"peer: {zc.client_wg.public_key}" in out
    assert "persistent keepalive: every 7 seconds" in out


def test_restart_reuses_the_keys_and_cleans_its_sockets(zc: Topology) -> None:
    gw = zc.gateway
    assert isinstance(gw, ZeroConfigGateway)
    before = gw.public_key
    assert gw.stop() == 0
    assert not Path(f"/var/run/wireguard/{gw.ifname}.sock").exists()
    assert not (gw.state_dir / "uapi.sock").exists()
    gw.start()
    assert gw.public_key == before
    # The client, unchanged, gets through again.
    # (wireguard-go handshakes again after ~15 s of data without an answer)
    assert zc.wait_for_ping("10.0.2.1", timeout=40) is not None
