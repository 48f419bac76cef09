"""Token buckets that bound handshake work (wireguard-go ``ratelimiter/ratelimiter.go``).

* :class:`TokenBucket` is one bucket: ``rate`` tokens a second up to ``burst``; ``allow``
  takes one token or answers False. Used for the global cookie-reply budget and for the peer's
  own authenticated endpoint.
* :class:`RateLimiter` keeps one bucket per source, keyed by :func:`source_key` (an IPv4
  address or an IPv6 /64, so one host cannot dodge the limit by changing port or by walking its
  /64), with wireguard-go's numbers: 20 a second, bursts of 5. Sources idle for
  RATE_LIMITER_IDLE_TIME are swept away at most once a second; the table never holds more than
  ``max_sources`` entries: when it is full and a sweep frees nothing, unknown sources are
  refused (fail closed: a spoofed-source flood cannot grow memory).

Pure: ``now`` (monotonic seconds) is a keyword argument; nothing reads a clock.
"""

from __future__ import annotations

import ipaddress

from ..constants import (
    HANDSHAKE_BURST_PER_SOURCE,
    HANDSHAKE_RATE_PER_SOURCE,
    RATE_LIMITER_IDLE_TIME,
    RATE_LIMITER_MAX_SOURCES,
)

SourceKey = str | int
#: a token, less a rounding allowance (refills are sums of float products)
_ONE = 1.0 - 1e-9


def source_key(host: str) -> SourceKey:
    """The rate-limit key of a sender address: the IPv4 address, or the IPv6 /64 as an int.

    IPv4-mapped IPv6 (``::ffff:a.b.c.d``, from a dual-stack socket) counts as the IPv4 address.
    """
    if ":" not in host:
        return host
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    try:
        return int(ipaddress.IPv6Address(host.split("%", 1)[0])) >> 64
    except ValueError:
        return host


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: float, *, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        #: tokens available as of ``last``; 0 <= tokens <= burst.
        self.tokens = float(burst)
        self.last = now

    def allow(self, *, now: float) -> bool:
        """Take one token if there is one."""
        tokens = self.tokens
        if now > self.last:
            tokens = min(self.burst, tokens + (now - self.last) * self.rate)
            self.last = now
        if tokens >= _ONE:
            self.tokens = max(0.0, tokens - 1.0)
            return True
        self.tokens = tokens
        return False


class RateLimiter:
    """A :class:`TokenBucket` per source key; see the module docstring."""

    __slots__ = ("rate", "burst", "idle_time", "max_sources", "_buckets", "_next_sweep")

    def __init__(
        self,
        *,
        now: float,
        rate: float = HANDSHAKE_RATE_PER_SOURCE,
        burst: int = HANDSHAKE_BURST_PER_SOURCE,
        idle_time: float = RATE_LIMITER_IDLE_TIME,
        max_sources: int = RATE_LIMITER_MAX_SOURCES,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.idle_time = idle_time
        self.max_sources = max_sources
        #: source key -> its bucket; len <= max_sources.
        self._buckets: dict[SourceKey, TokenBucket] = {}
        #: earliest time of the next sweep of idle buckets.
        self._next_sweep = now + 1.0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, host: str, *, now: float) -> bool:
        """One handshake from ``host`` (an address string as recvfrom gives it)?"""
        if now >= self._next_sweep:
            self._sweep(now)
        key = source_key(host)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._sweep(now)
                if len(self._buckets) >= self.max_sources:
                    return False
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now=now)
        return bucket.allow(now=now)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + 1.0
        idle = self.idle_time
        stale = [k for k, b in self._buckets.items() if now - b.last > idle]
        for k in stale:
            del self._buckets[k]
