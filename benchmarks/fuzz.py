"""Fuzz the two cores that face untrusted bytes: the WireGuard endpoint and the IP stack.

Usage: ``python benchmarks/fuzz.py [--count N] [--inner-count N] [--seed S] [--sample-every N] [--quiet]``

* **Outer**: ``--count`` datagrams (default 1,000,000) into a :class:`WireGuardEndpoint`
  that holds a real session with an in-memory client: random bytes, truncated real
  messages, every message type at wrong lengths, exact-size handshake messages with
  garbage (and a few with a valid mac1, so the DH path runs), transport messages with
  real and random receiver indexes and extreme counters, bit-flipped and replayed real
  transport messages, and real ones (which must be delivered).
* **Inner**: ``--inner-count`` packets (default = ``--count``) into a :class:`Stack` whose
  shell is simulated (dials accepted, refused or unreachable at random; host replies and
  host ICMP errors for UDP bindings; host data, closes and aborts on flows): IPv4/IPv6
  TCP/UDP/ICMP built valid, then mutated (lengths, header lengths, IPv4 options, IPv6
  extension headers, fragments, TCP options and flag combinations, truncation, bit flips).
  A quarter of the TCP segments are aimed inside a live flow's window so they get past
  the acceptance test.

Invariants checked on every input: no exception escapes a core; each input either is
dropped with a counted reason, or has a visible effect (inner packet, reply, event, flow
state), or is one of the few kinds that may be absorbed silently (fragments held for
reassembly, keepalives, segments a flow accepted). Memory is sampled (RSS, and the sizes
of the cores' tables) and must stay bounded after warm-up. The report prints the counts,
the drops by reason and the samples; the exit status is 1 if an invariant failed.

Everything runs in memory: no sockets, no files. A full run (2 x 1,000,000) takes a few
minutes on one core.
"""

from __future__ import annotations

import argparse
import collections
import ipaddress
import os
import random
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wgslirpy import constants as C
from wgslirpy.errors import DropCounter
from wgslirpy.net.build import build_icmp_echo, build_icmp_unreachable, build_tcp, build_udp
from wgslirpy.net.fragments import fragment_ip
from wgslirpy.net.packet import decode_ip, fast_decode_tcp
from wgslirpy.net.segments import (
    IcmpEcho,
    TcpFlags,
    TcpSegment,
    UdpDatagram,
    Unreachable,
)
from wgslirpy.net.stack import (
    DnsLookup,
    DnsTcpRequested,
    HostIcmpError,
    Stack,
    StackConfig,
    TcpConnectRequested,
    UdpSend,
)
from wgslirpy.net.tcp import TcpConfig, TcpConnection
from wgslirpy.wg import crypto
from wgslirpy.wg.cookie import CookieGenerator
from wgslirpy.wg.endpoint import PeerConfig, WireGuardEndpoint

CLIENT_ADDR = ("192.0.2.1", 40000)
OTHER_ADDRS = [(f"192.0.2.{i}", 1000 + i) for i in range(2, 40)] + [
    (f"2001:db8::{i:x}", 2000 + i) for i in range(1, 20)
]
A_PRIVATE = crypto.clamp(bytes(range(1, 33)))
B_PRIVATE = crypto.clamp(bytes(range(101, 133)))

#: inputs between two memory samples (and progress lines), unless ``--sample-every`` says otherwise
SAMPLE_EVERY = 50_000
RSS_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * RSS_PAGE
    except OSError:
        return 0


def seeded(rnd: random.Random) -> Callable[[int], bytes]:
    return lambda n: rnd.randbytes(n)


