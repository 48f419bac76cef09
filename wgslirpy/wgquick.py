"""wg-quick configuration files: parse (with line numbers), interpret for the gateway, render.

The format is the one ``wg-quick(8)`` and the WireGuard apps read: ``[Interface]`` and
``[Peer]`` sections of ``Key = Value`` lines, ``#`` starts a comment, keys and section names
are case-insensitive, list values are comma-separated and a list key may repeat
(``wg(8)`` CONFIGURATION FILE FORMAT). Pure: text in, values or text out; every problem
raises :class:`ConfigError` whose message starts with ``FILE:LINE:``.

For the gateway (``wgslirpy -c FILE``), :func:`gateway_options` reads:

* ``[Interface]`` ``PrivateKey``, ``ListenPort``, ``MTU``, and wgslirpy's extensions (one
  rule: the long option's name in CamelCase) ``BindAddress`` (IP of ``-b``), ``Pingable``
  (``-P``, a list), ``DNSResponder`` (``-D``, a list), ``TcpBufferSize``,
  ``TransmitQueueCapacity``, ``ConnectTimeout``, ``TcpIdleTimeout``, ``UdpIdleTimeout``,
  ``MaxUdpBindings``, ``AllowLoopback`` (true/false);
* exactly one ``[Peer]``: ``PublicKey``, ``PresharedKey``, ``Endpoint`` (IP:PORT),
  ``PersistentKeepalive`` (seconds or ``off``), ``AllowedIPs`` (the tunnel source addresses
  the peer may use; packets from other sources are dropped and counted as
  ``wg_not_allowed_source``).

wg-quick's own interface keys (``Address``, ``DNS``, ``Table``, ``PostUp``, ...) configure a
kernel interface that wgslirpy does not have; they are errors that say what to use instead.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import parse_ip, parse_key, parse_port, parse_socket_address
from .errors import ConfigError


@dataclass(frozen=True)
class Entry:
    """One ``Key = Value`` line; ``key`` as written, ``line`` 1-based."""

    key: str
    value: str
    line: int


@dataclass
class Section:
    """``[Interface]`` or ``[Peer]`` (``name`` as canonically spelled) and its entries in order."""

    name: str
    line: int
    entries: list[Entry] = field(default_factory=list)

    def all(self, key: str) -> list[Entry]:
        k = key.lower()
        return [e for e in self.entries if e.key.lower() == k]

    def values(self, key: str) -> list[str]:
        """Every comma-separated item of every ``key`` line (for list keys)."""
        return [v.strip() for e in self.all(key) for v in e.value.split(",") if v.strip()]

    def get(self, key: str) -> str | None:
        found = self.all(key)
        return found[-1].value if found else None


_SECTIONS = {"interface": "Interface", "peer": "Peer"}


def parse(text: str, source: str = "config") -> list[Section]:
    """Split a wg-quick file into sections; syntax errors name ``source:line``."""
    sections: list[Section] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"{source}:{n}: a section header must end with ']': {raw.strip()!r}")
            name = _SECTIONS.get(line[1:-1].strip().lower())
            if name is None:
                raise ConfigError(f"{source}:{n}: unknown section {line!r} (expected [Interface] or [Peer])")
            sections.append(Section(name, n))
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}:{n}: expected 'Key = Value', got {raw.strip()!r}")
        if not sections:
            raise ConfigError(f"{source}:{n}: {key.strip()!r} comes before any [Interface] or [Peer] section")
        sections[-1].entries.append(Entry(key.strip(), value.strip(), n))
    return sections


def render(sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> str:
    """wg-quick text for ``[(section name, [(key, value), ...]), ...]``, a blank line between sections."""
    parts = []
    for name, entries in sections:
        parts.append("\n".join([f"[{name}]", *(f"{k} = {v}" for k, v in entries)]))
    return "\n\n".join(parts) + "\n"


def client_config(
    *,
    private_key: str,
    addresses: Sequence[str],
    dns: Sequence[str],
    mtu: int,
    peer_public_key: str,
    endpoint: str,
    preshared_key: str | None = None,
    keepalive: int | None = 25,
) -> str:
    """The config a WireGuard app imports to use the gateway for everything (0.0.0.0/0, ::/0)."""
    interface = [("PrivateKey", private_key), ("Address", ", ".join(addresses))]
    if dns:
        interface.append(("DNS", ", ".join(dns)))
    interface.append(("MTU", str(mtu)))
    peer = [("PublicKey", peer_public_key)]
    if preshared_key:
        peer.append(("PresharedKey", preshared_key))
    peer += [("Endpoint", endpoint), ("AllowedIPs", "0.0.0.0/0, ::/0")]
    if keepalive:
        peer.append(("PersistentKeepalive", str(keepalive)))
    return render([("Interface", interface), ("Peer", peer)])


# --- the gateway's reading ---------------------------------------------------------------

# Values are checked here (so the error names the line) and handed on as the strings the
# command line would carry; cli.py merges them under the options actually given.
_Check = Callable[[Any, str], Any]  # (a value, or a list of them for list keys; what)


def _key(value: str, what: str) -> str:
    parse_key(value, what)
    return value


def _whole(value: str, what: str) -> str:
    try:
        n = int(value, 10)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not a whole number") from None
    if n <= 0:
        raise ConfigError(f"{what}: must be a positive number, got {value}")
    return value


def _seconds(value: str, what: str) -> str:
    try:
        x = float(value)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not a number of seconds") from None
    if not 0 < x < float("inf"):
        raise ConfigError(f"{what}: must be a positive number, got {value}")
    return value


def _bool(value: str, what: str) -> bool:
    v = value.lower()
    if v in ("true", "yes", "on", "1"):
        return True
    if v in ("false", "no", "off", "0"):
        return False
    raise ConfigError(f"{what}: expected true or false, got {value!r}")


def _ips(values: list[str], what: str) -> list[str]:
    for v in values:
        parse_ip(v, what)
    return values


def _sockaddrs(values: list[str], what: str) -> list[str]:
    for v in values:
        parse_socket_address(v, what, default_port=53)
    return values


def _endpoint(value: str, what: str) -> str:
    parse_socket_address(value, what)
    return value


def _keepalive(value: str, what: str) -> str | None:
    if value.lower() == "off" or value == "0":
        return None
    try:
        n = int(value, 10)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not a number of seconds or 'off'") from None
    if not 0 < n <= 65535:
        raise ConfigError(f"{what}: must be between 1 and 65535 seconds, got {value}")
    return value


def _networks(values: list[str], what: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for v in values:
        try:
            nets.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ConfigError(f"{what}: {v!r} is not an address or prefix like 10.0.2.0/24") from None
    return nets


#: key (lower case) -> (option it stands for, checker, takes a list)
_INTERFACE: dict[str, tuple[str, _Check, bool]] = {
    "privatekey": ("--private-key", _key, False),
    "listenport": ("listen_port", lambda v, w: parse_port(v, w), False),
    "bindaddress": ("bind_address", lambda v, w: str(parse_ip(v, w)), False),
    "mtu": ("--mtu", _whole, False),
    "pingable": ("--pingable", _ips, True),
    "dnsresponder": ("--dns", _sockaddrs, True),
    "tcpbuffersize": ("--tcp-buffer-size", _whole, False),
    "transmitqueuecapacity": ("--transmit-queue-capacity", _whole, False),
    "connecttimeout": ("--connect-timeout", _seconds, False),
    "tcpidletimeout": ("--tcp-idle-timeout", _seconds, False),
    "udpidletimeout": ("--udp-idle-timeout", _seconds, False),
    "maxudpbindings": ("--max-udp-bindings", _whole, False),
    "allowloopback": ("--allow-loopback", _bool, False),
}
_PEER: dict[str, tuple[str, _Check, bool]] = {
    "publickey": ("--peer-key", _key, False),
    "presharedkey": ("preshared_key", _key, False),
    "endpoint": ("--peer-endpoint", _endpoint, False),
    "persistentkeepalive": ("--keepalive-interval", _keepalive, False),
    "allowedips": ("allowed_ips", _networks, True),
}
#: wg-quick keys for a kernel interface, and what to write for wgslirpy instead
_WG_QUICK_ONLY = {
    "address": "the gateway has no interface address; use Pingable = IP to answer ping there",
    "dns": "use DNSResponder = IP to answer DNS at a tunnel address",
    "table": "wgslirpy sets no routes",
    "preup": "wgslirpy runs no hooks",
    "postup": "wgslirpy runs no hooks",
    "predown": "wgslirpy runs no hooks",
    "postdown": "wgslirpy runs no hooks",
    "saveconfig": "wgslirpy never rewrites the file",
    "fwmark": "wgslirpy sets no firewall marks",
}


def gateway_options(sections: list[Section], source: str = "config") -> dict[str, Any]:
    """The options a gateway file sets: ``{"--private-key": "...", "--pingable": [...], ...}``.

    Besides docopt option names it may hold ``listen_port`` / ``bind_address`` (the two
    halves of ``-b``), ``preshared_key`` (base64) and ``allowed_ips`` (a list of networks).
    """
    interfaces = [s for s in sections if s.name == "Interface"]
    peers = [s for s in sections if s.name == "Peer"]
    if len(interfaces) > 1:
        raise ConfigError(f"{source}:{interfaces[1].line}: a second [Interface] section")
    if len(peers) > 1:
        raise ConfigError(f"{source}:{peers[1].line}: a second [Peer]: wgslirpy serves exactly one peer")
    out: dict[str, Any] = {}
    for section in interfaces + peers:
        table = _INTERFACE if section.name == "Interface" else _PEER
        seen: dict[str, int] = {}
        for e in section.entries:
            k = e.key.lower()
            what = f"{source}:{e.line}: {e.key}"
            if section.name == "Interface" and k in _WG_QUICK_ONLY:
                raise ConfigError(f"{what}: not used by wgslirpy ({_WG_QUICK_ONLY[k]})")
            if k not in table:
                raise ConfigError(f"{what}: unknown key in [{section.name}]")
            name, check, is_list = table[k]
            if is_list:
                items = [v.strip() for v in e.value.split(",") if v.strip()]
                out.setdefault(name, []).extend(check(items, what))
                continue
            if k in seen:
                raise ConfigError(f"{what}: given twice (first on line {seen[k]})")
            seen[k] = e.line
            out[name] = check(e.value, what)
    return out


def read_gateway_file(path: str) -> dict[str, Any]:
    """:func:`gateway_options` of the file at ``path`` (ConfigError if unreadable)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 20)
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"--config: cannot read {path!r}: {reason}") from None
    return gateway_options(parse(text, path), path)
