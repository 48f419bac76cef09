"""Destination policy: which (address, port) the peer's flows may reach through the host.

Pure and table driven. A :class:`Policy` holds the user's rules (``--allow`` /
``--deny CIDR[:PORTS]``, in command-line order) followed by the built-in denials; the
first rule that matches decides, and a destination no rule matches is allowed.

Built-in denials (each overridable by an earlier ``--allow``), because the gateway's host
network is not the peer's to roam:

* loopback: 127.0.0.0/8, ::1, and the unspecified 0.0.0.0 / :: (which reach the host
  itself); ``--allow-loopback`` is an alias for allowing exactly these;
* link-local: 169.254.0.0/16 and fe80::/10 (cloud instance metadata lives at
  169.254.169.254, RFC 3927 / RFC 4291 §2.5.6);
* multicast 224.0.0.0/4 and ff00::/8, and the limited broadcast 255.255.255.255.

IPv4-mapped IPv6 destinations (``::ffff:a.b.c.d``) are judged as the IPv4 address they
reach, so ``::ffff:127.0.0.1`` is loopback and an IPv4 rule covers it.

Rule syntax (:func:`parse_rule`): ``CIDR`` or ``CIDR:PORTS``; an IPv6 prefix with ports is
bracketed, ``[2001:db8::/32]:443``; a bare address means one host. PORTS is one port
(``443``), a range (``8000-8100``) or a comma list of either (``80,443,8000-8100``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError
from .segments import IPAddress

__all__ = ["Decision", "Policy", "PortSet", "Rule", "parse_ports", "parse_rule", "DEFAULT_DENIED"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Category = Literal["rule", "loopback", "link-local", "multicast", "broadcast"]


@dataclass(frozen=True, slots=True)
class PortSet:
    """Inclusive port ranges; invariant: each (lo, hi) has 0 <= lo <= hi <= 65535."""

    ranges: tuple[tuple[int, int], ...]

    def __contains__(self, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.ranges)

    def __str__(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)


@dataclass(frozen=True, slots=True)
class Rule:
    """Allow or deny ``network`` (on ``ports``, or every port when None)."""

    allow: bool
    network: Network
    ports: PortSet | None = None
    #: what the rule stands for: a user's rule or a built-in category
    category: Category = "rule"

    def matches(self, addr: IPAddress, port: int) -> bool:
        return (
            addr.version == self.network.version and addr in self.network and (self.ports is None or port in self.ports)
        )

    def __str__(self) -> str:
        verb = "--allow" if self.allow else "--deny"
        net = str(self.network)
        if self.ports is None:
            return f"{verb} {net}"
        return f"{verb} {'[' + net + ']' if self.network.version == 6 else net}:{self.ports}"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    #: the rule that decided; None when nothing matched (allowed)
    rule: Rule | None

    @property
    def category(self) -> Category | None:
        return self.rule.category if self.rule is not None else None

    def explain(self) -> str:
        """Why a destination was refused, for the log (names the option that would allow it)."""
        rule = self.rule
        if rule is None or rule.category == "rule":
            return f"denied by {rule}" if rule is not None else "allowed"
        if rule.category == "loopback":
            return "loopback destinations are refused (--allow-loopback or --allow permits them)"
        return f"{rule.category} destinations are refused ({rule.network}; --allow {rule.network} permits them)"


def _builtin(category: Category, *nets: str) -> tuple[Rule, ...]:
    return tuple(Rule(False, ipaddress.ip_network(n), None, category) for n in nets)


LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128")
#: the built-in denials, in the order they are checked (after the user's rules)
DEFAULT_DENIED: tuple[Rule, ...] = (
    _builtin("loopback", *LOOPBACK_NETWORKS)
    + _builtin("link-local", "169.254.0.0/16", "fe80::/10")
    + _builtin("multicast", "224.0.0.0/4", "ff00::/8")
    + _builtin("broadcast", "255.255.255.255/32")
)


def loopback_allowed() -> tuple[Rule, ...]:
    """What ``--allow-loopback`` stands for."""
    return tuple(Rule(True, ipaddress.ip_network(n), None, "loopback") for n in LOOPBACK_NETWORKS)


class Policy:
    """Decides destinations; see the module docstring. Decisions are memoised (bounded),
    since UDP asks once per datagram."""

    _CACHE_MAX = 4096

    def __init__(self, rules: Sequence[Rule] = (), *, allow_loopback: bool = False) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules) + (loopback_allowed() if allow_loopback else ()) + DEFAULT_DENIED
        self._cache: dict[tuple[IPAddress, int], Decision] = {}

    def decide(self, addr: IPAddress, port: int) -> Decision:
        key = (addr, port)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        judged = addr
        mapped = getattr(addr, "ipv4_mapped", None)
        if mapped is not None:
            judged = mapped
        decision = Decision(True, None)
        for rule in self.rules:
            if rule.matches(judged, port):
                decision = Decision(rule.allow, rule)
                break
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[key] = decision
        return decision

    def allows(self, addr: IPAddress, port: int) -> bool:
        return self.decide(addr, port).allowed


def parse_ports(text: str, what: str) -> PortSet:
    """``443``, ``8000-8100`` or a comma list of those (ConfigError otherwise)."""
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        part = part.strip()
        lo_text, dash, hi_text = part.partition("-")
        lo = _port(lo_text, what, text)
        hi = _port(hi_text, what, text) if dash else lo
        if lo > hi:
            raise ConfigError(f"{what}: port range {part!r} runs backwards")
        ranges.append((lo, hi))
    return PortSet(tuple(ranges))


def _port(text: str, what: str, whole: str) -> int:
    t = text.strip()
    if not t.isdigit():
        raise ConfigError(f"{what}: {whole!r}: {t!r} is not a port (write 443, 8000-8100 or 80,443)")
    port = int(t)
    if port > 65535:
        raise ConfigError(f"{what}: port {port} is out of range 0-65535")
    return port


def parse_rule(text: str, *, allow: bool, what: str | None = None) -> Rule:
    """One ``--allow`` / ``--deny`` value: ``CIDR``, ``CIDR:PORTS`` or ``[IPv6-CIDR]:PORTS``."""
    what = what or ("--allow" if allow else "--deny")
    s = text.strip()
    ports: PortSet | None = None
    if s.startswith("["):
        inner, sep, rest = s[1:].partition("]")
        if not sep:
            raise ConfigError(f"{what}: {text!r}: missing ']'")
        if rest.startswith("/") and "/" not in inner:
            # "[2001:db8::]/32:443": the prefix length outside the brackets
            length, colon, port_text = rest[1:].partition(":")
            inner, rest = f"{inner}/{length}", colon + port_text
        if rest:
            if not rest.startswith(":") or len(rest) == 1:
                raise ConfigError(f"{what}: {text!r}: expected [IPv6-prefix]:PORTS")
            ports = parse_ports(rest[1:], what)
        net_text = inner
    elif s.count(":") == 1:
        net_text, _, port_text = s.partition(":")
        ports = parse_ports(port_text, what)
    else:
        net_text = s  # IPv4 without ports, or IPv6 (no ports without brackets)
    if not net_text:
        raise ConfigError(f"{what}: empty address")
    if "%" in net_text:
        raise ConfigError(f"{what}: {text!r}: a rule cannot name an interface scope (%...)")
    try:
        network = ipaddress.ip_network(net_text.strip(), strict=False)
    except ValueError:
        example = "e.g. 10.0.0.0/8:443 or [fd00::/8]:443"
        raise ConfigError(f"{what}: {text!r} is not an address or prefix ({example})") from None
    return Rule(allow, network, ports)


def parse_rules(items: Iterable[tuple[str, str]]) -> tuple[Rule, ...]:
    """Rules from ``("allow" | "deny", text)`` pairs, order kept (first match wins)."""
    rules = []
    for verb, text in items:
        if verb not in ("allow", "deny"):
            raise ConfigError(f"unknown destination rule kind {verb!r} (allow or deny)")
        rules.append(parse_rule(text, allow=verb == "allow"))
    return tuple(rules)
