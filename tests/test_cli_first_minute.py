"""The first minute: state directory, zero-config, client config, genkey/pubkey, -c files, stats.

Every test points the state directory at a tmp dir (never the real home)."""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from wgslirpy import state as S
from wgslirpy.cli import (
    _log_start,
    guess_host_address,
    main,
    parse_advertised_endpoint,
    parse_args,
    setup_from_options,
)
from wgslirpy.errors import ConfigError
from wgslirpy.io.stats import StatsReporter, summary_line, write_json_atomic
from wgslirpy.wg import crypto
from wgslirpy.wg.endpoint import EndpointStats
from wgslirpy.wgquick import parse

ROOT = Path(__file__).resolve().parents[1]
KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(1, 33))).decode()
KEY_RE = re.compile(r"^[A-Za-z0-9+/]{43}=$")


@pytest.fixture(autouse=True)
def _no_real_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def setup(*args: str) -> Any:
    return setup_from_options(parse_args(list(args)))


# --- the state directory -----------------------------------------------------------------


def test_default_state_dir() -> None:
    assert S.default_state_dir({"XDG_STATE_HOME": "/x/state"}, home="/h") == Path("/x/state/wgslirpy")
    assert S.default_state_dir({}, home="/h") == Path("/h/.local/state/wgslirpy")
    # The XDG spec: a relative path is invalid and must be ignored.
    assert S.default_state_dir({"XDG_STATE_HOME": "rel"}, home="/h") == Path("/h/.local/state/wgslirpy")


