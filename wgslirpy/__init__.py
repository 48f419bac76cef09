"""wgslirpy: a userspace WireGuard peer that relays its TCP and UDP through OS sockets.

Use as a library (gevent)::

    from wgslirpy import Config, Gateway, forward_tcp

    def handle_tcp(conn, src, dst):        # the flow's own greenlet, at the peer's SYN
        if dst == ("10.0.2.80", 80):
            return serve_in_process(conn)  # conn: a socket-like TcpConn
        forward_tcp(conn, src, dst)        # dial dst from this host and relay

    gw = Gateway(config, handle_tcp=handle_tcp)
    gw.serve_forever()

Importing this package never monkey-patches anything, installs no signal handlers and does
not import gevent until :class:`Gateway` (or another name of :mod:`wgslirpy.io`) is first
used. The library logs through :mod:`logging` (logger ``wgslirpy``) and configures nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import ConfigError, DropReason, WgSlirpError
from .net.segments import Unreachable

__version__ = "0.1.0"

__all__ = [
    "Address",
    "Config",
    "ConfigError",
    "DropReason",
    "Gateway",
    "TcpConn",
    "TcpHandler",
    "UdpEndpoint",
    "UdpHandler",
    "Unreachable",
    "WgSlirpError",
    "__version__",
    "forward_tcp",
    "forward_udp",
]

if TYPE_CHECKING:
    from .io.conn import Address, TcpConn, TcpHandler, UdpEndpoint, UdpHandler
    from .io.server import Gateway
    from .io.tcp_forward import forward_tcp
    from .io.udp_forward import forward_udp

#: names imported lazily (they import gevent), by the module that defines them
_LAZY = {
    "Gateway": "server",
    "forward_tcp": "tcp_forward",
    "forward_udp": "udp_forward",
    "Address": "conn",
    "TcpConn": "conn",
    "TcpHandler": "conn",
    "UdpEndpoint": "conn",
    "UdpHandler": "conn",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wgslirpy' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".io.{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
