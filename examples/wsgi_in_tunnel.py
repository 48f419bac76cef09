#!/usr/bin/env python3
"""A gevent WSGI app served at an address inside the tunnel; every other flow is forwarded.

    python examples/wsgi_in_tunnel.py -f gateway.key -K <client public key> [wgslirpy options]

Takes wgslirpy's options (``-h`` lists them) and runs the gateway as ``wgslirpy`` does
(SIGTERM/Ctrl-C stop it). The peer reaches the app at ``$WSGI_ADDRESS`` (default
``10.0.2.80:80``, inside the zero-config client's 10.0.2.0/24); nothing listens on a socket
of this host for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from gevent.pywsgi import WSGIServer

from wgslirpy import TcpConn, forward_tcp
from wgslirpy.cli import main

host, _, port = os.environ.get("WSGI_ADDRESS", "10.0.2.80:80").rpartition(":")
SERVED = (host.strip("[]"), int(port))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = f"hello {environ['REMOTE_ADDR']}, this is {environ['PATH_INFO']} inside the tunnel\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# Never started, so it never binds SERVED on this host: only its handle(socket, address)
# is used, once per flow the peer opens to SERVED.
wsgi = WSGIServer(SERVED, app, log=None)


def handle_tcp(conn: TcpConn, src: tuple[str, int], dst: tuple[str, int]) -> None:
    if dst == SERVED:
        wsgi.handle(conn, src)  # keep-alive, pipelining, chunked bodies: pywsgi's own
    else:
        forward_tcp(conn, src, dst)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], handle_tcp=handle_tcp))
