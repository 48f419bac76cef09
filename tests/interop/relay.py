"""Userspace UDP relay with seeded link impairments, and datagram record/replay/garbage tools.

The kernel here has no netem (ARCHITECTURE §6), so delay, jitter, loss, duplication,
reordering and a bottleneck rate on the WireGuard underlay come from this relay: the
client's endpoint points at ``--listen``; datagrams from the most recent client address go
to ``--upstream`` (direction "up"), and the upstream's answers go back to that client
address (direction "down"). Each direction has its own settings and its own seeded random
generator, and treats each datagram in this order:

1. dropped with probability ``loss``;
2. if ``rate_mbit`` > 0, queued at a bottleneck of that rate holding at most ``queue_kb``
   (default: 50 ms at the rate, at least 64 KiB) -- a datagram that does not fit is dropped
   (tail drop, counted as ``queue_dropped``);
3. released ``delay_ms`` + uniform(0, ``jitter_ms``) after it left the bottleneck (jitter
   may reorder); with probability ``dup`` also a second copy right after it, else with
   probability ``reorder`` held back a further uniform(1, ``reorder_ms``) ms, so later
   datagrams overtake it.

Release times go into a heap and the relay sleeps until the next one is due (sub-ms
precision, no tick). Two engines implement this contract: ``c`` (``relay.c``, compiled on
first use with the system C compiler and cached by source hash; a thread per direction,
recvmmsg, sendmmsg with UDP GSO; about 2 us of CPU per datagram here, kernel delivery
included) and ``python`` (this file: about 60,000 datagrams/s in all, less with delay).
``--engine auto`` (default) takes ``c`` when a compiler is there; ``--record`` needs ``python``.

``--record FILE`` appends each client->upstream datagram (before impairment) as a
4-byte big-endian length plus the bytes, at most ``--record-max`` of them.

Subcommands (stdlib only; run by path inside a namespace)::

    relay   --listen A:P --upstream A:P [--seed S] [IMPAIRMENT FLAGS] [--up SPEC] [--down SPEC]
            [--engine auto|c|python] [--record FILE]
            IMPAIRMENT FLAGS set both directions: --delay-ms --jitter-ms --loss --dup --reorder
            --reorder-ms --rate-mbit --queue-kb; SPEC overrides one direction, e.g.
            --down "loss=0.01,delay_ms=50"
    build                               compile the C engine; print its path (or why not)
    replay  --file FILE --to A:P        re-send recorded datagrams from a fresh socket
    garbage --to A:P --count N --seed S random datagrams of 0..1500 bytes, some shaped
                                        like WireGuard messages (right type byte and size)

``relay`` prints ``ready`` once bound, and a JSON line of counters on SIGUSR1 and when
stopped (SIGTERM; then it exits): totals (``in``, ``dropped``, ``duplicated``,
``reordered``, ``queue_dropped``, ``to_upstream``, ``to_client``, ``send_errors``), the
engine, its CPU seconds, wall seconds, the peak datagrams/s forwarded over a second, and
per-direction counters under ``up`` and ``down``.
``replay``/``garbage`` print a JSON line with the number of datagrams sent.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import heapq
import json
import os
import random
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

SOCK_BUF = 4 * 1024 * 1024
# WireGuard message types and exact sizes (transport: 32-byte minimum, any size above).
WG_SHAPES = ((1, 148), (2, 92), (3, 64), (4, 32), (4, 48), (4, 128), (4, 1452))
C_SOURCE = Path(__file__).resolve().with_name("relay.c")
DIRECTIONS = ("up", "down")  # up: client -> upstream; down: upstream -> client


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def udp_socket(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
    return s


@dataclass
class LinkSpec:
    """One direction's impairment (see the module docstring for the order they apply in)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    reorder_ms: float = 5.0
    rate_mbit: float = 0.0  # 0: no bottleneck
    queue_kb: float = 0.0  # 0: 50 ms at the rate, at least 64 KiB

    def rate_bytes(self) -> float:
        return self.rate_mbit * 1e6 / 8

    def queue_bytes(self) -> float:
        if self.queue_kb > 0:
            return self.queue_kb * 1024
        return max(64 * 1024, self.rate_bytes() * 0.05)

    def override(self, text: str) -> LinkSpec:
        """A copy with ``key=value,...`` applied (keys are the field names)."""
        names = {f.name for f in dataclasses.fields(self)}
        changes: dict[str, float] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in names:
                raise ValueError(f"bad link spec item {item!r} (keys: {', '.join(sorted(names))})")
            changes[key] = float(value)
        return dataclasses.replace(self, **changes)

    def c_args(self) -> list[str]:
        """The 8 numbers per direction relay.c expects."""
        vals = (
            self.delay_ms * 1e6,
            self.jitter_ms * 1e6,
            self.loss,
            self.dup,
            self.reorder,
            self.reorder_ms * 1e6,
            self.rate_bytes(),
            self.queue_bytes(),
        )
        return [repr(float(v)) for v in vals]


