"""Programs the benchmark runs inside its namespaces (stdlib only, run by path).

``serve`` (ns srv) adds what tests/interop/servers.py lacks for benchmarking:

    8180 tcp  HTTP ``GET /blob/<size>``: the repeating pattern below, served from memory
              (servers.py's generator tops out near 170 MB/s: it would be the bottleneck)
    9180 tcp  holder: keeps every connection open (thousands, one selector thread) and
              echoes whatever arrives, so a held connection can be proven still working
    9181 tcp  link sink: reads the pattern (checking it), times the arrivals and, at EOF or
              when ``cap`` seconds (from the first line ``cap <seconds>``) have passed,
              answers one JSON line: bytes, seconds, the longest gap between arrivals

Probes (ns client) print JSON lines:

    http-get    one HTTP download, sha256 of the body checked against the pattern
    link-get    one HTTP download of at most ``--size`` bytes within ``--cap`` seconds:
                rate, the longest gap between arrivals (a stall), sha256 of what arrived
    link-put    one upload to the link sink, the same figures measured by the sink
    hold        open N connections and hold them; print ``{"held": ...}``, wait for
                SIGUSR1 (the benchmark reads the gateway's memory meanwhile), then send
                8 bytes on every connection, check every echo, print the result, close

The pattern is ``PATTERN_LEN`` seeded pseudo-random bytes repeated; the length is odd and
about 1 MB, so a TCP relay that drops, duplicates or misplaces any segment changes the sha256.
Every program bounds its run time; each raises its own open-file limit to the hard limit.
Helpers shared with the interop bed (``errname``, ``serve_tcp``) come from tests/interop/servers.py.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import random
import resource
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The interop bed's servers.py (stdlib only, like this file) holds the helpers both share.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "interop"))
from servers import errname, serve_tcp  # type: ignore[import-not-found]  # on the path above

HTTP_PORT = 8180
HOLD_PORT = 9180
LINK_SINK_PORT = 9181
STALL_S = 1.0  # a gap between arrivals longer than this is a stall
PATTERN_LEN = 1_000_003
PATTERN_SEED = 7
CHUNK = 1 << 18


def pattern() -> bytes:
    return random.Random(PATTERN_SEED).randbytes(PATTERN_LEN)


def pattern_sha256(size: int) -> str:
    """sha256 of the first ``size`` bytes of the repeated pattern."""
    p = pattern()
    h = hashlib.sha256()
    full, rest = divmod(size, PATTERN_LEN)
    for _ in range(full):
        h.update(p)
    h.update(p[:rest])
    return h.hexdigest()


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (root may also raise the hard one); return it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(hard, 65536)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> int:
    print(json.dumps(result), flush=True)
    return 0


# --- servers ---------------------------------------------------------------------------
def listener(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(4096)
    return s


def http_one(conn: socket.socket, doubled: memoryview) -> None:
    conn.settimeout(60)
    req = b""
    while b"\r\n\r\n" not in req and len(req) < 8192:
        data = conn.recv(4096)
        if not data:
            return
        req += data
    parts = req.split(b"\r\n", 1)[0].split()
    path = parts[1].decode() if len(parts) >= 2 else ""
    segs = path.strip("/").split("/")
    if len(segs) != 2 or segs[0] != "blob" or not segs[1].isdigit():
        conn.sendall(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return
    size = int(segs[1])
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % size)
    off = 0
    while off < size:
        n = min(CHUNK, size - off)
        start = off % PATTERN_LEN
        conn.sendall(doubled[start : start + n])
        off += n


def serve_http(lst: socket.socket) -> None:
    doubled = memoryview(pattern() * 2)
    serve_tcp(lst, lambda conn: http_one(conn, doubled), what="http")


def serve_hold(lst: socket.socket) -> None:
    """Accept everything, keep it open, echo what arrives; close on EOF or error."""
    lst.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lst, selectors.EVENT_READ, None)
    while True:  # runs until the benchmark stops the process
        for key, _ in sel.select():
            if key.data is None:
                for _ in range(256):
                    try:
                        conn, _ = lst.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:  # EMFILE: log and keep serving the others
                        log("hold accept:", errname(e))
                        break
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ, conn)
                continue
            conn = key.data
            try:
                data = conn.recv(4096)
                if data:
                    conn.send(data)  # 8-byte probes: always fits the send buffer
                    continue
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                pass
            sel.unregister(conn)
            conn.close()


class Arrivals:
    """Times of data arrivals on one transfer: total, last arrival, longest gap, stalls."""

    def __init__(self, start: float) -> None:
        self.start = self.last = start
        self.bytes = 0
        self.max_gap = 0.0
        self.stalls = 0  # gaps longer than STALL_S

    def add(self, n: int, now: float) -> None:
        self.gap(now)
        self.bytes += n
        self.last = now

    def gap(self, now: float) -> None:
        """Account the silence since the last arrival (also called at the end)."""
        g = now - self.last
        if g > self.max_gap:
            if g > STALL_S and self.max_gap <= STALL_S:
                self.stalls += 1
            self.max_gap = g

    def result(self) -> dict[str, Any]:
        secs = max(self.last - self.start, 1e-6)
        return {
            "bytes": self.bytes,
            "seconds": secs,
            "mbps": self.bytes / secs / 1e6,
            "max_gap": round(self.max_gap, 3),
            "stalls": self.stalls,
        }


def prefix_ok(h: hashlib._Hash, size: int) -> bool:
    return h.hexdigest() == pattern_sha256(size)


def link_sink_one(conn: socket.socket) -> None:
    """Read ``cap <s>\n`` then pattern bytes until EOF or the cap; answer one JSON line."""
    conn.settimeout(30)
    head = b""
    while b"\n" not in head and len(head) < 64:
        data = conn.recv(64 - len(head))
        if not data:
            return
        head += data
    line, _, rest = head.partition(b"\n")
    cap = min(float(line.split()[1]), 120.0) if line.startswith(b"cap ") else 15.0
    t0 = time.monotonic()
    arr = Arrivals(t0)
    h = hashlib.sha256(rest)
    arr.add(len(rest), t0)
    buf = bytearray(1 << 18)
    view = memoryview(buf)
    eof = False
    while True:
        now = time.monotonic()
        if now - t0 >= cap:
            break
        conn.settimeout(max(0.01, min(0.25, cap - (now - t0))))
        try:
            n = conn.recv_into(buf)
        except TimeoutError:
            continue
        if not n:
            eof = True
            break
        h.update(view[:n])
        arr.add(n, time.monotonic())
    arr.gap(time.monotonic() if not eof else arr.last)
    res = {**arr.result(), "eof": eof, "sha_ok": prefix_ok(h, arr.bytes)}
    conn.sendall((json.dumps(res) + "\n").encode())
    conn.shutdown(socket.SHUT_WR)
    # Drain until the client closes (bounded), so our reply is not lost to a reset.
    conn.settimeout(1.0)
    end = time.monotonic() + 20
    with contextlib.suppress(OSError):
        while time.monotonic() < end and conn.recv_into(buf):
            pass


def serve_link_sink(lst: socket.socket) -> None:
    serve_tcp(lst, link_sink_one, what="link sink", errors=(OSError, ValueError))


def cmd_serve(args: argparse.Namespace) -> int:
    raise_nofile()
    serve_http(listener(HTTP_PORT))  # accept threads of their own
    serve_link_sink(listener(LINK_SINK_PORT))
    threading.Thread(target=serve_hold, args=(listener(HOLD_PORT),), daemon=True).start()
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


# --- probes ----------------------------------------------------------------------------
def cmd_http_get(args: argparse.Namespace) -> int:
    """GET /blob/<size>: time from connect to the last body byte; check length and sha256."""
    expected = pattern_sha256(args.size)
    h = hashlib.sha256()
    got = 0
    t0 = time.monotonic()
    try:
        s = socket.create_connection((args.host, args.port), timeout=10)
        deadline = t0 + args.timeout
        s.settimeout(5)
        s.sendall(f"GET /blob/{args.size} HTTP/1.0\r\nHost: bench\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = s.recv(65536)
            if not data:
                raise ConnectionError("EOF in headers")
            head += data
        head, _, body = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.0 200"):
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        h.update(body)
        got = len(body)
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while time.monotonic() < deadline:
            n = s.recv_into(buf)
            if not n:
                break
            h.update(view[:n])
            got += n
        s.close()
    except OSError as e:
        return emit({"ok": False, "error": errname(e), "received": got, "elapsed": time.monotonic() - t0})
    elapsed = time.monotonic() - t0
    ok = got == args.size and h.hexdigest() == expected
    err = (
        None
        if ok
        else (
            "timeout"
            if got < args.size and time.monotonic() >= t0 + args.timeout
            else f"got {got} of {args.size} bytes, sha256 {'ok' if h.hexdigest() == expected else 'wrong'}"
        )
    )
    return emit({"ok": ok, "error": err, "received": got, "elapsed": elapsed, "mbps": got / elapsed / 1e6})


def cmd_link_get(args: argparse.Namespace) -> int:
    """GET /blob/<size>, stopping at ``cap`` seconds: rate from the request to the last byte."""
    h = hashlib.sha256()
    t0 = time.monotonic()
    arr = Arrivals(t0)
    error = None
    try:
        s = socket.create_connection((args.host, args.port), timeout=10)
        t0 = time.monotonic()
        arr = Arrivals(t0)
        s.sendall(f"GET /blob/{args.size} HTTP/1.0\r\nHost: bench\r\n\r\n".encode())
        head = b""
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        body_started = False
        while arr.bytes < args.size:
            now = time.monotonic()
            if now - t0 >= args.cap:
                break
            s.settimeout(max(0.01, min(0.25, args.cap - (now - t0))))
            try:
                n = s.recv_into(buf)
            except TimeoutError:
                continue
            if not n:
                error = f"EOF after {arr.bytes} bytes"
                break
            now = time.monotonic()
            if not body_started:
                head += bytes(view[:n])
                if b"\r\n\r\n" not in head:
                    continue
                head, _, body = head.partition(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.0 200"):
                    error = head.split(b"\r\n", 1)[0].decode(errors="replace")
                    break
                body_started = True
                h.update(body)
                arr.add(len(body), now)
            else:
                h.update(view[:n])
                arr.add(n, now)
        arr.gap(time.monotonic() if arr.bytes < args.size else arr.last)
        s.close()
    except OSError as e:
        error = errname(e)
    sha_ok = prefix_ok(h, arr.bytes)
    return emit(
        {
            **arr.result(),
            "ok": error is None and sha_ok,
            "error": error,
            "sha_ok": sha_ok,
            "complete": arr.bytes >= args.size,
        }
    )


def cmd_link_put(args: argparse.Namespace) -> int:
    """Send up to ``size`` pattern bytes to the link sink; print the sink's figures."""
    doubled = memoryview(pattern() * 2)
    t0 = time.monotonic()
    deadline = t0 + args.cap + 30  # the sink answers at the cap; this bounds a dead path
    sent = 0
    reply = b""
    try:
        s = socket.create_connection((args.host, args.port), timeout=10)
        s.setblocking(False)
        out = f"cap {args.cap}\n".encode()
        sel = selectors.DefaultSelector()
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
        shut = False
        while b"\n" not in reply and time.monotonic() < deadline:
            for _key, ev in sel.select(0.5):
                if ev & selectors.EVENT_READ:
                    data = s.recv(4096)
                    if not data:
                        raise ConnectionError("EOF before the sink's answer")
                    reply += data
                if ev & selectors.EVENT_WRITE and not shut:
                    if out:
                        out = out[s.send(out) :]
                    elif sent < args.size:
                        start = sent % PATTERN_LEN
                        n = min(CHUNK, args.size - sent)
                        sent += s.send(doubled[start : start + n])
                    else:
                        s.shutdown(socket.SHUT_WR)
                        shut = True
                        sel.modify(s, selectors.EVENT_READ)
        s.close()
    except OSError as e:
        return emit({"ok": False, "error": errname(e), "sent": sent})
    if b"\n" not in reply:
        return emit({"ok": False, "error": "no answer from the sink", "sent": sent})
    res: dict[str, Any] = json.loads(reply.split(b"\n", 1)[0])
    return emit(
        {
            **res,
            "ok": bool(res.get("sha_ok")),
            "error": None if res.get("sha_ok") else "sha256",
            "sent": sent,
            "complete": res.get("bytes", 0) >= args.size,
        }
    )


