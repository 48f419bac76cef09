"""The WireGuard cross-platform userspace API (UAPI): the text protocol ``wg(8)`` speaks.

Specification: wireguard.com/xplatform ("Cross-platform Userspace Implementation",
Configuration Protocol). A client connects to ``/var/run/wireguard/NAME.sock`` and sends
either ``get=1\\n\\n`` — answered with ``key=value`` lines (keys hex-encoded) ending in
``errno=0\\n\\n`` — or ``set=1\\n`` followed by ``key=value`` lines and a blank line, answered
with ``errno=N\\n\\n`` (0: applied).

Pure: :class:`RequestReader` turns received bytes into requests, :func:`format_get` renders
a :class:`DeviceInfo`, :func:`parse_set` checks a set request against what wgslirpy can change
at run time (the peer's ``endpoint`` and ``persistent_keepalive_interval``; everything else is
either a no-op restating the current value or refused with EINVAL/EPERM). :func:`parse_get`
and :func:`format_show` are the client side (``wgslirpy show``), shaped like ``wg show``.
No sockets or clocks here: the socket server is ``wgslirpy/io/uapi.py``.
"""

from __future__ import annotations

import base64
import errno
import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

#: a request larger than this is refused and the connection closed (a flood guard)
MAX_REQUEST_BYTES = 64 * 1024


@dataclass(frozen=True)
class PeerInfo:
    public_key: bytes
    preshared_key: bytes | None = None
    endpoint: tuple[str, int] | None = None
    #: wall-clock time of the latest handshake (0: none yet)
    last_handshake: float = 0.0
    rx_bytes: int = 0
    tx_bytes: int = 0
    persistent_keepalive: int = 0
    allowed_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceInfo:
    private_key: bytes
    listen_port: int
    peer: PeerInfo


@dataclass(frozen=True)
class Request:
    """``op`` is "get" or "set"; ``lines`` the ``(key, value)`` pairs after the op line."""

    op: str
    lines: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SetChanges:
    """What a valid set request changes (None: leave as is)."""

    endpoint: tuple[str, int] | None = None
    #: seconds; 0 turns persistent keepalives off
    persistent_keepalive: int | None = None


