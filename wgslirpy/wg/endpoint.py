"""WireGuardEndpoint: a sans-IO WireGuard peer with exactly one remote peer (whitepaper §5-§6).

The facade the gevent shell drives (docs/ARCHITECTURE.md): ``receive_datagram`` takes an outer
UDP datagram and returns the decrypted inner IP packet (or None); ``send_ip`` encrypts an inner
packet; ``datagrams_to_send`` drains the outbox; ``next_event``/``next_deadline``/``handle_timer``
complete the loop. Nothing here does I/O or reads a clock: ``now`` (monotonic) is passed in and
the wall clock (for TAI64N) and rng are constructor arguments.

Receive path (wireguard-go ``receive.go``): dispatch on the type word and size; handshakes pass
mac1 before any DH, and under load (``under_load``, set by the shell from its handshake queue,
see ``intake.py``) need a valid mac2 or get a cookie reply (within a global budget); then a
per-source token bucket (``ratelimit.py``) bounds the DH work. The peer's current authenticated
endpoint skips the cookie round trip and has a bucket of its own, so its rekeys get through a
flood. Rejections on that path are counted without raising or formatting; transport messages
are looked up by receiver index, checked against the replay window, decrypted, and only then
update the window, promote a ``next`` keypair, follow the peer's address (roaming) and feed the
timers. Decrypted payloads must be one IPv4/IPv6 packet whose length fits (padding is cut off)
and whose source is inside the peer's allowed IPs. Every rejected input is counted in
``drops`` by DropReason; ``receive_datagram`` never raises.

Send path (``send.go``): with a usable current keypair, encrypt at once; otherwise stage the
packet (at most ``queue_capacity``, oldest dropped) and start a handshake if the peer's address
is known. We initiate like wireguard-go: when data waits and no session is usable, and for the
rekey rules of whichever side initiated the current keypair.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..constants import (
    COOKIE_REPLY_BURST,
    COOKIE_REPLY_RATE,
    DEFAULT_MTU,
    DEFAULT_TRANSMIT_QUEUE_CAPACITY,
    HANDSHAKE_BURST_PER_SOURCE,
    HANDSHAKE_RATE_PER_SOURCE,
    MAX_MTU,
    MESSAGE_COOKIE_REPLY_TYPE,
    MESSAGE_INITIATION_SIZE,
    MESSAGE_INITIATION_TYPE,
    MESSAGE_RESPONSE_SIZE,
    MESSAGE_RESPONSE_TYPE,
    MESSAGE_TRANSPORT_MIN_SIZE,
    MESSAGE_TRANSPORT_TYPE,
    MIN_MTU,
    REJECT_AFTER_TIME,
)
from ..errors import ConfigError, DropCounter, DropReason, _Drop
from ..keys import check_key
from ..redact import redacted_repr
from . import crypto
from .cookie import CookieChecker, CookieGenerator
from .messages import (
    TRANSPORT_HEADER,
    decode_cookie_reply,
    decode_initiation,
    decode_response,
    decode_transport_header,
    message_type,
)
from .noise import Handshake, HandshakeState
from .ratelimit import RateLimiter, TokenBucket
from .session import Keypair, Keypairs
from .timers import PeerTimers, TimerAction, should_rekey_on_receive, should_rekey_on_send

_log = logging.getLogger(__name__)

Address = tuple[str, int]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALL_IPS: tuple[IpNetwork, ...] = (ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv6Network("::/0"))


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """A new session is usable: response consumed (initiator) or key confirmed (responder)."""

    is_initiator: bool
    endpoint: Address


@dataclass(frozen=True, slots=True)
class PeerKeysZeroed:
    """All keys and the handshake were erased (3 * REJECT_AFTER_TIME after the last session)."""


@dataclass(frozen=True, slots=True)
class EndpointChanged:
    """The peer's address changed (first contact or roaming) on an authenticated packet."""

    old: Address | None
    new: Address


WgEvent = HandshakeCompleted | PeerKeysZeroed | EndpointChanged


# --- configuration ------------------------------------------------------------------------


def normalise_address(addr: tuple[Any, ...]) -> Address:
    """(host, port) from a recvfrom address (IPv6 gives (host, port, flowinfo, scope_id))."""
    return (str(addr[0]), int(addr[1]))