class Held:
    __slots__ = ("sock", "state", "token", "got")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.state = "connecting"
        self.token = b""
        self.got = b""


def cmd_hold(args: argparse.Namespace) -> int:
    limit = raise_nofile()
    if limit < args.conns + 64:
        return emit({"held": 0, "error": f"RLIMIT_NOFILE {limit} < {args.conns + 64}"})
    fam = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sel = selectors.DefaultSelector()
    conns: list[Held] = []
    pending = 0
    failures: dict[str, int] = {}
    t0 = time.monotonic()
    deadline = t0 + args.timeout

    def fail(c: Held, why: str) -> None:
        failures[why] = failures.get(why, 0) + 1
        c.state = "failed"
        sel.unregister(c.sock)
        c.sock.close()

    # Phase 1: open, at most ``window`` connects in flight (a SYN burst of thousands
    # would measure the gateway's connect storm, not idle memory).
    while (len(conns) < args.conns or pending) and time.monotonic() < deadline:
        while len(conns) < args.conns and pending < args.window:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((args.host, args.port))
            c = Held(s)
            conns.append(c)
            sel.register(s, selectors.EVENT_WRITE, c)
            pending += 1
        for key, _ in sel.select(0.5):
            c = key.data
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            pending -= 1
            if err:
                fail(c, errno.errorcode.get(err, str(err)))
            else:
                c.state = "open"
                sel.unregister(c.sock)
    opened = sum(c.state == "open" for c in conns)
    for c in conns:
        if c.state == "connecting":
            fail(c, "connect timeout")
    open_time = time.monotonic() - t0

    # Phase 2: hold until told to check (SIGUSR1) or the hold time runs out.
    go = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: go.set())
    emit({"held": opened, "wanted": args.conns, "open_seconds": open_time, "failures": failures})
    go.wait(args.hold)

    # Phase 3: every held connection must still carry data both ways.
    live = [c for c in conns if c.state == "open"]
    for i, c in enumerate(live):
        c.token = struct.pack(">Q", i)
        try:
            c.sock.send(c.token)
            c.state = "probing"
            sel.register(c.sock, selectors.EVENT_READ, c)
        except OSError as e:
            c.state = "failed"
            failures[errname(e)] = failures.get(errname(e), 0) + 1
    t1 = time.monotonic()
    check_deadline = t1 + args.check_timeout
    waiting = sum(c.state == "probing" for c in live)
    while waiting and time.monotonic() < check_deadline:
        for key, _ in sel.select(0.5):
            c = key.data
            try:
                data = c.sock.recv(64)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                fail(c, errname(e))
                waiting -= 1
                continue
            c.got += data
            if not data or len(c.got) >= len(c.token):
                waiting -= 1
                if c.got == c.token:
                    c.state = "working"
                    sel.unregister(c.sock)
                else:
                    fail(c, "EOF" if not data else "bad echo")
    working = sum(c.state == "working" for c in live)
    if waiting:
        failures["echo timeout"] = failures.get("echo timeout", 0) + waiting
    for c in conns:
        c.sock.close()
    return emit(
        {
            "held": opened,
            "working": working,
            "wanted": args.conns,
            "open_seconds": open_time,
            "check_seconds": time.monotonic() - t1,
            "failures": failures,
            "ok": working == args.conns,
        }
    )