def test_state_dir_created_0700_and_tightened(tmp_path: Path) -> None:
    d = S.StateDir(tmp_path / "a" / "b")
    d.ensure()
    assert stat.S_IMODE(os.stat(d.path).st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    S.StateDir(loose).ensure()
    assert stat.S_IMODE(os.stat(loose).st_mode) == 0o700


def test_key_made_once_in_wg_format_then_reused(tmp_path: Path) -> None:
    d = S.StateDir(tmp_path / "s")
    raw, created = d.key(S.GATEWAY_KEY)
    assert created
    path = d.file(S.GATEWAY_KEY)
    text = path.read_text()
    assert text.endswith("\n") and KEY_RE.match(text.strip())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert base64.b64decode(text) == raw == crypto.clamp(raw)
    again, created = d.key(S.GATEWAY_KEY)
    assert again == raw and not created and path.read_text() == text
    assert sorted(p.name for p in d.path.iterdir()) == [S.GATEWAY_KEY]  # no temporary left behind


def test_write_private_is_0600_and_atomic(tmp_path: Path) -> None:
    d = S.StateDir(tmp_path / "s")
    p = d.write_private("x.conf", "one\n")
    d.write_private("x.conf", "two\n")
    assert p.read_text() == "two\n" and stat.S_IMODE(os.stat(p).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        d.write_private("x.conf", "three\n", exclusive=True)
    assert p.read_text() == "two\n"


def test_unusable_state_dir_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ConfigError, match="--state-dir"):
        S.StateDir(f / "sub").ensure()


# --- zero-config and the options around it -------------------------------------------------


def test_zero_config_uses_state_keys_and_default_addresses(tmp_path: Path) -> None:
    s = setup("--state-dir", str(tmp_path / "st"))
    c = s.config
    state = S.StateDir(tmp_path / "st")
    assert s.state is not None and s.state.path == state.path
    gw, _ = state.key(S.GATEWAY_KEY)
    client, _ = state.key(S.CLIENT_KEY)
    assert c.private_key == gw
    assert c.peer_public_key == crypto.public_key(client)
    assert s.client_private_key == base64.b64encode(client).decode()
    assert [str(p) for p in c.pingable] == ["10.0.2.1", "fd00::1"]
    assert [(str(ip), port) for ip, port in c.dns] == [("10.0.2.53", 53), ("fd00::53", 53)]
    # The same keys on the next start.
    s2 = setup("--state-dir", str(tmp_path / "st"))
    assert (s2.config.private_key, s2.config.peer_public_key) == (c.private_key, c.peer_public_key)


def test_zero_config_default_dir_is_xdg(tmp_path: Path) -> None:
    s = setup()
    assert s.state is not None and s.state.path == tmp_path / "xdg-state" / "wgslirpy"
    assert (tmp_path / "xdg-state" / "wgslirpy" / S.GATEWAY_KEY).exists()


def test_explicit_addresses_replace_the_defaults(tmp_path: Path) -> None:
    c = setup("--state-dir", str(tmp_path), "-P", "10.9.0.1").config
    assert [str(p) for p in c.pingable] == ["10.9.0.1"] and c.dns == ()


def test_own_key_given_client_from_state(tmp_path: Path) -> None:
    s = setup("--state-dir", str(tmp_path), "-k", KEY_A)
    assert s.config.private_key == bytes(range(32)) and s.client_private_key is not None
    assert not (tmp_path / S.GATEWAY_KEY).exists()


def test_manual_mode_touches_no_state_dir(tmp_path: Path) -> None:
    s = setup("-k", KEY_A, "-K", KEY_B)
    assert s.state is None and s.client_private_key is None and s.config.pingable == ()
    assert not (tmp_path / "xdg-state").exists()


def test_config_file_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "gw.conf"
    f.write_text(
        f"[Interface]\nPrivateKey = {KEY_A}\nListenPort = 51999\nMTU = 1380\nPingable = 10.0.2.1\n"
        f"UdpIdleTimeout = 30\n[Peer]\nPublicKey = {KEY_B}\nPresharedKey = {KEY_A}\n"
        "Endpoint = 127.0.0.1:5000\nPersistentKeepalive = 25\nAllowedIPs = 10.0.2.15/32\n"
    )
    c = setup("-c", str(f)).config
    assert c.private_key == bytes(range(32)) and c.peer_public_key == bytes(range(1, 33))
    assert c.bind == (ipaddress.ip_address("0.0.0.0"), 51999) and c.mtu == 1380
    assert c.udp_idle_timeout == 30 and c.keepalive_interval == 25
    assert c.preshared_key == bytes(range(32))
    assert c.peer_endpoint == (ipaddress.ip_address("127.0.0.1"), 5000)
    assert c.allowed_ips == (ipaddress.ip_network("10.0.2.15/32"),)
    # The command line wins over the file, option by option.
    key_file = tmp_path / "other.key"
    key_file.write_text(base64.b64encode(bytes(range(2, 34))).decode() + "\n")
    c = setup(
        "-c", str(f), "--mtu", "1400", "-b", "127.0.0.1:4000", "-P", "10.7.0.1", "-f", str(key_file), "-a", "5"
    ).config
    assert c.mtu == 1400 and c.bind == (ipaddress.ip_address("127.0.0.1"), 4000)
    assert [str(p) for p in c.pingable] == ["10.7.0.1"] and c.keepalive_interval == 5
    assert c.private_key == bytes(range(2, 34)) and c.udp_idle_timeout == 30


def test_config_file_errors_name_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "gw.conf"
    f.write_text(f"[Interface]\nPrivateKey = {KEY_A}\nMTU = huge\n")
    assert main(["-c", str(f)]) == 2
    err = capsys.readouterr().err
    assert err == f"wgslirpy: error: {f}:3: MTU: 'huge' is not a whole number\n"
    assert main(["-c", str(tmp_path / "missing.conf")]) == 2
    assert "--config: cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, expected",
    [
        ("gw.example:51820", "gw.example:51820"),
        ("192.0.2.1:1", "192.0.2.1:1"),
        ("[2001:db8::1]:51820", "[2001:db8::1]:51820"),
    ],
)
def test_advertised_endpoint(text: str, expected: str) -> None:
    assert parse_advertised_endpoint(text) == expected


@pytest.mark.parametrize("text", ["gw.example", "2001:db8::1:51820", "[2001:db8::1]", "h:0", "h:x"])
def test_bad_advertised_endpoint(text: str) -> None:
    with pytest.raises(ConfigError, match="--endpoint"):
        parse_advertised_endpoint(text)


