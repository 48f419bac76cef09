"""DNS responder for the virtual resolver address (``-D``): parse queries, build responses.

Pure: this module never resolves anything. :meth:`DnsResponder.handle_query` either
answers a query at once (errors, unsupported types, RFC 6761 special names) or hands the
shell a :class:`DnsQuestion`; the shell looks the name up with the OS resolver and turns
the outcome into a response with :meth:`~DnsResponder.answer`,
:meth:`~DnsResponder.nxdomain`, :meth:`~DnsResponder.servfail` or
:meth:`~DnsResponder.nodata`. All wire format goes through dnspython (RFC 1035).

Decisions, in the order :meth:`~DnsResponder.handle_query` applies them:

* Shorter than the 12-byte header: dropped (``DNS_MALFORMED``), there is no id to answer.
  A response (QR=1): dropped (``DNS_NOT_A_QUERY``), never answered, so no loops.
* Opcode other than QUERY: NOTIMP. Unparseable otherwise: FORMERR with only the header
  (id, opcode, RD) copied, because the rest cannot be trusted.
* EDNS (RFC 6891): a query with an OPT record gets one back (version 0, our UDP payload
  size :data:`EDNS_PAYLOAD`); an EDNS version above 0 gets BADVERS.
* QDCOUNT other than 1: FORMERR (RFC 9619).
* QCLASS other than IN: REFUSED (we only serve the Internet class).
* RFC 6761 special names: ``localhost`` and ``*.localhost`` are answered directly
  (A 127.0.0.1, AAAA ::1, NODATA for other types); ``invalid`` and ``*.invalid`` get
  NXDOMAIN.
* The root name: NODATA. A name the OS resolver cannot be asked for faithfully (a label
  byte outside printable ASCII, or a ``.``/``\\`` inside a label): REFUSED.
* QTYPE A/AAAA: a :class:`DnsQuestion` for the shell. ANY: a synthesized HINFO
  (RFC 8482 §4.2). Other meta types (AXFR, IXFR, MAILA...): NOTIMP. Any other type
  (MX, TXT, PTR...): NOERROR with no answers, since we only know addresses.

Every response has the query's id and opcode, QR=1, RA=1, RD copied and the question
echoed (except for unparseable queries and QDCOUNT errors). A UDP response larger than the
client allows (its EDNS size, 512 without EDNS), and never larger than
:data:`EDNS_PAYLOAD` (we do not fragment tunnel packets), is truncated with TC=1 by
dnspython; over TCP (``tcp=True``) the limit is 65535. TSIG-signed queries are
answered unsigned (we hold no keys; dnspython parses them with validation off).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ..constants import DEFAULT_DNS_TTL
from ..errors import ConfigError, DropCounter, DropReason
from .segments import IPAddress

__all__ = [
    "EDNS_PAYLOAD",
    "DnsQuestion",
    "DnsResponder",
    "frame_tcp_message",
    "split_tcp_messages",
]

#: Our advertised EDNS UDP payload size and our cap on UDP responses (DNS flag day
#: 2020): fits the default tunnel MTU, so no response ever needs IP fragmentation.
EDNS_PAYLOAD = 1232
#: Largest UDP response to a client without EDNS (RFC 1035 §4.2.1).
CLASSIC_UDP_SIZE = 512
#: Largest DNS message over TCP (2-byte length prefix, RFC 1035 §4.2.2).
TCP_MAX_SIZE = 65535
_HEADER_SIZE = 12
_TCP_LENGTH = struct.Struct("!H")

_LOCALHOST = b"localhost"
_INVALID = b"invalid"
_LOCALHOST_ADDRESSES = {dns.rdatatype.A: "127.0.0.1", dns.rdatatype.AAAA: "::1"}
# Bytes a label may carry and still reach getaddrinfo unchanged: printable ASCII minus
# the label separator and the escape character, which resolvers would reinterpret.
_HOSTNAME_BYTES = frozenset(range(0x21, 0x7F)) - {ord("."), ord("\\")}


@dataclass(frozen=True, slots=True)
class DnsQuestion:
    """An A or AAAA query the shell must resolve before calling back the responder.

    ``name`` is what to pass to the OS resolver: the query name in lower case, labels as
    ASCII (IDN stays in its ``xn--`` form), absolute but without the trailing dot. The
    response echoes the name as the client spelled it (0x20 case randomisation works).
    """

    id: int
    name: str
    #: dns.rdatatype.A or dns.rdatatype.AAAA.
    rdtype: int
    #: Size limit for the response: the client's UDP limit, or 65535 over TCP.
    max_size: int
    #: The parsed query the response is built from; not part of equality or hashing.
    query: dns.message.Message = field(compare=False, hash=False, repr=False)


class DnsResponder:
    """Answers queries to the virtual resolver; see the module docstring."""

    def __init__(self, *, ttl: int = DEFAULT_DNS_TTL) -> None:
        if not 0 <= ttl <= 0x7FFFFFFF:
            raise ConfigError(f"DNS TTL must be between 0 and 2147483647 seconds, got {ttl!r}")
        #: TTL of every record we answer with.
        self.ttl = ttl
        self.drops = DropCounter()

    # --- queries ----------------------------------------------------------------------

    def handle_query(self, wire: bytes, *, tcp: bool = False) -> bytes | DnsQuestion | None:
        """Handle one query message (without the TCP length prefix).

        Returns an immediate response, a :class:`DnsQuestion` for the shell to resolve,
        or None when the input is dropped (counted). Never raises on any input.
        """
        if len(wire) < _HEADER_SIZE:
            self.drops.add(DropReason.DNS_MALFORMED)
            return None
        qid, flags, qdcount = struct.unpack_from("!HHH", wire)
        if flags & dns.flags.QR:
            self.drops.add(DropReason.DNS_NOT_A_QUERY)
            return None
        opcode = dns.opcode.from_flags(flags)
        try:
            # keyring=False: keep TSIG records without validating them (we hold no keys).
            query: dns.message.Message | None = dns.message.from_wire(wire, keyring=False)
        except Exception:  # dnspython raises many types on hostile bytes; all mean FORMERR
            query = None
        if query is None:
            rcode = dns.rcode.FORMERR if opcode == dns.opcode.QUERY else dns.rcode.NOTIMP
            return _header_only(qid, flags, rcode)
        max_size = TCP_MAX_SIZE if tcp else _udp_limit(query)
        if opcode != dns.opcode.QUERY:
            return self._reply(query, max_size, dns.rcode.NOTIMP)
        if query.edns > 0:
            return self._reply(query, max_size, dns.rcode.BADVERS)
        if qdcount != 1 or len(query.question) != 1:
            return self._reply(query, max_size, dns.rcode.FORMERR, echo_question=False)
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN:
            return self._reply(query, max_size, dns.rcode.REFUSED)
        return self._classify(query, question.name, question.rdtype, max_size)

    def _classify(
        self,
        query: dns.message.Message,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        max_size: int,
    ) -> bytes | DnsQuestion:
        labels = [label.lower() for label in qname.labels[:-1]]  # wire names are absolute
        if labels and labels[-1] == _LOCALHOST:
            types = list(_LOCALHOST_ADDRESSES) if rdtype == dns.rdatatype.ANY else [rdtype]
            rrsets = [self._rrset(qname, t, [_LOCALHOST_ADDRESSES[t]]) for t in types if t in _LOCALHOST_ADDRESSES]
            return self._reply(query, max_size, dns.rcode.NOERROR, rrsets)
        if labels and labels[-1] == _INVALID:
            return self._reply(query, max_size, dns.rcode.NXDOMAIN)
        if not labels:
            return self._reply(query, max_size, dns.rcode.NOERROR)
        if any(not _HOSTNAME_BYTES.issuperset(label) for label in labels):
            return self._reply(query, max_size, dns.rcode.REFUSED)
        if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            name = b".".join(labels).decode("ascii")
            return DnsQuestion(query.id, name, rdtype, max_size, query)
        if rdtype == dns.rdatatype.ANY:
            hinfo = dns.rrset.from_text_list(qname, self.ttl, "IN", "HINFO", ['"RFC8482" ""'])
            return self._reply(query, max_size, dns.rcode.NOERROR, [hinfo])
        if dns.rdatatype.is_metatype(rdtype):
            return self._reply(query, max_size, dns.rcode.NOTIMP)
        return self._reply(query, max_size, dns.rcode.NOERROR)

    # --- responses to resolved questions ----------------------------------------------

    def answer(self, q: DnsQuestion, addresses: Sequence[str | IPAddress]) -> bytes:
        """Response carrying those of ``addresses`` that match ``q.rdtype``.

        Addresses of the other family are left out (getaddrinfo may return both), as are
        duplicates and IPv6 scope ids; with none left this is :meth:`nodata`. Raises
        ConfigError for a string that is not an IP address (a shell bug).
        """
        version = 4 if q.rdtype == dns.rdatatype.A else 6
        texts: list[str] = []
        for addr in addresses:
            try:
                ip = addr if not isinstance(addr, str) else ipaddress.ip_address(addr)
            except ValueError:
                raise ConfigError(f"resolver returned {addr!r}, which is not an IP address") from None
            if ip.version == version:
                texts.append(str(ipaddress.ip_address(ip.packed)))  # drops any %scope
        if not texts:
            return self.nodata(q)
        qname = q.query.question[0].name
        rrset = self._rrset(qname, q.rdtype, texts)
        return self._reply(q.query, q.max_size, dns.rcode.NOERROR, [rrset])

    def nxdomain(self, q: DnsQuestion) -> bytes:
        """The name does not exist."""
        return self._reply(q.query, q.max_size, dns.rcode.NXDOMAIN)

    def servfail(self, q: DnsQuestion) -> bytes:
        """The lookup failed (resolver error or timeout)."""
        return self._reply(q.query, q.max_size, dns.rcode.SERVFAIL)

    def nodata(self, q: DnsQuestion) -> bytes:
        """The name exists but has no address of the type asked for."""
        return self._reply(q.query, q.max_size, dns.rcode.NOERROR)

    # --- building ---------------------------------------------------------------------

    def _rrset(self, qname: dns.name.Name, rdtype: int, texts: list[str]) -> dns.rrset.RRset:
        return dns.rrset.from_text_list(qname, self.ttl, dns.rdataclass.IN, dns.rdatatype.RdataType.make(rdtype), texts)

    def _reply(
        self,
        query: dns.message.Message,
        max_size: int,
        rcode: dns.rcode.Rcode,
        answers: Sequence[dns.rrset.RRset] = (),
        *,
        echo_question: bool = True,
    ) -> bytes:
        # make_response: same id and opcode, QR, RD copied, question echoed, and an OPT
        # record (version 0) exactly when the query had one.
        response = dns.message.make_response(query, recursion_available=True, our_payload=EDNS_PAYLOAD)
        if not echo_question:
            response.question = []
        response.set_rcode(rcode)
        response.answer = list(answers)
        # prefer_truncation: drop whole RRsets that do not fit and set TC (RFC 2181 §9).
        # want_shuffle=False: keep the resolver's address order and deterministic bytes.
        return response.to_wire(max_size=max_size, prefer_truncation=True, want_shuffle=False)


def _udp_limit(query: dns.message.Message) -> int:
    """Largest UDP response this client accepts and we are willing to send."""
    if query.edns < 0:
        return CLASSIC_UDP_SIZE
    # RFC 6891 §6.2.5: advertised sizes below 512 are treated as 512.
    return min(max(int(query.payload), CLASSIC_UDP_SIZE), EDNS_PAYLOAD)


def _header_only(qid: int, flags: int, rcode: dns.rcode.Rcode) -> bytes:
    """A response to a query we could not parse: nothing but its header is trusted."""
    response = dns.message.Message(id=qid)
    response.flags = dns.flags.Flag(dns.flags.QR | dns.flags.RA | (flags & dns.flags.RD))
    response.set_opcode(dns.opcode.from_flags(flags))
    response.set_rcode(rcode)
    return response.to_wire()


# --- DNS over TCP framing (RFC 1035 §4.2.2) ---------------------------------------------


def split_tcp_messages(buf: bytearray) -> list[bytes]:
    """Pop every complete length-prefixed message off the front of ``buf``.

    A partial message (or a lone length byte) stays in ``buf`` until more data arrives.
    """
    messages: list[bytes] = []
    start = 0
    while len(buf) - start >= _TCP_LENGTH.size:
        (length,) = _TCP_LENGTH.unpack_from(buf, start)
        end = start + _TCP_LENGTH.size + length
        if end > len(buf):
            break
        messages.append(bytes(buf[start + _TCP_LENGTH.size : end]))
        start = end
    del buf[:start]
    return messages


def frame_tcp_message(wire: bytes) -> bytes:
    """Prefix ``wire`` with its 2-byte length for DNS over TCP."""
    if len(wire) > TCP_MAX_SIZE:
        raise ConfigError(f"a DNS message over TCP is at most {TCP_MAX_SIZE} bytes, got {len(wire)}")
    return _TCP_LENGTH.pack(len(wire)) + wire
