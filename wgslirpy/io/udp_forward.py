"""One UDP NAT binding: an OS UDP socket and the greenlet that reads its replies.

The binding's socket is unconnected, so replies from any remote address come back (full
cone) and go to the client with that remote as their source. ``IP_RECVERR`` makes the
kernel queue ICMP errors with the address they concern; a port unreachable becomes an
ICMP port unreachable to the client (so its connected socket sees ECONNREFUSED).
The greenlet ends when the stack expires the binding (``close``) or the socket fails.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket as _stdsocket
from typing import TYPE_CHECKING

from gevent import socket as gsocket

from ..net.segments import IPAddress
from ..net.udp_nat import UdpBinding

if TYPE_CHECKING:
    from .server import Gateway

log = logging.getLogger("wgslirpy.udp")

#: biggest UDP payload there is (IPv6 jumbograms aside)
UDP_RECV_SIZE = 65535
#: per-binding socket buffers: big enough for a burst of large datagrams
UDP_SOCKET_BUFFER = 1024 * 1024

# Linux values; the socket module lacks some of them.
_IP_RECVERR = getattr(_stdsocket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(_stdsocket, "IPV6_RECVERR", 25)
_MSG_ERRQUEUE = getattr(_stdsocket, "MSG_ERRQUEUE", 0x2000)
_SO_EE_ORIGIN_ICMP = 2
_SO_EE_ORIGIN_ICMP6 = 3


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

    def __init__(self, gateway: "Gateway", binding: UdpBinding) -> None:
        self.gw = gateway
        self.binding = binding
        self.sock: gsocket.socket | None = None
        self.family = _stdsocket.AF_INET6 if binding.client_addr.version == 6 else _stdsocket.AF_INET
        #: payload length of the latest datagram sent to each remote, to quote it in errors
        self._last_len: dict[tuple[str, int], int] = {}

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
        return True

    def send(self, dst: IPAddress, dport: int, payload: bytes) -> None:
        sock = self.sock
        if sock is None:
            return
        addr = (str(dst), dport)
        self._last_len[addr] = len(payload)
        if len(self._last_len) > 256:
            self._last_len.pop(next(iter(self._last_len)))
        try:
            sock.sendto(payload, addr)
        except ConnectionRefusedError:
            # An earlier datagram's port unreachable surfaced here; report it and retry once.
            self._drain_errors()
            try:
                sock.sendto(payload, addr)
            except OSError as e:
                log.debug("UDP send to %s failed: %s", addr, e)
        except OSError as e:
            log.debug("UDP send to %s failed: %s", addr, e)

    def run(self) -> None:
        stack, gw = self.gw.stack, self.gw
        bid = self.binding.id
        while True:
            sock = self.sock
            if sock is None:
                return
            try:
                data, addr = sock.recvfrom(UDP_RECV_SIZE)
            except (ConnectionRefusedError, OSError) as e:
                if self.sock is None:
                    return
                if getattr(e, "errno", None) in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    self._drain_errors()
                    continue
                log.debug("UDP binding %d: socket failed: %s", bid, e)
                stack.udp_binding_failed(bid)
                self.close()
                gw.flush()
                return
            remote = parse_remote(addr[0])
            if remote is None:
                continue
            stack.udp_reply(bid, remote, addr[1], data, now=gw.now())
            gw.flush()

    def _drain_errors(self) -> None:
        """Turn queued ICMP port-unreachable errors into ICMP errors for the client."""
        sock = self.sock
        if sock is None:
            return
        for _ in range(64):
            try:
                _data, _anc, _flags, addr = sock.recvmsg(UDP_RECV_SIZE, 1024, _MSG_ERRQUEUE | _stdsocket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not addr:
                continue
            remote = parse_remote(addr[0])
            if remote is None:
                continue
            length = self._last_len.get((addr[0], addr[1]), 0)
            self.gw.stack.udp_port_unreachable(self.binding.id, remote, addr[1], length, now=self.gw.now())
        self.gw.flush()

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
