"""Gateway configuration: validated values, parsed from user-facing strings.

Every parser here raises :class:`~wgslirpy.errors.ConfigError` with a one-line message a
user understands ("--peer-key: not valid base64"), never a traceback-worthy exception.
``Config`` is immutable; the CLI builds one from its options and a library user may build
one directly (``Config.create(private_key=..., peer_key=...)`` accepts the same strings).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import constants as C
from . import keys
from .errors import ConfigError
from .net.congestion import CONGESTION_CONTROLS, DEFAULT_CONGESTION_CONTROL
from .net.incoming import DEFAULT_PORT_RANGE, IncomingForward, check_port_range, parse_port_range
from .net.policy import Rule, parse_rules
from .net.segments import IPAddress
from .redact import redacted_repr

if TYPE_CHECKING:
    from .net.stack import StackConfig
    from .net.tcp import TcpConfig
    from .wg.endpoint import PeerConfig, WireGuardEndpoint


def parse_key(text: str, what: str) -> bytes:
    """A base64 WireGuard key (32 bytes); surrounding whitespace is ignored."""
    s = text.strip()
    if not s:
        raise ConfigError(f"{what}: empty key")
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{what}: not valid base64") from None
    return keys.check_key(raw, what)


def read_key_file(path: str, what: str) -> bytes:
    """Read a key file as written by ``wg genkey`` (trailing newline and spaces trimmed)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(4096)
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path!r}: {e.strerror or e}") from None
    return parse_key(text, f"{what} {path!r}")


def parse_ip(text: str, what: str) -> IPAddress:
    s = text.strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    try:
        return ipaddress.ip_address(s)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not an IPv4 or IPv6 address") from None


def parse_port(text: str, what: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise ConfigError(f"{what}: port {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what}: port {port} is out of range 0-65535")
    return port


def parse_socket_address(text: str, what: str, *, default_port: int | None = None) -> tuple[IPAddress, int]:
    """``1.2.3.4:5``, ``[::1]:5``, or (with ``default_port``) a bare ``1.2.3.4`` / ``::1``."""
    s = text.strip()
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep:
            raise ConfigError(f"{what}: {text!r}: missing ']' after the IPv6 address")
        if rest.startswith(":"):
            return parse_ip(host, what), parse_port(rest[1:], what)
        if rest == "" and default_port is not None:
            return parse_ip(host, what), default_port
        raise ConfigError(f"{what}: {text!r}: expected [IPv6]:port")
    if s.count(":") == 1:
        host, _, port = s.partition(":")
        return parse_ip(host, what), parse_port(port, what)
    if default_port is not None:
        return parse_ip(s, what), default_port
    if s.count(":") > 1:
        raise ConfigError(f"{what}: {text!r}: write IPv6 addresses with a port as [addr]:port")
    raise ConfigError(f"{what}: {text!r}: expected address:port")


def parse_incoming(spec: str, proto: str) -> IncomingForward:
    """``HOST_ADDR,[SRC_ADDR],DST_ADDR`` of ``-t``/``-u`` (the Rust wgslirpy v0.2 syntax):
    ``HOST,DST``, ``HOST,,DST`` or ``HOST,SRC,DST``; each ``ip:port`` or ``[v6]:port``."""
    what = "--incoming-tcp" if proto == "tcp" else "--incoming-udp"
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) not in (2, 3) or not parts[0] or not parts[-1]:
        raise ConfigError(f"{what}: {spec!r}: expected HOST_ADDR,[SRC_ADDR],DST_ADDR")
    host = parse_socket_address(parts[0], f"{what} HOST_ADDR")
    src = parse_socket_address(parts[1], f"{what} SRC_ADDR") if len(parts) == 3 and parts[1] else None
    dst = parse_socket_address(parts[-1], f"{what} DST_ADDR")
    return IncomingForward("tcp" if proto == "tcp" else "udp", host, dst, src)