class Impairment:
    """One direction's seeded per-datagram decision (the Python engine's copy of relay.c's)."""

    def __init__(self, spec: LinkSpec, seed: int) -> None:
        self.spec = spec
        self.rnd = random.Random(seed)
        self.rate = spec.rate_bytes()
        self.queue = spec.queue_bytes()
        self.tail = 0.0  # when the bottleneck has sent everything it holds
        self.counts = {
            "in": 0,
            "dropped": 0,
            "duplicated": 0,
            "reordered": 0,
            "queue_dropped": 0,
            "out": 0,
            "bytes_out": 0,
            "send_errors": 0,
        }

    def decide(self, now: float, size: int) -> list[float]:
        """Release times for this datagram: [] drop, two entries for a duplicate."""
        s, c = self.spec, self.counts
        c["in"] += 1
        r = self.rnd.random()
        if r < s.loss:
            c["dropped"] += 1
            return []
        base = now
        if self.rate > 0:
            start = max(self.tail, now)
            if (start - now) * self.rate + size > self.queue:
                c["queue_dropped"] += 1
                return []
            self.tail = base = start + size / self.rate
        due = base + s.delay_ms / 1000.0
        if s.jitter_ms > 0:
            due += self.rnd.random() * s.jitter_ms / 1000.0
        r -= s.loss
        if r < s.dup:
            c["duplicated"] += 1
            return [due, due + 1e-6]
        if r - s.dup < s.reorder:
            c["reordered"] += 1
            hi = max(s.reorder_ms, 1.0)
            due += (1.0 + self.rnd.random() * (hi - 1.0)) / 1000.0
        return [due]


def link_specs(args: argparse.Namespace) -> dict[str, LinkSpec]:
    common = LinkSpec(
        delay_ms=args.delay_ms,
        jitter_ms=args.jitter_ms,
        loss=args.loss,
        dup=args.dup,
        reorder=args.reorder,
        reorder_ms=args.reorder_ms,
        rate_mbit=args.rate_mbit,
        queue_kb=args.queue_kb,
    )
    return {d: common.override(getattr(args, d) or "") for d in DIRECTIONS}


