"""Programs the interop tests run inside the namespaces (stdlib only, run by path).

Servers (``serve``, in ns srv; ports from topology.py)::

    8080 tcp  HTTP GET /blob/<size>/<seed>: <size> deterministic pseudo-random bytes
    9001 tcp  sink: read to EOF, then reply "<count> <sha256>\\n" and close (client half-close)
    9002 tcp  echo; on EOF shut the write side and close
    9003 tcp  talker: read "<seed> <n>\\n", send blob(n, seed), shut the write side, keep
              reading to EOF; the result is kept for the result port (server half-close)
    9004 tcp  talker results: "<seed>\\n" -> JSON {"count", "sha256"} or {"pending": true}
    9005 udp  echo;  9006 udp: reply from port 9007 (full-cone check); 9999: nothing (closed)

``gw-local`` (in ns gw, wgslirpy only): a resolver on 127.0.0.1:53 / [::1]:53 that says
NXDOMAIN to everything (names come from the hosts file; lookups never leave the namespace),
and a TCP listener on 127.0.0.1 that the loopback policy must keep out of reach.

Probes (in ns client) print one JSON line each: connect, connect-pair, upload, talker,
echo-many, short-conns, udp-echo, udp-sizes, udp-cone, udp-refused.

Each server prints ``ready`` on stdout once its sockets are bound and logs only to stderr.
Every probe bounds its run time with --timeout.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import http.server
import json
import os
import random
import selectors
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

HTTP_PORT = 8080
SINK_PORT = 9001
ECHO_PORT = 9002
TALKER_PORT = 9003
TALKER_RESULT_PORT = 9004
UDP_ECHO_PORT = 9005
UDP_CONE_PORT = 9006
UDP_CONE_REPLY_PORT = 9007
CLOSED_PORT = 9999

BLOB_CHUNK = 1 << 20
SOCK_BUF = 4 * 1024 * 1024


# --- deterministic data ----------------------------------------------------------------
def blob_chunks(size: int, seed: int) -> Iterator[bytes]:
    """``size`` pseudo-random bytes from ``seed``, in 1 MiB chunks (same bytes everywhere)."""
    rnd = random.Random(seed)
    left = size
    while left > 0:
        n = min(BLOB_CHUNK, left)
        yield rnd.randbytes(n)
        left -= n


def blob(size: int, seed: int) -> bytes:
    return b"".join(blob_chunks(size, seed))


def blob_sha256(size: int, seed: int) -> str:
    h = hashlib.sha256()
    for chunk in blob_chunks(size, seed):
        h.update(chunk)
    return h.hexdigest()


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def errname(e: BaseException) -> str:
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(e, OSError) and e.errno is not None:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# --- servers ---------------------------------------------------------------------------
def dual_stack_listener(port: int, kind: int = socket.SOCK_STREAM, host: str = "::") -> socket.socket:
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    if kind == socket.SOCK_DGRAM:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
    s.bind((host, port))
    if kind == socket.SOCK_STREAM:
        s.listen(1024)
    return s


def serve_tcp(
    listener: socket.socket,
    handler: Callable[[socket.socket], None],
    *,
    what: str = "handler error",
    errors: tuple[type[Exception], ...] = (OSError,),
) -> None:
    """Accept on ``listener`` in a thread, each connection in a thread of its own: ``handler``,
    then close; ``errors`` it raises are logged as ``what: ERRNAME``."""

    def one(conn: socket.socket) -> None:
        try:
            handler(conn)
        except errors as e:
            log(f"{what}:", errname(e))
        finally:
            conn.close()

    def loop() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def recv_to_eof(conn: socket.socket, h: hashlib._Hash) -> int:
    count = 0
    while True:
        data = conn.recv(262144)
        if not data:
            return count
        h.update(data)
        count += len(data)


def read_to_eof(conn: socket.socket, bufsize: int = 65536) -> bytes:
    """Everything ``conn`` receives until the other side's EOF."""
    chunks = []
    while data := conn.recv(bufsize):
        chunks.append(data)
    return b"".join(chunks)


def handle_sink(conn: socket.socket) -> None:
    h = hashlib.sha256()
    count = recv_to_eof(conn, h)
    conn.sendall(f"{count} {h.hexdigest()}\n".encode())


def handle_echo(conn: socket.socket) -> None:
    while True:
        data = conn.recv(262144)
        if not data:
            break
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


TALKER_RESULTS: dict[str, dict[str, Any]] = {}


