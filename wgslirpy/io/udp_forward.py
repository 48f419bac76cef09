"""One UDP NAT binding: an OS UDP socket and the greenlet that reads its replies.

The binding's socket is unconnected, so replies from any remote address come back (full
cone) and go to the client with that remote as their source. ``IP_RECVERR`` makes the
kernel queue every ICMP error with the address it concerns (``MSG_ERRQUEUE``, a
``sock_extended_err`` in the control message, see ip(7)); each is relayed to the client
with the same type and code (port unreachable -> its connected socket sees ECONNREFUSED,
packet too big -> it learns the path MTU, ...). An ICMP error never closes the binding: the
client's next datagram leaves from the same port. The greenlet ends when the stack expires
the binding (``close``) or the socket fails for another reason.

Sends never block the caller (the tunnel's reader greenlet): they go out with
``MSG_DONTWAIT``, and a datagram that finds the socket buffer full is dropped and counted
(``udp_host_send_full``), as a router drops on a full queue.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket as _stdsocket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gevent import socket as gsocket

from ..errors import DropReason
from ..net.segments import IPAddress
from ..net.stack import HostIcmpError
from ..net.udp_nat import UdpBinding
from .host import FlowHost

if TYPE_CHECKING:
    from .conn import Address, UdpEndpoint

log = logging.getLogger("wgslirpy.udp")

#: biggest UDP payload there is (IPv6 jumbograms aside)
UDP_RECV_SIZE = 65535
#: per-binding socket buffers: big enough for a burst of large datagrams
UDP_SOCKET_BUFFER = 1024 * 1024

# Linux values; the socket module lacks some of them.
_IP_RECVERR = getattr(_stdsocket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(_stdsocket, "IPV6_RECVERR", 25)
_MSG_ERRQUEUE = getattr(_stdsocket, "MSG_ERRQUEUE", 0x2000)
_SO_EE_ORIGIN_LOCAL = 1
_SO_EE_ORIGIN_ICMP = 2
_SO_EE_ORIGIN_ICMP6 = 3
#: struct sock_extended_err (linux/errqueue.h), host byte order: ee_errno, ee_origin,
#: ee_type, ee_code, ee_pad, ee_info, ee_data; the offender's sockaddr follows it
_EXTENDED_ERR = struct.Struct("=IBBBBII")
#: errnos an ICMP error about an earlier datagram surfaces as on the socket (Linux's
#: icmp_err_convert / icmpv6_err_convert, plus ETIMEDOUT for time exceeded elsewhere):
#: the queued error is relayed and the binding kept
_ICMP_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED",
        "EHOSTUNREACH",
        "ENETUNREACH",
        "EMSGSIZE",
        "EACCES",
        "EPERM",
        "EPROTO",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EOPNOTSUPP",
        "ETIMEDOUT",
    )
    if hasattr(errno, name)
)
#: errors in a row without a datagram read before the socket counts as broken
_MAX_ERRORS_IN_A_ROW = 1000


@dataclass(frozen=True, slots=True)
class QueuedError:
    """One ``sock_extended_err`` read from a socket's error queue."""

    errno: int
    origin: int
    type: int
    code: int
    info: int
    #: the address of the node that sent the ICMP error (a router), if the kernel gave it
    offender: IPAddress | None


def parse_extended_err(ancdata: list[tuple[int, int, bytes]]) -> QueuedError | None:
    """The extended error in ``recvmsg``'s control messages (IP_RECVERR / IPV6_RECVERR
    level and type), or None when there is none or it is truncated."""
    for level, kind, data in ancdata:
        if (level, kind) not in ((_stdsocket.IPPROTO_IP, _IP_RECVERR), (_stdsocket.IPPROTO_IPV6, _IPV6_RECVERR)):
            continue
        if len(data) < _EXTENDED_ERR.size:
            continue
        ee_errno, origin, type_, code, _pad, info, _data = _EXTENDED_ERR.unpack_from(data)
        return QueuedError(ee_errno, origin, type_, code, info, _offender(data[_EXTENDED_ERR.size :]))
    return None


