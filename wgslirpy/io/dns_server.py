"""The DNS responder's shell: resolve with gevent's resolver, answer over UDP and TCP.

The wire format and every policy decision (which rcode, EDNS, special-use names) live in
the pure :class:`~wgslirpy.net.dns.DnsResponder`; this module only resolves names with the
host's resolver (``gevent.socket.getaddrinfo``: the hosts file, then DNS, in a thread
pool, so a slow lookup blocks nothing else) and moves bytes. A lookup that takes longer
than :data:`LOOKUP_TIMEOUT` is answered SERVFAIL.
"""

from __future__ import annotations

import logging
import socket as _stdsocket
from typing import TYPE_CHECKING

import gevent
from gevent import socket as gsocket

from ..net.dns import DnsQuestion, frame_tcp_message, split_tcp_messages
from .host import FlowClosed
from .tcp_forward import TcpFlow

if TYPE_CHECKING:
    from ..net.stack import DnsLookup
    from .host import FlowHost

log = logging.getLogger("wgslirpy.dns")

#: seconds a lookup may take before the client gets SERVFAIL
LOOKUP_TIMEOUT = 4.0

_NXDOMAIN_ERRORS = {getattr(_stdsocket, n) for n in ("EAI_NONAME",) if hasattr(_stdsocket, n)}
_NODATA_ERRORS = {getattr(_stdsocket, n) for n in ("EAI_NODATA", "EAI_ADDRFAMILY") if hasattr(_stdsocket, n)}


def resolve(gw: FlowHost, q: DnsQuestion) -> bytes:
    """The response to ``q``, from the host's resolver."""
    responder = gw.stack.dns
    family = _stdsocket.AF_INET6 if q.rdtype == 28 else _stdsocket.AF_INET
    try:
        with gevent.Timeout(LOOKUP_TIMEOUT):
            infos = gsocket.getaddrinfo(q.name, None, family, _stdsocket.SOCK_STREAM)
    except gevent.Timeout:
        log.info("lookup of %s timed out", q.name)
        return responder.servfail(q)
    except _stdsocket.gaierror as e:
        if e.errno in _NXDOMAIN_ERRORS:
            return responder.nxdomain(q)
        if e.errno in _NODATA_ERRORS:
            return responder.nodata(q)
        log.info("lookup of %s failed: %s", q.name, e)
        return responder.servfail(q)
    except (OSError, UnicodeError, ValueError) as e:
        log.info("lookup of %s failed: %s", q.name, e)
        return responder.servfail(q)
    addresses = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
    return responder.answer(q, addresses)


def serve_dns_udp_lookup(gw: FlowHost, ev: DnsLookup) -> None:
    """Greenlet: resolve one UDP query and send the answer back through the tunnel."""
    wire = resolve(gw, ev.question)
    gw.stack.dns_udp_reply(ev.client, ev.server, wire)
    gw.flush()


def serve_dns_tcp(gw: FlowHost, flow: TcpFlow) -> None:
    """Greenlet: DNS over TCP (RFC 7766) on a flow to a ``-D`` address."""
    responder = gw.stack.dns
    try:
        flow.accept()
        buf = bytearray()
        while True:
            data = flow.recv_from_peer()
            if not data:
                break
            buf += data
            if len(buf) > 4 * 65537:
                break  # a client that never completes a message
            for wire in split_tcp_messages(buf):
                result = responder.handle_query(wire, tcp=True)
                if result is None:
                    continue
                answer = result if isinstance(result, bytes) else resolve(gw, result)
                flow.send_to_peer(frame_tcp_message(answer))
        flow.close_to_peer()
    except FlowClosed:
        pass
    except Exception:
        log.exception("DNS over TCP failed")
        flow.abort()  # the RST leaves at once (abort flushes)
    finally:
        gw.flow_finished(flow.conn)
