"""Batched UDP I/O on the WireGuard socket: UDP GSO on send, UDP GRO on receive (Linux).

Contract:

* :class:`BatchSender` sends a list of ``(datagram, address)`` pairs in order, never blocking.
  With UDP generic segmentation offload (``UDP_SEGMENT``, Linux >= 4.18, ``udp(7)``) a run of
  consecutive datagrams to one address, all of one size except perhaps a shorter last one, at
  most :data:`GSO_MAX_SEGMENTS` of them and :data:`GSO_MAX_BYTES` in all, leaves in one
  ``sendmsg`` whose iovec points at the datagrams themselves (no concatenation) and whose
  ``UDP_SEGMENT`` control message tells the kernel where to cut; the receiver sees the same
  datagrams as one ``sendto`` each would have produced. Without GSO it is one ``sendto`` per
  datagram. :meth:`BatchSender.send` returns the index of the first datagram it could not
  send because the socket buffer is full (``len(out)`` when everything left); the caller
  decides how long to wait and what to drop. Any other error of a datagram (or of a run) is
  logged at debug level and skips it, as a lost datagram on the wire would be.
* :class:`BatchReceiver` reads one ``recv`` worth of datagrams, all from one address. With
  UDP generic receive offload (``UDP_GRO``, Linux >= 5.0) the kernel may hand over several
  datagrams of one flow coalesced in one buffer, with their size in a ``UDP_GRO`` control
  message; they are split back into exactly the datagrams the peer sent, in order. Without
  GRO it is one ``recvfrom`` per datagram.
* Support is detected once per socket (:func:`gso_supported`, and enabling ``UDP_GRO`` on the
  socket); a GSO send that fails with EIO (no checksum offload on the route's device) or,
  before any GSO send succeeded, EINVAL turns GSO off for good: that run is resent datagram by
  datagram and one line is logged at info level. A later EINVAL (segments of a size the path
  cannot carry in one piece, e.g. larger than its MTU) resends that run unbatched, and that
  size goes unbatched from then on.
* Tests force the per-datagram paths with ``gso=False`` / ``gro=False``; the environment
  variable ``WGSLIRPY_UDP_BATCH=0`` does the same for a whole process (:func:`batching_allowed`,
  used by the gateway and the benchmark's A/B runs).

Importing this module touches no socket. It never blocks: the sockets must be non-blocking.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("wgslirpy")

#: ``udp(7)`` socket options at level SOL_UDP (``linux/udp.h``); Python names them only on
#: some versions, so the numbers are spelled out.
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
#: the kernel refuses a GSO send of more segments (``UDP_MAX_SEGMENTS``)
GSO_MAX_SEGMENTS = 64
#: largest UDP payload of one GSO send: 65535 minus a 20-byte IPv4 and an 8-byte UDP header
GSO_MAX_BYTES = 65535 - 20 - 8
#: room for one ``UDP_GRO`` control message (an ``int``)
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
_U16 = struct.Struct("=H")
_INT = struct.Struct("=i")

Address = tuple[Any, ...]
Datagram = tuple[bytes, Address]


def batching_allowed() -> bool:
    """False when the environment says ``WGSLIRPY_UDP_BATCH=0`` (force the per-datagram paths)."""
    return os.environ.get("WGSLIRPY_UDP_BATCH", "1") != "0"


def gso_supported(sock: Any) -> bool:
    """Whether the kernel knows ``UDP_SEGMENT`` on this UDP socket (asked without changing it)."""
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except (OSError, AttributeError):
        return False
    return hasattr(sock, "sendmsg")


def enable_gro(sock: Any) -> bool:
    """Turn ``UDP_GRO`` on for ``sock``; False (and nothing changed) where the kernel lacks it."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except (OSError, AttributeError):
        return False
    return hasattr(sock, "recvmsg")


def gso_runs(out: Sequence[Datagram], start: int = 0) -> list[tuple[int, int]]:
    """Split ``out[start:]`` into ``[(i, j), ...]``: the runs one GSO send each can carry.

    A run is consecutive datagrams to one address, of one size but for a shorter last one, at
    most GSO_MAX_SEGMENTS long and GSO_MAX_BYTES in all. Pure; :meth:`BatchSender.send` uses
    the same rule one run at a time.
    """
    runs = []
    i, n = start, len(out)
    while i < n:
        j = _run_end(out, i, n)
        runs.append((i, j))
        i = j
    return runs


def _run_end(out: Sequence[Datagram], i: int, n: int) -> int:
    """End (exclusive) of the GSO run that starts at ``out[i]``."""
    data, addr = out[i]
    size = len(data)
    total = size
    limit = min(n, i + GSO_MAX_SEGMENTS)
    j = i + 1
    while j < limit:
        d, a = out[j]
        ln = len(d)
        if ln > size or a != addr or total + ln > GSO_MAX_BYTES:
            break
        total += ln
        j += 1
        if ln < size:  # a shorter datagram ends the run
            break
    return j


