"""The UAPI control socket: ``wg show`` / ``wg set`` (and ``wgslirpy show``) talk to a running gateway.

A gevent ``StreamServer`` on a Unix socket (mode 0600, in a directory we create 0700 if it
is missing, or ``/var/run/wireguard`` which ``wg`` searches) speaking the protocol of
:mod:`wgslirpy.uapi`. Reads the gateway's state; a ``set`` changes only the peer's
endpoint and persistent keepalive interval, the two things ``wg set`` changes at run time
in normal use. Bounded: at most ``max_clients`` connections, each closed after
``idle_timeout`` seconds without a request or after a bad one.

A socket path that exists is taken over only if nothing answers on it (a stale socket
from a killed run); a live one is left alone (OSError EADDRINUSE).
"""

from __future__ import annotations

import errno
import logging
import os
import socket as _stdsocket
import stat
import time
from typing import Any

import gevent.pool
from gevent import socket as gsocket
from gevent.server import StreamServer

from .. import uapi

log = logging.getLogger("wgslirpy")


class UapiServer:
    """Serves :mod:`wgslirpy.uapi` for one :class:`~wgslirpy.io.server.Gateway` at ``path``."""

    max_clients: int = 8
    idle_timeout: float = 10.0

    def __init__(self, gateway: Any, path: str) -> None:
        self.gateway = gateway
        self.path = path
        self._server: StreamServer | None = None
        #: (device, inode) of the socket file we created: unlink only that one
        self._ident: tuple[int, int] | None = None
        #: wall-clock time of the latest handshake seen (kept once keys are erased)
        self._last_handshake = 0.0

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        parent = os.path.dirname(self.path) or "."
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700 if not parent.startswith("/var/run") else 0o755, exist_ok=True)
        sock = gsocket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
        try:
            self._take_over_stale()
            old_umask = os.umask(0o077)
            try:
                sock.bind(self.path)
            finally:
                os.umask(old_umask)
            st = os.stat(self.path)
            self._ident = (st.st_dev, st.st_ino)
            sock.listen(self.max_clients)
        except BaseException:
            sock.close()
            raise
        self._server = StreamServer(sock, self._handle, spawn=gevent.pool.Pool(self.max_clients))
        self._server.start()

    def _take_over_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"{self.path} exists and is not a socket")
        probe = _stdsocket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)  # nobody listens: a stale socket
            return
        finally:
            probe.close()
        raise OSError(errno.EADDRINUSE, "another process serves this socket")

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(timeout=1.0)
        if self._ident is not None:
            try:
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._ident:
                    os.unlink(self.path)
            except OSError:
                pass
            self._ident = None

    # --- one connection ----------------------------------------------------------------

    def _handle(self, conn: Any, _addr: Any) -> None:
        reader = uapi.RequestReader()
        conn.settimeout(self.idle_timeout)
        try:
            while True:
                try:
                    data = conn.recv(4096)
                except (OSError, gsocket.timeout):
                    return
                if not data:
                    return
                try:
                    requests = reader.feed(data)
                except uapi.UapiError as e:
                    conn.sendall(uapi.format_errno(e.code))
                    return
                for req in requests:
                    conn.sendall(self.answer(req))
        except OSError:
            return
        finally:
            conn.close()

    def answer(self, req: uapi.Request) -> bytes:
        """The bytes answering one request (get: the state; set: errno after applying)."""
        if req.op == "get":
            return uapi.format_get(self.info())
        gw = self.gateway
        info = self.info()
        try:
            changes = uapi.parse_set(
                req,
                private_key=gw.config.private_key,
                listen_port=info.listen_port,
                peer_public_key=gw.config.peer_public_key,
                allowed_ips=info.peer.allowed_ips,
            )
            self.apply(changes)
        except uapi.UapiError as e:
            log.warning("UAPI set refused: %s", e)
            return uapi.format_errno(e.code)
        return uapi.format_errno(0)

    # --- the gateway's state ------------------------------------------------------------

    def info(self) -> uapi.DeviceInfo:
        gw = self.gateway
        ep = gw.endpoint
        created = [k.created for k in ep.keypairs.all()]
        if created:
            # keypair times are monotonic; wg wants wall-clock time
            self._last_handshake = max(self._last_handshake, time.time() - (gw.now() - max(created)))
        keepalive = ep.timers.persistent_keepalive_interval or 0
        peer = uapi.PeerInfo(
            public_key=gw.config.peer_public_key,
            preshared_key=gw.config.preshared_key,
            endpoint=ep.endpoint,
            last_handshake=self._last_handshake,
            rx_bytes=ep.stats.rx_bytes,
            tx_bytes=ep.stats.tx_bytes,
            persistent_keepalive=int(keepalive),
            allowed_ips=tuple(str(n) for n in ep.peer.allowed_ips),
        )
        return uapi.DeviceInfo(gw.config.private_key, gw.server_port, peer)

    def apply(self, changes: uapi.SetChanges) -> None:
        gw = self.gateway
        ep = gw.endpoint
        if changes.endpoint is not None:
            if ":" in changes.endpoint[0] and not gw._ipv6_socket:
                raise uapi.UapiError(errno.EAFNOSUPPORT, "an IPv6 endpoint needs an IPv6 bind (-b [::]:PORT)")
            log.info("UAPI: the peer's endpoint set to %s", uapi.format_endpoint(changes.endpoint))
            ep.endpoint = changes.endpoint
        if changes.persistent_keepalive is not None:
            n = changes.persistent_keepalive
            timers = ep.timers
            timers.persistent_keepalive_interval = n or None
            # wireguard-go sends one at once when keepalives are turned on for a known peer
            timers.persistent_keepalive = gw.now() if n and ep.endpoint is not None else None
            log.info("UAPI: persistent keepalive %s", f"every {n} s" if n else "off")
