"""UDP NAT table: one full-cone binding per client (source address, source port).

Contract (pure, no I/O, time comes in as ``now``):

* :meth:`UdpNatTable.outbound` maps a datagram the peer sent into the tunnel to its
  binding, creating one on first use. The gevent shell gives each binding its own OS UDP
  socket (family = the client address's family) and sends the payload from it to
  ``dgram.dst``/``dgram.dport``.
* Full cone (RFC 4787 "endpoint-independent mapping" and "endpoint-independent
  filtering"): whatever arrives on a binding's socket, from ANY remote address and port,
  goes back to the client with that remote address/port as its source
  (:meth:`UdpNatTable.inbound`). This is what the Rust wgslirpy does and what games, STUN
  and QUIC connection migration expect.
* A binding lives until it has seen no traffic either way for ``idle_timeout`` seconds
  (RFC 4787 REQ-5 asks for at least 120 s, but the Rust tool's default is 92 s), until
  ``max_bindings`` forces the least recently used one out, or until the shell reports its
  socket broken (:meth:`UdpNatTable.close`). Every opening and closing is queued as an
  event (:meth:`UdpNatTable.next_event`) so the shell can create/close sockets and
  greenlets; a binding may be opened and closed again before the shell drains events.

Bookkeeping is O(1) per datagram: bindings sit in an ``OrderedDict`` in least recently
used order, so both the next idle deadline and the eviction victim are its head.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Literal

from wgslirpy.constants import DEFAULT_MAX_UDP_BINDINGS, DEFAULT_UDP_IDLE_TIMEOUT
from wgslirpy.errors import ConfigError, DropCounter, DropReason
from wgslirpy.net.segments import IPAddress, UdpDatagram

__all__ = [
    "BindingClosed",
    "BindingOpened",
    "CloseReason",
    "UdpBinding",
    "UdpNatTable",
    "reply_source",
]

CloseReason = Literal["idle", "evicted", "closed"]


@dataclass(eq=False)
class UdpBinding:
    """One client endpoint's mapping. Compared by identity; mutated only by the table."""

    #: Unique within its table and never reused, so a late reply for a closed binding can
    #: never reach a newer one.
    id: int
    client_addr: IPAddress
    client_port: int
    created: float
    #: Latest activity in either direction; never decreases; >= created.
    last_seen: float
    #: Datagrams/bytes (UDP payload) from the client out to the world.
    tx_datagrams: int = 0
    tx_bytes: int = 0
    #: Datagrams/bytes (UDP payload) from the world back to the client.
    rx_datagrams: int = 0
    rx_bytes: int = 0


@dataclass(frozen=True, slots=True)
class BindingOpened:
    """The shell should open a UDP socket for ``binding`` and start its reader."""

    binding: UdpBinding


@dataclass(frozen=True, slots=True)
class BindingClosed:
    """The shell should close ``binding``'s socket (unless it already did: ``closed``)."""

    binding: UdpBinding
    reason: CloseReason


NatEvent = BindingOpened | BindingClosed


def reply_source(binding: UdpBinding, remote: IPAddress) -> IPAddress | None:
    """``remote`` as a source address in the client's family, or None if it has none.

    A dual-stack IPv6 socket receives from IPv4 remotes (the shell sees them unmapped):
    an IPv6 client gets them as ``::ffff:a.b.c.d`` (RFC 4291 §2.5.5.2), which is what its
    own socket would show. An IPv4 client can only take IPv6 remotes that are IPv4-mapped.
    """
    if remote.version == binding.client_addr.version:
        return remote
    if remote.version == 4:
        return IPv6Address(b"\0" * 10 + b"\xff\xff" + remote.packed)
    return getattr(remote, "ipv4_mapped", None)