def read_line(conn: socket.socket, limit: int = 256) -> tuple[bytes, bytes]:
    buf = b""
    while b"\n" not in buf and len(buf) < limit:
        data = conn.recv(limit)
        if not data:
            break
        buf += data
    line, _, rest = buf.partition(b"\n")
    return line, rest


def handle_talker(conn: socket.socket) -> None:
    line, rest = read_line(conn)
    seed_s, size_s = line.decode().split()
    TALKER_RESULTS[seed_s] = {"pending": True}
    for chunk in blob_chunks(int(size_s), int(seed_s)):
        conn.sendall(chunk)
    conn.shutdown(socket.SHUT_WR)
    h = hashlib.sha256(rest)
    count = len(rest) + recv_to_eof(conn, h)
    TALKER_RESULTS[seed_s] = {"count": count, "sha256": h.hexdigest()}


def handle_talker_result(conn: socket.socket) -> None:
    line, _ = read_line(conn)
    conn.sendall(json.dumps(TALKER_RESULTS.get(line.decode().strip(), {"unknown": True})).encode() + b"\n")


class BlobHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "blob":
            self.send_error(404)
            return
        size, seed = int(parts[1]), int(parts[2])
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        for chunk in blob_chunks(size, seed):
            self.wfile.write(chunk)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class DualStackHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def udp_loop(sock: socket.socket, reply: socket.socket | None = None) -> None:
    while True:
        data, addr = sock.recvfrom(65535)
        try:
            (reply or sock).sendto(data, addr)
        except OSError as e:
            log("udp send error:", errname(e))


