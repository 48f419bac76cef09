"""wgslirpy: a userspace WireGuard peer that relays its TCP and UDP through OS sockets.

Importing this package never monkey-patches anything, and does not import gevent until
:class:`Gateway` is first used; only the command-line entry points run the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import ConfigError, DropReason, WgSlirpError

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "DropReason", "Gateway", "WgSlirpError", "__version__"]

if TYPE_CHECKING:
    from .io.server import Gateway


def __getattr__(name: str) -> Any:
    if name == "Gateway":
        from .io.server import Gateway

        return Gateway
    raise AttributeError(f"module 'wgslirpy' has no attribute {name!r}")
