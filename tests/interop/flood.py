"""A handshake-initiation flood sender for the interop tests (run it inside a test namespace).

    python3 flood.py --to 10.201.0.2:51820 --peer-key BASE64 --seconds 20 [--procs 2]
                     [--bind 10.201.0.1] [--c]

Sends prebuilt 148-byte initiations whose mac1 is valid for ``--peer-key`` (the gateway's public
key) and whose bodies are random (the attacker does not know the peer's private key), as fast
as it can, from ``--procs`` processes, each on its own UDP socket (so a new source port each).
With ``--c`` and a C compiler on PATH, each process is a small C program using sendmmsg(2)
instead (much faster than a Python loop); without a compiler it falls back to Python.

Prints ``ready`` once the messages are built, then a JSON line at the end:
``{"sent": N, "seconds": T, "rate": N/T, "procs": P, "sender": "python"|"c"}``.
Traffic goes only to ``--to``; the run is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INITIATION_SIZE = 148
N_MESSAGES = 1024

C_SOURCE = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#define BATCH 64
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    /* argv: host port seconds msgfile [bindhost] */
    if (argc < 5) return 2;
    FILE *f = fopen(argv[4], "rb"); if (!f) return 3;
    static unsigned char msgs[1024][148]; size_t n = fread(msgs, 148, 1024, f); fclose(f);
    if (n == 0) return 4;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int buf = 4 << 20; setsockopt(s, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    if (argc > 5) { struct sockaddr_in b = {0}; b.sin_family = AF_INET; inet_pton(AF_INET, argv[5], &b.sin_addr);
        if (bind(s, (struct sockaddr *)&b, sizeof b)) return 5; }
    struct sockaddr_in to = {0}; to.sin_family = AF_INET; to.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &to.sin_addr);
    if (connect(s, (struct sockaddr *)&to, sizeof to)) return 6;
    struct mmsghdr hdr[BATCH]; struct iovec iov[BATCH];
    double end = now() + atof(argv[3]), t0 = now(); unsigned long sent = 0; size_t k = 0;
    while (now() < end) {
        for (int i = 0; i < 1000; i++) {
            for (int j = 0; j < BATCH; j++) { iov[j].iov_base = msgs[k]; iov[j].iov_len = 148; k = (k + 1) % n;
                memset(&hdr[j], 0, sizeof hdr[j]); hdr[j].msg_hdr.msg_iov = &iov[j]; hdr[j].msg_hdr.msg_iovlen = 1; }
            int r = sendmmsg(s, hdr, BATCH, 0);
            if (r > 0) sent += r;
        }
    }
    printf("%lu %f\n", sent, now() - t0);
    return 0;
}
"""


def mac1_key(public_key: bytes) -> bytes:
    return hashlib.blake2s(b"mac1----" + public_key).digest()


def build_initiations(public_key: bytes, n: int = N_MESSAGES, seed: int = 1) -> list[bytes]:
    """``n`` initiations with random bodies and a valid mac1 (mac2 zero)."""
    key = mac1_key(public_key)
    rnd = __import__("random").Random(seed)
    out = []
    for _ in range(n):
        body = struct.pack("<I", 1) + rnd.randbytes(INITIATION_SIZE - 4 - 32)
        out.append(body + hashlib.blake2s(body, key=key, digest_size=16).digest() + bytes(16))
    return out


def _python_sender(
    host: str,
    port: int,
    seconds: float,
    msgs: list[bytes],
    bind: str | None,
    result: multiprocessing.Queue[tuple[int, float]],
) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    if bind:
        s.bind((bind, 0))
    s.connect((host, port))
    send = s.send
    t0 = time.monotonic()
    end = t0 + seconds
    sent = 0
    while time.monotonic() < end:
        for m in msgs:
            try:
                send(m)
            except OSError:
                continue
        sent += len(msgs)
    result.put((sent, time.monotonic() - t0))


def _c_binary(workdir: Path) -> Path | None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    src = workdir / "flood.c"
    src.write_text(C_SOURCE)
    exe = workdir / "flood"
    proc = subprocess.run([cc, "-O2", "-o", str(exe), str(src)], capture_output=True, timeout=60)
    return exe if proc.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--to", required=True, help="IPv4:port of the gateway")
    ap.add_argument("--peer-key", required=True, help="the gateway's public key, base64")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--bind", default=None, help="source IPv4 address")
    ap.add_argument("--c", action="store_true", help="use a compiled sendmmsg sender if a C compiler exists")
    args = ap.parse_args(argv)
    host, _, port_s = args.to.rpartition(":")
    port = int(port_s)
    seconds = min(max(args.seconds, 0.1), 600.0)
    msgs = build_initiations(base64.b64decode(args.peer_key))
    with tempfile.TemporaryDirectory(prefix="wgsi-flood-") as tmp:
        exe = _c_binary(Path(tmp)) if args.c else None
        print("ready", flush=True)
        if exe is not None:
            msgfile = Path(tmp) / "msgs.bin"
            msgfile.write_bytes(b"".join(msgs))
            cmd = [str(exe), host, str(port), str(seconds), str(msgfile)] + ([args.bind] if args.bind else [])
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(args.procs)]
            results = []
            for p in procs:
                out, _ = p.communicate(timeout=seconds + 30)
                sent_s, secs_s = out.split()
                results.append((int(sent_s), float(secs_s)))
            sender = "c"
        else:
            q: multiprocessing.Queue[tuple[int, float]] = multiprocessing.Queue()
            workers = [
                multiprocessing.Process(target=_python_sender, args=(host, port, seconds, msgs, args.bind, q))
                for _ in range(args.procs)
            ]
            for w in workers:
                w.start()
            results = [q.get(timeout=seconds + 30) for _ in workers]
            for w in workers:
                w.join(10)
            sender = "python"
    sent = sum(r[0] for r in results)
    secs = max(r[1] for r in results)
    print(
        json.dumps(
            {"sent": sent, "seconds": round(secs, 3), "rate": round(sent / secs), "procs": args.procs, "sender": sender}
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