def cmd_serve(args: argparse.Namespace) -> int:
    serve_tcp(dual_stack_listener(SINK_PORT), handle_sink)
    serve_tcp(dual_stack_listener(ECHO_PORT), handle_echo)
    serve_tcp(dual_stack_listener(TALKER_PORT), handle_talker)
    serve_tcp(dual_stack_listener(TALKER_RESULT_PORT), handle_talker_result)
    udp_echo = dual_stack_listener(UDP_ECHO_PORT, socket.SOCK_DGRAM)
    threading.Thread(target=udp_loop, args=(udp_echo,), daemon=True).start()
    cone_in = dual_stack_listener(UDP_CONE_PORT, socket.SOCK_DGRAM)
    cone_out = dual_stack_listener(UDP_CONE_REPLY_PORT, socket.SOCK_DGRAM)
    threading.Thread(target=udp_loop, args=(cone_in, cone_out), daemon=True).start()
    httpd = DualStackHTTPServer(("::", HTTP_PORT), BlobHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return wait_forever()


def nxdomain_reply(query: bytes) -> bytes | None:
    """The question copied back with RCODE=3 (NXDOMAIN), or None for a non-query."""
    if len(query) < 12 or query[2] & 0x80:
        return None
    pos = 12
    while pos < len(query) and query[pos] != 0:
        pos += 1 + query[pos]
    end = pos + 5  # root label + QTYPE + QCLASS
    if end > len(query):
        return None
    flags = 0x8000 | (query[2] & 0x79) << 8 | 0x0080 | 3  # QR, opcode+RD copied, RA, NXDOMAIN
    return query[:2] + struct.pack(">HHHHH", flags, 1, 0, 0, 0) + query[12:end]


def dns_loop(sock: socket.socket) -> None:
    while True:
        data, addr = sock.recvfrom(4096)
        reply = nxdomain_reply(data)
        if reply is not None:
            sock.sendto(reply, addr)


def handle_loopback(conn: socket.socket) -> None:
    conn.sendall(b"loopback reached\n")


def cmd_gw_local(args: argparse.Namespace) -> int:
    for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        u = socket.socket(fam, socket.SOCK_DGRAM)
        u.bind((host, 53))
        threading.Thread(target=dns_loop, args=(u,), daemon=True).start()
        t = socket.socket(fam, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((host, args.loopback_port))
        t.listen(16)
        serve_tcp(t, handle_loopback)
    return wait_forever()


def wait_forever() -> int:
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


# --- TCP probes ------------------------------------------------------------------------
def emit(result: dict[str, Any]) -> int:
    print(json.dumps(result), flush=True)
    return 0


def try_connect(host: str, port: int, timeout: float) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return {"ok": False, "errno": errname(e), "elapsed": time.monotonic() - t0}
    s.close()
    return {"ok": True, "errno": None, "elapsed": time.monotonic() - t0}


def cmd_connect(args: argparse.Namespace) -> int:
    return emit(try_connect(args.host, args.port, args.timeout))


def small_echo(host: str, port: int, timeout: float, size: int = 1024) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            payload = os.urandom(size)
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            got = read_to_eof(s)
        return {"ok": got == payload, "errno": None, "elapsed": time.monotonic() - t0}
    except OSError as e:
        return {"ok": False, "errno": errname(e), "elapsed": time.monotonic() - t0}


def cmd_connect_pair(args: argparse.Namespace) -> int:
    """A connect that should fail or hang, and an echo started at the same moment."""
    slow: dict[str, Any] = {}

    def run_slow() -> None:
        slow.update(try_connect(args.slow_host, args.slow_port, args.timeout))

    t = threading.Thread(target=run_slow)
    t.start()
    fast = small_echo(args.fast_host, args.fast_port, args.timeout)
    t.join(args.timeout + 5)
    return emit({"slow": slow, "fast": fast})


def cmd_upload(args: argparse.Namespace) -> int:
    """Send blob(size, seed), shut the write side, read the sink's "<count> <sha>" after EOF."""
    t0 = time.monotonic()
    try:
        s = socket.create_connection((args.host, args.port), timeout=args.timeout)
        s.settimeout(args.timeout)
        h = hashlib.sha256()
        for chunk in blob_chunks(args.size, args.seed):
            h.update(chunk)
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        reply = read_to_eof(s, 4096)
        s.close()
    except OSError as e:
        return emit({"ok": False, "errno": errname(e), "elapsed": time.monotonic() - t0})
    elapsed = time.monotonic() - t0
    count_s, _, sha = reply.decode().strip().partition(" ")
    return emit(
        {
            "ok": int(count_s or -1) == args.size and sha == h.hexdigest(),
            "sent_sha256": h.hexdigest(),
            "reply": reply.decode().strip(),
            "elapsed": elapsed,
            "mbps": args.size / elapsed / 1e6,
        }
    )


def cmd_talker(args: argparse.Namespace) -> int:
    """Server half-close: read the server's data to EOF, then keep sending; ask what it got."""
    t0 = time.monotonic()
    try:
        s = socket.create_connection((args.host, TALKER_PORT), timeout=args.timeout)
        s.settimeout(args.timeout)
        s.sendall(f"{args.seed} {args.recv_size}\n".encode())
        h = hashlib.sha256()
        got = recv_to_eof(s, h)
        recv_ok = got == args.recv_size and h.hexdigest() == blob_sha256(args.recv_size, args.seed)
        sent_sha = hashlib.sha256()
        for chunk in blob_chunks(args.send_size, args.seed + 1):
            sent_sha.update(chunk)
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # the server closes after our EOF
        s.close()
        deadline = time.monotonic() + args.timeout
        while True:
            with socket.create_connection((args.host, TALKER_RESULT_PORT), timeout=args.timeout) as r:
                r.sendall(f"{args.seed}\n".encode())
                server = json.loads(read_line(r, 4096)[0])
            if "pending" not in server or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    except OSError as e:
        return emit({"ok": False, "errno": errname(e), "elapsed": time.monotonic() - t0})
    send_ok = server.get("count") == args.send_size and server.get("sha256") == sent_sha.hexdigest()
    return emit(
        {
            "ok": recv_ok and send_ok,
            "recv_ok": recv_ok,
            "send_ok": send_ok,
            "received": got,
            "server": server,
            "elapsed": time.monotonic() - t0,
        }
    )


class EchoConn:
    """One connection of echo-many; expected bytes are ``data`` rotated by ``rot``."""

    def __init__(self, sock: socket.socket, rot: int) -> None:
        self.sock = sock
        self.rot = rot
        self.sent = 0
        self.received = 0
        self.error: str | None = None
        self.done = False


def cmd_echo_many(args: argparse.Namespace) -> int:
    """``conns`` simultaneous connections each echoing ``size`` bytes, verified byte by byte."""
    size = args.size
    data = blob(size, args.seed)
    doubled = memoryview(data + data)
    sel = selectors.DefaultSelector()
    fam = family_of(args.host)
    conns: list[EchoConn] = []
    t0 = time.monotonic()
    for i in range(args.conns):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((args.host, args.port))
        c = EchoConn(s, (i * 7919) % size)
        conns.append(c)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    deadline = t0 + args.timeout
    open_count = len(conns)
    while open_count and time.monotonic() < deadline:
        for key, ev in sel.select(0.5):
            c = key.data
            try:
                if ev & selectors.EVENT_WRITE and c.sent < size:
                    n = c.sock.send(doubled[c.rot + c.sent : c.rot + min(size, c.sent + 262144)])
                    c.sent += n
                    if c.sent == size:
                        c.sock.shutdown(socket.SHUT_WR)
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                if ev & selectors.EVENT_READ:
                    chunk = c.sock.recv(262144)
                    if not chunk:
                        if c.received != size:
                            c.error = f"EOF after {c.received} bytes"
                        c.done = True
                    elif chunk != doubled[c.rot + c.received : c.rot + c.received + len(chunk)]:
                        c.error = f"corrupt data at offset {c.received}"
                        c.done = True
                    else:
                        c.received += len(chunk)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                c.error = errname(e)
                c.done = True
            if c.done:
                sel.unregister(c.sock)
                c.sock.close()
                open_count -= 1
    elapsed = time.monotonic() - t0
    for c in conns:
        if not c.done:
            c.error = f"timeout (sent {c.sent}, received {c.received})"
            c.sock.close()
    errors = [c.error for c in conns if c.error]
    total = sum(c.received for c in conns)
    return emit(
        {
            "ok": not errors,
            "conns": len(conns),
            "failed": len(errors),
            "errors": errors[:10],
            "elapsed": elapsed,
            "mbps": total / elapsed / 1e6,
        }
    )


def cmd_short_conns(args: argparse.Namespace) -> int:
    """``count`` connections one after another: connect, echo 16 bytes, close."""
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    ok = 0
    errors: list[str] = []
    for i in range(args.count):
        if time.monotonic() > deadline:
            errors.append("overall timeout")
            break
        try:
            with socket.create_connection((args.host, args.port), timeout=5) as s:
                msg = struct.pack(">QQ", i, i ^ 0x5A5A5A5A)
                s.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    d = s.recv(64)
                    if not d:
                        break
                    got += d
                if got == msg:
                    ok += 1
                else:
                    errors.append(f"#{i}: bad echo {got!r}")
        except OSError as e:
            errors.append(f"#{i}: {errname(e)}")
    elapsed = time.monotonic() - t0
    return emit({"ok": ok == args.count, "done": ok, "errors": errors[:10], "elapsed": elapsed, "rate": ok / elapsed})


# --- UDP probes ------------------------------------------------------------------------
def udp_socket(host: str) -> socket.socket:
    s = socket.socket(family_of(host), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
    return s


def cmd_udp_echo(args: argparse.Namespace) -> int:
    """``count`` datagrams of sizes in [min, max] with at most ``window`` unanswered."""
    rnd = random.Random(args.seed)
    sizes = [rnd.randint(args.min, args.max) for _ in range(args.count)]
    base = random.Random(args.seed + 1).randbytes(4096 + args.max)

    def payload(i: int) -> bytes:
        return struct.pack(">I", i) + base[i % 4096 : i % 4096 + sizes[i] - 4]

    s = udp_socket(args.host)
    s.connect((args.host, args.port))
    s.setblocking(False)
    inflight: dict[int, float] = {}
    got: set[int] = set()
    bad = dup = send_errors = 0
    nxt = 0
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    while (nxt < args.count or inflight) and time.monotonic() < deadline:
        while nxt < args.count and len(inflight) < args.window:
            try:
                s.send(payload(nxt))
            except OSError:
                send_errors += 1
            inflight[nxt] = time.monotonic()
            nxt += 1
        selectors_ready = select_read(s, 0.05)
        while selectors_ready:
            try:
                d = s.recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                send_errors += 1
                break
            seq = struct.unpack(">I", d[:4])[0] if len(d) >= 4 else -1
            if not 0 <= seq < args.count or d != payload(seq):
                bad += 1
            elif seq in got:
                dup += 1
            else:
                got.add(seq)
                inflight.pop(seq, None)
        now = time.monotonic()
        for seq in [q for q, t in inflight.items() if now - t > args.lost_after]:
            del inflight[seq]
    elapsed = time.monotonic() - t0
    received = len(got)
    return emit(
        {
            "sent": nxt,
            "received": received,
            "bad": bad,
            "dup": dup,
            "errors": send_errors,
            "loss": 1 - received / args.count,
            "elapsed": elapsed,
            "rate": received / elapsed,
        }
    )


def select_read(s: socket.socket, timeout: float) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(s, selectors.EVENT_READ)
        return bool(sel.select(timeout))


def cmd_udp_sizes(args: argparse.Namespace) -> int:
    """Each size echoed intact (a few tries: IPv6 path-MTU discovery may eat the first)."""
    results: dict[str, Any] = {}
    s = udp_socket(args.host)
    s.connect((args.host, args.port))
    s.settimeout(args.wait)
    for size in (int(x) for x in args.sizes.split(",")):
        payload = blob(size, size)
        res: dict[str, Any] = {"ok": False, "tries": 0}
        for attempt in range(args.tries):
            res["tries"] = attempt + 1
            t0 = time.monotonic()
            try:
                s.send(payload)
                while True:
                    d = s.recv(65535)
                    if d == payload:
                        res.update(ok=True, rtt=time.monotonic() - t0)
                        break
                    res["bad"] = len(d)
            except OSError as e:
                res["errno"] = errname(e)
            if res["ok"]:
                break
        results[str(size)] = res
    return emit({"ok": all(r["ok"] for r in results.values()), "sizes": results})


def cmd_udp_cone(args: argparse.Namespace) -> int:
    """Send to the cone port; the reply must come back from the server's other port."""
    s = udp_socket(args.host)
    s.settimeout(args.wait)
    token = os.urandom(16)
    res: dict[str, Any] = {"ok": False}
    for attempt in range(args.tries):
        s.sendto(token, (args.host, args.port))
        try:
            d, addr = s.recvfrom(65535)
        except OSError as e:
            res["errno"] = errname(e)
            continue
        res.update(ok=d == token and addr[1] == args.reply_port, source=list(addr[:2]), tries=attempt + 1)
        break
    return emit(res)


def cmd_udp_refused(args: argparse.Namespace) -> int:
    """A connected socket to a closed port: the ICMP error must surface as ECONNREFUSED."""
    s = udp_socket(args.host)
    s.connect((args.host, args.port))
    s.settimeout(args.wait)
    t0 = time.monotonic()
    res: dict[str, Any] = {"errno": None}
    for _attempt in range(args.tries):
        try:
            s.send(b"anyone there?")
            s.recv(65535)
            res["errno"] = "got a reply"
            break
        except OSError as e:
            res["errno"] = errname(e)
            if res["errno"] == "ECONNREFUSED":
                break
    res.update(elapsed=time.monotonic() - t0, ok=res["errno"] == "ECONNREFUSED")
    return emit(res)


# --- command line ----------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], *hostport: str, timeout: float = 30.0
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name)
        sp.set_defaults(fn=fn)
        for a in hostport:
            sp.add_argument(a, type=int if a.endswith("port") else str)
        sp.add_argument("--timeout", type=float, default=timeout)
        return sp

    add("serve", cmd_serve)
    add("gw-local", cmd_gw_local).add_argument("--loopback-port", type=int, required=True)
    add("connect", cmd_connect, "host", "port", timeout=5.0)
    add("connect-pair", cmd_connect_pair, "slow_host", "slow_port", "fast_host", "fast_port", timeout=5.0)
    sp = add("upload", cmd_upload, "host", "port", timeout=120.0)
    sp.add_argument("--size", type=int, required=True)
    sp.add_argument("--seed", type=int, default=1)
    sp = add("talker", cmd_talker, "host", timeout=30.0)
    sp.add_argument("--recv-size", type=int, default=200_000)
    sp.add_argument("--send-size", type=int, default=300_000)
    sp.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    sp = add("echo-many", cmd_echo_many, "host", "port", timeout=120.0)
    sp.add_argument("--conns", type=int, default=200)
    sp.add_argument("--size", type=int, default=1 << 20)
    sp.add_argument("--seed", type=int, default=2)
    sp = add("short-conns", cmd_short_conns, "host", "port", timeout=120.0)
    sp.add_argument("--count", type=int, default=1000)
    sp = add("udp-echo", cmd_udp_echo, "host", "port", timeout=120.0)
    sp.add_argument("--count", type=int, default=10000)
    sp.add_argument("--min", type=int, default=4)
    sp.add_argument("--max", type=int, default=1392)
    sp.add_argument("--window", type=int, default=32)
    sp.add_argument("--lost-after", type=float, default=1.0)
    sp.add_argument("--seed", type=int, default=3)
    for name, fn in (("udp-sizes", cmd_udp_sizes), ("udp-cone", cmd_udp_cone), ("udp-refused", cmd_udp_refused)):
        sp = add(name, fn, "host", "port")
        sp.add_argument("--tries", type=int, default=3)
        sp.add_argument("--wait", type=float, default=2.0)
    sub.choices["udp-sizes"].add_argument("--sizes", default="1500,4000,16000,32000")
    sub.choices["udp-cone"].add_argument("--reply-port", type=int, default=UDP_CONE_REPLY_PORT)
    args = p.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.fn
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