class Report:
    """Counts by (core, kind, outcome), crashes with their first tracebacks, memory samples."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        self.crashes: collections.Counter[str] = collections.Counter()
        self.first_tracebacks: dict[str, str] = {}
        self.violations: collections.Counter[str] = collections.Counter()
        self.samples: list[tuple[int, int, dict[str, int]]] = []
        self.count = 0
        self.seconds = 0.0

    def crash(self, kind: str, exc: BaseException) -> None:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        key = f"{type(exc).__name__} at {Path(where.filename).name}:{where.lineno} ({kind})"
        self.crashes[key] += 1
        if key not in self.first_tracebacks:
            self.first_tracebacks[key] = "".join(traceback.format_exception(exc))

    def sample(self, i: int, sizes: dict[str, int]) -> None:
        self.samples.append((i, rss_bytes(), sizes))

    def memory_ok(self, limit_growth: int) -> tuple[bool, str]:
        if len(self.samples) < 3:
            return True, "too few samples"
        warm = self.samples[len(self.samples) // 5]
        peak = max(s[1] for s in self.samples[len(self.samples) // 5 :])
        growth = peak - warm[1]
        return (
            growth <= limit_growth,
            f"RSS after warm-up {warm[1] / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB, growth {growth / 1e6:.1f} MB",
        )


# --- outer: WireGuard datagrams ---------------------------------------------------------


class WgTarget:
    """Our endpoint (``gw``) with a confirmed session with an in-memory client (``client``)."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.now = 1000.0
        wall = lambda: self.now + 1_700_000_000.0  # noqa: E731
        self.client = WireGuardEndpoint(
            A_PRIVATE,
            PeerConfig(crypto.public_key(B_PRIVATE), endpoint=("198.51.100.2", 51820)),
            now=self.now,
            wall_clock=wall,
            rng=seeded(rnd),
        )
        self.gw = WireGuardEndpoint(
            B_PRIVATE, PeerConfig(crypto.public_key(A_PRIVATE)), now=self.now, wall_clock=wall, rng=seeded(rnd)
        )
        self.client.initiate_handshake(now=self.now)
        self.initiation = self.client.datagrams_to_send()[0][0]
        self.gw.receive_datagram(self.initiation, CLIENT_ADDR, now=self.now)
        self.response = self.gw.datagrams_to_send()[0][0]
        self.client.receive_datagram(self.response, ("198.51.100.2", 51820), now=self.now)
        self.client.send_ip(self.inner(b"hello"), now=self.now)
        for data, _ in self.client.datagrams_to_send():
            self.gw.receive_datagram(data, CLIENT_ADDR, now=self.now)
        self.gw.datagrams_to_send()
        assert self.gw.has_session and self.client.has_session, "the fuzz target has no session"
        kp = self.gw.keypairs.current
        assert kp is not None
        self.real_index = kp.local_index
        self.mac_gen = CookieGenerator(self.gw.public_key)
        self.sent: collections.deque[bytes] = collections.deque(maxlen=512)

    @staticmethod
    def inner(payload: bytes) -> bytes:
        return build_udp(UdpDatagram(ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("10.0.0.1"), 1, 2, payload))

    def fresh_transport(self) -> bytes:
        self.client.send_ip(self.inner(self.rnd.randbytes(self.rnd.randint(0, 64))), now=self.now)
        out = self.client.datagrams_to_send()
        data = out[-1][0] if out else b""
        self.sent.append(data)
        return data

    # each generator returns (kind, datagram, must_drop)
    def gen(self) -> tuple[str, bytes, bool]:
        r = self.rnd
        x = r.random()
        if x < 0.10:
            return "random_short", r.randbytes(r.randint(0, 64)), True
        if x < 0.15:
            return "random_long", r.randbytes(r.randint(65, 1600)), True
        if x < 0.30:
            t = r.randint(1, 4)
            exact = {
                1: C.MESSAGE_INITIATION_SIZE,
                2: C.MESSAGE_RESPONSE_SIZE,
                3: C.MESSAGE_COOKIE_REPLY_SIZE,
                4: C.MESSAGE_TRANSPORT_MIN_SIZE,
            }[t]
            n = max(0, exact + r.choice([-1, 1, -4, 4, -exact, r.randint(-exact, 200)]))
            if t == 4 and n >= exact:
                n = r.randint(0, exact - 1)  # transport: any length below the minimum
            head = struct.pack("<I", t)
            return f"type{t}_wrong_length", (head + r.randbytes(max(0, n - 4)))[:n], True
        if x < 0.40:
            t = r.randint(1, 3)
            n = {1: C.MESSAGE_INITIATION_SIZE, 2: C.MESSAGE_RESPONSE_SIZE, 3: C.MESSAGE_COOKIE_REPLY_SIZE}[t]
            body = struct.pack("<I", t) + r.randbytes(n - 4)
            if t == 3 and r.random() < 0.5:
                body = body[:4] + struct.pack("<I", self.real_index) + body[8:]
            return f"type{t}_garbage", body, True
        if x < 0.42:
            t = r.choice([1, 2])
            n = C.MESSAGE_INITIATION_SIZE if t == 1 else C.MESSAGE_RESPONSE_SIZE
            body = struct.pack("<I", t) + r.randbytes(n - 4 - 32) + bytes(32)
            return f"type{t}_valid_mac1", self.mac_gen.add_macs(body, now=self.now), True
        if x < 0.50:
            real = r.choice([self.initiation, self.response, self.fresh_transport()])
            return "truncated_real", real[: r.randint(0, max(0, len(real) - 1))], True
        if x < 0.65:
            counter = r.choice(
                [
                    0,
                    1,
                    2**64 - 1,
                    2**63,
                    C.REJECT_AFTER_MESSAGES - 1,
                    C.REJECT_AFTER_MESSAGES,
                    C.REJECT_AFTER_MESSAGES + 1,
                    2**32,
                    r.getrandbits(64),
                ]
            )
            head = struct.pack("<IIQ", 4, self.real_index, counter)
            return "transport_real_index", head + r.randbytes(r.randint(16, 1500)), True
        if x < 0.72:
            head = struct.pack("<IIQ", 4, r.getrandbits(32), r.getrandbits(64))
            return "transport_random_index", head + r.randbytes(r.randint(16, 300)), True
        if x < 0.80:
            data = bytearray(self.fresh_transport())
            for _ in range(r.randint(1, 4)):
                i = r.randrange(16 if r.random() < 0.8 else 0, len(data))
                data[i] ^= 1 << r.randrange(8)
            if data[0] == 4 and bytes(data[:4]) == b"\x04\x00\x00\x00":
                return "transport_bitflip", bytes(data), True
            return "header_bitflip", bytes(data), False  # a flipped type may still parse
        if x < 0.83 and self.sent:
            return "transport_replayed", r.choice(self.sent), False  # may be its first arrival
        if x < 0.835:
            return "initiation_replayed", self.initiation, True
        if x < 0.84:
            msg = bytearray(self.initiation)
            msg[1:4] = r.randbytes(3)  # reserved bytes must be zero
            return "reserved_bytes_set", bytes(msg), True
        return "transport_valid", self.fresh_transport(), False

    def feed(self, data: bytes, addr: tuple[str, int]) -> tuple[bool, bool, bool]:
        """(dropped, delivered, answered)."""
        drops = self.gw.drops
        before = drops.total()
        inner = self.gw.receive_datagram(data, addr, now=self.now)
        answered = bool(self.gw.datagrams_to_send())
        return drops.total() > before, inner is not None, answered


