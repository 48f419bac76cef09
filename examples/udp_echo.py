#!/usr/bin/env python3
"""A UDP echo service answered in process at one tunnel address; other UDP is forwarded.

    python examples/udp_echo.py -f gateway.key -K <client public key> [wgslirpy options]

Takes wgslirpy's options (``-h`` lists them). Datagrams the peer sends to ``$ECHO_ADDRESS``
(default ``10.0.2.7:7``) come back prefixed with ``echo: ``; a UDP binding (a source port
of the peer) whose first datagram goes elsewhere is forwarded as by ``wgslirpy``.
"""

from __future__ import annotations

import os
import sys

from wgslirpy import UdpEndpoint, forward_udp
from wgslirpy.cli import main

host, _, port = os.environ.get("ECHO_ADDRESS", "10.0.2.7:7").rpartition(":")
SERVED = (host.strip("[]"), int(port))


def handle_udp(endpoint: UdpEndpoint, src: tuple[str, int], dst: tuple[str, int]) -> None:
    if dst != SERVED:
        forward_udp(endpoint, src, dst)
        return
    while True:
        data, to = endpoint.recvfrom()
        if not data:
            return  # the binding expired
        if to == SERVED:
            endpoint.sendto(b"echo: " + data, to)
        # this binding also sent elsewhere: dropped (a full-cone binding the echo owns)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], handle_udp=handle_udp))
