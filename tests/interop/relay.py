"""Userspace UDP relay with seeded impairments, and datagram record/replay/garbage tools.

The kernel here has no netem (ARCHITECTURE §6), so loss, duplication, reordering and
delay on the WireGuard underlay come from this relay: the client's endpoint points at
``--listen``; datagrams from the most recent client address go to ``--upstream``, and the
upstream's answers go back to that client address. Each datagram, either direction, is
dropped with probability ``loss``, else sent twice with probability ``dup``, else held back
by 1..``reorder_ms`` ms with probability ``reorder`` (so later datagrams overtake it), all
after a fixed ``delay_ms``. One ``random.Random(seed)`` makes every choice.

``--record FILE`` appends each client->upstream datagram (before impairment) as a
4-byte big-endian length plus the bytes, at most ``--record-max`` of them.

Subcommands (stdlib only; run by path inside a namespace)::

    relay   --listen A:P --upstream A:P [--seed --loss --dup --reorder --reorder-ms --delay-ms --record]
    replay  --file FILE --to A:P        re-send recorded datagrams from a fresh socket
    garbage --to A:P --count N --seed S random datagrams of 0..1500 bytes, some shaped
                                        like WireGuard messages (right type byte and size)

``relay`` prints ``ready`` once bound and a JSON line of counters when stopped (SIGTERM).
``replay``/``garbage`` print a JSON line with the number of datagrams sent.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import selectors
import signal
import socket
import struct
import sys
import time
from typing import BinaryIO, Iterator

SOCK_BUF = 4 * 1024 * 1024
# WireGuard message types and exact sizes (transport: 32-byte minimum, any size above).
WG_SHAPES = ((1, 148), (2, 92), (3, 64), (4, 32), (4, 48), (4, 128), (4, 1452))


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def udp_socket(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
    return s


class Impairment:
    """The seeded per-datagram decision: a list of extra delays (s), empty for a drop."""

    def __init__(self, seed: int, loss: float, dup: float, reorder: float, reorder_ms: float,
                 delay_ms: float) -> None:
        self.rnd = random.Random(seed)
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.reorder_s, self.delay_s = reorder_ms / 1000.0, delay_ms / 1000.0
        self.counts = {"in": 0, "dropped": 0, "duplicated": 0, "reordered": 0}

    def decide(self) -> list[float]:
        self.counts["in"] += 1
        r = self.rnd.random()
        if r < self.loss:
            self.counts["dropped"] += 1
            return []
        r -= self.loss
        if r < self.dup:
            self.counts["duplicated"] += 1
            return [self.delay_s, self.delay_s]
        r -= self.dup
        if r < self.reorder:
            self.counts["reordered"] += 1
            return [self.delay_s + self.rnd.uniform(0.001, max(self.reorder_s, 0.001))]
        return [self.delay_s]


def cmd_relay(args: argparse.Namespace) -> int:
    lhost, lport = parse_addr(args.listen)
    uhost, uport = parse_addr(args.upstream)
    down = udp_socket(lhost)
    down.bind((lhost, lport))
    up = udp_socket(uhost)
    up.connect((uhost, uport))
    down.setblocking(False)
    up.setblocking(False)
    imp = Impairment(args.seed, args.loss, args.dup, args.reorder, args.reorder_ms, args.delay_ms)
    record: BinaryIO | None = open(args.record, "wb") if args.record else None
    recorded = 0
    client: tuple[str, int] | None = None
    # (release time, sequence, data, to-upstream?) in release order
    pending: list[tuple[float, int, bytes, bool]] = []
    seq = 0
    counts = {"to_upstream": 0, "to_client": 0, "send_errors": 0}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sel = selectors.DefaultSelector()
    sel.register(down, selectors.EVENT_READ, True)
    sel.register(up, selectors.EVENT_READ, False)
    print("ready", flush=True)

    def send(data: bytes, to_upstream: bool) -> None:
        try:
            if to_upstream:
                up.send(data)
                counts["to_upstream"] += 1
            elif client is not None:
                down.sendto(data, client)
                counts["to_client"] += 1
        except OSError:
            counts["send_errors"] += 1

    while not stopping:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, held, held_to_up = heapq.heappop(pending)
            send(held, held_to_up)
        timeout = min(0.2, max(0.0, pending[0][0] - now)) if pending else 0.2
        try:
            ready = sel.select(timeout)
        except InterruptedError:
            continue
        for key, _ in ready:
            sock = down if key.data else up
            to_up = bool(key.data)
            for _burst in range(256):
                try:
                    data, addr = sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    counts["send_errors"] += 1  # e.g. ICMP error queued on the socket
                    break
                if to_up:
                    client = addr[:2]
                    if record is not None and recorded < args.record_max:
                        record.write(struct.pack(">I", len(data)) + data)
                        recorded += 1
                delays = imp.decide()
                for d in delays:
                    if d <= 0:
                        send(data, to_up)
                    else:
                        seq += 1
                        heapq.heappush(pending, (time.monotonic() + d, seq, data, to_up))
    if record is not None:
        record.close()
    print(json.dumps({**imp.counts, **counts, "recorded": recorded}), flush=True)
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
    r.add_argument("--record")
    r.add_argument("--record-max", type=int, default=10000)
    r.set_defaults(fn=cmd_relay)
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
