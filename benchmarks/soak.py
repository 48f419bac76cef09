"""Soak: mixed load through the real wireguard-go client for a long time; nothing may grow.

    sudo python3 benchmarks/soak.py [--minutes 20] [--sample 10] [--warmup 0.25] [--intensity 1]
                                    [--only TEXT ...] [--json FILE]

Builds the interop topology (tests/interop/topology.py: client -> wireguard-go -> wgslirpy ->
servers, all in namespaces this script creates; nothing leaves the machine) and runs, in
parallel loops until the time is up:

* bulk TCP both ways (``servers.py talker``: 2 MB down then 2 MB up on one connection) and up
  (``servers.py upload`` to the sink),
* many short connections (``servers.py short-conns``), UDP echo (``servers.py udp-echo``),
  DNS over UDP and TCP (``dig`` at the gateway's resolver), ping,
* flows killed mid-transfer on either side: the client process SIGKILLed during an upload,
  and a server here (``srv``, below) that resets its connection after 256 KiB,
* a server that stops reading (``srv``: accepts, never reads, closes after 5 s) fed by a
  client that writes until its window closes.

Every ``--sample`` seconds it records the gateway's RSS and open fds (/proc) and its greenlets,
TCP flows and UDP bindings (the SIGUSR1 stats line). After the warm-up fraction, the samples
are split in thirds; a series grows if the last third's mean exceeds the first third's by more
than its tolerance and the least-squares slope exceeds its limit (RSS: 2 MiB/min). After the load stops, fds, greenlets
and flows must fall back to within a small margin of the idle values at the start.
Prints every sample and a verdict; exit status 0 = no growth, 1 = growth, 2 = set-up failure.

Also importable: :func:`run_soak` is what ``tests/interop/test_soak_interop.py`` runs for two
minutes in CI. Subcommands ``srv``, ``stall`` and ``reset`` are the helper programs it runs
inside the namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

STALL_PORT = 9190
RESET_PORT = 9191
STALL_HOLD = 5.0
RESET_AFTER = 256 * 1024


# --- helper programs (run by path inside the namespaces) ------------------------------------
def _serve_stall(lst: socket.socket) -> None:
    """Accept, never read; close each connection STALL_HOLD seconds later."""
    held: list[tuple[float, socket.socket]] = []
    lst.settimeout(0.5)
    while True:
        try:
            conn, _ = lst.accept()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            held.append((time.monotonic() + STALL_HOLD, conn))
        except TimeoutError:
            pass
        except OSError:
            time.sleep(0.1)
        now = time.monotonic()
        while held and held[0][0] <= now:
            held.pop(0)[1].close()


def _serve_reset(lst: socket.socket) -> None:
    """Send RESET_AFTER bytes, then abort the connection (RST: SO_LINGER 0)."""
    chunk = os.urandom(65536)
    while True:
        try:
            conn, _ = lst.accept()
        except OSError:
            time.sleep(0.1)
            continue
        try:
            conn.settimeout(10)
            sent = 0
            while sent < RESET_AFTER:
                sent += conn.send(chunk)
        except OSError:
            pass
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()


def cmd_srv(args: argparse.Namespace) -> int:
    for port, fn in ((STALL_PORT, _serve_stall), (RESET_PORT, _serve_reset)):
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("0.0.0.0", port))
        lst.listen(128)
        threading.Thread(target=fn, args=(lst,), daemon=True).start()
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


def cmd_stall(args: argparse.Namespace) -> int:
    """Write to the non-reading server until no progress for 1 s, then close."""
    sent = 0
    try:
        with socket.create_connection((args.host, STALL_PORT), timeout=5) as s:
            s.settimeout(1.0)
            chunk = b"s" * 65536
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                sent += s.send(chunk)
    except OSError:
        pass  # socket.timeout: the window closed, as intended
    print(json.dumps({"ok": sent > 0, "sent": sent}), flush=True)
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    """Read from the resetting server until it resets us."""
    got, err = 0, ""
    try:
        with socket.create_connection((args.host, RESET_PORT), timeout=5) as s:
            s.settimeout(10)
            while data := s.recv(65536):
                got += len(data)
    except OSError as e:
        err = type(e).__name__
    print(json.dumps({"ok": got > 0, "received": got, "error": err}), flush=True)
    return 0


# --- the soak -----------------------------------------------------------------------------------
@dataclass
class Sample:
    t: float
    rss: int
    fds: int
    greenlets: int
    tcp_flows: int
    udp_bindings: int
    #: TCP connections the stack still tracks (includes TIME-WAIT, 30 s)
    stack_flows: int = 0


@dataclass
class Series:
    name: str
    rel_tol: float  # allowed growth of the last third's mean over the first third's ...
    abs_tol: float  # ... plus this much
    max_slope: float  # and the least-squares slope after the warm-up must exceed this (per minute)


#: RSS: a flat gateway still settles by ~1 MiB/min in its second minute (allocator pools); a
#: leak of closed TCP connections measured here grew 6-12 MiB/min.
SERIES = (
    Series("rss", 0.05, 2 << 20, 2 << 20),
    Series("fds", 0.25, 8, 0.0),
    Series("greenlets", 0.25, 8, 0.0),
    Series("stack_flows", 0.25, 50, 0.0),
)
#: after the load stops: at most this far above the idle values at the start
SETTLE_MARGIN = {"fds": 4, "greenlets": 4, "tcp_flows": 2, "udp_bindings": 2}
SETTLE_WAIT = 30.0


@dataclass
class Result:
    samples: list[Sample]
    idle_start: Sample
    idle_end: Sample
    workloads: dict[str, dict[str, int]]
    verdicts: dict[str, str] = field(default_factory=dict)
    growth: bool = False


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def judge(result: Result, warmup: float) -> None:
    """Fill ``result.verdicts`` and ``result.growth`` (see the module docstring)."""
    samples = result.samples
    if not samples:
        result.verdicts["samples"] = "GROWTH? no samples taken"
        result.growth = True
        return
    span = samples[-1].t - samples[0].t
    steady = [s for s in samples if s.t - samples[0].t >= warmup * span]
    third = max(1, len(steady) // 3)
    for series in SERIES:
        ys = [float(getattr(s, series.name)) for s in steady]
        xs = [s.t for s in steady]
        first, last = statistics.fmean(ys[:third]), statistics.fmean(ys[-third:])
        per_min = slope(xs, ys) * 60
        limit = first * (1 + series.rel_tol) + series.abs_tol
        grew = last > limit and per_min > series.max_slope
        result.growth |= grew
        result.verdicts[series.name] = (
            f"{'GROWTH' if grew else 'ok'}: first third {first:.0f}, "
            f"last third {last:.0f} (limit {limit:.0f}), slope {per_min:+.1f}/min"
        )
    start, end = result.idle_start, result.idle_end
    for name, margin in SETTLE_MARGIN.items():
        a, b = getattr(start, name), getattr(end, name)
        bad = b > a + margin
        result.growth |= bad
        result.verdicts[f"idle {name}"] = f"{'GROWTH' if bad else 'ok'}: {a} at the start, {b} after the load"


class Workloads:
    """The load loops; each runs one bounded command per iteration until ``stop`` is set."""

    def __init__(self, topo: Any, servers_py: Path, intensity: float = 1.0, only: Sequence[str] = ()) -> None:
        from tests.interop.topology import (
            ECHO_PORT,
            GW_DNS_V4,
            GW_PING_V4,
            HOSTS_NAME,
            PYTHON,
            SINK_PORT,
            SRV_V4,
            UDP_ECHO_PORT,
        )

        self.topo = topo
        self.stop = threading.Event()
        self.counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        py, sv, me = PYTHON, str(servers_py), str(Path(__file__).resolve())
        mb = 1 << 20
        rnd = random.Random(5)
        self.loops: dict[str, tuple[Callable[[], list[str]], float]] = {
            "talker (bulk both ways)": (
                lambda: [
                    py,
                    sv,
                    "talker",
                    SRV_V4,
                    "--recv-size",
                    str(2 * mb),
                    "--send-size",
                    str(2 * mb),
                    "--seed",
                    str(rnd.randrange(1 << 30)),
                ],
                1.0,
            ),
            "upload (bulk up)": (
                lambda: [
                    py,
                    sv,
                    "upload",
                    SRV_V4,
                    str(SINK_PORT),
                    "--size",
                    str(4 * mb),
                    "--seed",
                    str(rnd.randrange(1 << 30)),
                ],
                1.0,
            ),
            "short connections": (lambda: [py, sv, "short-conns", SRV_V4, str(ECHO_PORT), "--count", "40"], 0.5),
            "udp echo": (
                lambda: [py, sv, "udp-echo", SRV_V4, str(UDP_ECHO_PORT), "--count", "200", "--max", "1200"],
                0.5,
            ),
            "dns udp": (lambda: ["dig", "+short", "+time=2", "+tries=1", f"@{GW_DNS_V4}", HOSTS_NAME], 0.5),
            "dns tcp": (lambda: ["dig", "+short", "+tcp", "+time=2", "+tries=1", f"@{GW_DNS_V4}", HOSTS_NAME], 1.0),
            "ping": (lambda: ["ping", "-n", "-q", "-c", "5", "-i", "0.2", "-W", "2", GW_PING_V4], 0.5),
            "client killed mid-upload": (
                lambda: [
                    "timeout",
                    "-s",
                    "KILL",
                    "1",
                    py,
                    sv,
                    "upload",
                    SRV_V4,
                    str(SINK_PORT),
                    "--size",
                    str(200 * mb),
                ],
                2.0,
            ),
            "server resets mid-transfer": (lambda: [py, me, "reset", SRV_V4], 1.0),
            "server stops reading": (lambda: [py, me, "stall", SRV_V4], 2.0),
        }
        if only:
            self.loops = {n: v for n, v in self.loops.items() if any(o in n for o in only)}
        self.pause_scale = 1.0 / max(intensity, 0.01)

    def _loop(self, name: str, make: Callable[[], list[str]], pause: float) -> None:
        c = self.counts.setdefault(name, {"runs": 0, "ok": 0, "failed": 0})
        while not self.stop.is_set():
            try:
                proc = self.topo.client.run(make(), check=False, timeout=60)
                ok = proc.returncode in (0, 137, -9) if "killed" in name else proc.returncode == 0
                if ok and proc.stdout.strip().startswith("{"):
                    ok = bool(json.loads(proc.stdout.strip().splitlines()[-1]).get("ok", True)) or "killed" in name
            except Exception:
                ok = False
            with self._lock:
                c["runs"] += 1
                c["ok" if ok else "failed"] += 1
            self.stop.wait(pause * self.pause_scale)

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._loop, args=(n, m, p), daemon=True, name=n) for n, (m, p) in self.loops.items()
        ]
        for t in threads:
            t.start()
        return threads


def take_sample(topo: Any, t0: float) -> Sample:
    import procstat

    gw = topo.gateway
    pid = gw.pid
    if pid is None:
        raise RuntimeError("the gateway is not running")
    stats = gw.stats() or {}
    return Sample(
        t=round(time.monotonic() - t0, 1),
        rss=procstat.rss_bytes(pid),
        fds=gw.fd_count() or 0,
        greenlets=int(stats.get("greenlets", 0)),
        tcp_flows=int(stats.get("tcp_flows", 0)),
        udp_bindings=int(stats.get("udp_bindings", 0)),
        stack_flows=int(stats.get("tcp_flows_in_stack", 0)),
    )


def _settled(topo: Any, t0: float, idle: Sample) -> Sample:
    """A sample once the load has drained (or SETTLE_WAIT later)."""
    deadline = time.monotonic() + SETTLE_WAIT
    while True:
        s = take_sample(topo, t0)
        if all(getattr(s, k) <= getattr(idle, k) + m for k, m in SETTLE_MARGIN.items()) or time.monotonic() > deadline:
            return s
        time.sleep(1.0)


def run_soak(
    minutes: float,
    *,
    sample_every: float = 10.0,
    warmup: float = 0.25,
    intensity: float = 1.0,
    log: Callable[[str], None] = print,
    gateway_args: Sequence[str] = (),
    only: Sequence[str] = (),
) -> Result:
    """Build the topology, run the load for ``minutes``, return the samples and the verdict."""
    from tests.interop.topology import PYTHON, SERVERS_PY, Topology, _wait_ready, raised_socket_buffers

    with raised_socket_buffers():
        # Short UDP idle timeout: bindings (and their fds) of finished probes go away within
        # the settle time, so the idle comparison at the end is meaningful.
        topo = Topology("wgslirpy", gateway_args=["--udp-idle-timeout", "5", *gateway_args])
        with topo:
            srv = topo.srv.spawn(
                [PYTHON, str(Path(__file__).resolve()), "srv"], log_path=topo.workdir / "soak-srv.log", stdout_pipe=True
            )
            _wait_ready(srv, "soak srv")
            from tests.interop.topology import GW_PING_V4

            if topo.wait_for_ping(GW_PING_V4, timeout=15) is None:
                raise RuntimeError("no tunnel: the first ping never came back")
            t0 = time.monotonic()
            idle_start = take_sample(topo, t0)
            log(f"idle at start: {idle_start}")
            load = Workloads(topo, SERVERS_PY, intensity, only)
            threads = load.start()
            samples: list[Sample] = []
            end = t0 + minutes * 60
            try:
                while time.monotonic() < end:
                    time.sleep(min(sample_every, max(0.0, end - time.monotonic())))
                    s = take_sample(topo, t0)
                    samples.append(s)
                    log(
                        f"t={s.t:7.1f}s rss={s.rss / 2**20:6.1f} MiB fds={s.fds:4d} greenlets={s.greenlets:4d} "
                        f"tcp_flows={s.tcp_flows:3d} udp_bindings={s.udp_bindings:3d} "
                        f"stack_flows={s.stack_flows:4d}"
                    )
            finally:
                load.stop.set()
                for t in threads:
                    t.join(70)
            idle_end = _settled(topo, t0, idle_start)
            log(f"idle after the load: {idle_end}")
            result = Result(samples, idle_start, idle_end, load.counts)
            judge(result, warmup)
            for name, c in load.counts.items():
                log(f"  {name:28s} runs {c['runs']:4d}  ok {c['ok']:4d}  failed {c['failed']:3d}")
            for name, v in result.verdicts.items():
                log(f"  {name:18s} {v}")
            if topo.gateway.pid is None:
                result.growth = True
                result.verdicts["gateway"] = "GROWTH? the gateway died"
            log(f"verdict: {'GROWTH' if result.growth else 'no growth'}")
            return result


def check_soak_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (exit status 2) arguments that would fail, or judge nothing, only once the topology is up."""
    if not args.minutes > 0:
        ap.error("--minutes must be more than 0")
    if not args.sample > 0:
        ap.error("--sample must be more than 0 seconds")
    if not 0 <= args.warmup < 1:
        ap.error("--warmup is a fraction of the run: at least 0 and less than 1")
    if not args.intensity > 0:
        ap.error("--intensity must be more than 0")
    if args.only:
        names = list(Workloads(None, Path(), only=()).loops)  # builds commands only, runs nothing
        for text in args.only:
            if not any(text in n for n in names):
                ap.error(f"--only {text!r} matches no workload; the workloads: {', '.join(names)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    for name in ("srv", "stall", "reset"):
        sp = sub.add_parser(name)
        if name != "srv":
            sp.add_argument("host")
    ap.add_argument("--minutes", type=float, default=20.0, help="length of the load in minutes (default 20)")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=0.25, help="fraction of the run ignored at the start")
    ap.add_argument("--intensity", type=float, default=1.0, help="load multiplier (shorter pauses)")
    ap.add_argument("--json", type=Path, help="also write the samples and verdicts here")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only the workloads whose name contains TEXT (repeatable)",
    )
    args = ap.parse_args(argv)
    if args.cmd is None:
        check_soak_args(ap, args)
    if args.cmd == "srv":
        return cmd_srv(args)
    if args.cmd == "stall":
        return cmd_stall(args)
    if args.cmd == "reset":
        return cmd_reset(args)
    if os.geteuid() != 0:
        print("soak: needs root (network namespaces)", file=sys.stderr)
        return 2
    try:
        result = run_soak(
            args.minutes, sample_every=args.sample, warmup=args.warmup, intensity=args.intensity, only=args.only
        )
    except Exception as e:  # set-up failure: say what, exit 2
        print(f"soak: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "samples": [s.__dict__ for s in result.samples],
                    "idle_start": result.idle_start.__dict__,
                    "idle_end": result.idle_end.__dict__,
                    "workloads": result.workloads,
                    "verdicts": result.verdicts,
                    "growth": result.growth,
                },
                indent=1,
            )
        )
    return 1 if result.growth else 0


if __name__ == "__main__":
    sys.exit(main())