class UdpNatTable:
    """All UDP bindings of one gateway; see the module docstring for the contract."""

    def __init__(
        self,
        *,
        idle_timeout: float = DEFAULT_UDP_IDLE_TIMEOUT,
        max_bindings: int = DEFAULT_MAX_UDP_BINDINGS,
    ) -> None:
        if not idle_timeout > 0:
            raise ConfigError(f"UDP idle timeout must be positive, got {idle_timeout!r}")
        if max_bindings < 1:
            raise ConfigError(f"the UDP binding limit must be at least 1, got {max_bindings!r}")
        self.idle_timeout = idle_timeout
        self.max_bindings = max_bindings
        self.drops = DropCounter()
        #: id -> binding, least recently used first. Because ``_now`` never goes
        #: backwards, this order is also ascending ``last_seen`` order, so the head holds
        #: the earliest idle deadline. Holds exactly the live bindings.
        self._lru: OrderedDict[int, UdpBinding] = OrderedDict()
        #: (client address, client port) -> live binding; same bindings as ``_lru``.
        self._by_client: dict[tuple[IPAddress, int], UdpBinding] = {}
        #: Id for the next binding; only ever increments.
        self._next_id = 1
        #: Latest ``now`` seen; a caller's clock going backwards is clamped to it.
        self._now = float("-inf")
        self._events: deque[NatEvent] = deque()

    # --- traffic --------------------------------------------------------------------

    def outbound(self, dgram: UdpDatagram, *, now: float) -> UdpBinding:
        """Binding for the client endpoint that sent ``dgram`` (created if needed).

        Bindings idle at ``now`` are expired first, so an expired binding is never
        revived: the client gets a fresh one (and a fresh socket), as behind a real NAT.
        """
        now = self._tick(now)
        self._expire(now)
        key = (dgram.src, dgram.sport)
        binding = self._by_client.get(key)
        if binding is None:
            if len(self._lru) >= self.max_bindings:
                _, victim = self._lru.popitem(last=False)
                self._remove(victim, "evicted")
            binding = UdpBinding(
                id=self._next_id,
                client_addr=dgram.src,
                client_port=dgram.sport,
                created=now,
                last_seen=now,
            )
            self._next_id += 1
            self._lru[binding.id] = binding
            self._by_client[key] = binding
            self._events.append(BindingOpened(binding))
        else:
            self._touch(binding, now)
        binding.tx_datagrams += 1
        binding.tx_bytes += len(dgram.payload)
        return binding

    def inbound(
        self,
        binding_id: int,
        remote_addr: IPAddress,
        remote_port: int,
        payload: bytes,
        *,
        now: float,
    ) -> UdpDatagram | None:
        """The datagram that delivers a reply received on ``binding_id``'s socket.

        Returns None (counted ``UDP_NO_BINDING``) when the binding is already gone: the
        shell's reader may still hold a datagram read just before the binding closed.
        """
        now = self._tick(now)
        binding = self._lru.get(binding_id)
        if binding is None:
            self.drops.add(DropReason.UDP_NO_BINDING)
            return None
        source = reply_source(binding, remote_addr)
        if source is None:
            self.drops.add(DropReason.UDP_FAMILY_MISMATCH)
            return None
        self._touch(binding, now)
        binding.rx_datagrams += 1
        binding.rx_bytes += len(payload)
        return UdpDatagram(
            src=source,
            dst=binding.client_addr,
            sport=remote_port,
            dport=binding.client_port,
            payload=payload,
        )

    # --- lookups and shell-driven closing -------------------------------------------

    def get(self, binding_id: int) -> UdpBinding | None:
        return self._lru.get(binding_id)

    def close(self, binding_id: int) -> None:
        """The shell closed the binding's socket (e.g. a socket error).

        Queues ``BindingClosed(reason="closed")``; a no-op for an unknown or already
        closed id, because the shell may race an idle expiry or an eviction.
        """
        binding = self._lru.pop(binding_id, None)
        if binding is not None:
            self._remove(binding, "closed")

    def __len__(self) -> int:
        return len(self._lru)

    # --- events and timers ----------------------------------------------------------

    def next_event(self) -> NatEvent | None:
        """Pop the oldest queued opening/closing, or None when there is none."""
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """When the least recently used binding goes idle; None with no bindings."""
        for binding in self._lru.values():
            return binding.last_seen + self.idle_timeout
        return None

    def handle_timer(self, *, now: float) -> None:
        """Close every binding idle at ``now`` (``BindingClosed(reason="idle")``)."""
        self._expire(self._tick(now))

    # --- internals ------------------------------------------------------------------

    def _tick(self, now: float) -> float:
        # Clamp so the LRU order stays the last_seen order even if a caller errs.
        if now > self._now:
            self._now = now
        return self._now

    def _touch(self, binding: UdpBinding, now: float) -> None:
        binding.last_seen = now
        self._lru.move_to_end(binding.id)

    def _expire(self, now: float) -> None:
        while self._lru:
            binding = next(iter(self._lru.values()))
            # Same expression as next_deadline(), so a timer fired at exactly the
            # deadline it reported always expires the binding.
            if binding.last_seen + self.idle_timeout > now:
                break  # the head is the oldest; everything after it is newer
            del self._lru[binding.id]
            self._remove(binding, "idle")

    def _remove(self, binding: UdpBinding, reason: CloseReason) -> None:
        """Finish removing ``binding`` (already out of ``_lru``) and queue the event."""
        del self._by_client[(binding.client_addr, binding.client_port)]
        self._events.append(BindingClosed(binding, reason))
