"""The peer's last authenticated endpoint, remembered across restarts (``--endpoint-file``).

A restarted gateway has no session, and a stock WireGuard client keeps sending on its old one
until KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (15 s) have passed without an answer. Knowing where the
peer was, the gateway starts the handshake itself at start-up (as if ``-p`` were given; a given
``-p`` wins), and the client is back within a round trip.

* :func:`read_endpoint_file`: the remembered ``(host, port)``, or None (no file yet, or a file
  that does not parse: a warning, never a start-up failure).
* :class:`EndpointFile`: :meth:`~EndpointFile.changed` notes a new authenticated endpoint;
  :meth:`~EndpointFile.poll` writes it when due, at most once per ``min_interval`` seconds (a
  roaming or spoof-probed peer cannot turn it into a disk-write loop), atomically (a temporary
  file in the same directory, fsync, rename), so a crash leaves the old or the new content.

File format: one line, ``IPv4:port`` or ``[IPv6]:port`` (IPv4-mapped IPv6 is written as IPv4).
"""

from __future__ import annotations

import logging

from ..atomicfile import write_atomic
from ..config import parse_socket_address
from ..constants import ENDPOINT_FILE_MIN_INTERVAL
from ..errors import ConfigError

log = logging.getLogger("wgslirpy")

Address = tuple[str, int]


def format_endpoint(addr: Address) -> str:
    host, port = addr
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def read_endpoint_file(path: str) -> Address | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(256).strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("--endpoint-file: cannot read %r: %s; not initiating to a remembered peer", path, e.strerror or e)
        return None
    try:
        host, port = parse_socket_address(text, "--endpoint-file")
    except ConfigError as e:
        log.warning("%s (in %r); ignored", e, path)
        return None
    if port == 0:
        return None
    return (str(host), port)


class EndpointFile:
    """Writes the peer's endpoint to ``path`` when it changes; see the module docstring."""

    def __init__(self, path: str, *, min_interval: float = ENDPOINT_FILE_MIN_INTERVAL) -> None:
        self.path = path
        self.min_interval = min_interval
        #: the endpoint waiting to be written (None: nothing to write)
        self._pending: Address | None = None
        #: what the file holds as far as we know (read or written by us)
        self._written: Address | None = None
        #: earliest time of the next write
        self._next_write = float("-inf")

    def remembered(self) -> Address | None:
        """The endpoint in the file now (read once at start)."""
        self._written = read_endpoint_file(self.path)
        return self._written

    def changed(self, addr: Address) -> None:
        self._pending = None if addr == self._written else addr

    def poll(self, *, now: float, force: bool = False) -> None:
        """Write the pending endpoint if one waits and the interval has passed (or ``force``)."""
        addr = self._pending
        if addr is None or (now < self._next_write and not force):
            return
        self._pending = None
        self._next_write = now + self.min_interval
        try:
            self._write(format_endpoint(addr) + "\n")
        except OSError as e:
            log.warning("--endpoint-file: cannot write %r: %s", self.path, e.strerror or e)
            return
        self._written = addr

    def _write(self, text: str) -> None:
        write_atomic(self.path, text, prefix=".endpoint-")
