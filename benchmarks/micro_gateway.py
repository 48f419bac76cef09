"""Per-segment CPU of the gateway's whole sans-IO data path: IP stack + WireGuard, in process.

The gateway's side is what ``io/server.py`` drives for each TCP segment, minus sockets and
greenlets: a :class:`~wgslirpy.net.stack.Stack` and a
:class:`~wgslirpy.wg.endpoint.WireGuardEndpoint` (the responder). Host bytes go in with
``tcp_send`` (download) or come out with ``tcp_read`` (upload), ``packets_to_send`` feeds
``send_ips``, and each datagram from the peer goes through ``receive_datagram``, the burst
through ``receive_ips``, as the reader loop does it, then one flush. The peer is a
second WireGuardEndpoint and our own :class:`~wgslirpy.net.tcp.TcpConnection` as the client
(untimed). The clock advances a fixed step per round (fake time; nothing sleeps).

It prints the gateway's CPU per data segment and per MB for a download and an upload, the
best of ``--repeat`` runs. Run::

    python benchmarks/micro_gateway.py                # 32 MiB each way, best of 3
    python benchmarks/micro_gateway.py --mib 8 --profile   # cProfile, both sides

Figures compare two versions of the code on one machine (less noisy than the interop
benchmark: no other process takes part); nothing is asserted.
"""

from __future__ import annotations

import random
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from micro_tcp import cli  # the same command line and figures as the TCP-only benchmark

from wgslirpy.net.build import build_tcp
from wgslirpy.net.packet import decode_ip
from wgslirpy.net.segments import TcpSegment
from wgslirpy.net.stack import Stack, StackConfig, TcpConnectRequested
from wgslirpy.net.tcp import TcpConfig, TcpConnection
from wgslirpy.wg import crypto
from wgslirpy.wg.endpoint import PeerConfig, WireGuardEndpoint

CLIENT = IPv4Address("10.77.0.2")
SERVER = IPv4Address("192.0.2.80")
GW_ADDR = ("192.0.2.1", 51820)
PEER_ADDR = ("198.51.100.2", 40000)
MTU = 1420
STEP = 0.0005  # simulated seconds per round
MAX_ROUNDS = 10_000_000


class Clock:
    now = 1000.0


def _endpoints(clock: Clock) -> tuple[WireGuardEndpoint, WireGuardEndpoint]:
    """(gateway, peer) with a confirmed session; the peer initiated."""
    rnd = random.Random(2)
    gw_priv = crypto.clamp(rnd.randbytes(32))
    peer_priv = crypto.clamp(rnd.randbytes(32))

    def wall() -> float:
        return 1_700_000_000.0 + clock.now

    gw = WireGuardEndpoint(
        gw_priv, PeerConfig(crypto.public_key(peer_priv)), now=clock.now, wall_clock=wall, mtu=MTU, rng=rnd.randbytes
    )
    peer = WireGuardEndpoint(
        peer_priv,
        PeerConfig(crypto.public_key(gw_priv), endpoint=GW_ADDR),
        now=clock.now,
        wall_clock=wall,
        mtu=MTU,
        rng=rnd.randbytes,
    )
    peer.initiate_handshake(now=clock.now)
    for _ in range(4):
        for data, _a in peer.datagrams_to_send():
            gw.receive_datagram(data, PEER_ADDR, now=clock.now)
        for data, _a in gw.datagrams_to_send():
            peer.receive_datagram(data, GW_ADDR, now=clock.now)
    peer.send_ip(b"", now=clock.now)  # key confirmation for the responder
    for data, _a in peer.datagrams_to_send():
        gw.receive_datagram(data, PEER_ADDR, now=clock.now)
    assert gw.has_session and peer.has_session
    return gw, peer