def run_outer(count: int, seed: int, report: Report, *, progress: bool, sample_every: int = SAMPLE_EVERY) -> WgTarget:
    rnd = random.Random(seed)
    target = WgTarget(rnd)
    t0 = time.perf_counter()
    step = 50e-6
    for i in range(count):
        kind, data, must_drop = target.gen()
        addr = CLIENT_ADDR if rnd.random() < 0.7 else rnd.choice(OTHER_ADDRS)
        try:
            dropped, delivered, answered = target.feed(data, addr)
        except Exception as exc:  # the invariant under test
            report.crash(kind, exc)
            continue
        if dropped:
            outcome = "dropped"
        elif delivered:
            outcome = "delivered"
        elif answered:
            outcome = "answered"
        else:
            outcome = "absorbed"
            if must_drop:
                report.violations[f"outer {kind}: neither dropped nor answered"] += 1
        report.outcomes[(kind, outcome)] += 1
        target.now += step
        if i % 997 == 0:
            try:
                target.gw.handle_timer(now=target.now)
                target.client.handle_timer(now=target.now)
                # keep the client's session in step: deliver what the gateway sent it
                for out, _ in target.gw.datagrams_to_send():
                    target.client.receive_datagram(out, ("198.51.100.2", 51820), now=target.now)
                for out, _ in target.client.datagrams_to_send():
                    target.gw.receive_datagram(out, CLIENT_ADDR, now=target.now)
                target.gw.datagrams_to_send()
            except Exception as exc:
                report.crash("timers", exc)
        if i % sample_every == 0:
            report.sample(i, {"staged": target.gw.staged_count})
            if progress and i:
                print(f"  outer {i:>9,}  {i / (time.perf_counter() - t0):,.0f}/s", file=sys.stderr, flush=True)
    report.count = count
    report.seconds = time.perf_counter() - t0
    report.sample(count, {"staged": target.gw.staged_count})
    return target


# --- inner: IP packets ------------------------------------------------------------------

CLIENT4 = ipaddress.ip_address("10.0.0.2")
CLIENT6 = ipaddress.ip_address("fd00::2")
PING4, PING6 = ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1")
DNS4, DNS6 = ipaddress.ip_address("10.0.0.53"), ipaddress.ip_address("fd00::53")
DESTS4 = [
    ipaddress.ip_address(a)
    for a in ("192.0.2.10", "198.51.100.7", "127.0.0.1", "169.254.169.254", "224.0.0.251", "255.255.255.255", "0.0.0.0")
] + [PING4, DNS4]
DESTS6 = [
    ipaddress.ip_address(a)
    for a in ("2001:db8::10", "::1", "fe80::1", "ff02::fb", "::ffff:192.0.2.10", "::ffff:127.0.0.1")
] + [PING6, DNS6]
PORTS = [80, 443, 53, 22, 0, 65535, 8080]
SPORTS = list(range(40000, 40048))
EXT_HEADERS = (0, 60, 43, 135, 139, 140)  # hop-by-hop, dest opts, routing, mobility, HIP, shim6


