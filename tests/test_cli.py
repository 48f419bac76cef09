"""The command line: options, errors as one line with exit status 2, --help, --version."""

from __future__ import annotations

import base64
import gc
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wgslirpy.cli import _freeze_startup_objects, config_from_options, main, parse_args
from wgslirpy.config import Config

ROOT = Path(__file__).resolve().parents[1]
KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(1, 33))).decode()


@pytest.fixture(autouse=True)
def _no_real_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A zero-config path must never touch the real home's state directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def config(*args: str) -> Config:
    return config_from_options(parse_args(["-k", KEY_A, "-K", KEY_B, *args]))


def test_defaults_match_the_rust_tool() -> None:
    c = config()
    assert c.mtu == 1420
    assert c.tcp_buffer_size == 4 * 1024 * 1024  # ours: a per-flow maximum (the Rust tool: 65535)
    assert c.transmit_queue_capacity == 256
    assert c.udp_idle_timeout == 92
    assert c.dns_ttl == 60
    assert c.bind == (ipaddress.ip_address("0.0.0.0"), 51820)
    assert c.peer_endpoint is None
    assert not c.allow_loopback


def test_repeatable_pingable_and_dns() -> None:
    c = config("-P", "10.0.0.1", "-P", "fd00::1", "-D", "10.0.0.53", "-D", "[fd00::53]:5353")
    assert c.pingable == (ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1"))
    assert c.dns == ((ipaddress.ip_address("10.0.0.53"), 53), (ipaddress.ip_address("fd00::53"), 5353))


def test_all_options() -> None:
    c = config(
        "-p",
        "[fd00::2]:51000",
        "-a",
        "25",
        "-b",
        "[::]:4000",
        "--mtu",
        "1280",
        "--tcp-buffer-size",
        "262144",
        "--transmit-queue-capacity",
        "10",
        "--connect-timeout",
        "2.5",
        "--udp-idle-timeout",
        "30",
        "--max-udp-bindings",
        "7",
        "--allow-loopback",
    )
    assert c.peer_endpoint == (ipaddress.ip_address("fd00::2"), 51000)
    assert c.keepalive_interval == 25
    assert c.bind == (ipaddress.ip_address("::"), 4000)
    assert (c.mtu, c.tcp_buffer_size, c.transmit_queue_capacity) == (1280, 262144, 10)
    assert c.connect_timeout == 2.5 and c.udp_idle_timeout == 30 and c.max_udp_bindings == 7
    assert c.allow_loopback


def test_key_file_is_trimmed(tmp_path: Path) -> None:
    f = tmp_path / "key"
    f.write_text("\n  " + KEY_A + "  \n\n")
    c = config_from_options(parse_args(["-f", str(f), "-K", KEY_B]))
    assert c.private_key == bytes(range(32))


@pytest.mark.parametrize(
    "args, message",
    [
        (["-K", "nonsense"], "--peer-key"),
        (["--state-dir", "/proc/no/such/dir"], "--state-dir"),
        (["-k", KEY_A, "-f", "x", "-K", KEY_B], "only one"),
        (["-k", "not base64!", "-K", KEY_B], "base64"),
        (["-k", base64.b64encode(b"short").decode(), "-K", KEY_B], "32 bytes"),
        (["-k", KEY_A, "-K", KEY_B, "-b", "1.2.3.4"], "address:port"),
        (["-k", KEY_A, "-K", KEY_B, "-b", "::1:80"], "[addr]:port"),
        (["-k", KEY_A, "-K", KEY_B, "-b", "1.2.3.4:99999"], "out of range"),
        (["-k", KEY_A, "-K", KEY_B, "-P", "nonsense"], "not an IPv4 or IPv6"),
        (["-k", KEY_A, "-K", KEY_B, "--mtu", "100"], "--mtu"),
        (["-k", KEY_A, "-K", KEY_B, "--mtu", "abc"], "not a whole number"),
        (["-k", KEY_A, "-K", KEY_B, "-a", "-3"], "positive"),
        (["-k", KEY_A, "-K", KEY_B, "--bogus"], "unknown option --bogus"),
        (["-f", "/nonexistent/key", "-K", KEY_B], "cannot read"),
    ],
)
def test_bad_input_is_one_line_and_status_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wgslirpy: error: ")
    assert message in err
    assert "Traceback" not in err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for opt in (
        "--private-key",
        "--private-key-file",
        "--peer-key",
        "--peer-endpoint",
        "--keepalive-interval",
        "--bind-ip-port",
        "--dns",
        "--pingable",
        "--mtu",
        "--tcp-buffer-size",
        "--transmit-queue-capacity",
        "--allow-loopback",
        "--verbose",
        "--quiet",
        "--version",
    ):
        assert opt in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("wgslirpy ")


def test_port_in_use_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        port = s.getsockname()[1]
        assert main(["-k", KEY_A, "-K", KEY_B, "-b", f"127.0.0.1:{port}"]) == 2
        err = capsys.readouterr().err
        assert "cannot bind" in err and err.count("\n") == 1
    finally:
        s.close()


def _run_script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH="")
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "wgslirpy.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd="/",
    )


def test_legacy_script_runs_from_a_checkout() -> None:
    r = _run_script("--help")
    assert r.returncode == 0 and "--peer-key" in r.stdout
    r = _run_script("-k", "bad", "-K", KEY_B)
    assert r.returncode == 2 and r.stderr.startswith("wgslirpy: error:") and "Traceback" not in r.stderr


def test_sigterm_stops_with_status_0() -> None:
    import signal
    import time

    p = subprocess.Popen(
        [sys.executable, "-m", "wgslirpy", "-k", KEY_A, "-K", KEY_B, "-b", "127.0.0.1:0"],
        cwd=str(ROOT),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and "listening on" not in line:
            line = p.stderr.readline() if p.stderr else ""
            if not line and p.poll() is not None:
                break
        assert "listening on 127.0.0.1:" in line
        p.send_signal(signal.SIGUSR1)
        line = p.stderr.readline() if p.stderr else ""
        assert line.startswith("wgslirpy stats: {")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_installed_legacy_script_does_not_shadow_the_package(tmp_path: Path) -> None:
    """pip puts scripts/wgslirpy.py next to the `wgslirpy` console script in bin/, whose
    sys.path[0] is bin/: `import wgslirpy` there must still find the package."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(ROOT / "scripts" / "wgslirpy.py", bin_dir / "wgslirpy.py")
    (bin_dir / "wgslirpy").write_text("import sys\nfrom wgslirpy.cli import main\nsys.exit(main())\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for script in ("wgslirpy", "wgslirpy.py"):
        r = subprocess.run(
            [sys.executable, str(bin_dir / script), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=str(tmp_path),
        )
        assert r.returncode == 0 and r.stdout.startswith("wgslirpy "), r.stderr


def test_ipv6_peer_needs_ipv6_bind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-k", KEY_A, "-K", KEY_B, "-p", "[fd00::2]:51820"]) == 2
    assert "IPv6 bind address" in capsys.readouterr().err


def test_the_command_line_freezes_its_start_up_objects_and_the_library_does_not() -> None:
    import wgslirpy.io.server  # noqa: F401  (importing the library freezes nothing)

    assert gc.get_freeze_count() == 0
    try:
        _freeze_startup_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
