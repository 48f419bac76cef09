"""WgPair: two WireGuardEndpoint cores joined by an in-memory link (aioquic-style helpers).

``a`` knows ``b``'s address and so can initiate; ``b`` learns ``a``'s from the first
authenticated packet. Time is a FakeClock shared by both; wall clocks are fixed offsets of it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest

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


def ipv4_packet(payload: bytes = b"hello", src: str = "10.0.0.2", dst: str = "10.0.0.1", proto: int = 17) -> bytes:
    """A minimal IPv4 packet (checksum left zero: the endpoint does not check it)."""
    total = 20 + len(payload)
    s = bytes(int(x) for x in src.split("."))
    d = bytes(int(x) for x in dst.split("."))
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, proto, 0, s, d) + payload


def ipv6_packet(
    payload: bytes = b"hello6", src: bytes = b"\xfd" + bytes(14) + b"\x02", dst: bytes = b"\xfd" + bytes(14) + b"\x01"
) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), 17, 64, src, dst) + payload


class WgPair:
    """Initiator-capable ``a`` and responder ``b`` over a lossless in-memory link."""

    def __init__(
        self,
        clock: FakeClock | None = None,
        *,
        a_peer: dict[str, Any] | None = None,
        b_peer: dict[str, Any] | None = None,
        psk: bytes | None = None,
        a_kwargs: dict[str, Any] | None = None,
        b_kwargs: dict[str, Any] | None = None,
    ) -> None:
        # dict[str, Any] rather than type: ignore comments, which a formatter can move off their line.
        self.clock = clock or FakeClock()

        def wall() -> float:
            return self.clock.now + WALL_OFFSET

        self.a_addr = A_ADDR
        self.b_addr = B_ADDR
        a_peer_kw: dict[str, Any] = {"preshared_key": psk, "endpoint": B_ADDR} | (a_peer or {})
        b_peer_kw: dict[str, Any] = {"preshared_key": psk} | (b_peer or {})
        self.a = WireGuardEndpoint(
            A_PRIVATE,
            PeerConfig(B_PUBLIC, **a_peer_kw),
            now=self.clock.now,
            wall_clock=wall,
            rng=seeded_rng(1),
            **(a_kwargs or {}),
        )
        self.b = WireGuardEndpoint(
            B_PRIVATE,
            PeerConfig(A_PUBLIC, **b_peer_kw),
            now=self.clock.now,
            wall_clock=wall,
            rng=seeded_rng(2),
            **(b_kwargs or {}),
        )

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

    def advance(self, seconds: float, *, deliver: bool = True) -> None:
        """Move time forward, firing both endpoints' timers at each deadline on the way
        (and delivering what they send, unless ``deliver`` is False)."""
        end = self.now + seconds
        for _ in range(100_000):
            ds = [d for d in (self.a.next_deadline(), self.b.next_deadline()) if d is not None]
            if not ds or min(ds) > end:
                break
            self.clock.now = max(self.now, min(ds))
            self.a.handle_timer(now=self.now)
            self.b.handle_timer(now=self.now)
            if deliver:
                self.roundtrip(self.a)
        self.clock.now = end
        self.a.handle_timer(now=end)
        self.b.handle_timer(now=end)
        if deliver:
            self.roundtrip(self.a)


def assert_dropped(ep: WireGuardEndpoint, reason: DropReason, n: int = 1) -> None:
    assert ep.drops[reason] == n, (reason, ep.drops.as_dict())


# --- golden transcript (tests/data/wg_handshake_golden.json) --------------------------------

GOLDEN_PATH = "tests/data/wg_handshake_golden.json"


def fixed_rng(*chunks: bytes) -> Callable[[int], bytes]:
    """An rng that returns ``chunks`` in order (each call must ask for the chunk's length)."""
    it = iter(chunks)

    def rng(n: int) -> bytes:
        chunk = next(it)
        assert len(chunk) == n, (len(chunk), n)
        return chunk

    return rng


def golden_transcript(psk: bytes | None = None) -> dict[str, str]:
    """Initiation, response, first transport messages and a cookie reply from fixed inputs."""
    from wgslirpy.wg.cookie import CookieChecker, CookieGenerator
    from wgslirpy.wg.messages import decode_cookie_reply, decode_initiation, decode_response
    from wgslirpy.wg.noise import Handshake

    wall = 1_700_000_000.123456789
    eph_i = crypto.hash_(b"golden initiator ephemeral")
    eph_r = crypto.hash_(b"golden responder ephemeral")
    hs_i = Handshake(A_PRIVATE, B_PUBLIC, psk)
    hs_r = Handshake(B_PRIVATE, A_PUBLIC, psk)
    gen_i, gen_r = CookieGenerator(B_PUBLIC), CookieGenerator(A_PUBLIC)
    init = gen_i.add_macs(
        hs_i.create_initiation(local_index=0x11223344, wall_clock=wall, rng=fixed_rng(eph_i)), now=0.0
    )
    hs_r.consume_initiation(decode_initiation(init), now=0.0)
    resp = gen_r.add_macs(hs_r.create_response(local_index=0x55667788, rng=fixed_rng(eph_r)), now=0.0)
    hs_i.consume_response(decode_response(resp))
    kp_i = hs_i.derive_keypair(now=0.0)
    kp_r = hs_r.derive_keypair(now=0.0)
    first = kp_i.encrypt(ipv4_packet(b"golden"))
    keepalive = kp_i.encrypt(b"")
    reply_to_r = kp_r.encrypt(ipv4_packet(b"back", src="10.0.0.1", dst="10.0.0.2"))
    checker = CookieChecker(B_PUBLIC, fixed_rng(bytes(range(24)), bytes(range(32, 64))))
    cookie_reply = checker.create_reply(init, 0x11223344, A_ADDR, now=0.0)
    # mac2 of a retried initiation carrying that cookie
    gen_i.consume_reply(decode_cookie_reply(cookie_reply), now=0.0)
    retry = gen_i.add_macs(init[:-32] + bytes(32), now=0.0)
    return {
        "initiator_private": A_PRIVATE.hex(),
        "initiator_public": A_PUBLIC.hex(),
        "responder_private": B_PRIVATE.hex(),
        "responder_public": B_PUBLIC.hex(),
        "preshared_key": (psk or bytes(32)).hex(),
        "initiator_ephemeral": eph_i.hex(),
        "responder_ephemeral": eph_r.hex(),
        "wall_clock": repr(wall),
        "tai64n": crypto.tai64n(wall).hex(),
        "initiation": init.hex(),
        "response": resp.hex(),
        "initiator_send_key": kp_i.send_key.hex(),
        "initiator_recv_key": kp_i.recv_key.hex(),
        "first_transport": first.hex(),
        "keepalive": keepalive.hex(),
        "responder_transport": reply_to_r.hex(),
        "cookie_reply": cookie_reply.hex(),
        "retry_initiation_with_mac2": retry.hex(),
    }


if __name__ == "__main__":  # regenerate: python -m tests.wg_helpers (only on purpose!)
    import json

    with open(GOLDEN_PATH, "w") as f:
        json.dump(
            {"no_psk": golden_transcript(), "psk": golden_transcript(bytes(range(200, 232)))},
            f,
            indent=1,
            sort_keys=True,
        )
        f.write("\n")


def record_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[tuple[Any, ...]]:
    """Wrap ``owner.name`` (for this test) so each call's positional arguments are recorded
    before the original runs; returns the record (e.g. how many DH operations a flood cost)."""
    calls: list[tuple[Any, ...]] = []
    real = getattr(owner, name)

    def recording(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(owner, name, recording)
    return calls
