"""Benchmark wgslirpy against wireguard-go with kernel forwarding, in one interleaved run.

Usage (as root, with the project's Python, e.g. /tmp/venv/bin/python)::

    python benchmarks/bench.py [--repeat N] [--quick] [--only FIGURES] [--links] [--profile]
                               [--no-mitmproxy]

Builds the three-namespace bed of tests/interop/topology.py (client ns: wireguard-go and
kernel TCP; gw ns: the gateway; srv ns: servers) once per gateway per repeat, in the order
baseline, wgslirpy, mitmproxy, baseline, ... and measures the figures below through it.
mitmproxy's WireGuard mode is the third gateway where it installs (benchmarks/mitm.py).
The figure ``links`` (alone: ``--only links`` or ``--links``) is the link section of
benchmarks/links.py: TCP through the impairment relay, with a table of its own.
It prints one table: the median of each figure for both gateways and the median of the
per-repeat ratios, every ratio oriented so that HIGHER IS BETTER for wgslirpy
(rates: wgslirpy/baseline; times, CPU and memory: baseline/wgslirpy), beside the targets
we hold ourselves to. Raw per-run values go to benchmarks/out/bench-<time>.json.

All traffic stays inside the namespaces it creates (addresses 10.20x.0.0/24, fd00:20x::/64);
nothing is sent anywhere else. Every wait and every figure is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import re
import selectors
import shlex
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import links  # noqa: E402
import mitm  # noqa: E402
import procstat  # noqa: E402
import profiling  # noqa: E402

from tests.interop import topology as topo_mod  # noqa: E402
from tests.interop.topology import (  # noqa: E402
    ECHO_PORT,
    GW_PING_V4,
    PYTHON,
    SRV_V4,
    UDP_ECHO_PORT,
    Topology,
    raised_socket_buffers,
)

PROGRAMS_PY = HERE / "programs.py"
OUT_DIR = HERE / "out"
IPERF_PORT = 5201
KINDS = ("kernel", "wgslirpy", "mitmproxy")  # baseline first in every repeat
NAMES = {"kernel": "baseline", "wgslirpy": "wgslirpy", "mitmproxy": "mitmproxy"}
# Everything we ever address lives in the namespaces (tunnel and server prefixes).
INSIDE = [ip_network(n) for n in ("10.202.0.0/24", "10.203.0.0/24", "fd00:202::/64", "fd00:203::/64")]


def inside(host: str) -> str:
    """``host`` unchanged; refuses (AssertionError) anything outside the benchmark's prefixes."""
    addr = ip_address(host)
    assert any(addr in n for n in INSIDE), f"{host} is outside the benchmark namespaces"
    return host


# --- sizes -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    iperf_seconds: int = 5
    http_bytes: int = 100 << 20
    echo_conns: int = 200
    echo_bytes: int = 1 << 20
    short_conns: int = 1000
    udp_count: int = 10_000
    udp_window: int = 32
    ping_count: int = 20
    ping_interval: float = 0.05
    idle_small: int = 1000
    idle_large: int = 10_000


QUICK = Sizes(
    iperf_seconds=2,
    http_bytes=16 << 20,
    echo_conns=50,
    echo_bytes=256 << 10,
    short_conns=200,
    udp_count=2000,
    ping_count=10,
    idle_small=1000,
    idle_large=2000,
)


# --- table rows ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str
    higher_better: bool  # of the value itself; ratios are always oriented "higher is better"
    target_ratio: float | None = None  # the ratio must be >= this
    target_abs: Callable[[float, Sizes], bool] | None = None  # a check on wgslirpy's value
    target_text: str = ""
    fmt: str = "{:.1f}"


