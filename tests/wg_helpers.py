"""WgPair: two WireGuardEndpoint cores joined by an in-memory link (aioquic-style helpers).

``a`` knows ``b``'s address and so can initiate; ``b`` learns ``a``'s from the first
authenticated packet. Time is a FakeClock shared by both; wall clocks are fixed offsets of it.
"""

from __future__ import annotations

import struct
from typing import Callable

from tests.conftest import FakeClock, seeded_rng
from wgslirpy.errors import DropReason
from wgslirpy.wg import crypto
from wgslirpy.wg.endpoint import PeerConfig, WireGuardEndpoint

A_ADDR = ("192.0.2.1", 40000)
B_ADDR = ("198.51.100.2", 51820)
A_PRIVATE = crypto.clamp(bytes(range(1, 33)))
B_PRIVATE = crypto.clamp(bytes(range(101, 133)))
A_PUBLIC = crypto.public_key(A_PRIVATE)
B_PUBLIC = crypto.public_key(B_PRIVATE)
WALL_OFFSET = 1_700_000_000.0


def ipv4_packet(payload: bytes = b"hello", src: str = "10.0.0.2", dst: str = "10.0.0.1",
                proto: int = 17) -> bytes:
    """A minimal IPv4 packet (checksum left zero: the endpoint does not check it)."""
    total = 20 + len(payload)
    s = bytes(int(x) for x in src.split("."))
    d = bytes(int(x) for x in dst.split("."))
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, proto, 0, s, d) + payload


def ipv6_packet(payload: bytes = b"hello6", src: bytes = b"\xfd" + bytes(14) + b"\x02",
                dst: bytes = b"\xfd" + bytes(14) + b"\x01") -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), 17, 64, src, dst) + payload


class WgPair:
    """Initiator-capable ``a`` and responder ``b`` over a lossless in-memory link."""

    def __init__(self, clock: FakeClock | None = None, *, a_peer: dict[str, object] | None = None,
                 b_peer: dict[str, object] | None = None, psk: bytes | None = None,
                 a_kwargs: dict[str, object] | None = None,
                 b_kwargs: dict[str, object] | None = None) -> None:
        self.clock = clock or FakeClock()
        wall: Callable[[], float] = lambda: self.clock.now + WALL_OFFSET
        self.a_addr = A_ADDR
        self.b_addr = B_ADDR
        self.a = WireGuardEndpoint(
            A_PRIVATE,
            PeerConfig(B_PUBLIC, psk, endpoint=B_ADDR, **(a_peer or {})),  # type: ignore[arg-type]
            now=self.clock.now, wall_clock=wall, rng=seeded_rng(1), **(a_kwargs or {}))  # type: ignore[arg-type]
        self.b = WireGuardEndpoint(
            B_PRIVATE, PeerConfig(A_PUBLIC, psk, **(b_peer or {})),  # type: ignore[arg-type]
            now=self.clock.now, wall_clock=wall, rng=seeded_rng(2), **(b_kwargs or {}))  # type: ignore[arg-type]

    @property
    def now(self) -> float:
        return self.clock.now

    def other(self, ep: WireGuardEndpoint) -> WireGuardEndpoint:
        return self.b if ep is self.a else self.a

    def addr_of(self, ep: WireGuardEndpoint) -> tuple[str, int]:
        return self.a_addr if ep is self.a else self.b_addr

    def transfer(self, sender: WireGuardEndpoint) -> list[bytes]:
        """Deliver everything ``sender`` has queued; returns the inner packets the receiver got."""
        receiver = self.other(sender)
        got: list[bytes] = []
        for data, _addr in sender.datagrams_to_send():
            pkt = receiver.receive_datagram(data, self.addr_of(sender), now=self.now)
            if pkt is not None:
                got.append(pkt)
        return got

    def roundtrip(self, sender: WireGuardEndpoint) -> int:
        """Ping-pong until both outboxes are empty; returns the number of datagrams moved."""
        moved = 0
        for _ in range(20):
            out_s = sender.datagrams_to_send()
            for data, _ in out_s:
                self.other(sender).receive_datagram(data, self.addr_of(sender), now=self.now)
            out_r = self.other(sender).datagrams_to_send()
            for data, _ in out_r:
                sender.receive_datagram(data, self.addr_of(self.other(sender)), now=self.now)
            moved += len(out_s) + len(out_r)
            if not out_s and not out_r:
                break
        return moved

    def drop(self, sender: WireGuardEndpoint) -> int:
        """Lose everything ``sender`` has queued; returns how many datagrams were lost."""
        return len(sender.datagrams_to_send())

    def handshake(self) -> None:
        """``a`` initiates; afterwards both have a confirmed session."""
        self.a.initiate_handshake(now=self.now)
        self.roundtrip(self.a)
        assert self.a.has_session
        assert self.b.has_session, "responder confirmed by a's keepalive"

    def advance(self, seconds: float, step: float | None = None, *, deliver: bool = True) -> None:
        """Move time forward, firing both endpoints' timers at their deadlines."""
        end = self.now + seconds
        for _ in range(100_000):
            ds = [d for d in (self.a.next_deadline(), self.b.next_deadline()) if d is not None]
            nxt = min(ds) if ds else end
            if step is not None:
                nxt = min(nxt, self.now + step)
            if nxt > end:
                break
            self.clock.now = max(self.now, nxt)
            self.a.handle_timer(now=self.now)
            self.b.handle_timer(now=self.now)
            if deliver:
                self.roundtrip(self.a)
            if self.now >= end and not ds:
                break
        self.clock.now = end
        self.a.handle_timer(now=self.now)
        self.b.handle_timer(now=self.now)
        if deliver:
            self.roundtrip(self.a)


def assert_dropped(ep: WireGuardEndpoint, reason: DropReason, n: int = 1) -> None:
    assert ep.drops[reason] == n, (reason, ep.drops.as_dict())
