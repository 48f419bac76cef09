"""Errors and drop reasons.

Three kinds of failure (see *Errors* in docs/ARCHITECTURE.md):

* Untrusted network bytes never raise out of a core's ``receive_*``: the core drops them
  and counts a :class:`DropReason`. Inside a core, raise :class:`_Drop` and convert it
  at the single receive boundary.
* Caller misuse and bad configuration raise :class:`ConfigError` (a ``ValueError``),
  whose message is written for a user.
* A fatal condition inside one flow becomes an event, never an exception.
"""

from __future__ import annotations

import enum


class WgSlirpError(Exception):
    """Base class of every error wgslirpy raises on purpose."""


class ConfigError(WgSlirpError, ValueError):
    """Bad configuration or API misuse; the message is meant for the user."""


class DropReason(enum.Enum):
    """Why an incoming datagram or packet was dropped (counted in stats)."""

    # --- WireGuard outer datagrams (wg/) ---
    WG_SHORT = "wg_short"  # shorter than any message
    WG_UNKNOWN_TYPE = "wg_unknown_type"
    WG_BAD_SIZE = "wg_bad_size"  # handshake message of the wrong exact size
    WG_BAD_MAC1 = "wg_bad_mac1"
    WG_UNDER_LOAD = "wg_under_load"  # answered with a cookie reply instead
    WG_HANDSHAKE_FAILED = "wg_handshake_failed"  # DH/AEAD failure, unknown peer key
    WG_REPLAYED_INITIATION = "wg_replayed_initiation"  # TAI64N not newer
    WG_INITIATION_FLOOD = "wg_initiation_flood"
    WG_UNEXPECTED_RESPONSE = "wg_unexpected_response"
    WG_UNEXPECTED_COOKIE = "wg_unexpected_cookie"
    WG_UNKNOWN_INDEX = "wg_unknown_index"
    WG_DECRYPT_FAILED = "wg_decrypt_failed"
    WG_REPLAYED = "wg_replayed"
    WG_KEY_EXPIRED = "wg_key_expired"
    WG_BAD_INNER = "wg_bad_inner"  # decrypted payload is not a well-formed IPv4/IPv6 packet
    WG_NOT_ALLOWED_SOURCE = "wg_not_allowed_source"
    WG_NO_SESSION = "wg_no_session"  # staged outgoing packets flushed: handshake gave up / keys zeroed
    # handshake flood guard and the WireGuard socket (wg/intake.py, wg/ratelimit.py, io/server.py)
    WG_HANDSHAKE_QUEUE_FULL = "wg_handshake_queue_full"  # dropped before any hashing
    WG_RATE_LIMITED = "wg_rate_limited"  # per-source token bucket, before any DH
    WG_COOKIE_BUDGET = "wg_cookie_budget"  # under load, no mac2, and the cookie reply budget spent
    WG_SEND_BLOCKED = "wg_send_blocked"  # WireGuard socket still full after the per-batch wait

    # --- IP layer (net/packet.py, net/fragments.py) ---
    MALFORMED = "malformed"
    BAD_CHECKSUM = "bad_checksum"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    FRAGMENT_OVERLAP = "fragment_overlap"
    FRAGMENT_TOO_LARGE = "fragment_too_large"
    FRAGMENT_TIMEOUT = "fragment_timeout"
    FRAGMENT_LIMIT = "fragment_limit"
    NOT_FOR_US = "not_for_us"  # e.g. an ICMP echo to an address that is not -P

    # --- TCP (net/tcp.py) ---
    TCP_NO_FLOW = "tcp_no_flow"  # non-SYN for an unknown flow (answered with RST)
    TCP_OUT_OF_WINDOW = "tcp_out_of_window"
    TCP_BAD_ACK = "tcp_bad_ack"
    TCP_BAD_STATE = "tcp_bad_state"
    TCP_DUPLICATE_SYN = "tcp_duplicate_syn"
    TCP_LOOPBACK_REFUSED = "tcp_loopback_refused"
    TCP_FLOW_LIMIT = "tcp_flow_limit"
    # out-of-order data the reassembly queue refused (hole or memory limit); the peer resends
    TCP_REASSEMBLY_FULL = "tcp_reassembly_full"

    # --- UDP / DNS (net/udp_nat.py, net/dns.py) ---
    UDP_LOOPBACK_REFUSED = "udp_loopback_refused"
    DNS_MALFORMED = "dns_malformed"
    UDP_NO_BINDING = "udp_no_binding"  # reply for a binding already closed/expired/evicted
    DNS_NOT_A_QUERY = "dns_not_a_query"  # QR=1: never answer a response (no loops)
    DNS_LOOKUP_LIMIT = "dns_lookup_limit"  # answered SERVFAIL at once: --max-dns-lookups in progress

    # --- What clients send in normal use that has nowhere to go (net/stack.py) ---
    MULTICAST = "multicast"  # to a multicast/broadcast address: IPv6 router solicitations, MLD, mDNS, SSDP
    ICMP_ERROR_FROM_PEER = "icmp_error_from_peer"  # e.g. the client's port unreachable for a late UDP reply
    ICMP_OTHER_TYPE = "icmp_other_type"  # unicast ICMP/ICMPv6 that is neither echo nor an error

    # --- Outgoing queue ---
    TRANSMIT_QUEUE_FULL = "transmit_queue_full"

    # --- Destination policy, limits and host-side faults (net/policy.py, net/stack.py, io/) ---
    TCP_DENIED = "tcp_denied"  # --deny or a default-denied destination (answered with RST)
    UDP_DENIED = "udp_denied"  # ... (answered with ICMP administratively prohibited)
    TCP_CONNECT_LIMIT = "tcp_connect_limit"  # too many dials pending (RST)
    # --- incoming forwards (-t / -u; net/incoming.py) ---
    INCOMING_NO_PORT = "incoming_no_port"  # every port of --incoming-port-range is in use
    INCOMING_TUPLE_IN_USE = "incoming_tuple_in_use"  # the forward's 4-tuple is a live flow
    UDP_FAMILY_MISMATCH = "udp_family_mismatch"  # a reply the client's address family cannot carry
    UDP_HOST_SEND_FULL = "udp_host_send_full"  # the host UDP socket's buffer was full
    UDP_HOST_SEND_FAILED = "udp_host_send_failed"  # the host refused the send (e.g. EMSGSIZE)
    FRAGMENT_DUPLICATE = "fragment_duplicate"  # an exact copy of a fragment already held
    # embedding (io/conn.py)
    UDP_HANDLER_QUEUE_FULL = "udp_handler_queue_full"  # a handle_udp handler did not read in time


class _Drop(Exception):
    """Internal: raised inside a core to drop the current input; never escapes a core."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(reason.value if not detail else f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class DropCounter:
    """Counts drops by reason; each core owns one and exposes it as ``drops``."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        #: reason -> number of inputs dropped for it; never negative.
        self.counts: dict[DropReason, int] = {}

    def add(self, reason: DropReason, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n

    def __getitem__(self, reason: DropReason) -> int:
        return self.counts.get(reason, 0)

    def total(self) -> int:
        return sum(self.counts.values())

    @classmethod
    def combined(cls, *counters: DropCounter) -> DropCounter:
        """A new counter holding the sums of ``counters`` (e.g. a core and its sub-cores)."""
        total = cls()
        for counter in counters:
            for reason, n in counter.counts.items():
                total.add(reason, n)
        return total

    def as_dict(self) -> dict[str, int]:
        return {r.value: n for r, n in self.counts.items()}