def rows_for(s: Sizes) -> list[Row]:
    mib = s.http_bytes >> 20
    echo = (
        f"{s.echo_conns} conns x {s.echo_bytes >> 10} KiB"
        if s.echo_bytes < 1 << 20
        else f"{s.echo_conns} conns x {s.echo_bytes >> 20} MiB"
    )
    return [
        Row("download", f"TCP download, iperf3 -R {s.iperf_seconds}s", "MB/s", True, 0.5, None, ">= 0.5x"),
        Row("upload", f"TCP upload, iperf3 {s.iperf_seconds}s", "MB/s", True, 0.5, None, ">= 0.5x"),
        Row("http", f"HTTP GET {mib} MiB, sha256 checked", "MB/s", True),
        Row("echo", f"echo {echo} simultaneous, all verified: time", "s", False, 0.8, None, ">= 0.8x", "{:.2f}"),
        Row("conns", f"{s.short_conns} sequential short connections", "conn/s", True, 0.5, None, ">= 0.5x", "{:.0f}"),
        Row(
            "udp",
            f"UDP echo {s.udp_count} dgrams, {s.udp_window} in flight",
            "dgram/s",
            True,
            0.7,
            None,
            ">= 0.7x",
            "{:.0f}",
        ),
        Row("udp_loss", "  UDP datagrams lost", "%", False, fmt="{:.2f}"),
        Row(
            "ping",
            f"ping RTT to {GW_PING_V4}, median of {s.ping_count}",
            "ms",
            False,
            0.5,
            None,
            ">= 0.5x (RTT <= 2x)",
            "{:.3f}",
        ),
        Row("download_cpu", "gateway CPU per GB, download", "s/GB", False, fmt="{:.2f}"),
        Row("upload_cpu", "gateway CPU per GB, upload", "s/GB", False, fmt="{:.2f}"),
        Row("http_cpu", "gateway CPU, HTTP GET", "s", False, fmt="{:.2f}"),
        Row("echo_cpu", "gateway CPU, echo", "s", False, fmt="{:.2f}"),
        Row("conns_cpu", "gateway CPU, short connections", "s", False, fmt="{:.2f}"),
        Row("udp_cpu", "gateway CPU, UDP echo", "s", False, fmt="{:.2f}"),
        Row("rss_start", "gateway RSS after the handshake", "MB", False),
        Row("peak_rss", "gateway peak RSS (VmHWM) after traffic", "MB", False),
        # The memory target is for exactly 1,000 connections (whole gateway <= 60 MB).
        Row(
            "idle_small_rss",
            f"gateway RSS, {s.idle_small:,} idle TCP conns",
            "MB",
            False,
            None,
            (lambda v, sz: v <= 60) if s.idle_small == 1000 else None,
            "<= 60 MB" if s.idle_small == 1000 else "",
        ),
        Row(
            "idle_small_ok",
            f"  of {s.idle_small:,} idle conns, still working",
            "conns",
            True,
            None,
            lambda v, sz: v >= sz.idle_small,
            "all",
            "{:.0f}",
        ),
        Row("idle_large_rss", f"gateway RSS, {s.idle_large:,} idle TCP conns", "MB", False),
        Row(
            "idle_large_ok",
            f"  of {s.idle_large:,} idle conns, still working",
            "conns",
            True,
            None,
            lambda v, sz: v >= sz.idle_large,
            "all",
            "{:.0f}",
        ),
    ]


# Figures (what --only selects) and the rows each produces.
FIGURES: dict[str, tuple[str, ...]] = {
    "download": ("download", "download_cpu"),
    "upload": ("upload", "upload_cpu"),
    "http": ("http", "http_cpu"),
    "echo": ("echo", "echo_cpu"),
    "conns": ("conns", "conns_cpu"),
    "udp": ("udp", "udp_loss", "udp_cpu"),
    "ping": ("ping",),
    "idle-small": ("idle_small_rss", "idle_small_ok"),
    "idle-large": ("idle_large_rss", "idle_large_ok"),
    "links": (),  # the link section (benchmarks/links.py): a table of its own
}
ALWAYS_ROWS = ("rss_start", "peak_rss")

Value = float | str  # a measurement, or "failed: ..." / "skipped: ..."


class FigureError(Exception):
    """A figure could not be measured; the message is the reason shown in the report."""


def short(e: BaseException | str, limit: int = 300) -> str:
    """A one-line reason of at most ``limit`` characters."""
    text = str(e).strip() or type(e).__name__
    text = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit] + "..."


