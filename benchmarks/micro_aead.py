"""Micro-benchmark of the WireGuard transport hot path (ChaCha20-Poly1305 on 1420-byte packets).

Usage: ``python benchmarks/micro_aead.py [--size N] [--number N] [--repeat N]``

Prints microseconds per operation (best of ``--repeat`` runs, so other load on the machine
inflates the numbers as little as possible):

* ``aead``: PyNaCl's public ``nacl.bindings`` functions (the old transport path) against
  ``wg.crypto``'s selected backend (``crypto.BACKEND``: OpenSSL when ``cryptography`` is
  importable, else the cffi ``lib`` with reused buffers);
* ``Keypair.encrypt``: a whole transport message (header, padding, AEAD);
* the endpoint: ``send_ip`` (with the outbox drained) and ``receive_datagram`` per packet,
  between two in-memory WireGuardEndpoints with a confirmed session.

With ``--backend openssl|cffi|bindings`` the per-packet figures use that backend of
crypto.py (OpenSSL through ``cryptography``, libsodium through PyNaCl's cffi ``lib``, or
PyNaCl's public bindings), so runs on one tree compare the backends end to end. No network and no files are touched.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt as public_decrypt,
)
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_encrypt as public_encrypt,
)

from wgslirpy.wg import crypto
from wgslirpy.wg.endpoint import PeerConfig, WireGuardEndpoint
from wgslirpy.wg.session import Keypair

A_ADDR = ("192.0.2.1", 40000)
B_ADDR = ("198.51.100.2", 51820)


def best_us(stmt: Callable[[], object], number: int, repeat: int) -> float:
    """Microseconds per call: the best of ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number * 1e6


def ipv4_packet(size: int) -> bytes:
    payload = bytes(size - 20)
    return (
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 6, 0, bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]))
        + payload
    )


def session_pair() -> tuple[WireGuardEndpoint, WireGuardEndpoint]:
    """Two endpoints with a confirmed session (a initiated; b confirmed by a's keepalive)."""
    a_priv = crypto.clamp(bytes(range(1, 33)))
    b_priv = crypto.clamp(bytes(range(101, 133)))
    wall = lambda: 1_700_000_000.0  # noqa: E731
    a = WireGuardEndpoint(a_priv, PeerConfig(crypto.public_key(b_priv), endpoint=B_ADDR), now=0.0, wall_clock=wall)
    b = WireGuardEndpoint(b_priv, PeerConfig(crypto.public_key(a_priv)), now=0.0, wall_clock=wall)
    a.initiate_handshake(now=0.0)
    for _ in range(4):
        for data, _addr in a.datagrams_to_send():
            b.receive_datagram(data, A_ADDR, now=0.0)
        for data, _addr in b.datagrams_to_send():
            a.receive_datagram(data, B_ADDR, now=0.0)
    assert a.has_session and b.has_session
    return a, b


def endpoint_us(size: int, number: int, repeat: int) -> tuple[float, float]:
    """(send_ip, receive_datagram) microseconds per packet of ``size`` bytes."""
    a, b = session_pair()
    pkt = ipv4_packet(size)
    send_best = recv_best = float("inf")
    for _ in range(repeat):
        t0 = timeit.default_timer()
        for _i in range(number):
            a.send_ip(pkt, now=1.0)
        out = a.datagrams_to_send()
        t1 = timeit.default_timer()
        for data, _addr in out:
            b.receive_datagram(data, A_ADDR, now=1.0)
        t2 = timeit.default_timer()
        assert len(out) == number and b.stats.rx_packets >= number
        send_best = min(send_best, (t1 - t0) / number * 1e6)
        recv_best = min(recv_best, (t2 - t1) / number * 1e6)
    return send_best, recv_best


#: crypto.py's AEAD backends by name: the prefix of their functions (see wg/crypto.py).
BACKEND_PREFIXES = {"openssl": "_openssl_", "cffi": "_fast_", "bindings": "_portable_"}


def use_backend(name: str) -> None:
    """Rebind crypto.py's AEAD names to backend ``name`` (what the tests monkeypatch)."""
    prefix = BACKEND_PREFIXES[name]
    for attr in crypto.AEAD_NAMES:
        if not hasattr(crypto, prefix + attr):
            raise SystemExit(f"crypto.py has no {name} backend here (is its library installed?)")
        setattr(crypto, attr, getattr(crypto, prefix + attr))
    crypto.BACKEND = name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1420, help="inner packet size (default 1420)")
    ap.add_argument("--number", type=int, default=20000, help="calls per timed run")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs; the best is shown")
    ap.add_argument(
        "--backend",
        choices=("selected", *BACKEND_PREFIXES),
        default="selected",
        help="crypto.py backend for the per-packet figures",
    )
    args = ap.parse_args()
    n, r, size = args.number, args.repeat, args.size
    key, nonce, pt = os.urandom(32), crypto.aead_nonce(7), os.urandom(size)
    ct = public_encrypt(pt, b"", nonce, key)

    print(f"{size}-byte plaintext; best of {r} x {n} calls; µs per operation")
    print(f"crypto.py backend: {getattr(crypto, 'BACKEND', 'bindings (old crypto.py)')}")
    old_enc = best_us(lambda: public_encrypt(pt, b"", nonce, key), n, r)
    old_dec = best_us(lambda: public_decrypt(ct, b"", nonce, key), n, r)
    new_enc = best_us(lambda: crypto.aead_encrypt(key, 7, pt), n, r)
    new_dec = best_us(lambda: crypto.aead_decrypt(key, 7, ct), n, r)
    print(f"{'':34}{'old (nacl.bindings)':>20}{'crypto.py':>12}{'speed-up':>10}")
    print(f"{'AEAD encrypt':34}{old_enc:20.2f}{new_enc:12.2f}{old_enc / new_enc:9.2f}x")
    print(f"{'AEAD decrypt':34}{old_dec:20.2f}{new_dec:12.2f}{old_dec / new_dec:9.2f}x")

    if args.backend != "selected":
        use_backend(args.backend)
        print(f"per-packet figures below use crypto.py's {args.backend} backend")
    kp = Keypair(key, key, created=0.0, local_index=1, remote_index=2, is_initiator=True)
    inner = ipv4_packet(size)
    per_packet = best_us(lambda: kp.encrypt(inner, 1420), n, r)
    print(f"{'per packet:':34}{'':20}{'µs':>12}")
    print(f"{'  Keypair.encrypt (whole message)':54}{per_packet:12.2f}")
    send, recv = endpoint_us(size, n, r)
    print(f"{'  endpoint send_ip':54}{send:12.2f}")
    print(f"{'  endpoint receive_datagram':54}{recv:12.2f}")


if __name__ == "__main__":
    main()
