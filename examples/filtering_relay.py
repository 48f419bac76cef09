#!/usr/bin/env python3
"""A filtering relay: logs each TCP connection's destination and bytes, refuses a deny list.

    DENY="203.0.113.0/24,198.51.100.7:25" python examples/filtering_relay.py -f gateway.key -K <key>

Takes wgslirpy's options (``-h`` lists them). ``$DENY`` is a comma list of ``IP[/LEN]`` or
``IP[/LEN]:PORT`` (IPv6 in brackets with a port); a connection to a denied destination is
refused with a RST (the peer sees "connection refused") and logged. Every other connection
is dialled from this host and relayed by this script (two greenlets copying through
``conn.recv``/``sendall``), and one line per connection logs where it went and the bytes
each way. (``--deny`` of wgslirpy does the refusing alone; this shows it done in a handler.)
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys

import gevent
from gevent import socket as gsocket

from wgslirpy import TcpConn, Unreachable
from wgslirpy.cli import main

log = logging.getLogger("wgslirpy.example.filter")


def _rule(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]:
    text = text.strip()
    port: int | None = None
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else None
    elif text.count(":") == 1:
        addr, _, p = text.partition(":")
        port = int(p)
    else:
        addr = text
    return ipaddress.ip_network(addr, strict=False), port


DENY = [_rule(r) for r in os.environ.get("DENY", "").split(",") if r.strip()]


def denied(dst: tuple[str, int]) -> bool:
    ip = ipaddress.ip_address(dst[0])
    return any(ip in net and (port is None or port == dst[1]) for net, port in DENY)


def _copy(read: socket.socket | TcpConn, write: socket.socket | TcpConn, counter: list[int]) -> None:
    try:
        while data := read.recv(65536):
            write.sendall(data)
            counter[0] += len(data)
        write.shutdown(socket.SHUT_WR)  # pass the half-close on
    except OSError:
        pass


def handle_tcp(conn: TcpConn, src: tuple[str, int], dst: tuple[str, int]) -> None:
    label = f"{src[0]}:{src[1]} -> {dst[0]}:{dst[1]}"
    if denied(dst):
        log.warning("%s: denied", label)
        conn.refuse()
        return
    try:
        host = gsocket.create_connection(dst, timeout=10)  # dial first: the SYN waits
    except ConnectionRefusedError:
        conn.refuse()
        return
    except OSError as e:
        log.info("%s: cannot connect: %s", label, e)
        conn.refuse(icmp=Unreachable.HOST)
        return
    host.settimeout(None)
    up, down = [0], [0]
    with host, conn:
        conn.accept()
        upstream = gevent.spawn(_copy, conn, host, up)
        _copy(host, conn, down)
        upstream.join()
    log.info("%s: closed, %d bytes up, %d bytes down", label, up[0], down[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], handle_tcp=handle_tcp))