def test_guess_uses_a_specific_bind_address() -> None:
    assert guess_host_address("127.0.0.1")[0] == "127.0.0.1"
    addr, how = guess_host_address("0.0.0.0")
    ipaddress.ip_address(addr)  # some address (the route's source, or loopback)
    assert how


def test_start_log_has_key_and_at_v_peer_and_limits(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    s = setup("--state-dir", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="wgslirpy"):
        _log_start(s, 0)
        assert caplog.messages == [f"our public key: {S.pubkey(s.config.private_key)}"]
        caplog.clear()
        _log_start(s, 1)
    text = "\n".join(caplog.messages)
    assert "peer: " in text and "limits: TCP buffer 4194304 B" in text and "ping at 10.0.2.1, fd00::1" in text


# --- genkey / pubkey / client-config ----------------------------------------------------------


def test_genkey_and_pubkey(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["genkey"]) == 0
    priv = capsys.readouterr().out
    assert priv.endswith("\n") and KEY_RE.match(priv.strip())
    monkeypatch.setattr(sys, "stdin", io.StringIO(priv))
    assert main(["pubkey"]) == 0
    pub = capsys.readouterr().out
    assert pub == base64.b64encode(crypto.public_key(base64.b64decode(priv))).decode() + "\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO("garbage\n"))
    assert main(["pubkey"]) == 1
    assert "not the correct length or format" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("wg") is None, reason="needs the wg tool (wireguard-tools)")
def test_genkey_pubkey_match_the_wg_tool() -> None:
    def run(*args: str, stdin: str = "") -> str:
        return subprocess.run(
            list(args), input=stdin, capture_output=True, text=True, check=True, timeout=30, cwd=str(ROOT)
        ).stdout

    ours = [sys.executable, "-m", "wgslirpy"]
    wg_priv = run("wg", "genkey")
    assert run(*ours, "pubkey", stdin=wg_priv) == run("wg", "pubkey", stdin=wg_priv)
    our_priv = run(*ours, "genkey")
    assert len(our_priv) == len(wg_priv) == 45 and our_priv.endswith("\n")
    assert run("wg", "pubkey", stdin=our_priv) == run(*ours, "pubkey", stdin=our_priv)


