"""Shared fixtures: a fake clock, a seeded rng, fixed test keys, and a started gateway on
loopback with a tunnel client (``gateway``, ``client``: tests/test_server.py's setup)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from wgslirpy import Gateway

    from .test_server import TunnelClient


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def __call__(self) -> float:
        return self.now


def seeded_rng(seed: int = 1) -> Callable[[int], bytes]:
    """A deterministic stand-in for ``os.urandom``."""
    r = random.Random(seed)
    return lambda n: bytes(r.getrandbits(8) for _ in range(n))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rng() -> Callable[[int], bytes]:
    return seeded_rng(1)


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    """A started Gateway on loopback (tests/test_server.py's ``make_config``), stopped after."""
    from wgslirpy import Gateway

    from .test_server import make_config

    gw = Gateway(make_config())
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[TunnelClient]:
    """Our own WireGuard core as the gateway's peer, over loopback UDP."""
    from .test_server import TunnelClient

    c = TunnelClient(gateway.address)
    try:
        yield c
    finally:
        c.close()
