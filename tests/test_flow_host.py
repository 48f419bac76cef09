"""The shell's flows against io/host.py's FlowHost: no Gateway, no sockets.

A stand-in host (a real Stack, a flush that records the packets) shows that a flow's
host-side operations reach the wire through the one flush without a manual mark — abort
included, and DNS over TCP's abort on an internal error — and that the io/ modules are
written against the protocol: none but server.py imports the gateway, and each imports alone.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import pytest

from wgslirpy.config import Config
from wgslirpy.errors import DropCounter
from wgslirpy.io import dns_server
from wgslirpy.io.host import FlowHost
from wgslirpy.io.tcp_forward import TcpFlow
from wgslirpy.net.build import build_tcp
from wgslirpy.net.packet import decode_ip
from wgslirpy.net.segments import IcmpError, TcpFlags, TcpSegment, Unreachable
from wgslirpy.net.stack import Stack, TcpConnectRequested
from wgslirpy.net.tcp import TcpConnection

from .test_config import KEY_A, KEY_B
from .test_stack import CLIENT, NOW, events, make_stack, syn

IO = Path(__file__).resolve().parents[1] / "wgslirpy" / "io"


class StandInHost:
    """A FlowHost with a real stack whose flush only records what would be sent."""

    def __init__(self) -> None:
        self.config = Config(private_key=KEY_A, peer_public_key=KEY_B)
        self.stack: Stack = make_stack()
        self.drops = DropCounter()
        self.wire: list[Any] = []
        self.finished: list[TcpConnection] = []

    def now(self) -> float:
        return NOW

    def flush(self) -> None:
        self.wire += [decode_ip(p) for p in self.stack.packets_to_send(now=NOW)]

    def spawn(self, fn: Callable[..., Any], *args: Any) -> gevent.Greenlet:
        return gevent.spawn(fn, *args)

    def flow_finished(self, conn: TcpConnection) -> None:
        self.finished.append(conn)


def _flow(host: StandInHost, sport: int = 40000) -> TcpFlow:
    host.stack.receive_ip(build_tcp(syn(sport=sport)), now=NOW)
    (ev,) = events(host.stack)
    assert isinstance(ev, TcpConnectRequested)
    checked: FlowHost = host  # the stand-in satisfies the protocol (mypy checks this line)
    return TcpFlow(checked, ev.conn)


def test_flow_operations_reach_the_wire_through_the_flush() -> None:
    host = StandInHost()
    flow = _flow(host)
    flow.accept()
    (synack,) = host.wire
    assert isinstance(synack, TcpSegment) and synack.flags == TcpFlags.SYN | TcpFlags.ACK
    flow.abort()  # flushes by itself: the RST is on the wire without another call
    assert len(host.wire) == 2
    rst = host.wire[1]
    assert isinstance(rst, TcpSegment) and rst.flags & TcpFlags.RST and rst.dst == CLIENT
    assert host.stack.open_flow_count() == 0


@pytest.mark.parametrize("icmp", [None, Unreachable.HOST])
def test_flow_refuse_answers_with_rst_or_icmp(icmp: Unreachable | None) -> None:
    host = StandInHost()
    flow = _flow(host)
    flow.refuse(icmp)
    (answer,) = host.wire
    if icmp is None:
        assert isinstance(answer, TcpSegment) and answer.flags & TcpFlags.RST
    else:
        assert isinstance(answer, IcmpError) and (answer.type, answer.code) == (3, 1)
    assert host.stack.open_flow_count() == 0


def test_dns_over_tcp_failure_resets_the_peer_at_once() -> None:
    host = StandInHost()
    flow = _flow(host, sport=40001)

    def broken(idle_timeout: float | None = None) -> bytes | None:
        raise RuntimeError("a bug in the DNS path")

    flow.recv_from_peer = broken  # type: ignore[method-assign]
    dns_server.serve_dns_tcp(host, flow)  # logs the error, aborts the flow
    kinds = [seg.flags for seg in host.wire if isinstance(seg, TcpSegment)]
    assert kinds[0] == TcpFlags.SYN | TcpFlags.ACK and kinds[-1] & TcpFlags.RST
    assert host.finished == [flow.conn]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported relative to wgslirpy/io, at module level at run time?) of one file."""
    tree = ast.parse(path.read_text())
    runtime: set[int] = {id(n) for n in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.append((node.module or "", id(node) in runtime))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wgslirpy.io."):
            found.append(((node.module or "").removeprefix("wgslirpy.io."), id(node) in runtime))
    return found


def test_only_the_gateway_module_imports_the_gateway_and_the_io_graph_is_acyclic() -> None:
    modules = sorted(p.stem for p in IO.glob("*.py") if p.stem != "__init__")
    graph: dict[str, set[str]] = {}
    for m in modules:
        deps = _imports(IO / f"{m}.py")
        assert m == "server" or "server" not in {d for d, _ in deps}, f"io/{m}.py imports the Gateway"
        graph[m] = {d for d, at_runtime in deps if at_runtime}
    # the run-time import graph of io/ has no cycle (depth-first search)
    state: dict[str, int] = {}

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert state.get(m) != 1, f"import cycle: {' -> '.join((*path, m))}"
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in graph.get(m, ()):
            visit(d, (*path, m))
        state[m] = 2

    for m in modules:
        visit(m, ())


def test_each_io_module_imports_alone() -> None:
    modules = sorted(p.stem for p in IO.glob("*.py") if p.stem != "__init__")
    root = IO.parents[1]
    for m in modules:
        out = subprocess.run(
            [sys.executable, "-c", f"import wgslirpy.io.{m}"], cwd=root, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, (m, out.stderr)