# --- command line ----------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        sp = sub.add_parser(name)
        sp.set_defaults(fn=fn)
        return sp

    add("serve", cmd_serve)
    sp = add("http-get", cmd_http_get)
    sp.add_argument("host")
    sp.add_argument("--port", type=int, default=HTTP_PORT)
    sp.add_argument("--size", type=int, required=True)
    sp.add_argument("--timeout", type=float, default=60.0)
    sp = add("link-get", cmd_link_get)
    sp.add_argument("host")
    sp.add_argument("--port", type=int, default=HTTP_PORT)
    sp.add_argument("--size", type=int, required=True)
    sp.add_argument("--cap", type=float, default=15.0, help="stop after this many seconds")
    sp = add("link-put", cmd_link_put)
    sp.add_argument("host")
    sp.add_argument("--port", type=int, default=LINK_SINK_PORT)
    sp.add_argument("--size", type=int, required=True)
    sp.add_argument("--cap", type=float, default=15.0, help="the sink stops after this many seconds")
    sp = add("hold", cmd_hold)
    sp.add_argument("host")
    sp.add_argument("--port", type=int, default=HOLD_PORT)
    sp.add_argument("--conns", type=int, required=True)
    sp.add_argument("--window", type=int, default=100)
    sp.add_argument("--timeout", type=float, default=60.0, help="limit for opening them all")
    sp.add_argument("--hold", type=float, default=60.0, help="longest wait for SIGUSR1")
    sp.add_argument("--check-timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    fn: Callable[[argparse.Namespace], int] = args.fn
    return fn(args)


if __name__ == "__main__":
    sys.exit(main())
