"""Micro-benchmark of the WireGuard socket's batched I/O (``wgslirpy/io/udp_batch.py``) on loopback.

Usage: ``python benchmarks/micro_udp_batch.py [--size N] [--count N] [--repeat N]``

Sends ``--count`` datagrams of ``--size`` bytes (a full WireGuard transport message at the
default MTU is 1452) from one loopback UDP socket to another and reads them back, and prints
the CPU time per datagram (best of ``--repeat`` rounds, so other load inflates it as little
as possible) of each side for:

* ``sendto``: one system call per datagram (the fallback path);
* ``GSO sendmsg``: :class:`~wgslirpy.io.udp_batch.BatchSender` with UDP_SEGMENT;
* ``recvfrom``: one read per datagram, what the sender sent one by one;
* ``GRO recvmsg``: :class:`~wgslirpy.io.udp_batch.BatchReceiver` with UDP_GRO reading what a
  GSO sender sent (loopback hands a GSO send to a GRO socket in one piece);
* GSO to a plain socket: the kernel cuts the send into datagrams on delivery (what an old
  wireguard-go peer without UDP_GRO sees), charged to the sender.

and the ratios against the per-datagram paths measured in the same run. Loopback only: the
kernel's delivery to a real peer (veth, a NIC) costs more per send than here, and what a
receiver gets coalesced depends on its sender and NIC. No root needed; nothing leaves the host.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wgslirpy.io.udp_batch import BatchReceiver, BatchSender, enable_gro, gso_supported


def _socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 << 20)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def _round(size: int, count: int, gso: bool, gro: bool) -> tuple[float, float, int]:
    """(send CPU s, receive CPU s, datagrams received) for one round."""
    tx, rx = _socket(), _socket()
    try:
        sender = BatchSender(tx, gso=gso)
        receiver = BatchReceiver(rx, gro=gro)
        out = [(bytes([i % 251]) * size, rx.getsockname()) for i in range(count)]
        send_s = recv_s = 0.0
        got = 0
        # Chunks of 64 (one flush's worth), each read back before the next: the receive
        # buffer never overflows.
        for i in range(0, count, 64):
            chunk = out[i : i + 64]
            t0 = time.process_time()
            sender.send(chunk)
            t1 = time.process_time()
            want = got + len(chunk)
            for _ in range(len(chunk) + 10):
                try:
                    parts, _addr = receiver.recv()
                except BlockingIOError:
                    break
                got += len(parts)
                if got >= want:
                    break
            recv_s += time.process_time() - t1
            send_s += t1 - t0
        return send_s, recv_s, got
    finally:
        tx.close()
        rx.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1452)
    ap.add_argument("--count", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        has_gso = gso_supported(probe)
        has_gro = enable_gro(probe)
    print(f"{args.count} datagrams of {args.size} B on loopback; best of {args.repeat}; µs of CPU per datagram")
    print(f"kernel: UDP GSO {'yes' if has_gso else 'no'}, UDP GRO {'yes' if has_gro else 'no'}")
    modes = [("per datagram (sendto, recvfrom)", False, False)]
    if has_gso:
        modes.append(("GSO sendmsg to a plain socket", True, False))
    if has_gso and has_gro:
        modes.append(("batched (GSO sendmsg, GRO recvmsg)", True, True))
    results = {}
    for name, gso, gro in modes:
        best_send = best_recv = float("inf")
        got = 0
        for _ in range(args.repeat):
            s, r, got = _round(args.size, args.count, gso, gro)
            best_send, best_recv = min(best_send, s), min(best_recv, r)
        results[name] = (best_send, best_recv)
        per = 1e6 / args.count
        print(f"  {name:36s} send {best_send * per:6.2f}  receive {best_recv * per:6.2f}  ({got} received)")
    base_send, base_recv = results[modes[0][0]]
    for name, _, _ in modes[1:]:
        snd, rcv = results[name]
        if base_send and base_recv:
            print(f"  {name} / per datagram: send {snd / base_send:.2f}x, receive {rcv / base_recv:.2f}x of the CPU")


if __name__ == "__main__":
    main()
