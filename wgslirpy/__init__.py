"""wgslirpy: a userspace WireGuard peer that relays its TCP and UDP through OS sockets.

Importing this package never monkey-patches anything; only the command-line entry
points (``wgslirpy``, ``scripts/wgslirpy.py``) call ``gevent.monkey``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