class UapiError(Exception):
    """A request that cannot be honoured: answered ``errno=<errno>``; ``message`` is for logs."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class RequestReader:
    """Bytes from one connection in, complete :class:`Request` s out (a request ends at a blank line)."""

    def __init__(self) -> None:
        #: received bytes not yet part of a complete request; never above MAX_REQUEST_BYTES
        self._buf = b""

    def feed(self, data: bytes) -> list[Request]:
        """The requests completed by ``data``; UapiError(EPROTO) for garbage or an oversized one."""
        self._buf += data
        out: list[Request] = []
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                if len(self._buf) > MAX_REQUEST_BYTES:
                    raise UapiError(errno.EMSGSIZE, "request too large")
                return out
            raw, self._buf = self._buf[:end], self._buf[end + 2 :]
            out.append(_parse_request(raw))


def _parse_request(raw: bytes) -> Request:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise UapiError(errno.EPROTO, "request is not ASCII") from None
    pairs = []
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(errno.EPROTO, f"line without '=': {line[:40]!r}")
        pairs.append((key, value))
    op = pairs[0]
    if op == ("get", "1"):
        if len(pairs) > 1:
            raise UapiError(errno.EPROTO, "get=1 takes no arguments")
        return Request("get")
    if op == ("set", "1"):
        return Request("set", tuple(pairs[1:]))
    raise UapiError(errno.EPROTO, f"unknown operation {op[0]}={op[1]}")


def format_endpoint(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]  # an IPv4 peer on a dual-stack socket
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_get(info: DeviceInfo) -> bytes:
    """The answer to ``get=1``, ``errno=0`` and the terminating blank line included."""
    peer = info.peer
    lines = [
        f"private_key={info.private_key.hex()}",
        f"listen_port={info.listen_port}",
        f"public_key={peer.public_key.hex()}",
    ]
    if peer.preshared_key:
        lines.append(f"preshared_key={peer.preshared_key.hex()}")
    lines.append("protocol_version=1")
    if peer.endpoint is not None:
        lines.append(f"endpoint={format_endpoint(peer.endpoint)}")
    sec = int(peer.last_handshake)
    nsec = round((peer.last_handshake - sec) * 1e9) if sec else 0
    lines += [
        f"last_handshake_time_sec={sec}",
        f"last_handshake_time_nsec={min(nsec, 999_999_999)}",
        f"tx_bytes={peer.tx_bytes}",
        f"rx_bytes={peer.rx_bytes}",
        f"persistent_keepalive_interval={peer.persistent_keepalive}",
    ]
    lines += [f"allowed_ip={net}" for net in peer.allowed_ips]
    lines.append("errno=0")
    return ("\n".join(lines) + "\n\n").encode("ascii")


def format_errno(code: int) -> bytes:
    return f"errno={code}\n\n".encode("ascii")


def _hex_key(value: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise UapiError(errno.EINVAL, f"{what}: not a 32-byte hex key")
    return raw


def _parse_endpoint(value: str) -> tuple[str, int]:
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = value.rpartition(":")
    try:
        ip = ipaddress.ip_address(host)
        port = int(port_text, 10)
    except ValueError:
        raise UapiError(errno.EINVAL, f"endpoint {value!r} is not IP:PORT") from None
    if not 0 < port < 65536:
        raise UapiError(errno.EINVAL, f"endpoint port {port} out of range")
    return str(ip), port


def parse_set(
    req: Request, *, private_key: bytes, listen_port: int, peer_public_key: bytes, allowed_ips: Sequence[str] = ()
) -> SetChanges:
    """Check a set request; UapiError for anything wgslirpy cannot do at run time.

    Statements that restate the current value (the same private key, listen port or
    allowed IPs, ``protocol_version=1``) are accepted, so ``wg syncconf``-style tools that
    resend everything still work.
    """
    endpoint: tuple[str, int] | None = None
    keepalive: int | None = None
    in_peer = False
    new_allowed: list[str] | None = None
    for key, value in req.lines:
        if key == "private_key":
            if _hex_key(value, key) != private_key:
                raise UapiError(errno.EPERM, "the private key cannot be changed at run time")
        elif key == "listen_port":
            if value != str(listen_port):
                raise UapiError(errno.EPERM, "the listen port cannot be changed at run time")
        elif key == "fwmark":
            if value not in ("", "0"):
                raise UapiError(errno.EINVAL, "fwmark is not supported")
        elif key == "replace_peers":
            if value == "true":
                raise UapiError(errno.EPERM, "wgslirpy has exactly one peer; it cannot be replaced")
        elif key == "public_key":
            if _hex_key(value, key) != peer_public_key:
                raise UapiError(errno.EPERM, "wgslirpy serves one peer; another cannot be added")
            in_peer = True
        elif not in_peer:
            raise UapiError(errno.EINVAL, f"unknown interface key {key!r}")
        elif key == "endpoint":
            endpoint = _parse_endpoint(value)
        elif key == "persistent_keepalive_interval":
            try:
                keepalive = int(value, 10)
            except ValueError:
                keepalive = -1
            if not 0 <= keepalive <= 65535:
                raise UapiError(errno.EINVAL, f"persistent_keepalive_interval {value!r} out of range")
        elif key == "protocol_version":
            if value != "1":
                raise UapiError(errno.EINVAL, f"protocol_version {value} is not supported")
        elif key in ("update_only", "preshared_key"):
            if key == "preshared_key" and value.strip("0"):
                raise UapiError(errno.EPERM, "the preshared key cannot be changed at run time")
        elif key == "remove":
            if value == "true":
                raise UapiError(errno.EPERM, "the one peer cannot be removed")
        elif key == "replace_allowed_ips":
            if value == "true":
                new_allowed = []
        elif key == "allowed_ip":
            new_allowed = (new_allowed if new_allowed is not None else list(allowed_ips)) + [value]
        else:
            raise UapiError(errno.EINVAL, f"unknown peer key {key!r}")
    if new_allowed is not None and sorted(_nets(new_allowed)) != sorted(_nets(allowed_ips)):
        raise UapiError(errno.EPERM, "allowed IPs cannot be changed at run time (restart with -c FILE)")
    return SetChanges(endpoint=endpoint, persistent_keepalive=keepalive)


def _nets(values: Sequence[str]) -> list[str]:
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_network(v, strict=False)))
        except ValueError:
            raise UapiError(errno.EINVAL, f"allowed_ip {v!r} is not a prefix") from None
    return out


# --- client side: ``wgslirpy show`` ----------------------------------------------------------


@dataclass
class ShownDevice:
    """A parsed ``get=1`` answer (what ``wg show`` prints)."""

    fields: dict[str, str] = field(default_factory=dict)
    peers: list[dict[str, list[str]]] = field(default_factory=list)


def parse_get(data: bytes) -> ShownDevice:
    """Parse a ``get=1`` answer; UapiError if it ends with a non-zero errno or is garbled."""
    dev = ShownDevice()
    for line in data.decode("ascii", "replace").split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(errno.EPROTO, f"garbled answer line {line[:40]!r}")
        if key == "errno":
            if value != "0":
                raise UapiError(int(value) if value.isdigit() else errno.EPROTO, f"errno={value}")
            return dev
        if key == "public_key":
            dev.peers.append({})
        if dev.peers:
            dev.peers[-1].setdefault(key, []).append(value)
        else:
            dev.fields[key] = value
    raise UapiError(errno.EPROTO, "answer ended without errno")


def _b64(hex_key: str) -> str:
    try:
        return base64.b64encode(bytes.fromhex(hex_key)).decode("ascii")
    except ValueError:
        return "(unreadable)"


def _ago(seconds: float) -> str:
    s = int(max(0, seconds))
    parts: list[str] = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if s >= size or (unit == "second" and not parts):
            n, s = divmod(s, size)
            parts.append(f"{n} {unit}{'' if n == 1 else 's'}")
    return ", ".join(parts) + " ago"


def _bytes(n: int) -> str:
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{x:.2f} {unit}"
        x /= 1024
    return f"{n} B"  # pragma: no cover


def _last(peer: dict[str, list[str]], key: str) -> str:
    return peer.get(key, [""])[-1]


def format_show(dev: ShownDevice, *, name: str, now: float, public_key: str | None = None) -> str:
    """``wg show``-style text; ``public_key`` is ours (the answer carries only the private key)."""
    lines = [f"interface: {name}"]
    if public_key:
        lines.append(f"  public key: {public_key}")
    if dev.fields.get("private_key"):
        lines.append("  private key: (hidden)")
    if "listen_port" in dev.fields:
        lines.append(f"  listening port: {dev.fields['listen_port']}")
    for peer in dev.peers:
        one = functools.partial(_last, peer)
        lines += ["", f"peer: {_b64(one('public_key'))}"]
        if one("preshared_key").strip("0"):
            lines.append("  preshared key: (hidden)")
        if one("endpoint"):
            lines.append(f"  endpoint: {one('endpoint')}")
        lines.append(f"  allowed ips: {', '.join(peer.get('allowed_ip', [])) or '(none)'}")
        sec = int(one("last_handshake_time_sec") or 0)
        if sec:
            lines.append(f"  latest handshake: {_ago(now - sec)}")
        rx, tx = int(one("rx_bytes") or 0), int(one("tx_bytes") or 0)
        if rx or tx:
            lines.append(f"  transfer: {_bytes(rx)} received, {_bytes(tx)} sent")
        ka = int(one("persistent_keepalive_interval") or 0)
        if ka:
            lines.append(f"  persistent keepalive: every {ka} second{'' if ka == 1 else 's'}")
    return "\n".join(lines) + "\n"