# --- the C engine ------------------------------------------------------------------------
def build_c_engine() -> Path:
    """The compiled relay.c (built once per source version); OSError says why not."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise OSError("no C compiler (cc/gcc) on PATH")
    src = C_SOURCE.read_bytes()
    digest = hashlib.sha256(src).hexdigest()[:16]
    cache = Path(
        os.environ.get("WGSLIRPY_RELAY_CACHE") or Path(tempfile.gettempdir()) / f"wgslirpy-relay-{os.getuid()}"
    )
    cache.mkdir(parents=True, exist_ok=True)
    binary = cache / f"relay-{digest}"
    if binary.exists():
        return binary
    tmp = cache / f".relay-{digest}-{os.getpid()}"
    try:
        proc = subprocess.run(
            [cc, "-O2", "-pthread", "-o", str(tmp), str(C_SOURCE)], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired as e:
        raise OSError(f"{cc} timed out") from e
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise OSError(f"{cc} failed: {proc.stderr.strip()[-500:]}")
    os.replace(tmp, binary)  # atomic: concurrent builders agree on the result
    return binary


def cmd_build(args: argparse.Namespace) -> int:
    try:
        print(build_c_engine(), flush=True)
    except OSError as e:
        print(f"no C engine: {e}", flush=True)
        return 1
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    try:
        specs = link_specs(args)
    except ValueError as e:
        print(f"relay: {e}", file=sys.stderr)
        return 2
    engine = args.engine
    if args.record and engine == "c":
        print("relay: --record needs --engine python", file=sys.stderr)
        return 2
    if engine == "auto":
        engine = "python" if args.record else "c"
        if engine == "c":
            try:
                build_c_engine()
            except OSError as e:
                print(f"relay: C engine unavailable ({e}); using the Python engine", file=sys.stderr)
                engine = "python"
    if engine == "c":
        binary = build_c_engine()
        lhost, lport = parse_addr(args.listen)
        uhost, uport = parse_addr(args.upstream)
        argv = [str(binary), lhost, str(lport), uhost, str(uport), str(args.seed)]
        for d in DIRECTIONS:
            argv += specs[d].c_args()
        sys.stdout.flush()
        os.execv(binary, argv)  # same PID: whoever started us stops the C engine
    return relay_python(args, specs)


def relay_python(args: argparse.Namespace, specs: dict[str, LinkSpec]) -> int:
    lhost, lport = parse_addr(args.listen)
    uhost, uport = parse_addr(args.upstream)
    down = udp_socket(lhost)
    down.bind((lhost, lport))
    up = udp_socket(uhost)
    up.connect((uhost, uport))
    down.setblocking(False)
    up.setblocking(False)
    imps = {True: Impairment(specs["up"], args.seed * 2), False: Impairment(specs["down"], args.seed * 2 + 1)}
    record: BinaryIO | None = open(args.record, "wb") if args.record else None  # noqa: SIM115 (kept open for the run)
    recorded = 0
    client: tuple[str, int] | None = None
    # (release time, sequence, data, to-upstream?) in release order
    pending: list[tuple[float, int, bytes, bool]] = []
    seq = 0
    extra = {"send_errors": 0, "recv_errors": 0}
    peak = {"dps": 0.0, "start": time.monotonic(), "count": 0}
    stopping = False
    dump_now = False
    t0 = time.monotonic()

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping, dump_now
        if signum == signal.SIGUSR1:
            dump_now = True
        else:
            stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, on_signal)
    sel = selectors.DefaultSelector()
    sel.register(down, selectors.EVENT_READ, True)
    sel.register(up, selectors.EVENT_READ, False)
    print("ready", flush=True)

    def send(data: bytes, to_upstream: bool, now: float) -> None:
        c = imps[to_upstream].counts
        try:
            if to_upstream:
                up.send(data)
            elif client is not None:
                down.sendto(data, client)
            else:
                return
        except OSError:
            c["send_errors"] += 1
            return
        c["out"] += 1
        c["bytes_out"] += len(data)
        span = now - peak["start"]
        if span >= 1.0:
            if span < 2.0:
                peak["dps"] = max(peak["dps"], peak["count"] / span)
            peak["start"], peak["count"] = now, 0
        peak["count"] += 1

    def report() -> None:
        u, d = imps[True].counts, imps[False].counts
        totals = {k: u[k] + d[k] for k in ("in", "dropped", "duplicated", "reordered", "queue_dropped", "send_errors")}
        print(
            json.dumps(
                {
                    "engine": "python",
                    **totals,
                    "to_upstream": u["out"],
                    "to_client": d["out"],
                    "recv_errors": extra["recv_errors"],
                    "held": len(pending),
                    "peak_dps": int(peak["dps"]),
                    "cpu_s": round(time.process_time(), 3),
                    "elapsed_s": round(time.monotonic() - t0, 3),
                    "recorded": recorded,
                    "up": u,
                    "down": d,
                }
            ),
            flush=True,
        )

    while not stopping:
        if dump_now:
            dump_now = False
            report()
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, held, held_to_up = heapq.heappop(pending)
            send(held, held_to_up, now)
        timeout = min(0.2, max(0.0, pending[0][0] - time.monotonic())) if pending else 0.2
        try:
            ready = sel.select(timeout)
        except InterruptedError:
            continue
        for key, _ in ready:
            sock = down if key.data else up
            to_up = bool(key.data)
            imp = imps[to_up]
            for _burst in range(256):
                try:
                    data, addr = sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    extra["recv_errors"] += 1  # e.g. ICMP error queued on the socket
                    break
                if to_up:
                    client = addr[:2]
                    if record is not None and recorded < args.record_max:
                        record.write(struct.pack(">I", len(data)) + data)
                        recorded += 1
                now = time.monotonic()
                for due in imp.decide(now, len(data)):
                    seq += 1
                    heapq.heappush(pending, (due, seq, data, to_up))
    if record is not None:
        record.close()
    report()
    return 0


def read_records(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while True:
            hdr = f.read(4)
            if len(hdr) < 4:
                return
            (n,) = struct.unpack(">I", hdr)
            yield f.read(n)


def cmd_replay(args: argparse.Namespace) -> int:
    host, port = parse_addr(args.to)
    s = udp_socket(host)
    sent = 0
    for _ in range(args.copies):
        for data in read_records(args.file):
            s.sendto(data, (host, port))
            sent += 1
            time.sleep(args.gap)
    print(json.dumps({"sent": sent}), flush=True)
    return 0


def cmd_garbage(args: argparse.Namespace) -> int:
    host, port = parse_addr(args.to)
    s = udp_socket(host)
    rnd = random.Random(args.seed)
    for i in range(args.count):
        if i % 3 == 0:
            # Plausible header: a real type byte, zero reserved bytes, a valid size.
            mtype, size = rnd.choice(WG_SHAPES)
            data = bytes([mtype, 0, 0, 0]) + rnd.randbytes(size - 4)
        else:
            data = rnd.randbytes(rnd.randint(0, 1500))
        s.sendto(data, (host, port))
        time.sleep(args.gap)
    print(json.dumps({"sent": args.count}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="UDP relay with impairments; datagram replay and garbage")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--listen", required=True)
    r.add_argument("--upstream", required=True)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--loss", type=float, default=0.0)
    r.add_argument("--dup", type=float, default=0.0)
    r.add_argument("--reorder", type=float, default=0.0)
    r.add_argument("--reorder-ms", type=float, default=5.0)
    r.add_argument("--delay-ms", type=float, default=0.0)
    r.add_argument("--jitter-ms", type=float, default=0.0)
    r.add_argument("--rate-mbit", type=float, default=0.0, help="bottleneck rate (0: none)")
    r.add_argument("--queue-kb", type=float, default=0.0, help="bottleneck queue (0: 50 ms at the rate)")
    r.add_argument("--up", default="", help="client->upstream overrides, e.g. 'loss=0.01,delay_ms=20'")
    r.add_argument("--down", default="", help="upstream->client overrides")
    r.add_argument("--engine", choices=("auto", "c", "python"), default="auto")
    r.add_argument("--record")
    r.add_argument("--record-max", type=int, default=10000)
    r.set_defaults(fn=cmd_relay)
    b = sub.add_parser("build")
    b.set_defaults(fn=cmd_build)
    rp = sub.add_parser("replay")
    rp.add_argument("--file", required=True)
    rp.add_argument("--to", required=True)
    rp.add_argument("--copies", type=int, default=1)
    rp.add_argument("--gap", type=float, default=0.0005)
    rp.set_defaults(fn=cmd_replay)
    g = sub.add_parser("garbage")
    g.add_argument("--to", required=True)
    g.add_argument("--count", type=int, default=300)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--gap", type=float, default=0.0005)
    g.set_defaults(fn=cmd_garbage)
    args = p.parse_args(argv)
    code: int = args.fn(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