@dataclass(frozen=True)
class Config:
    """Everything the gateway needs; validated on construction.

    Invariants: keys are 32 bytes (``keys.check_key``); ``mtu`` in ``MIN_MTU..MAX_MTU`` (constants.py);
    ``pingable`` and ``dns`` hold each address once (any number, either IP version).
    """

    private_key: bytes
    peer_public_key: bytes
    preshared_key: bytes | None = None
    #: where to bind the WireGuard UDP socket
    bind: tuple[IPAddress, int] = (ipaddress.IPv4Address("0.0.0.0"), C.DEFAULT_WG_PORT)
    #: the peer's first known UDP address; lets us initiate handshakes and keepalives
    peer_endpoint: tuple[IPAddress, int] | None = None
    #: persistent keepalive interval in seconds (-a)
    keepalive_interval: float | None = None
    #: tunnel addresses that answer ICMP echo (-P)
    pingable: tuple[IPAddress, ...] = ()
    #: tunnel socket addresses of the built-in DNS responder (-D)
    dns: tuple[tuple[IPAddress, int], ...] = ()
    mtu: int = C.DEFAULT_MTU
    tcp_buffer_size: int = C.DEFAULT_TCP_BUFFER_SIZE
    #: TCP congestion control algorithm (--congestion)
    congestion: str = DEFAULT_CONGESTION_CONTROL
    transmit_queue_capacity: int = C.DEFAULT_TRANSMIT_QUEUE_CAPACITY
    connect_timeout: float = C.DEFAULT_CONNECT_TIMEOUT
    tcp_idle_timeout: float = C.DEFAULT_TCP_IDLE_TIMEOUT
    udp_idle_timeout: float = C.DEFAULT_UDP_IDLE_TIMEOUT
    max_udp_bindings: int = C.DEFAULT_MAX_UDP_BINDINGS
    dns_ttl: int = C.DEFAULT_DNS_TTL
    #: permit flows to the host's loopback (127.0.0.0/8, ::1); off by default
    allow_loopback: bool = False
    #: --allow/--deny destination rules in command-line order (first match wins), checked
    #: before the built-in denials (net/policy.py)
    destination_rules: tuple[Rule, ...] = ()
    max_tcp_flows: int = C.DEFAULT_MAX_TCP_FLOWS
    max_pending_connects: int = C.DEFAULT_MAX_PENDING_CONNECTS
    max_reassembly_bytes: int = C.DEFAULT_MAX_REASSEMBLY_BYTES
    max_dns_lookups: int = C.DEFAULT_MAX_DNS_LOOKUPS
    #: -t/-u incoming forwards, in command-line order (net/incoming.py)
    incoming: tuple[IncomingForward, ...] = ()
    #: source ports for incoming forwards whose SRC_ADDR has port 0 (inclusive)
    incoming_port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    #: tunnel source prefixes accepted from the peer (default: any)
    allowed_ips: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    )
    #: file remembering the peer's last authenticated endpoint across restarts (read at start:
    #: we initiate to it unless ``peer_endpoint`` is given). None: not remembered. A state
    #: directory would default it to <state-dir>/``constants.ENDPOINT_FILE_NAME``.
    endpoint_file: str | None = None

    def __repr__(self) -> str:
        return redacted_repr(self, ("private_key", "preshared_key"))

    def __post_init__(self) -> None:
        for name in ("private_key", "peer_public_key"):
            keys.check_key(getattr(self, name), name)
        if self.preshared_key is not None:
            keys.check_key(self.preshared_key, "preshared_key")
        if not C.MIN_MTU <= self.mtu <= C.MAX_MTU:
            raise ConfigError(f"--mtu: must be between {C.MIN_MTU} and {C.MAX_MTU}, got {self.mtu}")
        if self.tcp_buffer_size < 1024 or self.tcp_buffer_size > 0xFFFF << 14:
            raise ConfigError(
                f"--tcp-buffer-size: must be between 1024 and {0xFFFF << 14} (the largest TCP window), "
                f"got {self.tcp_buffer_size}"
            )
        if self.congestion not in CONGESTION_CONTROLS:
            raise ConfigError(
                f"--congestion: unknown algorithm {self.congestion!r}; choose one of {', '.join(CONGESTION_CONTROLS)}"
            )
        if self.transmit_queue_capacity < 1:
            raise ConfigError("--transmit-queue-capacity: must be at least 1")
        if self.max_udp_bindings < 1:
            raise ConfigError("--max-udp-bindings: must be at least 1")
        for name in ("max_tcp_flows", "max_pending_connects", "max_dns_lookups"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be at least 1")
        if self.max_reassembly_bytes < 65535 + 40:
            raise ConfigError("--max-reassembly-bytes: must be at least 65575 (one largest IP packet)")
        for name in ("connect_timeout", "tcp_idle_timeout", "udp_idle_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be positive")
        if self.keepalive_interval is not None and not 0 < self.keepalive_interval <= 65535:
            raise ConfigError("--keepalive-interval: must be between 1 and 65535 seconds")
        if self.peer_endpoint is not None and self.peer_endpoint[0].version == 6 and self.bind[0].version == 4:
            raise ConfigError("--peer-endpoint: an IPv6 peer needs an IPv6 bind address, e.g. -b [::]:51820")
        check_port_range(self.incoming_port_range)
        listening = [(f.proto, f.host) for f in self.incoming]
        for i, f in enumerate(self.incoming):
            if f.host[1] != 0 and (f.proto, f.host) in listening[:i]:
                raise ConfigError(f"{f.option}: {f.describe()}: another forward listens on the same host address")
        if self.private_key == self.peer_public_key:
            raise ConfigError("--peer-key: this is our own private key, not the peer's public key")

    # --- the cores' configurations (built without gevent: the cores can be driven alone) ---

    def tcp_config(self) -> TcpConfig:
        """Every TCP connection's settings (net/tcp.py)."""
        from .net.tcp import TcpConfig

        return TcpConfig(
            mtu=self.mtu,
            rcv_buffer=self.tcp_buffer_size,
            snd_buffer=self.tcp_buffer_size,
            congestion=self.congestion,
            idle_timeout=self.tcp_idle_timeout,
        )

    def stack_config(self) -> StackConfig:
        """The IP stack's settings (net/stack.py): TCP, UDP NAT, DNS, ICMP, policy, limits."""
        from .net.stack import StackConfig

        return StackConfig(
            mtu=self.mtu,
            tcp=self.tcp_config(),
            pingable=frozenset(self.pingable),
            dns=frozenset(self.dns),
            allow_loopback=self.allow_loopback,
            udp_idle_timeout=self.udp_idle_timeout,
            max_udp_bindings=self.max_udp_bindings,
            dns_ttl=self.dns_ttl,
            max_tcp_flows=self.max_tcp_flows,
            max_pending_connects=self.max_pending_connects,
            max_reassembly_bytes=self.max_reassembly_bytes,
            rules=self.destination_rules,
            incoming_ports=self.incoming_port_range,
        )

    def peer_config(self, endpoint: tuple[str, int] | None = None) -> PeerConfig:
        """The WireGuard peer (wg/endpoint.py); ``endpoint`` is where to initiate to first
        (the gateway passes ``peer_endpoint`` or the remembered one, see ``endpoint_file``)."""
        from .wg.endpoint import PeerConfig

        return PeerConfig(
            public_key=self.peer_public_key,
            preshared_key=self.preshared_key,
            endpoint=endpoint,
            persistent_keepalive=self.keepalive_interval,
            allowed_ips=self.allowed_ips,
        )

    def wireguard_endpoint(
        self,
        endpoint: tuple[str, int] | None = None,
        *,
        now: float,
        wall_clock: Callable[[], float],
        rng: Callable[[int], bytes] | None = None,
    ) -> WireGuardEndpoint:
        """The WireGuard core for this configuration (see :meth:`peer_config` for ``endpoint``)."""
        from .wg.endpoint import WireGuardEndpoint

        extra: dict[str, Any] = {} if rng is None else {"rng": rng}
        return WireGuardEndpoint(
            self.private_key,
            self.peer_config(endpoint),
            now=now,
            wall_clock=wall_clock,
            queue_capacity=self.transmit_queue_capacity,
            mtu=self.mtu,
            **extra,
        )

    @classmethod
    def create(
        cls,
        *,
        private_key: str | bytes,
        peer_key: str | bytes,
        bind: str = f"0.0.0.0:{C.DEFAULT_WG_PORT}",
        peer_endpoint: str | None = None,
        pingable: Sequence[str] = (),
        dns: Sequence[str] = (),
        preshared_key: str | bytes | None = None,
        rules: Sequence[tuple[str, str]] = (),
        incoming_tcp: Sequence[str] = (),
        incoming_udp: Sequence[str] = (),
        **kwargs: Any,
    ) -> Config:
        """Build a Config from what a user writes: base64 keys (or raw 32-byte keys),
        ``ip:port`` / ``[ipv6]:port`` addresses, destination ``rules`` as ``("allow" |
        "deny", "CIDR[:PORTS]")`` pairs in order, ``incoming_tcp``/``incoming_udp`` as
        ``-t``/``-u`` specs (``incoming_port_range`` may be ``"LOW-HIGH"``); other fields
        pass through unchanged."""
        if rules:
            kwargs["destination_rules"] = parse_rules(rules)
        if incoming_tcp or incoming_udp:
            kwargs["incoming"] = tuple(kwargs.get("incoming", ())) + tuple(
                [parse_incoming(t, "tcp") for t in incoming_tcp] + [parse_incoming(u, "udp") for u in incoming_udp]
            )
        if isinstance(kwargs.get("incoming_port_range"), str):
            kwargs["incoming_port_range"] = parse_port_range(kwargs["incoming_port_range"])
        return cls(
            private_key=_key(private_key, "--private-key"),
            peer_public_key=_key(peer_key, "--peer-key"),
            preshared_key=_key(preshared_key, "preshared key") if preshared_key else None,
            bind=parse_socket_address(bind, "--bind-ip-port"),
            peer_endpoint=parse_socket_address(peer_endpoint, "--peer-endpoint") if peer_endpoint else None,
            pingable=tuple(dict.fromkeys(parse_ip(p, "--pingable") for p in pingable)),
            dns=tuple(dict.fromkeys(parse_socket_address(d, "--dns", default_port=53) for d in dns)),
            **kwargs,
        )


def _key(value: str | bytes, what: str) -> bytes:
    return value if isinstance(value, bytes) else parse_key(value, what)