def _offender(sa: bytes) -> IPAddress | None:
    """SO_EE_OFFENDER: a sockaddr_in / sockaddr_in6 (family in host order), or None."""
    if len(sa) < 2:
        return None
    family = struct.unpack_from("=H", sa)[0]
    try:
        if family == _stdsocket.AF_INET and len(sa) >= 8:
            return ipaddress.IPv4Address(sa[4:8])
        if family == _stdsocket.AF_INET6 and len(sa) >= 24:
            addr = ipaddress.IPv6Address(sa[8:24])
            return addr.ipv4_mapped or addr
    except ValueError:
        return None
    return None


def host_icmp_error(err: QueuedError, remote: IPAddress) -> HostIcmpError | None:
    """What the client should hear about ``err`` (a datagram to ``remote``), or None.

    ICMP and ICMPv6 origins carry the type and code the router sent. A local EMSGSIZE
    (our own host's path MTU, with ee_info the MTU) becomes frag needed / packet too big.
    """
    if err.origin == _SO_EE_ORIGIN_ICMP:
        return HostIcmpError(False, err.type, err.code, err.info)
    if err.origin == _SO_EE_ORIGIN_ICMP6:
        return HostIcmpError(True, err.type, err.code, err.info)
    if err.origin == _SO_EE_ORIGIN_LOCAL and err.errno == errno.EMSGSIZE and err.info:
        return HostIcmpError(True, 2, 0, err.info) if remote.version == 6 else HostIcmpError(False, 3, 4, err.info)
    return None


#: parsed remote addresses by the string recvfrom gives; bounded, cleared when full
_REMOTE_CACHE: dict[str, IPAddress] = {}
_REMOTE_CACHE_MAX = 4096


def parse_remote(host: str) -> IPAddress | None:
    """The address object for a host string from ``recvfrom`` (scope dropped, IPv4-mapped
    IPv6 unmapped). Memoised: parsing costs several µs and replies come from few remotes."""
    addr = _REMOTE_CACHE.get(host)
    if addr is not None:
        return addr
    try:
        parsed = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if len(_REMOTE_CACHE) >= _REMOTE_CACHE_MAX:
        _REMOTE_CACHE.clear()
    _REMOTE_CACHE[host] = parsed
    return parsed