class BatchSender:
    """Sends datagrams through one non-blocking UDP socket, batched with GSO where it can.

    ``mapped``: the socket is AF_INET6 dual-stack, so an IPv4 address is sent to as
    ``::ffff:a.b.c.d``.
    """

    def __init__(self, sock: Any, *, gso: bool = True, mapped: bool = False) -> None:
        self.sock = sock
        #: GSO in use; only ever goes from True to False (support lost: EIO, early EINVAL)
        self.gso = gso and gso_supported(sock)
        self._mapped = mapped
        #: the last address mapped and its ``::ffff:`` form (one peer: built once, not per send)
        self._last_addr: Address | None = None
        self._last_mapped: Address = ()
        #: a GSO send has succeeded on this socket (a later EINVAL is about one run only)
        self._gso_proven = False
        #: segment sizes the kernel refused (EINVAL) after GSO worked: sent unbatched from then on
        self._refused: set[int] = set()
        #: control messages by segment size (a flow uses one or two sizes)
        self._cmsgs: dict[int, list[tuple[int, int, bytes]]] = {}
        #: counters for stats and tests: GSO sends, datagrams they carried
        self.gso_sends = 0
        self.gso_datagrams = 0

    def send(self, out: Sequence[Datagram], start: int = 0) -> int:
        """Send ``out[start:]`` in order; the index of the first datagram left unsent because
        the socket would block (``len(out)`` if none). Never raises for a full socket."""
        n = len(out)
        i = start
        sendto = self.sock.sendto
        mapped = self._mapped
        plain_until = 0  # out[:plain_until] goes datagram by datagram (a refused run)
        while i < n:
            if self.gso and i + 1 < n and i >= plain_until:
                j = _run_end(out, i, n)
                if j - i > 1 and len(out[i][0]) not in self._refused:
                    try:
                        if not self._send_run(out, i, j):
                            return i  # would block: nothing of the run left
                    except _GsoOff:
                        plain_until = j  # resend this run datagram by datagram
                        continue
                    i = j
                    continue
            data, addr = out[i]
            if mapped:
                addr = self._map(addr)
            try:
                sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return i
            except OSError as e:
                log.debug("sendto %s failed: %s", addr, e)
            i += 1
        return n

    def _map(self, addr: Address) -> Address:
        """``addr`` as the dual-stack socket wants it: an IPv4 peer as ``::ffff:a.b.c.d``."""
        if addr == self._last_addr:
            return self._last_mapped
        mapped = addr if ":" in addr[0] else ("::ffff:" + addr[0], addr[1])
        self._last_addr, self._last_mapped = addr, mapped
        return mapped

    def _send_run(self, out: Sequence[Datagram], i: int, j: int) -> bool:
        """One GSO send of ``out[i:j]`` (j - i >= 2): True when sent (or failed and skipped),
        False when the socket would block. Raises _GsoOff when the run must go unbatched."""
        run = out[i:j]
        size = len(run[0][0])
        addr = run[0][1]
        if self._mapped:
            addr = self._map(addr)
        cmsg = self._cmsgs.get(size)
        if cmsg is None:
            cmsg = self._cmsgs[size] = [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))]
        try:
            self.sock.sendmsg([d for d, _ in run], cmsg, 0, addr)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            if e.errno == errno.EIO or (e.errno == errno.EINVAL and not self._gso_proven):
                self.gso = False
                log.info("UDP GSO unavailable on the WireGuard socket (%s): one sendto per datagram", e)
                raise _GsoOff from None
            if e.errno == errno.EINVAL:
                # This size only (e.g. a segment larger than the path's MTU, which only IP
                # fragmentation can carry): never tried again in one piece.
                self._refused.add(size)
                log.debug("UDP GSO refused %d-byte segments (%s): they go one sendto each", size, e)
                raise _GsoOff from None
            log.debug("sendmsg of %d datagrams to %s failed: %s", j - i, addr, e)
            return True
        self._gso_proven = True
        self.gso_sends += 1
        self.gso_datagrams += j - i
        return True


class _GsoOff(Exception):
    """A GSO send of a run failed in a way that the per-datagram path can still serve."""


class BatchReceiver:
    """Reads datagrams from one non-blocking UDP socket, with GRO where it can.

    ``size``: the largest read (a datagram, or a coalesced GRO buffer, never exceeds 65535).
    """

    def __init__(self, sock: Any, *, gro: bool = True, size: int = 65535) -> None:
        self.sock = sock
        #: GRO is on for this socket: every read must go through recvmsg and be split
        self.gro = gro and enable_gro(sock)
        self._size = size
        #: counters for stats and tests: reads that carried coalesced datagrams, and those datagrams
        self.gro_reads = 0
        self.gro_datagrams = 0

    def recv(self) -> tuple[list[bytes], Address]:
        """The datagrams of one read and their sender; raises what ``recvfrom`` raises
        (BlockingIOError when nothing is waiting, OSError for an ICMP error)."""
        if not self.gro:
            data, addr = self.sock.recvfrom(self._size)
            return [data], addr
        # recvmsg, not recvmsg_into a reused buffer: one bytes object is cheaper than a
        # memoryview copy out for the common single datagram (measured), and slicing bytes
        # for the coalesced case costs the same.
        data, ancdata, _flags, addr = self.sock.recvmsg(self._size, _GRO_CMSG_SPACE)
        if not ancdata:
            return [data], addr
        seg = 0
        for level, kind, cdata in ancdata:
            if level == SOL_UDP and kind == UDP_GRO and len(cdata) >= _INT.size:
                seg = _INT.unpack_from(cdata)[0]
        n = len(data)
        if seg <= 0 or seg >= n:
            return [data], addr
        self.gro_reads += 1
        parts = [data[o : o + seg] for o in range(0, n, seg)]
        self.gro_datagrams += len(parts)
        return parts, addr
