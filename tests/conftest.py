"""Shared fixtures: a fake clock, a seeded rng and fixed test keys."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest


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
