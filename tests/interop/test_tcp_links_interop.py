"""TCP through impaired links: the real client, the WireGuard underlay through tests/interop/relay.py.

Each profile puts a fresh relay (seeded) between the client and the gateway, then moves a
file down (curl, sha256 of the body) and up (the sink's count and sha256 of what it got),
asserting completion and integrity -- never speed (figures belong to benchmarks/bench.py
``--only links``). Sizes are small enough that today's slowest case (a 64 KiB window at
40 ms RTT, NewReno under loss) finishes well inside the bounds; every wait is bounded.

Profiles (each direction): ``delay20``: 20 ms each way, no loss (a 40 ms round trip on top
of the bed's own); ``lossy``: 5 ms + up to 1 ms jitter, 1.5 % loss, 5 % reordered by up to
8 ms, 1 % duplicated.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from . import fetch
from .servers import HTTP_PORT, SINK_PORT
from .topology import GW_PING_V4, SRV_V4, RelayProcess, Topology

pytestmark = pytest.mark.interop

MIB = 1 << 20


@dataclass(frozen=True)
class LinkProfile:
    name: str
    relay: dict[str, float]
    size: int  # bytes each way
    timeout: float  # bound of one transfer, seconds


PROFILES = (
    LinkProfile("delay20", {"delay_ms": 20.0}, int(os.environ.get("WGSLIRPY_INTEROP_LINK_MIB", "8")) * MIB, 100),
    LinkProfile(
        "lossy",
        {"delay_ms": 5.0, "jitter_ms": 1.0, "loss": 0.015, "reorder": 0.05, "reorder_ms": 8.0, "dup": 0.01},
        int(os.environ.get("WGSLIRPY_INTEROP_LINK_MIB", "4")) * MIB,
        100,
    ),
)


@dataclass
class Link:
    profile: LinkProfile
    relay: RelayProcess


@pytest.fixture(scope="module", params=PROFILES, ids=[p.name for p in PROFILES])
def link(topo: Topology, request: pytest.FixtureRequest) -> Iterator[Link]:
    """The client's endpoint through a relay with the profile's impairment, for the profile's tests."""
    profile: LinkProfile = request.param
    relay = topo.start_relay(seed=17, **profile.relay)  # type: ignore[arg-type]
    topo.set_client_endpoint(relay.address)
    try:
        assert topo.wait_for_ping(GW_PING_V4, timeout=15) is not None, "no tunnel through the relay"
        yield Link(profile, relay)
    finally:
        relay.stop()
        topo.set_client_endpoint(topo.gateway.endpoint)


def test_download_through_link(topo: Topology, link: Link, measure: Callable[[str], None]) -> None:
    size, seed = link.profile.size, 23
    cmd = topo.client.cmd(fetch.blob_curl(str(SRV_V4), HTTP_PORT, size, seed, max_time=link.profile.timeout))
    elapsed = fetch.download(cmd, size, seed, wait=30)
    measure(f"{link.profile.name}: download {size / MIB:.0f} MiB in {elapsed:.1f} s")


def test_upload_through_link(topo: Topology, link: Link, measure: Callable[[str], None]) -> None:
    t = link.profile.timeout
    r = topo.probe(
        "upload", SRV_V4, str(SINK_PORT), "--size", str(link.profile.size), "--timeout", str(t), timeout=t + 30
    )
    assert r["ok"], f"the sink got other bytes than we sent: {r}"
    measure(f"{link.profile.name}: upload {link.profile.size / MIB:.0f} MiB in {r['elapsed']:.1f} s")


def test_relay_impaired_the_link(topo: Topology, link: Link, measure: Callable[[str], None]) -> None:
    """The transfers above really crossed the impairment (else they prove nothing)."""
    c: dict[str, Any] = link.relay.counters()
    spec = link.profile.relay
    assert c["to_upstream"] > 1000 and c["to_client"] > 1000, c
    for key, counter in (("loss", "dropped"), ("reorder", "reordered"), ("dup", "duplicated")):
        if spec.get(key):
            assert c["up"][counter] > 0 and c["down"][counter] > 0, (counter, c)
    assert c.get("send_errors", 0) == 0 and c.get("pool_full", 0) == 0, c
    delay = spec.get("delay_ms", 0.0)
    _, rx, out = topo.ping(GW_PING_V4, count=10, interval=0.05, wait=2)
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    assert rx > 0 and rtts, out
    # A lower bound only: the relay holds each datagram at least the one-way delay.
    assert min(rtts) >= 2 * delay * 0.98, f"ping RTTs {rtts} below twice the {delay} ms delay"
    measure(
        f"{link.profile.name}: ping RTT min {min(rtts):.1f} ms (2 x {delay:g} ms delay); "
        f"relay ({c.get('engine')}) dropped {c['dropped']}, reordered {c['reordered']}, "
        f"duplicated {c['duplicated']}"
    )
