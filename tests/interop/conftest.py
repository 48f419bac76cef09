"""Fixtures for the interop suite: one topology per test module, host buffers raised per session.

Environment:
  WGSLIRPY_INTEROP_GATEWAY=wgslirpy|kernel   gateway under test (default wgslirpy; ``kernel`` is
                                             the wireguard-go + forwarding baseline)
  WGSLIRPY_REQUIRE_INTEROP=1                 missing prerequisites fail the run instead of skipping
  WGSLIRPY_INTEROP_GATEWAY_ARGS="..."        extra arguments for wgslirpy (shell-split)
  WGSLIRPY_INTEROP_MIB=100                   size of the bulk TCP transfers, in MiB
  WGSLIRPY_INTEROP_KEEP=1                    keep the work directory (logs, keys) after the run
Measurements are collected with the ``measure`` fixture and printed in the terminal summary.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from .topology import GATEWAY_KINDS, Topology, raised_socket_buffers

REQUIRED_TOOLS = ("ip", "wireguard-go", "wg", "nft", "ping", "dig", "curl", "ss", "sysctl")
_MEASUREMENTS: list[str] = []


def gateway_kind() -> str:
    kind = os.environ.get("WGSLIRPY_INTEROP_GATEWAY", "wgslirpy").strip() or "wgslirpy"
    if kind not in GATEWAY_KINDS:
        raise pytest.UsageError(f"WGSLIRPY_INTEROP_GATEWAY must be one of {GATEWAY_KINDS}, not {kind!r}")
    return kind


def missing_prerequisite() -> str | None:
    """Why this machine cannot run the interop suite, or None."""
    if os.geteuid() != 0:
        return "interop tests need root (network namespaces, /dev/net/tun)"
    if not os.path.exists("/dev/net/tun"):
        return "interop tests need /dev/net/tun"
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            return (
                f"interop tests need `{tool}` on PATH (apt-get install --no-install-recommends "
                "wireguard-go wireguard-tools iproute2 iputils-ping dnsutils nftables curl procps)"
            )
    try:
        rc = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10).returncode
    except (OSError, subprocess.TimeoutExpired):
        rc = 1
    if rc != 0:
        return "`ip netns` does not work here"
    return None


def require_interop() -> None:
    reason = missing_prerequisite()
    if reason is None:
        return
    if os.environ.get("WGSLIRPY_REQUIRE_INTEROP") == "1":
        pytest.fail(f"WGSLIRPY_REQUIRE_INTEROP=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def socket_buffers() -> Iterator[None]:
    """Raised host socket buffers for the session; SIGTERM becomes KeyboardInterrupt meanwhile,
    so a CI timeout still runs the fixtures' teardown (namespaces, processes, sysctls)."""
    require_interop()
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        with raised_socket_buffers():
            yield
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def topo(socket_buffers: None) -> Generator[Topology, None, None]:
    """The three namespaces, wireguard-go client, the chosen gateway and the test servers."""
    t = Topology(
        gateway_kind(),
        gateway_args=shlex.split(os.environ.get("WGSLIRPY_INTEROP_GATEWAY_ARGS", "")),
        keep_workdir=os.environ.get("WGSLIRPY_INTEROP_KEEP") == "1",
    )
    with t:  # up() cleans up after itself if it fails; down() at the end
        yield t


@pytest.fixture
def wgslirpy_only(topo: Topology) -> None:
    if not topo.gateway.is_wgslirpy:
        pytest.skip(f"checks a wgslirpy feature; the {topo.gateway.kind} gateway has none")


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``measure("12.3 MB/s")`` records a figure under the test's name for the summary."""

    def record(text: str) -> None:
        _MEASUREMENTS.append(f"{request.node.nodeid.split('::', 1)[-1]}: {text}")

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _MEASUREMENTS:
        terminalreporter.section(f"interop measurements (gateway: {gateway_kind()})")
        for line in _MEASUREMENTS:
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    rep = outcome.get_result()
    topo = getattr(item, "funcargs", {}).get("topo")
    if rep.failed and isinstance(topo, Topology):
        tail = topo.gateway.log_tail()
        if tail:
            rep.sections.append((f"{topo.gateway.kind} gateway log (tail)", tail))