class UdpBindingRelay:
    """The shell side of one :class:`~wgslirpy.net.udp_nat.UdpBinding`."""

    def __init__(self, gateway: FlowHost, binding: UdpBinding) -> None:
        self.gw = gateway
        self.binding = binding
        self.sock: gsocket.socket | None = None
        self.family = _stdsocket.AF_INET6 if binding.client_addr.version == 6 else _stdsocket.AF_INET
        #: payload length of the latest datagram sent to each remote, to quote it in errors
        self._last_len: dict[tuple[str, int], int] = {}
        #: non-blocking sendto(data, flags, addr) of the socket's stdlib socket
        self._sendto: Callable[..., int] = _stdsocket.socket.sendto
        #: non-blocking recvmsg of the same stdlib socket (reads the error queue)
        self._recvmsg: Callable[..., tuple[bytes, list[tuple[int, int, bytes]], int, Any]] = _stdsocket.socket.recvmsg

    def open(self) -> bool:
        try:
            sock = gsocket.socket(self.family, _stdsocket.SOCK_DGRAM)
        except OSError as e:
            log.warning("cannot open a UDP socket for %s: %s", self.binding.client_addr, e)
            self.gw.stack.udp_binding_failed(self.binding.id)
            return False
        try:
            if self.family == _stdsocket.AF_INET6:
                sock.setsockopt(_stdsocket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
                sock.bind(("::", 0))
            else:
                sock.setsockopt(_stdsocket.IPPROTO_IP, _IP_RECVERR, 1)
                sock.bind(("0.0.0.0", 0))
            for opt in (_stdsocket.SO_RCVBUF, _stdsocket.SO_SNDBUF):
                sock.setsockopt(_stdsocket.SOL_SOCKET, opt, UDP_SOCKET_BUFFER)
        except OSError as e:
            log.warning("cannot set up a UDP socket: %s", e)
            sock.close()
            self.gw.stack.udp_binding_failed(self.binding.id)
            return False
        self.sock = sock
        # gevent's sendto waits for room on a full buffer; the stdlib socket underneath
        # (gevent keeps it non-blocking) fails at once instead, which is what we want.
        raw: Any = getattr(sock, "_sock", sock)
        self._sendto = raw.sendto
        self._recvmsg = raw.recvmsg
        return True

    def send(self, dst: IPAddress, dport: int, payload: bytes) -> None:
        sock = self.sock
        if sock is None:
            return
        addr = (str(dst), dport)
        self._last_len[addr] = len(payload)
        if len(self._last_len) > 256:
            self._last_len.pop(next(iter(self._last_len)))
        for attempt in (1, 2):
            try:
                self._sendto(payload, _stdsocket.MSG_DONTWAIT, addr)
                return
            except (BlockingIOError, InterruptedError):
                self.gw.stack.drops.add(DropReason.UDP_HOST_SEND_FULL)
                return
            except OSError as e:
                if e.errno in _ICMP_ERRNOS:
                    # An ICMP error about an earlier datagram surfaced here: relay it.
                    self._drain_errors()
                    if attempt == 1 and e.errno != errno.EMSGSIZE:
                        continue  # retry once; a too-big datagram stays too big
                log.debug("UDP send to %s failed: %s", addr, e)
                self.gw.stack.drops.add(DropReason.UDP_HOST_SEND_FAILED)
                return

    def run(self) -> None:
        stack, gw = self.gw.stack, self.gw
        bid = self.binding.id
        errors_in_a_row = 0
        while True:
            sock = self.sock
            if sock is None:
                return
            try:
                data, addr = sock.recvfrom(UDP_RECV_SIZE)
            except OSError as e:
                if self.sock is None:
                    return
                errors_in_a_row += 1
                if e.errno in _ICMP_ERRNOS and errors_in_a_row < _MAX_ERRORS_IN_A_ROW:
                    # An ICMP error about an earlier datagram: relay it, keep the binding.
                    self._drain_errors()
                    continue
                log.debug("UDP binding %d: socket failed: %s", bid, e)
                stack.udp_binding_failed(bid)
                self.close()
                gw.flush()
                return
            errors_in_a_row = 0
            remote = parse_remote(addr[0])
            if remote is None:
                continue
            stack.udp_reply(bid, remote, addr[1], data, now=gw.now())
            gw.flush()

    def _drain_errors(self) -> None:
        """Relay the queued ICMP errors to the client, each with its own type and code."""
        if self.sock is None:
            return
        for _ in range(64):
            try:
                # The stdlib socket: gevent's recvmsg would wait for readability on an
                # empty error queue (and spin, since queued data keeps it readable).
                _data, anc, _flags, addr = self._recvmsg(UDP_RECV_SIZE, 1024, _MSG_ERRQUEUE | _stdsocket.MSG_DONTWAIT)
            except OSError:
                break  # the queue is empty (EAGAIN) or the socket is gone
            if not addr:
                continue
            remote = parse_remote(addr[0])
            if remote is None:
                continue
            queued = parse_extended_err(anc)
            error = host_icmp_error(queued, remote) if queued is not None else None
            if queued is None or error is None:
                continue  # not an ICMP error (e.g. a local one we have nothing to say about)
            length = self._last_len.get((addr[0], addr[1]), 0)
            self.gw.stack.udp_icmp_error(
                self.binding.id, remote, addr[1], length, error, offender=queued.offender, now=self.gw.now()
            )
        self.gw.flush()

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class RelayHost(FlowHost, Protocol):
    """A :class:`~wgslirpy.io.host.FlowHost` that keeps the relays (``forward_udp`` adds one)."""

    @property
    def udp_relays(self) -> dict[int, UdpBindingRelay]: ...


def forward_udp(endpoint: UdpEndpoint, src: Address, dst: Address) -> None:
    """The default ``handle_udp``: relay the binding through an OS UDP socket (full cone).

    A handler may call it to hand a binding it does not serve over to forwarding (queued
    datagrams go out first); it returns when the binding expires. The gateway uses the relay
    directly when no ``handle_udp`` is given, so the default costs nothing extra."""
    gw = endpoint._gw
    relay = UdpBindingRelay(gw, endpoint._binding)
    endpoint._detached = True
    if not relay.open():
        return
    gw.udp_relays[endpoint._id] = relay
    while endpoint._queue:
        payload, (host, port) = endpoint._queue.popleft()
        remote = parse_remote(host)
        if remote is not None:
            relay.send(remote, port, payload)
    relay.run()