@dataclass(frozen=True)
class PeerConfig:
    public_key: bytes  # keys.KEY_SIZE bytes
    preshared_key: bytes | None = None  # keys.KEY_SIZE bytes, or None for all zeros
    endpoint: Address | None = None  # first known address; lets us initiate
    persistent_keepalive: float | None = None  # seconds
    allowed_ips: tuple[IpNetwork, ...] = ALL_IPS

    def __repr__(self) -> str:
        return redacted_repr(self, ("preshared_key",))

    def __post_init__(self) -> None:
        check_key(self.public_key, "peer public key")
        if self.preshared_key is not None:
            check_key(self.preshared_key, "preshared key")
        if self.persistent_keepalive is not None and not 0 <= self.persistent_keepalive <= 65535:
            raise ConfigError("persistent keepalive must be between 0 and 65535 seconds")
        if self.endpoint is not None and not 0 < self.endpoint[1] < 65536:
            raise ConfigError(f"bad peer endpoint port: {self.endpoint[1]}")
        for net in self.allowed_ips:
            if not isinstance(net, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                raise ConfigError(f"allowed IP {net!r} is not an IPv4Network or IPv6Network")


class _AllowedSources:
    """Source-address filter for decrypted packets (cryptokey routing, whitepaper §2)."""

    __slots__ = ("all4", "all6", "nets4", "nets6")

    def __init__(self, nets: tuple[IpNetwork, ...]) -> None:
        #: per family: (network address, netmask) as ints; ``all*`` short-cuts a /0.
        self.nets4 = [(int(n.network_address), int(n.netmask)) for n in nets if n.version == 4]
        self.nets6 = [(int(n.network_address), int(n.netmask)) for n in nets if n.version == 6]
        self.all4 = any(m == 0 for _, m in self.nets4)
        self.all6 = any(m == 0 for _, m in self.nets6)

    def allows(self, version: int, src: bytes) -> bool:
        if version == 4:
            if self.all4:
                return True
            nets = self.nets4
        else:
            if self.all6:
                return True
            nets = self.nets6
        a = int.from_bytes(src, "big")
        return any(a & mask == net for net, mask in nets)


# --- the endpoint ---------------------------------------------------------------------------


@dataclass(slots=True)
class EndpointStats:
    """The endpoint's counters (``Gateway.stats()["wireguard"]``, ``wg show`` transfer);
    each only grows. Datagrams and bytes count everything on the UDP socket, packets the
    inner IP packets carried."""

    rx_datagrams: int = 0
    rx_bytes: int = 0
    tx_datagrams: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    keepalives_received: int = 0
    keepalives_sent: int = 0
    handshake_initiations_sent: int = 0
    handshake_responses_sent: int = 0
    handshakes_completed: int = 0
    cookie_replies_sent: int = 0
    cookie_replies_received: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name, in declaration order (the stats line and ``--stats-json``)."""
        return asdict(self)


class WireGuardEndpoint:
    """Our side of a WireGuard tunnel with one configured peer."""

    def __init__(
        self,
        private_key: bytes,
        peer: PeerConfig,
        *,
        now: float,
        wall_clock: Callable[[], float],
        rng: Callable[[int], bytes] = os.urandom,
        queue_capacity: int = DEFAULT_TRANSMIT_QUEUE_CAPACITY,
        mtu: int = DEFAULT_MTU,
    ) -> None:
        check_key(private_key, "private key")
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise ConfigError(f"tunnel MTU {mtu} out of range ({MIN_MTU}..{MAX_MTU})")
        #: tunnel MTU: padding stops there.
        self._mtu = mtu
        if queue_capacity < 1:
            raise ConfigError("queue capacity must be at least 1")
        try:
            self._handshake = Handshake(private_key, peer.public_key, peer.preshared_key)
        except crypto.CryptoError:
            raise ConfigError("peer public key is not a usable X25519 key") from None
        #: our static public key.
        self.public_key = self._handshake.local_public
        self.peer = peer
        self._wall_clock = wall_clock
        self._rng = rng
        self._checker = CookieChecker(self.public_key, rng)
        self._generator = CookieGenerator(peer.public_key)
        self._keypairs = Keypairs()
        #: receiver index -> keypair, for exactly the keypairs in ``_keypairs``.
        self._by_index: dict[int, Keypair] = {}
        self._timers = PeerTimers(persistent_keepalive_interval=peer.persistent_keepalive, rng=rng)
        self._allowed = _AllowedSources(peer.allowed_ips)
        #: where we send; follows the latest authenticated packet. None until known.
        self.endpoint: Address | None = normalise_address(peer.endpoint) if peer.endpoint is not None else None
        #: datagrams waiting for ``datagrams_to_send``.
        self._outbox: list[tuple[bytes, Address]] = []
        #: inner packets waiting for a session; len <= queue_capacity.
        self._staged: deque[bytes] = deque()
        self._queue_capacity = queue_capacity
        self._events: deque[WgEvent] = deque()
        self.drops = DropCounter()
        #: handshakes need a valid mac2 (else they get a cookie reply); the shell sets it from
        #: its handshake queue's depth (``HandshakeIntake.under_load``).
        self.under_load = False
        #: handshakes per source before any DH; the peer's authenticated endpoint has its own
        #: bucket; cookie replies share one global budget.
        self._limiter = RateLimiter(now=now)
        self._peer_bucket = TokenBucket(HANDSHAKE_RATE_PER_SOURCE, HANDSHAKE_BURST_PER_SOURCE, now=now)
        self._cookie_budget = TokenBucket(COOKIE_REPLY_RATE, COOKIE_REPLY_BURST, now=now)
        #: the latest ``now`` seen (for ``has_session``).
        self._now = now
        self.stats = EndpointStats()
        if peer.persistent_keepalive and self.endpoint is not None:
            # wireguard-go sends a keepalive (so a handshake) as soon as the peer is configured.
            self._timers.persistent_keepalive = now

    # --- public API ---------------------------------------------------------------------

    @property
    def has_session(self) -> bool:
        """A current keypair usable for sending (as of the latest ``now`` seen)."""
        kp = self._keypairs.current
        return kp is not None and kp.can_send(self._now)

    @property
    def timers(self) -> PeerTimers:
        return self._timers

    @property
    def keypairs(self) -> Keypairs:
        return self._keypairs

    @property
    def staged_count(self) -> int:
        return len(self._staged)

    def receive_datagram(
        self, datagram: bytes | bytearray | memoryview, addr: tuple[Any, ...], *, now: float
    ) -> bytes | None:
        """Process one datagram from ``addr``; returns the inner IP packet, if any."""
        self._now = now
        data = datagram if type(datagram) is bytes else bytes(datagram)
        stats = self.stats
        stats.rx_datagrams += 1
        stats.rx_bytes += len(data)
        try:
            if len(data) >= MESSAGE_TRANSPORT_MIN_SIZE:
                msg_type, receiver, counter = TRANSPORT_HEADER.unpack_from(data, 0)
                if msg_type == MESSAGE_TRANSPORT_TYPE:
                    return self._receive_transport(data, receiver, counter, addr, now)
            self._receive_other(data, addr, now)
            return None
        except _Drop as drop:
            self.drops.add(drop.reason)
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug("dropped %d-byte datagram from %s: %s", len(data), addr, drop)
            return None

    def send_ip(self, packet: bytes, *, now: float) -> None:
        """Encrypt ``packet`` for the peer, or stage it until a session is up."""
        self.send_ips((packet,), now=now)

    def send_ips(self, packets: Sequence[bytes], *, now: float) -> None:
        """:meth:`send_ip` for each of ``packets``, in order; the session checks and the
        timers' bookkeeping happen once for the whole burst."""
        if not packets:
            return
        self._now = now
        kp = self._keypairs.current
        endpoint = self.endpoint
        if not self._staged and kp is not None and endpoint is not None and kp.can_send(now, len(packets)):
            self._send_now(kp, endpoint, packets, now)
            if should_rekey_on_send(kp, now):
                self._send_initiation(now, retry=False)
            return
        staged = self._staged
        for packet in packets:
            if len(staged) >= self._queue_capacity:
                staged.popleft()
                self.drops.add(DropReason.TRANSMIT_QUEUE_FULL)
            staged.append(packet)
        self._send_staged(now)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out = self._outbox
        self._outbox = []
        return out

    def next_event(self) -> WgEvent | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def handle_timer(self, *, now: float) -> None:
        self._now = now
        timers = self._timers
        for action in timers.expire(now):
            if action is TimerAction.RETRANSMIT_HANDSHAKE:
                self._send_initiation(now, retry=True)
            elif action is TimerAction.GIVE_UP_HANDSHAKE:
                self._flush_staged()
            elif action is TimerAction.SEND_KEEPALIVE:
                self._send_keepalive(now)
                timers.after_keepalive_timer_sent(now)
            elif action is TimerAction.NEW_HANDSHAKE:
                self._send_initiation(now, retry=False)
            elif action is TimerAction.ZERO_KEY_MATERIAL:
                self._zero_all()
            elif action is TimerAction.PERSISTENT_KEEPALIVE:
                self._send_keepalive(now)

    def initiate_handshake(self, *, now: float) -> None:
        """Start a handshake now (subject to the one-per-REKEY_TIMEOUT limit); no-op without an endpoint."""
        self._now = now
        self._send_initiation(now, retry=False)

    # --- receive ------------------------------------------------------------------------------

    def _receive_transport(
        self, data: bytes, receiver: int, counter: int, addr: tuple[Any, ...], now: float
    ) -> bytes | None:
        # The cheap rejections (a flood of forged or replayed transport data takes them) are
        # counted without raising or formatting.
        kp = self._by_index.get(receiver)
        if kp is None:
            self.drops.add(DropReason.WG_UNKNOWN_INDEX)
            return None
        if now - kp.created >= REJECT_AFTER_TIME or not kp.recv_key:
            self.drops.add(DropReason.WG_KEY_EXPIRED)
            return None
        replay = kp.replay
        if not replay.check(counter):
            self.drops.add(DropReason.WG_REPLAYED)
            return None
        try:
            plaintext = crypto.aead_decrypt(kp.recv_key, counter, data[16:])
        except crypto.CryptoError:
            raise _Drop(DropReason.WG_DECRYPT_FAILED) from None
        replay.update(counter)
        # Authenticated from here on.
        if len(addr) != 2:
            addr = normalise_address(addr)
        if addr != self.endpoint:
            self._set_endpoint(addr)
        timers = self._timers
        keypairs = self._keypairs
        if kp is keypairs.next:
            _, retired = keypairs.received_with(kp)
            self._forget(retired)
            timers.on_handshake_complete(now)
            self._handshake_completed(is_initiator=False)
            self._send_staged(now)
        current = keypairs.current
        if current is not None and not timers.sent_last_minute_handshake and should_rekey_on_receive(current, now):
            timers.sent_last_minute_handshake = True
            self._send_initiation(now, retry=False)
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_received(now)
        if not plaintext:
            self.stats.keepalives_received += 1
            return None
        timers.on_data_received(now)
        return self._check_inner(plaintext)

    def _check_inner(self, pt: bytes) -> bytes:
        n = len(pt)
        version = pt[0] >> 4
        allowed = self._allowed
        # Per packet: with a /0 allowed (the default) skip slicing out the source address.
        if version == 4:
            if n < 20:
                raise _Drop(DropReason.WG_BAD_INNER)
            total = (pt[2] << 8) | pt[3]
            if total < 20 or total > n:
                raise _Drop(DropReason.WG_BAD_INNER)
            if not allowed.all4 and not allowed.allows(4, pt[12:16]):
                raise _Drop(DropReason.WG_NOT_ALLOWED_SOURCE)
        elif version == 6:
            if n < 40:
                raise _Drop(DropReason.WG_BAD_INNER)
            total = 40 + ((pt[4] << 8) | pt[5])
            if total > n:
                raise _Drop(DropReason.WG_BAD_INNER)
            if not allowed.all6 and not allowed.allows(6, pt[8:24]):
                raise _Drop(DropReason.WG_NOT_ALLOWED_SOURCE)
        else:
            raise _Drop(DropReason.WG_BAD_INNER)
        self.stats.rx_packets += 1
        return pt if total == n else pt[:total]

    def _receive_other(self, data: bytes, addr: tuple[Any, ...], now: float) -> None:
        msg_type = message_type(data)
        if msg_type == MESSAGE_INITIATION_TYPE:
            reason = self._admit_handshake(data, MESSAGE_INITIATION_SIZE, addr, now)
            if reason is not None:
                self.drops.add(reason)
                return
            self._receive_initiation(data, normalise_address(addr), now)
        elif msg_type == MESSAGE_RESPONSE_TYPE:
            reason = self._admit_handshake(data, MESSAGE_RESPONSE_SIZE, addr, now)
            if reason is not None:
                self.drops.add(reason)
                return
            self._receive_response(data, normalise_address(addr), now)
        elif msg_type == MESSAGE_COOKIE_REPLY_TYPE:
            self._receive_cookie_reply(data, now)
        elif msg_type == MESSAGE_TRANSPORT_TYPE:
            decode_transport_header(data)  # too short: raises WG_SHORT
        else:
            raise _Drop(DropReason.WG_UNKNOWN_TYPE)

    def _admit_handshake(self, data: bytes, size: int, addr: tuple[Any, ...], now: float) -> DropReason | None:
        """The checks before any DH, cheapest first; the drop reason, or None to go on.

        Size, then mac1; the peer's current endpoint then only needs a token from its own
        bucket. Anyone else: under load, mac2 is checked; then a token from the source's bucket
        (so one source gets neither more DH work nor more cookie replies than its share); then
        the DH, or (under load without a valid mac2) a cookie reply from the global budget.
        Returns instead of raising: this is the path a flood takes.
        """
        if len(data) != size:
            return DropReason.WG_BAD_SIZE
        checker = self._checker
        if not checker.check_mac1(data):
            return DropReason.WG_BAD_MAC1
        ep = self.endpoint
        if ep is not None and addr[1] == ep[1] and addr[0] == ep[0]:
            return None if self._peer_bucket.allow(now=now) else DropReason.WG_RATE_LIMITED
        need_cookie = False
        if self.under_load:
            address = (str(addr[0]), int(addr[1]))
            need_cookie = not checker.check_mac2(data, address, now=now)
        if not self._limiter.allow(addr[0], now=now):
            return DropReason.WG_RATE_LIMITED
        if need_cookie:
            if not self._cookie_budget.allow(now=now):
                return DropReason.WG_COOKIE_BUDGET
            sender = int.from_bytes(data[4:8], "little")
            self._emit((checker.create_reply(data, sender, address, now=now),), address)
            self.stats.cookie_replies_sent += 1
            return DropReason.WG_UNDER_LOAD
        return None

    def _receive_initiation(self, data: bytes, addr: Address, now: float) -> None:
        hs = self._handshake
        hs.consume_initiation(decode_initiation(data), now=now)
        self._set_endpoint(addr)
        timers = self._timers
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_received(now)
        # SendHandshakeResponse
        timers.last_sent_handshake = now
        response = hs.create_response(local_index=self._new_index(), rng=self._rng)
        response = self._generator.add_macs(response, now=now)
        self._install(hs.derive_keypair(now=now))
        timers.on_session_derived(now)
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_sent(now)
        self._emit((response,), addr)
        self.stats.handshake_responses_sent += 1

    def _receive_response(self, data: bytes, addr: Address, now: float) -> None:
        hs = self._handshake
        hs.consume_response(decode_response(data))
        self._set_endpoint(addr)
        self._install(hs.derive_keypair(now=now))
        timers = self._timers
        timers.on_session_derived(now)
        timers.on_handshake_complete(now)
        self._handshake_completed(is_initiator=True)
        # The first transport message confirms the keys to the responder: data if any waits.
        self._send_keepalive(now)
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_received(now)

    def _receive_cookie_reply(self, data: bytes, now: float) -> None:
        reply = decode_cookie_reply(data)
        hs = self._handshake
        ours = (
            hs.state is not HandshakeState.ZEROED and reply.receiver == hs.local_index
        ) or reply.receiver in self._by_index
        if not ours or not self._generator.consume_reply(reply, now=now):
            raise _Drop(DropReason.WG_UNEXPECTED_COOKIE)
        self.stats.cookie_replies_received += 1

    # --- send -----------------------------------------------------------------------------------

    def _emit(self, messages: Sequence[bytes], addr: Address) -> None:
        append = self._outbox.append
        size = 0
        for m in messages:  # a plain loop: the cheapest for the one message of most calls
            append((m, addr))
            size += len(m)
        stats = self.stats
        stats.tx_datagrams += len(messages)
        stats.tx_bytes += size

    def _send_now(self, kp: Keypair, endpoint: Address, packets: Sequence[bytes], now: float) -> None:
        """Encrypt and queue ``packets`` (``b""`` is a keepalive); ``kp.can_send`` holds for
        all of them."""
        self._emit(kp.encrypt_many(packets, self._mtu), endpoint)
        stats = self.stats
        keepalives = packets.count(b"")
        stats.keepalives_sent += keepalives
        stats.tx_packets += len(packets) - keepalives
        timers = self._timers
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_sent(now)
        if keepalives < len(packets):
            timers.on_data_sent(now)

    def _send_staged(self, now: float) -> None:
        """SendStagedPackets: flush the staged queue, or start a handshake to get keys."""
        staged = self._staged
        if not staged:
            return
        kp = self._keypairs.current
        endpoint = self.endpoint
        if kp is None or endpoint is None or not kp.can_send(now, len(staged)):
            self._send_initiation(now, retry=False)
            return
        self._send_now(kp, endpoint, list(staged), now)
        staged.clear()
        if should_rekey_on_send(kp, now):
            self._send_initiation(now, retry=False)

    def _send_keepalive(self, now: float) -> None:
        if not self._staged:
            self._staged.append(b"")
        self._send_staged(now)

    def _send_initiation(self, now: float, *, retry: bool) -> None:
        """SendHandshakeInitiation: at most one per REKEY_TIMEOUT, only with a known endpoint."""
        endpoint = self.endpoint
        if endpoint is None:
            return
        timers = self._timers
        if not retry:
            timers.handshake_attempts = 0
        if not timers.may_send_initiation(now):
            return
        timers.last_sent_handshake = now
        msg = self._handshake.create_initiation(
            local_index=self._new_index(), wall_clock=self._wall_clock(), rng=self._rng
        )
        msg = self._generator.add_macs(msg, now=now)
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_sent(now)
        self._emit((msg,), endpoint)
        self.stats.handshake_initiations_sent += 1
        timers.on_handshake_initiated(now)

    def _flush_staged(self) -> None:
        n = sum(1 for p in self._staged if p)
        if n:
            self.drops.add(DropReason.WG_NO_SESSION, n)
        self._staged.clear()

    # --- bookkeeping ------------------------------------------------------------------------------

    def _new_index(self) -> int:
        """A random 32-bit receiver index not in use by a keypair or the handshake."""
        while True:
            index = int.from_bytes(self._rng(4), "little")
            if index not in self._by_index and index != self._handshake.local_index:
                return index

    def _install(self, kp: Keypair) -> None:
        self._forget(self._keypairs.install(kp))
        self._by_index[kp.local_index] = kp

    def _forget(self, retired: list[Keypair]) -> None:
        for k in retired:
            if self._by_index.get(k.local_index) is k:
                del self._by_index[k.local_index]

    def _set_endpoint(self, addr: Address) -> None:
        if addr != self.endpoint:
            old, self.endpoint = self.endpoint, addr
            self._events.append(EndpointChanged(old, addr))

    def _handshake_completed(self, *, is_initiator: bool) -> None:
        self.stats.handshakes_completed += 1
        assert self.endpoint is not None  # set by the authenticated packet that completed it
        _log.debug("handshake completed with %s (we initiated: %s)", self.endpoint, is_initiator)
        self._events.append(HandshakeCompleted(is_initiator, self.endpoint))

    def _zero_all(self) -> None:
        """ZeroAndFlushAll: erase keys and handshake, drop staged packets."""
        self._keypairs.clear()
        self._by_index.clear()
        self._handshake.clear()
        self._flush_staged()
        self._events.append(PeerKeysZeroed())
        _log.debug("key material zeroed")