# --- one gateway, one repeat -------------------------------------------------------------
@dataclass
class Run:
    """Measures the figures through one freshly built topology."""

    topo: Topology
    sizes: Sizes
    deadline: float
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        pid = self.topo.gateway.pid
        if pid is None:
            tail = self.topo.gateway.log_tail(600).strip().splitlines()[-3:]
            raise FigureError(f"gateway not running ({' | '.join(tail) or 'no log'})")
        return pid

    def time_left(self, need: float) -> float:
        left = self.deadline - time.monotonic()
        if left < need:
            raise FigureError(f"skipped: time budget exhausted ({left:.0f}s left, need ~{need:.0f}s)")
        return left

    def cpu_during(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        pid = self.pid
        c0 = procstat.cpu_seconds(pid)
        result = fn()
        try:
            c1 = procstat.cpu_seconds(pid)
        except OSError as e:
            raise FigureError(f"gateway exited during the figure ({e})") from e
        return result, c1 - c0

    def probe(self, name: str, *args: str, timeout: float) -> dict[str, Any]:
        """servers.py probe in ns client (topology's helper); errors become FigureError."""
        try:
            return self.topo.probe(name, *args, "--timeout", str(timeout), timeout=timeout + 20)
        except topo_mod.TopologyError as e:
            raise FigureError(short(e)) from e

    def client_json(self, args: list[str], timeout: float) -> dict[str, Any]:
        """Run a command in ns client and parse its last JSON line."""
        try:
            proc = self.topo.client.run(args, timeout=timeout, check=False)
        except topo_mod.TopologyError as e:
            raise FigureError(short(e)) from e
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise FigureError(f"exit {proc.returncode}, no result: {short(proc.stderr or proc.stdout)}")
        try:
            result: dict[str, Any] = json.loads(lines[-1])
        except ValueError as e:
            raise FigureError(f"unparsable result: {lines[-1][:200]}") from e
        return result

    # -- figures --
    def start_bench_servers(self) -> None:
        proc = self.topo.srv.spawn(
            [PYTHON, str(PROGRAMS_PY), "serve"], log_path=self.topo.workdir / "bench-serve.log", stdout_pipe=True
        )
        # topology's readiness wait ("ready" on stdout); could become public there.
        topo_mod._wait_ready(proc, "benchmarks/programs.py serve")

    def tunnel_check(self) -> None:
        """One ping and one small TCP transfer, so the figures start with a live session."""
        _, rx, _ = self.topo.ping(inside(GW_PING_V4), count=3, interval=0.2, wait=2)
        if rx == 0:
            self.notes.append(f"tunnel check: no reply to ping {GW_PING_V4}")
        res = self.client_json(
            [PYTHON, str(PROGRAMS_PY), "http-get", inside(SRV_V4), "--size", "100000", "--timeout", "10"], timeout=25
        )
        if not res.get("ok"):
            raise FigureError(f"no TCP through the gateway (tunnel check: {res.get('error')})")

    def fresh_gateway(self) -> str | None:
        """Restart the gateway so idle-connection memory is not the bulk figures' leftover heap.

        Returns None, or the failure reason for every later figure.
        """
        try:
            self.topo.gateway.restart()
            self.topo.reset_client_peer()  # the client handshakes with the new process at once
            self.tunnel_check()
        except (FigureError, topo_mod.TopologyError) as e:
            return f"failed: gateway restart before the idle figures: {short(e)}"
        return None

    def iperf(self, direction: str) -> dict[str, Value]:
        t = self.sizes.iperf_seconds
        self.time_left(t + 10)
        srv = self.topo.srv.spawn(
            ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], log_path=self.topo.workdir / "iperf3-server.log"
        )
        try:
            topo_mod.wait_until(
                lambda: bool(
                    self.topo.srv.run(["ss", "-Hltn", f"sport = :{IPERF_PORT}"], check=False, timeout=5).stdout.strip()
                ),
                timeout=10,
                what="iperf3 server",
            )
            cmd = [
                "iperf3",
                "-c",
                inside(SRV_V4),
                "-p",
                str(IPERF_PORT),
                "-t",
                str(t),
                "-J",
                "--connect-timeout",
                "5000",
            ] + (["-R"] if direction == "download" else [])

            def go() -> subprocess.CompletedProcess[str]:
                return self.topo.client.run(cmd, timeout=t + 30, check=False)

            try:
                proc, cpu = self.cpu_during(go)
            except topo_mod.TopologyError as e:
                raise FigureError(short(e)) from e
        finally:
            self.topo.tracker.stop(srv, timeout=2)
        try:
            data = json.loads(proc.stdout)
        except ValueError as e:
            raise FigureError(f"iperf3 exit {proc.returncode}: {short(proc.stdout + proc.stderr)}") from e
        if "error" in data:
            raise FigureError(f"iperf3: {data['error']}")
        recv = data["end"]["sum_received"]
        sent = data["end"].get("sum_sent", {})
        self.extra[direction] = {
            "bytes": recv["bytes"],
            "seconds": recv["seconds"],
            "retransmits": sent.get("retransmits"),
            "cpu_s": cpu,
        }
        if recv["bytes"] == 0:
            raise FigureError("iperf3 moved no data")
        return {direction: recv["bits_per_second"] / 8e6, f"{direction}_cpu": cpu / (recv["bytes"] / 1e9)}

    def http(self) -> dict[str, Value]:
        limit = max(60.0, self.sizes.http_bytes / 2e6)  # fails below ~2 MB/s
        self.time_left(limit / 4)
        res, cpu = self.cpu_during(
            lambda: self.client_json(
                [
                    PYTHON,
                    str(PROGRAMS_PY),
                    "http-get",
                    inside(SRV_V4),
                    "--size",
                    str(self.sizes.http_bytes),
                    "--timeout",
                    str(limit),
                ],
                timeout=limit + 20,
            )
        )
        if not res.get("ok"):
            raise FigureError(f"HTTP GET: {res.get('error')} after {res.get('elapsed', 0):.1f}s")
        return {"http": res["mbps"], "http_cpu": cpu}

    def echo(self) -> dict[str, Value]:
        s = self.sizes
        limit = max(60.0, s.echo_conns * s.echo_bytes * 2 / 4e6)
        self.time_left(limit / 4)
        res, cpu = self.cpu_during(
            lambda: self.probe(
                "echo-many",
                inside(SRV_V4),
                str(ECHO_PORT),
                "--conns",
                str(s.echo_conns),
                "--size",
                str(s.echo_bytes),
                timeout=limit,
            )
        )
        if not res.get("ok"):
            raise FigureError(f"{res.get('failed')} of {res.get('conns')} failed: {res.get('errors', [])[:3]}")
        return {"echo": res["elapsed"], "echo_cpu": cpu}

    def conns(self) -> dict[str, Value]:
        n = self.sizes.short_conns
        limit = max(30.0, n / 20)  # fails below 20 conn/s
        self.time_left(limit / 4)
        res, cpu = self.cpu_during(
            lambda: self.probe("short-conns", inside(SRV_V4), str(ECHO_PORT), "--count", str(n), timeout=limit)
        )
        if not res.get("ok"):
            raise FigureError(f"{res.get('done')} of {n} done: {res.get('errors', [])[:3]}")
        return {"conns": res["rate"], "conns_cpu": cpu}

    def udp(self) -> dict[str, Value]:
        s = self.sizes
        limit = max(30.0, s.udp_count / 200)
        self.time_left(limit / 4)
        res, cpu = self.cpu_during(
            lambda: self.probe(
                "udp-echo",
                inside(SRV_V4),
                str(UDP_ECHO_PORT),
                "--count",
                str(s.udp_count),
                "--window",
                str(s.udp_window),
                timeout=limit,
            )
        )
        self.extra["udp"] = res
        if not res.get("received"):
            raise FigureError(f"no datagram came back ({res})")
        if res.get("bad"):
            self.notes.append(f"UDP echo: {res['bad']} corrupt datagrams")
        return {"udp": res["rate"], "udp_loss": 100.0 * res["loss"], "udp_cpu": cpu}

    def ping(self) -> dict[str, Value]:
        s = self.sizes
        self.time_left(s.ping_count * s.ping_interval + 5)
        tx, rx, out = self.topo.ping(inside(GW_PING_V4), count=s.ping_count, interval=s.ping_interval, wait=1.0)
        times = [float(m) for m in re.findall(r"time=([\d.]+) ms", out)]
        if rx < max(1, s.ping_count // 2) or not times:
            raise FigureError(f"{rx} of {tx} pings answered")
        return {"ping": statistics.median(times)}

    def idle(self, which: str) -> dict[str, Value]:
        n = self.sizes.idle_small if which == "small" else self.sizes.idle_large
        open_limit = max(60.0, n / 50)  # fails below 50 connects/s
        self.time_left(open_limit / 2)
        pid = self.pid
        if self.topo.gateway.kind != "kernel":
            self.ensure_nofile(pid, n)
        proc = self.topo.client.spawn(
            [
                PYTHON,
                str(PROGRAMS_PY),
                "hold",
                inside(SRV_V4),
                "--conns",
                str(n),
                "--timeout",
                str(open_limit),
                "--hold",
                "60",
                "--check-timeout",
                "30",
            ],
            log_path=self.topo.workdir / f"hold-{n}.log",
            stdout_pipe=True,
        )
        try:
            held = read_json_line(proc, open_limit + 15, f"hold {n}: connections open")
            if not held.get("held"):
                raise FigureError(f"no connection held: {held.get('error') or held.get('failures')}")
            time.sleep(1.0)  # let the gateway settle (buffers of the connect burst freed)
            rss = procstat.rss_bytes(self.pid) / 1e6
            self.extra[f"idle_{which}"] = {"held": held, "fds": self.topo.gateway.fd_count()}
            os.kill(proc.pid, signal.SIGUSR1)  # ip netns exec execs: this is the probe itself
            done = read_json_line(proc, 45, f"hold {n}: echo check")
        finally:
            self.topo.tracker.stop(proc, timeout=3)
        self.extra[f"idle_{which}"]["check"] = done
        if done.get("failures"):
            self.notes.append(f"idle {n}: failures {done['failures']}")
        return {f"idle_{which}_rss": rss, f"idle_{which}_ok": float(done.get("working", 0))}

    def ensure_nofile(self, pid: int, n: int) -> None:
        """The gateway needs one socket per relayed connection: raise its limit if too low."""
        lim = procstat.nofile_limit(pid)
        need = n + 256
        if lim is None or lim[0] >= need:
            return
        new = max(need, lim[1])
        self.notes.append(
            f"gateway RLIMIT_NOFILE soft {lim[0]} (hard {lim[1]}) < {need}: "
            f"raised to {new} with prlimit --pid (topology should launch it raised)"
        )
        self.topo.gw.run(["prlimit", "--pid", str(pid), f"--nofile={new}:{max(new, lim[1])}"])


def read_json_line(proc: subprocess.Popen[bytes], timeout: float, what: str) -> dict[str, Any]:
    """The next JSON line the process prints, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(min(1.0, max(0.0, deadline - time.monotonic()))):
                continue
            line = proc.stdout.readline().decode(errors="replace")
            if not line:
                raise FigureError(f"{what}: probe exited ({proc.poll()})")
            if line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                return result
    raise FigureError(f"{what}: no result after {timeout:.0f}s")


def measure(
    kind: str,
    sizes: Sizes,
    figures: list[str],
    deadline: float,
    gateway_args: list[str],
    mitmdump: Path | str | None = None,
) -> dict[str, Any]:
    """Build a topology with one gateway, run the figures, tear it down; never raises.

    ``mitmdump``: the mitmproxy gateway's program, or why there is none (kind "mitmproxy").
    """
    values: dict[str, Value] = {}
    wanted = [r for f in figures for r in FIGURES[f]] + list(ALWAYS_ROWS)
    t0 = time.monotonic()
    if kind == "mitmproxy" and not isinstance(mitmdump, Path):
        return {
            "values": {k: f"skipped: mitmproxy {mitmdump}" for k in wanted},
            "notes": [],
            "extra": {},
            "seconds": 0.0,
        }
    try:
        if kind == "mitmproxy":
            assert isinstance(mitmdump, Path)
            prog = mitmdump
            topo = Topology("wgslirpy", gateway_factory=lambda t, key: mitm.MitmproxyGateway(t, key, prog))
        else:
            topo = Topology(kind, gateway_args=gateway_args if kind == "wgslirpy" else ())
        topo.up()
    except Exception as e:  # a gateway that cannot start yet: every figure says why
        reason = f"failed: topology: {short(e)}"
        return {"values": {k: reason for k in wanted}, "notes": [], "extra": {}, "seconds": time.monotonic() - t0}
    run = Run(topo, sizes, deadline)
    try:
        run.extra["gateway_process"] = procstat.comm(topo.gateway.pid or 0)
        try:
            run.start_bench_servers()
            run.tunnel_check()
            values["rss_start"] = procstat.rss_bytes(run.pid) / 1e6
            broken: str | None = None
        except (FigureError, topo_mod.TopologyError) as e:
            broken = f"failed: {short(e)}"
        methods: dict[str, Callable[[], dict[str, Value]]] = {
            "download": lambda: run.iperf("download"),
            "upload": lambda: run.iperf("upload"),
            "http": run.http,
            "echo": run.echo,
            "conns": run.conns,
            "udp": run.udp,
            "ping": run.ping,
            "idle-small": lambda: run.idle("small"),
            "idle-large": lambda: run.idle("large"),
        }
        for fig in figures:
            if fig.startswith("idle") and "peak_rss" not in values and broken is None:
                with contextlib.suppress(FigureError, OSError):  # measured again at the end
                    values["peak_rss"] = procstat.hwm_bytes(run.pid) / 1e6
                broken = run.fresh_gateway()
            if broken is not None and fig != "ping":
                values.update({k: broken for k in FIGURES[fig]})
                continue
            try:
                values.update(methods[fig]())
            except FigureError as e:
                msg = str(e)
                values.update({k: msg if msg.startswith("skipped") else f"failed: {msg}" for k in FIGURES[fig]})
            except Exception as e:  # a bug or a broken bed: report it, keep going
                traceback.print_exc(file=sys.stderr)
                values.update({k: f"failed: {type(e).__name__}: {short(e)}" for k in FIGURES[fig]})
            if topo.gateway.pid is None and broken is None:
                broken = f"failed: gateway exited ({short(topo.gateway.log_tail(300))})"
        if "peak_rss" not in values:
            try:
                values["peak_rss"] = procstat.hwm_bytes(run.pid) / 1e6
            except (FigureError, OSError) as e:
                values["peak_rss"] = f"failed: {short(e)}"
        values.setdefault("rss_start", broken or "failed: not measured")
    finally:
        topo.down()
    return {"values": values, "notes": run.notes, "extra": run.extra, "seconds": time.monotonic() - t0}


# --- report --------------------------------------------------------------------------------
def machine_header(args: argparse.Namespace, sizes: Sizes) -> list[str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
            return out.strip().splitlines()[0] if out.strip() else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    git = version(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"])
    return [
        f"date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"machine: {platform.machine()}, {cpu}, {os.cpu_count()} cores "
        f"({len(os.sched_getaffinity(0))} usable), kernel {platform.release()}",
        f"load average at start: {Path('/proc/loadavg').read_text().split()[0]}",
        f"software: python {platform.python_version()}, {version(['wireguard-go', '--version'])}, "
        f"{version(['iperf3', '--version'])}, wgslirpy git {git}",
        f"run: {args.repeat} repeat(s), interleaved {'/'.join(NAMES[k] for k in args.kinds)}; "
        f"{'quick sizes' if args.quick else 'full sizes'}"
        + (f"; wgslirpy args: {args.wgslirpy_args}" if args.wgslirpy_args else ""),
    ]


def busy_warning() -> str | None:
    load1 = float(Path("/proc/loadavg").read_text().split()[0])
    cores = len(os.sched_getaffinity(0))
    if load1 >= 0.5 * cores:
        return (
            f"WARNING: the machine is busy (1-minute load {load1:.2f} on {cores} cores): "
            "absolute figures will be low and noisy; only the interleaved ratios compare."
        )
    return None


def median_or_none(vals: list[Value]) -> float | None:
    nums = [v for v in vals if isinstance(v, float)]
    return statistics.median(nums) if nums else None


def ratio(row: Row, base: Value, wgs: Value) -> float | None:
    if not isinstance(base, float) or not isinstance(wgs, float):
        return None
    num, den = (wgs, base) if row.higher_better else (base, wgs)
    return num / den if den > 0 else None


def render(rows: list[Row], runs: dict[str, list[dict[str, Any]]], sizes: Sizes) -> tuple[str, list[str]]:
    """The table and its footnotes (failure reasons)."""
    # One note per distinct (gateway, reasons); each lists the rows it explains.
    notes: dict[tuple[str, str], list[str]] = {}

    def cell(row: Row, kind: str) -> str:
        vals: list[Value] = [r["values"].get(row.key, "skipped: not run") for r in runs[kind]]
        nums = [v for v in vals if isinstance(v, float)]
        text = ""
        if nums:
            text = row.fmt.format(statistics.median(nums))
            if len(nums) > 1:
                text += f" [{row.fmt.format(min(nums))}-{row.fmt.format(max(nums))}]"
        fails = sorted({v for v in vals if isinstance(v, str)})
        if fails:
            key = (kind, " || ".join(fails))
            notes.setdefault(key, []).append(f"{row.key} ({len(vals) - len(nums)}/{len(vals)} runs)")
            number = list(notes).index(key) + 1
            mark = (
                f"({len(vals) - len(nums)} failed, note {number})"
                if nums
                else ("skipped" if all(f.startswith("skipped") for f in fails) else "failed") + f" (note {number})"
            )
            text = f"{text} {mark}".strip()
        return text

    peer = bool(runs.get("mitmproxy"))
    header = ["figure", "unit", "baseline (wg-go + kernel)", "wgslirpy", "ratio (higher=better)", "target", ""] + (
        ["mitmproxy", "ratio"] if peer else []
    )
    table: list[list[str]] = []

    def ratios_of(row: Row, kind: str) -> list[float]:
        pairs = zip(runs.get("kernel", []), runs.get(kind, []))
        rs = [ratio(row, rb["values"].get(row.key, ""), rw["values"].get(row.key, "")) for rb, rw in pairs]
        return [r for r in rs if r is not None]

    for row in rows:
        b = cell(row, "kernel") if runs.get("kernel") else "-"
        w = cell(row, "wgslirpy") if runs.get("wgslirpy") else "-"
        good = ratios_of(row, "wgslirpy")
        rtext = f"{statistics.median(good):.2f}x" if good else "-"
        verdict = ""
        if row.target_ratio is not None and good:
            verdict = "ok" if statistics.median(good) >= row.target_ratio else "MISS"
        wmed = median_or_none([r["values"].get(row.key, "") for r in runs.get("wgslirpy", [])])
        if row.target_abs is not None and wmed is not None:
            verdict = "ok" if row.target_abs(wmed, sizes) else "MISS"
        if (row.target_ratio is not None or row.target_abs is not None) and not verdict and runs.get("wgslirpy"):
            verdict = "n/a"
        extra: list[str] = []
        if peer:
            mgood = ratios_of(row, "mitmproxy")
            extra = [cell(row, "mitmproxy"), f"{statistics.median(mgood):.2f}x" if mgood else "-"]
        table.append([row.label, row.unit, b, w, rtext, row.target_text, verdict] + extra)
    widths = [max(len(r[i]) for r in table + [header]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    footnotes = [f"{NAMES[kind]}: {', '.join(rows_)}: {reason}" for (kind, reason), rows_ in notes.items()]
    return "\n".join(lines), footnotes


def targets_text(rows: list[Row]) -> str:
    """Every target of the table in words: what "ok"/"MISS" was checked against."""
    parts = []
    for row in rows:
        if row.target_ratio is not None:
            what = (
                "RTT <= 2x the baseline's"
                if row.key == "ping"
                else f"ratio {row.target_text.replace('x', '')}x the baseline"
            )
            parts.append(f"{row.label.strip()}: {what}")
        elif row.target_abs is not None:
            parts.append(f"{row.label.strip()}: {row.target_text}")
    return "; ".join(parts)


def explain(rows: list[Row]) -> list[str]:
    targets = targets_text(rows)
    return [
        "Cells: median over repeats [min-max]. Ratio: median of the per-repeat ratios, oriented so",
        "that higher is better for wgslirpy (rates: wgslirpy/baseline; times, CPU seconds and",
        "memory: baseline/wgslirpy); the mitmproxy ratio is the same against the baseline.",
        *(textwrap.wrap(f"Targets: {targets}.", 100) if targets else []),
        "Gateway CPU = utime+stime of the gateway process tree (wireguard-go, or python for",
        "wgslirpy) from /proc/PID/stat. The baseline's kernel forwarding runs in softirq and is",
        "not counted: the baseline's CPU is understated, so CPU ratios understate wgslirpy.",
        "RSS = VmRSS of the gateway process tree. The idle-connection figures run on a freshly",
        "restarted gateway. The baseline keeps no per-connection state in its process (forwarding",
        "is stateless), so only wgslirpy's idle-connection RSS has a target.",
        "mitmproxy: its WireGuard mode (mitmdump --mode wireguard --ignore-hosts '.*'), a plain relay.",
    ]


# --- profile -------------------------------------------------------------------------------
def profile_pass(sizes: Sizes, stamp: str, gateway_args: list[str]) -> list[str]:
    """wgslirpy under py-spy during the download and upload figures; returns report lines."""
    py_spy = profiling.find_py_spy()
    if py_spy is None:
        return ["profile: py-spy not found; install it with `/tmp/venv/bin/pip install py-spy`"]
    lines: list[str] = []
    with Topology("wgslirpy", gateway_args=gateway_args) as topo:
        run = Run(topo, sizes, time.monotonic() + 300)
        try:
            run.start_bench_servers()
            run.tunnel_check()
        except (FigureError, topo_mod.TopologyError) as e:
            return [f"profile: wgslirpy does not work yet: {short(e)}"]
        for direction in ("download", "upload"):
            out = OUT_DIR / f"profile-{stamp}-{direction}.speedscope.json"
            rec = profiling.start_record(
                py_spy, run.pid, out, duration=sizes.iperf_seconds + 1, log=OUT_DIR / f"profile-{stamp}.log"
            )
            try:
                time.sleep(0.3)  # py-spy attaches before traffic starts
                res = run.iperf(direction)
                lines.append(f"profile {direction}: {res[direction]:.1f} MB/s under py-spy")
            except FigureError as e:
                lines.append(f"profile {direction}: figure failed: {e}")
            finally:
                try:
                    rec.wait(sizes.iperf_seconds + 30)
                except subprocess.TimeoutExpired:
                    rec.kill()
                    rec.wait(5)
            if out.exists():
                summary = profiling.summarize(out)
                (out.with_suffix(".txt")).write_text(summary)
                lines.append(summary)
            else:
                lines.append(f"profile {direction}: py-spy wrote nothing (see profile-{stamp}.log)")
    return lines


# --- main ----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--repeat", type=int, default=None, help="runs per gateway (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke test")
    p.add_argument("--only", default="", help=f"comma-separated figures out of: {','.join(FIGURES)}")
    p.add_argument("--links", action="store_true", help="only the link section (same as --only links)")
    p.add_argument(
        "--gateways",
        default="kernel,wgslirpy,mitmproxy",
        help="which gateways to run (kernel = the baseline; mitmproxy when installable)",
    )
    p.add_argument("--no-mitmproxy", action="store_true", help="leave out the mitmproxy column")
    p.add_argument(
        "--profile", action="store_true", help="also profile wgslirpy with py-spy during download and upload"
    )
    p.add_argument("--wgslirpy-args", default="", help="extra wgslirpy arguments (shell-split)")
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="skip remaining clean-link figures after this long (default 20; 6 with --quick); "
        "the link section has its own 8 minutes per repeat",
    )
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if not 1 <= args.repeat <= 20:
        p.error("--repeat must be 1..20")
    chosen = {f.strip() for f in args.only.split(",") if f.strip()} or set(FIGURES)
    if args.links:
        chosen = {"links"}
    bad = sorted(chosen - set(FIGURES))
    if bad:
        p.error(f"unknown figure(s) {bad}; choose from {list(FIGURES)}")
    # Always the canonical order: the idle-memory figures come after the traffic.
    args.figures = [f for f in FIGURES if f in chosen]
    args.kinds = [k.strip() for k in args.gateways.split(",") if k.strip()]
    if not args.kinds or any(k not in KINDS for k in args.kinds):
        p.error(f"--gateways takes a comma-separated subset of {KINDS}")
    if args.no_mitmproxy:
        args.kinds = [k for k in args.kinds if k != "mitmproxy"]
    if args.budget_minutes is None:  # the link section has its own: 8 min per repeat
        args.budget_minutes = 6.0 if args.quick else 20.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench.py needs root (network namespaces, /dev/net/tun)", file=sys.stderr)
        return 2
    missing = [
        t
        for t in ("ip", "wireguard-go", "wg", "iperf3", "ping", "ss", "nft", "prlimit")
        if subprocess.run(["which", t], capture_output=True).returncode != 0
    ]
    if missing:
        print(f"bench.py needs {missing} on PATH", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else Sizes()
    clean = [f for f in args.figures if f != "links"]
    rows = [r for r in rows_for(sizes) if clean and (r.key in ALWAYS_ROWS or any(r.key in FIGURES[f] for f in clean))]
    header = machine_header(args, sizes)
    warning = busy_warning()
    print("\n".join(header), flush=True)
    if warning:
        print(warning, flush=True)
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / ".gitignore").write_text("*\n")  # results are per machine, never committed
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    gateway_args = shlex.split(args.wgslirpy_args)
    mitmdump: Path | str | None = None
    if "mitmproxy" in args.kinds:
        print("mitmproxy: ", end="", flush=True)
        mitmdump = mitm.ensure_mitmdump(OUT_DIR / "mitmproxy-install.log")
        line = f"mitmproxy: {mitm.mitmdump_version(mitmdump) if isinstance(mitmdump, Path) else mitmdump}"
        print(line.split(": ", 1)[1], flush=True)
        header.append(line)
    deadline = time.monotonic() + args.budget_minutes * 60
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in args.kinds}
    profile_lines: list[str] = []
    link_result: dict[str, Any] | None = None
    with raised_socket_buffers():
        for rep in range(args.repeat if clean else 0):
            for kind in KINDS:
                if kind not in args.kinds:
                    continue
                print(f"[{rep + 1}/{args.repeat}] {NAMES[kind]} ...", end=" ", flush=True)
                result = measure(kind, sizes, clean, deadline, gateway_args, mitmdump)
                runs[kind].append(result)
                fails = sum(isinstance(v, str) for v in result["values"].values())
                print(f"{result['seconds']:.0f}s" + (f", {fails} failed/skipped" if fails else ""), flush=True)
        if "links" in args.figures:
            link_sizes = links.LINKS_QUICK if args.quick else links.LinkSizes()
            link_result = links.run_links(
                args.kinds,
                args.repeat,
                link_sizes,
                gateway_args,
                time.monotonic() + 8 * 60 * args.repeat,
                mitmdump,
                lambda text: print(text, end="", flush=True),
            )
        if args.profile:
            OUT_DIR.mkdir(exist_ok=True)
            profile_lines = profile_pass(sizes, stamp, gateway_args)
    end_load = Path("/proc/loadavg").read_text().split()[0]
    print()
    print(f"load average at end: {end_load}")
    table, footnotes = render(rows, runs, sizes) if clean else ("", [])
    if clean:
        print()
        print(table)
        print()
        print("\n".join(explain(rows)))
        notes = [f"{NAMES[k]} run {i + 1}: {n}" for k in args.kinds for i, r in enumerate(runs[k]) for n in r["notes"]]
        if footnotes or notes:
            print("\nNotes:")
            for i, f in enumerate(footnotes, 1):
                print(f"  note {i}: {f}")
            for n in notes:
                print(f"  {n}")
    link_lines: list[str] = []
    if link_result is not None:
        link_lines = links.render_links(link_result)
        print()
        print("\n".join(link_lines))
        print("\n".join(textwrap.wrap(f"Targets: {links.TARGETS_TEXT}.", 100)))
    if profile_lines:
        print()
        print("\n".join(profile_lines))
    out = OUT_DIR / f"bench-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "header": header,
                "warning": warning,
                "sizes": dataclasses.asdict(sizes),
                "runs": runs,
                "table": table,
                "footnotes": footnotes,
                "links": link_result,
                "links_table": link_lines,
            },
            indent=1,
            default=str,
        )
    )
    print(f"\nraw results: {out.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