def test_client_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["client-config", "--state-dir", str(tmp_path)]) == 2
    assert "start `wgslirpy` without key options" in capsys.readouterr().err
    S.StateDir(tmp_path).write_private(S.CLIENT_CONF, "[Interface]\nPrivateKey = x\n")
    assert main(["client-config", "--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "[Interface]\nPrivateKey = x\n\n"
    assert main(["client-config", "--qr", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[Interface]\nPrivateKey = x\n") and "\u2588" in out  # block characters


def test_subcommand_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["genkey", "extra"]) == 2
    assert "`wgslirpy genkey`" in capsys.readouterr().err


# --- a real zero-config start --------------------------------------------------------------------


def _start(state: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "wgslirpy", "--state-dir", str(state), "-b", "127.0.0.1:0", *extra],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    out = []
    deadline = time.monotonic() + 30
    assert p.stdout is not None
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        out.append(line)
        if line.startswith("Print it again"):
            break
    return p, "".join(out)


def _stop(p: subprocess.Popen[str]) -> int:
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_zero_config_start_prints_a_usable_client_config(tmp_path: Path) -> None:
    state = tmp_path / "state"
    p, out = _start(state, "--endpoint", "gw.example:51820")
    try:
        assert f"written to {state / S.CLIENT_CONF}" in out
        conf = (state / S.CLIENT_CONF).read_text()
        assert conf in out and "\u2588" in out  # the config and its QR code
        iface, peer = parse(conf)
        client_key = (state / S.CLIENT_KEY).read_text().strip()
        gateway_key = base64.b64decode((state / S.GATEWAY_KEY).read_text())
        assert iface.get("PrivateKey") == client_key
        assert iface.values("Address") == ["10.0.2.15/32", "fd00::15/128"]
        assert iface.values("DNS") == ["10.0.2.53", "fd00::53"] and iface.get("MTU") == "1420"
        assert peer.get("PublicKey") == S.pubkey(gateway_key)
        assert peer.get("Endpoint") == "gw.example:51820"
        assert peer.values("AllowedIPs") == ["0.0.0.0/0", "::/0"] and peer.get("PersistentKeepalive") == "25"
        for name in (S.GATEWAY_KEY, S.CLIENT_KEY, S.CLIENT_CONF):
            assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600, name
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        assert stat.S_ISSOCK(os.stat(state / S.UAPI_SOCKET).st_mode)
    finally:
        assert _stop(p) == 0
    assert not (state / S.UAPI_SOCKET).exists()
    # A restart reuses both key pairs; without --endpoint it says the address is a guess.
    p, out = _start(state)
    try:
        assert f"PrivateKey = {client_key}" in out and f"PublicKey = {S.pubkey(gateway_key)}" in out
        assert "is a guess" in out and "--endpoint HOST:PORT" in out
    finally:
        assert _stop(p) == 0


# --- live stats --------------------------------------------------------------------------

SNAPSHOT = {
    "tcp_flows": 3,
    "udp_bindings": 1,
    "has_session": True,
    "drops": {"multicast": 5, "not_for_us": 2},
    "wireguard": {"rx_bytes": 2048, "tx_bytes": 3 * 1024 * 1024, "handshakes_completed": 2},
}


def test_summary_line() -> None:
    assert summary_line(SNAPSHOT) == (
        "stats: 3 TCP flows open, 1 UDP bindings, tunnel in 2.0 KiB / out 3.0 MiB, 2 handshakes, "
        "session up, drops: multicast 5, not_for_us 2"
    )
    assert summary_line({}).endswith("session down, drops: none")


def test_stats_json_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    write_json_atomic(str(path), SNAPSHOT)
    assert json.loads(path.read_text()) == SNAPSHOT
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]


class _FakeEndpoint:
    stats = EndpointStats(rx_bytes=1, tx_bytes=2)


class _FakeGateway:
    endpoint = _FakeEndpoint()

    def stats(self) -> dict[str, Any]:
        return {"tcp_flows": 0, "udp_bindings": 0, "drops": {}}


def test_stats_reporter_writes_file_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.json"
    r = StatsReporter(_FakeGateway(), interval=3600, log_line=True, json_path=str(path))
    r.start()
    try:
        data = json.loads(path.read_text())
        assert data["wireguard"]["tx_bytes"] == 2 and "time" in data
        with caplog.at_level(logging.INFO, logger="wgslirpy"):
            r.report(log_line=True)
        assert any(m.startswith("stats: 0 TCP flows open") for m in caplog.messages)
    finally:
        r.stop()
    # An unwritable target is one warning, not a crash.
    r = StatsReporter(_FakeGateway(), interval=3600, log_line=False, json_path=str(tmp_path / "no" / "s.json"))
    with caplog.at_level(logging.WARNING, logger="wgslirpy"):
        r.report(log_line=False)
        r.report(log_line=False)
    assert sum("cannot write --stats-json" in m for m in caplog.messages) == 1


# --- drops a user sees in normal use have names that say what they are ------------------


def _ipv6(src: str, dst: str, next_header: int, payload: bytes, hop_by_hop: bytes = b"") -> bytes:
    import struct

    body = hop_by_hop + payload
    first = 0 if hop_by_hop else next_header
    return (
        struct.pack("!IHBB", 6 << 28, len(body), first, 255)
        + ipaddress.ip_address(src).packed
        + ipaddress.ip_address(dst).packed
        + body
    )


def _drops(packet: bytes) -> dict[str, int]:
    from wgslirpy.net.stack import Stack, StackConfig

    s = Stack(StackConfig(pingable=frozenset({ipaddress.ip_address("10.0.2.1")})))
    s.receive_ip(packet, now=1.0)
    return s.all_drops().as_dict()


def test_router_solicitation_and_mld_are_multicast_drops() -> None:
    rs = _ipv6("fe80::1", "ff02::2", 58, bytes([133, 0, 0, 0, 0, 0, 0, 0]))
    assert _drops(rs) == {"multicast": 1}
    # MLDv2 report to ff02::16 behind a hop-by-hop router-alert option.
    hbh = bytes([58, 0, 5, 2, 0, 0, 1, 0])
    mld = _ipv6("fe80::1", "ff02::16", 58, bytes([143, 0, 0, 0, 0, 0, 0, 0]), hop_by_hop=hbh)
    assert _drops(mld) == {"multicast": 1}


def test_mdns_is_denied_and_other_icmp_is_named() -> None:
    from wgslirpy.net.build import build_udp
    from wgslirpy.net.segments import UdpDatagram

    mdns = build_udp(UdpDatagram(ipaddress.ip_address("fd00::15"), ipaddress.ip_address("ff02::fb"), 5353, 5353, b"q"))
    assert _drops(mdns) == {"udp_denied": 1}  # the destination policy refuses UDP to multicast
    # A unicast ICMPv6 neighbour solicitation (type 135) to the gateway.
    ns = _ipv6("fd00::15", "fd00::1", 58, bytes([135, 0, 0, 0, 0, 0, 0, 0]) + bytes(16))
    assert _drops(ns) == {"icmp_other_type": 1}
    # An ICMP error from the client (port unreachable quoting one of our packets).
    from wgslirpy.net.build import build_icmp_unreachable
    from wgslirpy.net.segments import Unreachable

    quoted = build_udp(
        UdpDatagram(ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("10.0.2.15"), 53, 4000, b"x")
    )
    err = build_icmp_unreachable(
        ipaddress.ip_address("10.0.2.15"), ipaddress.ip_address("192.0.2.1"), Unreachable.PORT, quoted
    )
    assert _drops(err) == {"icmp_error_from_peer": 1}
    # A protocol nobody handles (SCTP) keeps the generic name.
    import struct

    sctp = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 32, 0, 0, 64, 132, 0, bytes([10, 0, 2, 15]), bytes([192, 0, 2, 1])
    ) + bytes(12)
    assert _drops(sctp) == {"unsupported_protocol": 1}


def test_help_lists_the_first_minute_options_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for text in (
        "--config",
        "--state-dir",
        "--endpoint",
        "--interface",
        "--stats-json",
        "--stats-interval",
        "client-config",
        "genkey",
        "pubkey",
        "show",
        "Default: 1420.",
        "0.0.0.0:51820.",
        "Zero-config default: 10.0.2.53, fd00::53.",
        '"wgslirpy stats: {json}"',
    ):
        assert text in out, text
    assert "{" not in out.replace("{json}", "")  # every placeholder filled


def test_verbose_summary_line_and_stats_json_from_a_running_gateway(tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    args = ["-k", KEY_A, "-K", KEY_B, "-b", "127.0.0.1:0", "-v", "--stats-interval", "0.2"]
    p = subprocess.Popen(
        [sys.executable, "-m", "wgslirpy", *args, "--stats-json", str(stats_file)],
        cwd=str(ROOT),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("INFO: stats: " in line for line in lines):
            line = p.stderr.readline()
            if not line:
                break
            lines.append(line)
        assert any("INFO: stats: 0 TCP flows open, 0 UDP bindings, tunnel in 0 B / out 0 B" in x for x in lines), lines
        assert any("INFO: limits: " in x for x in lines) and any("INFO: peer: " in x for x in lines)
        data = json.loads(stats_file.read_text())
        assert data["tcp_flows"] == 0 and "wireguard" in data and "drops" in data
    finally:
        assert _stop(p) == 0


def test_state_dir_remembers_the_peer_endpoint_by_default(tmp_path: Path) -> None:
    assert setup("--state-dir", str(tmp_path)).config.endpoint_file == str(tmp_path / S.PEER_ENDPOINT)
    given = str(tmp_path / "elsewhere")
    assert setup("--state-dir", str(tmp_path), "--endpoint-file", given).config.endpoint_file == given
    assert setup("-k", KEY_A, "-K", KEY_B).config.endpoint_file is None  # no state dir in use
