"""Per-segment CPU of the sans-IO TCP data path, in process, without sockets or crypto.

Two of our own :class:`~wgslirpy.net.tcp.TcpConnection` cores (the client opens actively, the
server is made from its SYN, as the gateway does) exchange encoded packets: every segment
goes through ``build_tcp`` and ``decode_ip`` as it would through the tunnel, and each side
receives the other's whole output as one burst before it answers (as the gateway's reader
does). The clock advances a fixed step per round (fake time; nothing sleeps).

The gateway's side is the server: it is timed separately (its ``send``,
``segments_to_send``, the encoding of its segments, the decoding of the client's and its
``handle_segment``), and the figure is its CPU per data segment and per MB for a download
(server -> client) and an upload (client -> server). Run::

    python benchmarks/micro_tcp.py                 # both directions, 64 MiB each
    python benchmarks/micro_tcp.py --mib 16 --profile   # cProfile of the gateway's side

Figures are for comparing two versions of the code on one machine; nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wgslirpy.net.build import build_tcp
from wgslirpy.net.packet import decode_ip
from wgslirpy.net.segments import TcpSegment
from wgslirpy.net.tcp import TcpConfig, TcpConnection

CLIENT = IPv4Address("10.77.0.2")
SERVER = IPv4Address("192.0.2.80")
STEP = 0.0005  # simulated seconds per round
MAX_ROUNDS = 10_000_000


def _deliver(packets: list[bytes], to: TcpConnection, now: float) -> None:
    for p in packets:
        seg = decode_ip(p)
        assert isinstance(seg, TcpSegment)
        to.handle_segment(seg, now=now)


def _encode(segs: list[TcpSegment]) -> list[bytes]:
    return [build_tcp(s) for s in segs]


def _data(packets: list[bytes]) -> int:
    """How many of ``packets`` carry payload (IPv4 without options: total length > 52)."""
    return sum(1 for p in packets if len(p) > 52)


def run(total: int, *, download: bool, timed: Callable[[], float] = time.perf_counter) -> tuple[float, int]:
    """Move ``total`` bytes one way; returns (gateway-side seconds, data segments it handled)."""
    rnd = random.Random(1)
    cfg = TcpConfig(mtu=1420)
    t = 0.0
    client = TcpConnection.connect(
        local=CLIENT, lport=49152, peer=SERVER, pport=443, config=cfg, now=t, rng=rnd.randbytes
    )
    syn = decode_ip(_encode(client.segments_to_send(now=t))[0])
    assert isinstance(syn, TcpSegment)
    server = TcpConnection(syn, cfg, now=t, rng=rnd.randbytes)
    server.accept(now=t)
    _deliver(_encode(server.segments_to_send(now=t)), client, t)
    _deliver(_encode(client.segments_to_send(now=t)), server, t)
    chunk = bytes(range(256)) * 1024
    sent = received = 0
    gw = 0.0
    segments = 0
    acks = 0
    for _ in range(MAX_ROUNDS):
        if received >= total:
            break
        t += STEP
        # the server's turn (timed): host data in (download), its output, encoding
        t0 = timed()
        if download:
            while sent < total and server.send_space > 0:
                n = server.send(chunk[: min(len(chunk), total - sent)], now=t)
                if not n:
                    break
                sent += n
        server.handle_timer(now=t) if (d := server.next_deadline()) is not None and d <= t else None
        out = _encode(server.segments_to_send(now=t))
        gw += timed() - t0
        if download:
            segments += _data(out)
        _deliver(out, client, t)
        # the client's turn (untimed)
        if not download:
            while sent < total and client.send_space > 0:
                n = client.send(chunk[: min(len(chunk), total - sent)], now=t)
                if not n:
                    break
                sent += n
        else:
            received += len(client.read())
        if (d := client.next_deadline()) is not None and d <= t:
            client.handle_timer(now=t)
        back = _encode(client.segments_to_send(now=t))
        if not download:
            segments += _data(back)
        # the server takes the burst (timed)
        t0 = timed()
        _deliver(back, server, t)
        out = _encode(server.segments_to_send(now=t))  # the reader's flush after its burst
        if not download:
            received += len(server.read())  # the woken flow's writer, then its commit
            out += _encode(server.segments_to_send(now=t))
        gw += timed() - t0
        if download:
            segments += _data(out)
        else:
            acks += len(out)
        _deliver(out, client, t)
    if not download:
        print(f"upload: the gateway sent {acks} pure ACKs for {segments} data segments")
    return gw, segments


def cli(run_one: Callable[..., tuple[float, int]], description: str, *, mib: int, repeat: int) -> None:
    """The command line of the per-segment micro benchmarks: ``run_one(total, download=...)``
    each way, ``--repeat`` times (the best is shown), or once under cProfile."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--mib", type=int, default=mib, help=f"MiB per direction (default {mib})")
    ap.add_argument("--repeat", type=int, default=repeat, help=f"runs each way; the best is shown (default {repeat})")
    ap.add_argument("--profile", action="store_true", help="cProfile one run each way, top 25 by self time")
    args = ap.parse_args()
    total = args.mib << 20
    prof = cProfile.Profile() if args.profile else None
    for download in (True, False):
        best, segs = float("inf"), 0
        for _ in range(1 if prof is not None else max(1, args.repeat)):
            if prof is not None:
                prof.enable()
            gw, segs = run_one(total, download=download)
            if prof is not None:
                prof.disable()
            best = min(best, gw)
        name = "download" if download else "upload"
        print(
            f"{name:8s}: gateway side {best * 1e6 / max(segs, 1):6.2f} us per data segment, "
            f"{best / (total / 1e6) * 1e3:6.2f} ms per MB ({segs} segments, {best:.2f} s)"
        )
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main() -> None:
    cli(run, __doc__.split("\n\n")[0], mib=64, repeat=1)


if __name__ == "__main__":
    main()