class GatewayPath:
    """The gateway (stack + endpoint) and the peer (endpoint + client TCP) of one flow."""

    def __init__(self) -> None:
        self.clock = Clock()
        now = self.clock.now
        self.gw_wg, self.peer_wg = _endpoints(self.clock)
        self.stack = Stack(StackConfig(mtu=MTU, tcp=TcpConfig(mtu=MTU)), rng=random.Random(3).randbytes)
        self.client = TcpConnection.connect(
            local=CLIENT,
            lport=49152,
            peer=SERVER,
            pport=443,
            config=TcpConfig(mtu=MTU),
            now=now,
            rng=random.Random(4).randbytes,
        )
        self.peer_send()
        self.gateway_receive()
        ev = self.stack.next_event()
        assert isinstance(ev, TcpConnectRequested)
        self.conn = ev.conn
        self.stack.tcp_accept(self.conn, now=now)
        self.gateway_flush()
        self.peer_receive()
        self.peer_send()
        self.gateway_receive()
        self.gateway_flush()
        assert self.conn.accepted

    # the gateway's side (timed by the caller)
    def gateway_receive(self) -> None:
        now = self.clock.now
        wg, stack = self.gw_wg, self.stack
        inner_packets = []
        for data, _addr in self.peer_wg.datagrams_to_send():
            inner = wg.receive_datagram(data, PEER_ADDR, now=now)
            if inner is not None:
                inner_packets.append((inner, now))
        stack.receive_ips(inner_packets)

    def gateway_flush(self) -> None:
        now = self.clock.now
        self.gw_wg.send_ips(self.stack.packets_to_send(now=now), now=now)

    # the peer's side (untimed)
    def peer_receive(self) -> int:
        """Deliver the gateway's datagrams to the client; returns how many carried data."""
        now = self.clock.now
        data_segments = 0
        for data, _addr in self.gw_wg.datagrams_to_send():
            inner = self.peer_wg.receive_datagram(data, GW_ADDR, now=now)
            if inner is None:
                continue
            seg = decode_ip(inner)
            assert isinstance(seg, TcpSegment)
            if seg.payload:
                data_segments += 1
            self.client.handle_segment(seg, now=now)
        return data_segments

    def peer_send(self) -> int:
        now = self.clock.now
        client = self.client
        if (d := client.next_deadline()) is not None and d <= now:
            client.handle_timer(now=now)
        segs = client.segments_to_send(now=now)
        self.peer_wg.send_ips([build_tcp(s) for s in segs], now=now)
        return sum(1 for s in segs if s.payload)


def run(total: int, *, download: bool) -> tuple[float, int]:
    """Move ``total`` bytes one way; returns (gateway-side seconds, data segments)."""
    p = GatewayPath()
    stack, conn, client = p.stack, p.conn, p.client
    timed = time.perf_counter
    chunk = bytes(range(256)) * 256  # a 64 KiB host read
    sent = received = 0
    gw = 0.0
    segments = 0
    for _ in range(MAX_ROUNDS):
        if received >= total:
            break
        p.clock.now += STEP
        now = p.clock.now
        t0 = timed()
        if download:  # the flow's pump: host bytes in, one flush each
            while sent < total and conn.send_space > 0:
                n = stack.tcp_send(conn, chunk[: min(len(chunk), total - sent)], now=now)
                if not n:
                    break
                sent += n
                p.gateway_flush()
        else:  # the flow's writer: what arrived goes to the host
            while data := stack.tcp_read(conn):
                received += len(data)
                p.gateway_flush()
        if (d := stack.next_deadline()) is not None and d <= now:
            stack.handle_timer(now=now)
        p.gateway_flush()
        gw += timed() - t0
        got = p.peer_receive()
        if download:
            segments += got
            received += len(client.read())
        else:
            while sent < total and client.send_space > 0:
                n = client.send(chunk[: min(len(chunk), total - sent)], now=now)
                if not n:
                    break
                sent += n
        sent_segments = p.peer_send()
        if not download:
            segments += sent_segments
        t0 = timed()  # the reader's turn: the burst, then one flush
        p.gateway_receive()
        p.gateway_flush()
        gw += timed() - t0
    return gw, segments


def main() -> None:
    cli(run, __doc__.split("\n\n")[0], mib=32, repeat=3)


if __name__ == "__main__":
    main()