def dns_query(rnd: random.Random) -> bytes:
    qid = rnd.getrandbits(16)
    name = b"".join(bytes([len(p)]) + p for p in (b"example", b"test")) + b"\x00"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", rnd.choice([1, 28, 255, 16]), 1)


class StackTarget:
    """A Stack with a simulated shell; remembers flow state to aim segments inside windows."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.now = 1000.0
        cfg = StackConfig(
            mtu=1420,
            tcp=TcpConfig(mtu=1420),
            pingable=frozenset({PING4, PING6}),
            dns=frozenset({(DNS4, 53), (DNS6, 53)}),
            max_tcp_flows=512,
            max_pending_connects=64,
            max_udp_bindings=256,
        )
        self.stack = Stack(cfg, rng=seeded(rnd))
        #: flow key -> (next seq the peer would send, the ack it would send)
        self.windows: dict[tuple[Any, int, Any, int], tuple[int, int]] = {}
        self.accepted: list[TcpConnection] = []
        self.bindings: list[Any] = []
        self.pending: list[TcpConnection] = []

    # --- building valid packets -------------------------------------------------------
    def tcp(self) -> bytes:
        r = self.rnd
        flows = self.stack.flows
        if flows and r.random() < 0.4:
            # aim at a live flow (the dict's first entries: cheap and stable enough)
            src, sport, dst, dport = next(iter(flows)) if r.random() < 0.5 else r.choice(list(flows)[:64])
        else:
            v6 = r.random() < 0.35
            src = CLIENT6 if v6 else CLIENT4
            dst = r.choice(DESTS6 if v6 else DESTS4)
            sport, dport = r.choice(SPORTS), r.choice(PORTS)
        key = (src, sport, dst, dport)
        win = self.windows.get(key)
        if win is not None and r.random() < 0.8:
            seq, ack = win
            flags = TcpFlags(
                r.choice(
                    [
                        0x10,
                        0x18,
                        0x18,
                        0x18,
                        0x11,
                        0x19,
                        0x10,
                        0x10,
                        0x12,
                        0x02,
                        0x01,
                        0x10,
                        0x14 if r.random() < 0.1 else 0x10,
                    ]
                )
            )
            seq = (seq + r.choice([0, 0, 0, -1, 1, 1000, -70000])) & 0xFFFFFFFF
            ack = (ack + r.choice([0, 0, 0, 1, -1, 100000])) & 0xFFFFFFFF
        else:
            flags = TcpFlags(0x02 if r.random() < 0.5 else r.getrandbits(8))
            seq, ack = r.getrandbits(32), r.getrandbits(32)
        payload = r.randbytes(r.choice([0, 0, 1, 100, 1000, 1380]))
        opts: dict[str, Any] = {}
        if r.random() < 0.6:
            opts["mss"] = r.choice([0, 1, 536, 1380, 65535])
        if r.random() < 0.5:
            opts["wscale"] = r.choice([0, 7, 14, 15, 255])
        if r.random() < 0.5:
            opts["sack_permitted"] = True
        if r.random() < 0.5:
            opts["ts_val"], opts["ts_ecr"] = r.getrandbits(32), r.getrandbits(32)
        if r.random() < 0.2:
            opts["sack_blocks"] = tuple((r.getrandbits(32), r.getrandbits(32)) for _ in range(r.randint(1, 3)))
        seg = TcpSegment(src, dst, sport, dport, seq, ack, flags, r.getrandbits(16), payload, **opts)
        try:
            return build_tcp(seg)
        except Exception:
            return build_tcp(seg._replace(sack_blocks=(), ts_val=None, ts_ecr=None))

    def udp(self) -> bytes:
        r = self.rnd
        v6 = r.random() < 0.35
        src = CLIENT6 if v6 else CLIENT4
        dst = r.choice(DESTS6 if v6 else DESTS4)
        dport = 53 if dst in (DNS4, DNS6) else r.choice(PORTS)
        payload = dns_query(r) if dport == 53 and r.random() < 0.7 else r.randbytes(r.choice([0, 1, 100, 1400, 3000]))
        return build_udp(UdpDatagram(src, dst, r.choice(SPORTS), dport, payload))

    def icmp(self) -> bytes:
        r = self.rnd
        v6 = r.random() < 0.35
        src = CLIENT6 if v6 else CLIENT4
        dst = r.choice(DESTS6 if v6 else DESTS4)
        if r.random() < 0.6:
            return build_icmp_echo(
                IcmpEcho(
                    src,
                    dst,
                    r.random() < 0.9,
                    r.getrandbits(16),
                    r.getrandbits(16),
                    r.randbytes(r.choice([0, 56, 1400])),
                )
            )
        return build_icmp_unreachable(src, dst, r.choice(list(Unreachable)), self.udp()[:48], mtu=1280)

    def fragments(self) -> list[bytes]:
        r = self.rnd
        big = self.udp() if r.random() < 0.5 else self.tcp()
        if len(big) < 200:
            big = build_udp(UdpDatagram(CLIENT4, DESTS4[0], 40000, 9, r.randbytes(3000)))
        try:
            frags = fragment_ip(
                big[:8] + b"\x00\x00" + big[10:] if big[0] >> 4 == 4 else big,
                r.choice([68, 576, 576, 1280, 1280, 1400, 1400, 1400]) if r.random() < 0.9 else 68,
            )
        except Exception:
            frags = []
        if not frags:
            return [big]
        x = r.random()
        if x < 0.3:
            r.shuffle(frags)
        elif x < 0.45:
            frags.append(r.choice(frags))  # duplicate
        elif x < 0.6:
            frags.pop(r.randrange(len(frags)))  # lost: times out
        return frags

    def with_v6_extensions(self, pkt: bytes) -> bytes:
        """Insert 1-3 extension headers (random lengths and next-header chains) after the
        IPv6 header."""
        r = self.rnd
        if len(pkt) < 40 or pkt[0] >> 4 != 6:
            return pkt
        nh = pkt[6]
        exts = b""
        for _ in range(r.randint(1, 3)):
            kind = r.choice(EXT_HEADERS + (44,))
            if kind == 44:
                body = struct.pack(
                    "!BBHI",
                    nh,
                    0,
                    (r.getrandbits(13) << 3) | r.getrandbits(1) if r.random() < 0.5 else 0,
                    r.getrandbits(32),
                )
            else:
                ln = r.randint(0, 3)
                body = bytes([nh, ln]) + r.randbytes(6 + 8 * ln)
                if r.random() < 0.7:
                    body = bytes([nh, ln]) + b"\x01" + bytes([4 + 8 * ln]) + bytes(4 + 8 * ln)  # PadN
            exts = body + exts
            nh = kind
        payload_len = len(pkt) - 40 + len(exts)
        return pkt[:4] + struct.pack("!H", payload_len & 0xFFFF) + bytes([nh]) + pkt[7:40] + exts + pkt[40:]

    # --- mutations --------------------------------------------------------------------
    def mutate(self, pkt: bytes) -> tuple[str, bytes]:
        r = self.rnd
        if not pkt:
            return "empty", pkt
        b = bytearray(pkt)
        v4 = b[0] >> 4 == 4
        x = r.random()
        if x < 0.12:
            return "truncated", bytes(b[: r.randrange(len(b))])
        if x < 0.18:
            return "extended", bytes(b) + r.randbytes(r.randint(1, 64))
        if x < 0.32 and v4 and len(b) >= 20:
            field = r.choice(["ihl", "total", "flags", "proto", "version", "options"])
            if field == "ihl":
                b[0] = 0x40 | r.randrange(16)
            elif field == "total":
                struct.pack_into("!H", b, 2, r.choice([0, 19, 20, len(b) - 1, len(b) + 1, 65535, r.getrandbits(16)]))
            elif field == "flags":
                struct.pack_into("!H", b, 6, r.getrandbits(16))
            elif field == "proto":
                b[9] = r.choice([0, 1, 2, 6, 17, 41, 58, 132, 255])
            elif field == "version":
                b[0] = (r.randrange(16) << 4) | (b[0] & 15)
            else:
                n = r.choice([4, 8, 20, 40])
                opts = r.choice(
                    [r.randbytes(n), b"\x01" * n, b"\x00" + r.randbytes(n - 1), bytes([7, n]) + bytes(n - 2)]
                )
                b = bytearray(b[:20] + opts + b[20:])
                b[0] = 0x40 | min(15, 5 + n // 4)
                struct.pack_into("!H", b, 2, min(65535, len(b)))
            return f"ipv4_{field}", bytes(b)
        if x < 0.42 and not v4 and len(b) >= 40:
            field = r.choice(["payload_len", "next_header", "extensions", "extensions", "version"])
            if field == "payload_len":
                struct.pack_into("!H", b, 4, r.choice([0, 1, len(b) - 41, len(b) - 39, 65535, r.getrandbits(16)]))
            elif field == "next_header":
                b[6] = r.choice([0, 6, 17, 43, 44, 58, 59, 60, 255])
            elif field == "version":
                b[0] = (r.randrange(16) << 4) | (b[0] & 15)
            else:
                return "ipv6_extensions", self.with_v6_extensions(bytes(b))
            return f"ipv6_{field}", bytes(b)
        hl = ((b[0] & 15) * 4) if v4 else 40
        if x < 0.55 and len(b) > hl + 13:
            proto = b[9] if v4 else b[6]
            if proto == 6:
                field = r.choice(["data_offset", "flags", "options", "urgent"])
                if field == "data_offset":
                    b[hl + 12] = (r.randrange(16) << 4) | (b[hl + 12] & 15)
                elif field == "flags":
                    b[hl + 13] = r.getrandbits(8)
                elif field == "urgent":
                    struct.pack_into("!H", b, hl + 18, r.getrandbits(16)) if len(b) >= hl + 20 else None
                else:
                    doff = (b[hl + 12] >> 4) * 4
                    if doff > 20 and len(b) >= hl + doff:
                        for i in range(hl + 20, hl + doff):
                            if r.random() < 0.3:
                                b[i] = r.choice([0, 1, 2, 3, 4, 5, 8, 255, r.getrandbits(8)])
                return f"tcp_{field}", bytes(b)
            if proto == 17:
                struct.pack_into("!H", b, hl + 4, r.choice([0, 7, 8, 9, len(b) - hl - 1, len(b) - hl + 1, 65535]))
                return "udp_length", bytes(b)
            if proto in (1, 58):
                b[hl] = r.getrandbits(8)
                b[hl + 1] = r.getrandbits(8)
                return "icmp_type_code", bytes(b)
        if x < 0.80:
            for _ in range(r.randint(1, 4)):
                i = r.randrange(len(b))
                b[i] ^= 1 << r.randrange(8)
            return "bitflip", bytes(b)
        return "valid", bytes(b)

    def gen(self) -> Iterator[tuple[str, bytes]]:
        r = self.rnd
        x = r.random()
        if x < 0.5:
            base = self.tcp()
            family = "tcp"
        elif x < 0.75:
            base = self.udp()
            family = "udp"
        elif x < 0.85:
            base = self.icmp()
            family = "icmp"
        elif x < 0.95:
            for frag in self.fragments():
                kind, data = self.mutate(frag) if r.random() < 0.3 else ("valid", frag)
                yield f"fragment_{kind}", data
            return
        else:
            yield "random", r.randbytes(r.randint(0, 100))
            return
        if base[0] >> 4 == 6 and r.random() < 0.15:
            base = self.with_v6_extensions(base)
            family += "_ext"
        kind, data = self.mutate(base) if r.random() < 0.7 else ("valid", base)
        yield f"{family}_{kind}", data

    # --- the simulated shell ------------------------------------------------------------
    def shell(self) -> None:
        r = self.rnd
        stack = self.stack
        while (ev := stack.next_event()) is not None:
            if isinstance(ev, TcpConnectRequested):
                self.pending.append(ev.conn)
            elif isinstance(ev, DnsTcpRequested):
                ev.conn.accept(now=self.now)
                stack.mark(ev.conn)
                self.accepted.append(ev.conn)
            elif isinstance(ev, UdpSend):
                self.bindings.append(ev.binding)
                if len(self.bindings) > 64:
                    self.bindings.pop(0)
            elif isinstance(ev, DnsLookup):
                stack.dns_udp_reply(ev.client, ev.server, stack.dns.servfail(ev.question))
        if self.pending and r.random() < 0.5:
            conn = self.pending.pop(r.randrange(len(self.pending)))
            y = r.random()
            if y < 0.8:
                conn.accept(now=self.now)
                stack.mark(conn)
                if not conn.is_closed:
                    self.accepted.append(conn)
            elif y < 0.9:
                conn.refuse()
                stack.mark(conn)
            else:
                stack.tcp_unreachable(conn, r.choice([u for u in Unreachable if u is not Unreachable.FRAG_NEEDED]))
        if len(self.accepted) > 256:
            self.accepted = [
                c
                for c in self.accepted
                if (not c.is_closed and c in self.stack._dirty) or self.stack.flows.get(c.key) is c
            ]
        if self.accepted and r.random() < 0.3:
            conn = r.choice(self.accepted)
            y = r.random()
            if conn.is_closed:
                self.accepted.remove(conn)
            elif y < 0.5:
                if conn.send_space > 0 and conn.accepted:
                    conn.send(r.randbytes(min(conn.send_space, r.choice([1, 100, 3000]))), now=self.now)
            elif y < 0.97:
                conn.read()
            elif y < 0.99:
                conn.close(now=self.now)
            else:
                conn.abort()
            stack.mark(conn)
        if self.bindings and r.random() < 0.1:
            b = r.choice(self.bindings)
            remote = r.choice(DESTS6 + DESTS4)
            if r.random() < 0.7:
                stack.udp_reply(b.id, remote, r.choice(PORTS), r.randbytes(r.choice([0, 10, 2000])), now=self.now)
            else:
                err = HostIcmpError(
                    r.random() < 0.5,
                    r.getrandbits(8) if r.random() < 0.2 else r.choice([1, 2, 3, 4, 11, 12]),
                    r.getrandbits(8) if r.random() < 0.3 else r.randrange(16),
                    r.getrandbits(32),
                )
                offender = r.choice(
                    [None, remote, ipaddress.ip_address("198.51.100.1"), ipaddress.ip_address("2001:db8::1")]
                )
                stack.udp_icmp_error(
                    b.id, remote, r.choice(PORTS), r.randrange(100), err, offender=offender, now=self.now
                )

    def drain(self) -> int:
        self.stack.touched_flows()  # as the shell does each turn (it wakes these flows' greenlets)
        out = self.stack.packets_to_send(now=self.now)
        for pkt in out:
            if pkt[0] >> 4 in (4, 6):
                seg = fast_decode_tcp(pkt) or decode_ip(pkt)
                if isinstance(seg, TcpSegment):
                    key = (seg.dst, seg.dport, seg.src, seg.sport)
                    ack = (seg.seq + seg.seg_len) & 0xFFFFFFFF
                    self.windows[key] = (seg.ack, ack)
        if len(self.windows) > 4096:
            self.windows.clear()
        return len(out)


def _tcp_key(pkt: bytes) -> tuple[Any, int, Any, int] | None:
    """The flow key of a TCP packet without extension headers or options trouble (cheap)."""
    try:
        if pkt[0] >> 4 == 4 and pkt[9] == 6:
            hl = (pkt[0] & 15) * 4
            sport, dport = struct.unpack_from("!HH", pkt, hl)
            return (ipaddress.IPv4Address(pkt[12:16]), sport, ipaddress.IPv4Address(pkt[16:20]), dport)
        if pkt[0] >> 4 == 6 and pkt[6] == 6:
            sport, dport = struct.unpack_from("!HH", pkt, 40)
            return (ipaddress.IPv6Address(pkt[8:24]), sport, ipaddress.IPv6Address(pkt[24:40]), dport)
    except (IndexError, struct.error, ValueError):
        return None
    return None


def _reassembly_state(stack: Stack) -> tuple[int, int]:
    r = stack.reassembler
    return len(getattr(r, "_pending", ())), int(getattr(r, "_buffered", 0))


def _flow_drops(stack: Stack, key: Any) -> int:
    conn = stack.flows.get(key)
    return conn.drops.total() if conn is not None else 0


def run_inner(
    count: int, seed: int, report: Report, *, progress: bool, sample_every: int = SAMPLE_EVERY
) -> StackTarget:
    rnd = random.Random(seed + 1)
    target = StackTarget(rnd)
    stack = target.stack
    cores: list[DropCounter] = [stack.drops, stack.reassembler.drops, stack.nat.drops, stack.dns.drops]
    t0 = time.perf_counter()
    i = 0
    while i < count:
        for kind, data in target.gen():
            i += 1
            key = _tcp_key(data)
            flow_before = _flow_drops(stack, key) if key is not None else 0
            known_flow = key is not None and key in stack.flows
            before = sum(c.total() for c in cores)
            events_before = len(stack._events)
            out_before = len(stack._out)
            fragments_before = _reassembly_state(stack)
            try:
                stack.receive_ip(data, now=target.now)
            except Exception as exc:
                report.crash(kind, exc)
                continue
            dropped = sum(c.total() for c in cores) > before or (
                key is not None and _flow_drops(stack, key) > flow_before
            )
            effect = len(stack._events) > events_before or len(stack._out) > out_before or bool(stack._dirty)
            if dropped:
                outcome = "dropped"
            elif effect:
                outcome = "effect"
            else:
                outcome = "absorbed"
                held = _reassembly_state(stack) != fragments_before  # a fragment was buffered
                if not (held or known_flow):
                    report.violations[f"inner {kind}: no drop counted and no effect"] += 1
            report.outcomes[(kind, outcome)] += 1
            try:
                target.shell()
                target.drain()
                target.now += rnd.choice([0.0, 0.001, 0.01, 0.05])
                deadline = stack.next_deadline()
                if deadline is not None and deadline <= target.now:
                    stack.handle_timer(now=target.now)
                    target.shell()
                    target.drain()
            except Exception as exc:
                report.crash(f"shell after {kind}", exc)
            if i % sample_every == 0:
                report.sample(i, _stack_sizes(stack))
                if progress:
                    print(f"  inner {i:>9,}  {i / (time.perf_counter() - t0):,.0f}/s", file=sys.stderr, flush=True)
    report.count = i
    report.seconds = time.perf_counter() - t0
    report.sample(i, _stack_sizes(stack))
    return target


def _stack_sizes(stack: Stack) -> dict[str, int]:
    return {
        "tcp_flows": len(stack.flows),
        "udp_bindings": len(stack.nat),
        "fragment_bytes": int(getattr(stack.reassembler, "_buffered", 0)),
        "timer_entries": stack.timer_entries(),
        "pending_connects": stack.pending_connect_count(),
    }


# --- report -------------------------------------------------------------------------------


def print_report(report: Report, drops: dict[str, int], limits: dict[str, int]) -> bool:
    ok = True
    print(
        f"\n== {report.name}: {report.count:,} inputs in {report.seconds:.1f} s "
        f"({report.count / max(report.seconds, 1e-9):,.0f}/s)"
    )
    by_outcome: collections.Counter[str] = collections.Counter()
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for (kind, outcome), n in report.outcomes.items():
        by_outcome[outcome] += n
        by_kind[kind][outcome] += n
    print("outcomes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(by_outcome.items())))
    print("by kind:")
    for kind in sorted(by_kind):
        print(f"  {kind:<28} " + ", ".join(f"{k} {v:,}" for k, v in sorted(by_kind[kind].items())))
    print("drops by reason:")
    for reason, n in sorted(drops.items(), key=lambda kv: -kv[1]):
        print(f"  {reason:<28} {n:,}")
    mem_ok, mem = report.memory_ok(64 * 1024 * 1024)
    print(f"memory: {mem}")
    last = report.samples[-1][2] if report.samples else {}
    peak = {k: max(s[2].get(k, 0) for s in report.samples) for k in last}
    print("table sizes (peak / end): " + ", ".join(f"{k} {peak[k]:,}/{last[k]:,}" for k in last))
    for k, limit in limits.items():
        if peak.get(k, 0) > limit:
            print(f"FAIL: {k} peaked at {peak[k]:,}, above its bound {limit:,}")
            ok = False
    if not mem_ok:
        print("FAIL: memory grew after warm-up")
        ok = False
    if report.crashes:
        ok = False
        print(f"FAIL: {sum(report.crashes.values()):,} exceptions escaped:")
        for key, n in report.crashes.most_common():
            print(f"  {n:>8,}  {key}")
        for key, tb in list(report.first_tracebacks.items())[:5]:
            print(f"--- first {key}:\n{tb}")
    else:
        print("exceptions escaped: 0")
    if report.violations:
        ok = False
        print(f"FAIL: {sum(report.violations.values()):,} inputs neither dropped (counted) nor acted on:")
        for key, n in report.violations.most_common(20):
            print(f"  {n:>8,}  {key}")
    else:
        print("uncounted drops: 0")
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--count", type=int, default=1_000_000, help="outer datagrams (default 1,000,000)")
    p.add_argument("--inner-count", type=int, default=None, help="inner packets (default: --count)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--sample-every",
        type=int,
        default=SAMPLE_EVERY,
        metavar="N",
        help=f"sample memory (and print progress) every N inputs (default {SAMPLE_EVERY:,}; the memory"
        " check needs at least 3 samples per core)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.count < 0 or (args.inner_count is not None and args.inner_count < 0):
        p.error("--count and --inner-count must not be negative")
    if args.sample_every < 1:
        p.error("--sample-every must be at least 1")
    inner_count = args.count if args.inner_count is None else args.inner_count
    progress = not args.quiet

    outer = Report("outer: WireGuard datagrams -> WireGuardEndpoint")
    wg = run_outer(args.count, args.seed, outer, progress=progress, sample_every=args.sample_every)
    ok = print_report(outer, wg.gw.drops.as_dict(), {"staged": C.DEFAULT_TRANSMIT_QUEUE_CAPACITY})

    inner = Report("inner: IP packets -> Stack")
    st = run_inner(inner_count, args.seed, inner, progress=progress, sample_every=args.sample_every)
    cfg = st.stack.config
    limits = {
        "tcp_flows": cfg.max_tcp_flows,
        "udp_bindings": cfg.max_udp_bindings,
        "fragment_bytes": cfg.max_reassembly_bytes,
        "pending_connects": cfg.max_pending_connects,
        "timer_entries": 2 * cfg.max_tcp_flows + 64,
    }
    ok = print_report(inner, st.stack.all_drops().as_dict(), limits) and ok
    tcp = st.stack.tcp_counters()
    if tcp:
        print("tcp counters: " + ", ".join(f"{k} {v:,}" for k, v in sorted(tcp.items())))
    print("stack stats: " + ", ".join(f"{k} {v:,}" for k, v in st.stack.stats.as_dict().items()))
    print("\nRESULT: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
