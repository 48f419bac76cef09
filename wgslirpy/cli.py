"""wgslirpy: give a WireGuard peer network access through this host's ordinary sockets.

The peer's TCP and UDP flows are terminated in userspace and relayed through OS sockets
(SLiRP for WireGuard); no root, no TUN device.

Usage:
  wgslirpy [options] [--state-dir DIR] [--interface NAME] [-v...] [-P IP]... [-D ADDR]...
           [--allow RULE]... [--deny RULE]... [-t SPEC]... [-u SPEC]...
  wgslirpy client-config [--qr] [--state-dir DIR]
  wgslirpy show [--state-dir DIR] [--interface NAME]
  wgslirpy genkey
  wgslirpy pubkey
  wgslirpy -h | --help
  wgslirpy --version

With no key options, wgslirpy makes a gateway and a client key pair once in its state
directory, reuses them at every start, and prints the client's config (and a QR code).

Commands:
  client-config                    Print the client config of the last zero-config start
                                   again (--qr: with its QR code).
  show                             Print the running gateway's state, like `wg show`.
  genkey, pubkey                   Like `wg genkey` / `wg pubkey`.

Options:
  -c FILE, --config FILE           Read a wg-quick style file ([Interface] PrivateKey,
                                   ListenPort, ...; one [Peer]); options given on the
                                   command line override it. See README.
  -k KEY, --private-key KEY        Our private key, base64 (as `wg genkey` prints it).
  -f FILE, --private-key-file FILE
                                   Read our private key from FILE; surrounding
                                   whitespace is ignored.
  -K KEY, --peer-key KEY           The peer's public key, base64.
  -p ADDR, --peer-endpoint ADDR    The peer's UDP address (IP:PORT or [IPv6]:PORT). We
                                   then start the handshake and send keepalives there;
                                   without it we wait for the peer to dial us. Either
                                   way the address follows the peer when it roams.
  -a SECS, --keepalive-interval SECS
                                   Persistent keepalive interval in seconds.
  -b ADDR, --bind-ip-port ADDR     Where to bind our WireGuard UDP socket. Default:
                                   0.0.0.0:{port}.
  -D ADDR, --dns ADDR              Answer DNS (A and AAAA from this host's resolver, over
                                   UDP and TCP) at this tunnel address (IP or IP:PORT,
                                   port 53 by default). May be given more than once.
                                   Zero-config default: {dns}.
  -P IP, --pingable IP             Answer ICMP echo at this tunnel address. May be given
                                   more than once (e.g. one IPv4 and one IPv6).
                                   Zero-config default: {pingable}.
  --mtu N                          Tunnel MTU. Default: {mtu}.
  --tcp-buffer-size N              Most bytes buffered per TCP connection in each
                                   direction; buffers start at 64 KiB and grow with
                                   the path. Default: {tcp_buffer_size}.
  --congestion NAME                TCP congestion control: bbr (rate-based, paced:
                                   random loss is not congestion), cubic or newreno
                                   [default: bbr].
  --transmit-queue-capacity N      Packets held for the peer while no session is up.
                                   Default: {transmit_queue_capacity}.
  --connect-timeout SECS           How long to wait for a TCP destination to answer
                                   before the peer gets ICMP unreachable. Default: {connect_timeout}.
  --tcp-idle-timeout SECS          Close TCP connections silent for this long.
                                   Default: {tcp_idle_timeout}.
  --udp-idle-timeout SECS          Close UDP bindings silent for this long. Default: {udp_idle_timeout}.
  --max-udp-bindings N             Most UDP bindings at once; the least recently used
                                   goes first. Default: {max_udp_bindings}.
  --allow-loopback                 Let the peer reach this host's loopback (127.0.0.0/8,
                                   ::1). Refused by default. (Same as --allow for those.)
  --allow RULE                     Let flows reach RULE, written CIDR[:PORTS]: PORTS is a
                                   port, a range a-b or a comma list (80,443,8000-8100);
                                   an IPv6 prefix with ports goes in brackets
                                   ([2001:db8::/32]:443). May be given more than once.
  --deny RULE                      Refuse flows to RULE (same syntax): TCP gets a RST, UDP
                                   an ICMP administratively prohibited. --allow and --deny
                                   are checked in command-line order, first match wins.
                                   Loopback, link-local (169.254.0.0/16, fe80::/10),
                                   multicast and broadcast are denied unless allowed.
  --max-tcp-flows N                Most TCP flows at once; a SYN beyond gets a RST
                                   [default: 65536].
  --max-pending-connects N         Most TCP connects in progress at once; a SYN beyond
                                   gets a RST [default: 1024].
  --max-reassembly-bytes N         Memory for IP fragments awaiting reassembly; the
                                   oldest datagram goes first [default: 4194304].
  --max-dns-lookups N              Most -D lookups in progress; more get SERVFAIL at once
                                   [default: 256].
  -t SPEC, --incoming-tcp SPEC     Forward a host TCP port into the tunnel. SPEC is
                                   HOST_ADDR,[SRC_ADDR],DST_ADDR: listen on HOST_ADDR,
                                   connect to DST_ADDR inside the tunnel, from SRC_ADDR
                                   (omitted: the host client's own address and port;
                                   port 0: a port from --incoming-port-range). Each is
                                   IP:PORT or [IPv6]:PORT; families may differ between
                                   HOST and DST (then give SRC). May be given more than
                                   once. E.g. -t 127.0.0.1:2222,10.0.0.1:0,10.0.0.2:22
                                   reaches the peer's SSH server from 127.0.0.1:2222.
  -u SPEC, --incoming-udp SPEC     The same for UDP: one tunnel binding per host client,
                                   replies go back to it; idle ones expire after
                                   --udp-idle-timeout. May be given more than once.
  --incoming-port-range LOW-HIGH   Source ports for -t/-u whose SRC_ADDR has port 0,
                                   round-robin, never one of a live flow
                                   [default: 32768-60999].
  --preshared-key-file FILE        Read a WireGuard preshared key from FILE.
  --endpoint-file FILE             Remember the peer's last authenticated address in
                                   FILE and, at start, begin the handshake there (as -p
                                   does; a given -p wins), so a client is back within a
                                   second after a restart.
  --state-dir DIR                  Where zero-config keys, client.conf and the control
                                   socket live. Default: $XDG_STATE_HOME/wgslirpy, else
                                   ~/.local/state/wgslirpy.
  --endpoint HOST:PORT             The address the printed client config dials (default:
                                   a guess: this host's address on its default route).
  --interface NAME                 Also serve the WireGuard UAPI at
                                   /var/run/wireguard/NAME.sock, so `wg show NAME` and
                                   `wg set NAME peer ... endpoint/persistent-keepalive`
                                   work (needs root or a writable /var/run/wireguard).
  --stats-json FILE                Rewrite FILE atomically with the stats (JSON) once
                                   per stats interval.
  --stats-interval SECS            Period of the -v summary line and of --stats-json.
                                   Default: {stats_interval}.
  --qr                             With client-config: also draw the QR code.
  -v, --verbose                    More logging (peer, limits, a stats line once per
                                   stats interval); twice for debug output.
  -q, --quiet                      Log only errors; print no client config.
  -h, --help                       Show this help.
  --version                        Show the version.

Signals: SIGINT and SIGTERM stop the gateway (exit status 0); SIGUSR1 writes one line
"wgslirpy stats: {{json}}" to standard error.
"""

from __future__ import annotations

import base64
import gc
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import __version__
from . import constants as C
from . import state as S
from .config import Config, parse_key, read_key_file
from .errors import ConfigError
from .net.incoming import DEFAULT_PORT_RANGE

log = logging.getLogger("wgslirpy")

#: --stats-interval default, seconds
DEFAULT_STATS_INTERVAL = 30.0

#: option -> default, for the options a -c file may also set (docopt must leave them None
#: so that "given on the command line" can be told apart from "defaulted")
_DEFAULTS: dict[str, Any] = {
    "--bind-ip-port": f"0.0.0.0:{C.DEFAULT_WG_PORT}",
    "--mtu": C.DEFAULT_MTU,
    "--tcp-buffer-size": C.DEFAULT_TCP_BUFFER_SIZE,
    "--transmit-queue-capacity": C.DEFAULT_TRANSMIT_QUEUE_CAPACITY,
    "--connect-timeout": C.DEFAULT_CONNECT_TIMEOUT,
    "--tcp-idle-timeout": C.DEFAULT_TCP_IDLE_TIMEOUT,
    "--udp-idle-timeout": C.DEFAULT_UDP_IDLE_TIMEOUT,
    "--max-udp-bindings": C.DEFAULT_MAX_UDP_BINDINGS,
    "--stats-interval": DEFAULT_STATS_INTERVAL,
}


def _g(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


__doc__ = (__doc__ or "").format(
    port=C.DEFAULT_WG_PORT,
    dns=", ".join(S.DEFAULT_DNS),
    pingable=", ".join(S.DEFAULT_PINGABLE),
    **{k[2:].replace("-", "_"): _g(v) for k, v in _DEFAULTS.items() if k != "--bind-ip-port"},
)


def _number(opts: dict[str, Any], name: str, *, integer: bool = False) -> float:
    raw = opts.get(name)
    text = str(_DEFAULTS[name] if raw is None else raw)
    try:
        value = float(int(text, 10)) if integer else float(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a {'whole ' if integer else ''}number") from None
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name}: must be a positive number, got {text}")
    return value


# --- from options (and a -c file, and the state directory) to a Config -------------------


@dataclass
class Setup:
    """What ``main`` runs: the Config and how the first minute around it goes."""

    config: Config
    #: the state directory, when zero-config or --state-dir put one in use
    state: S.StateDir | None = None
    #: the client's private key (base64) when the state directory made the client:
    #: then a client config is printed at start
    client_private_key: str | None = None


def _merge_file(opts: dict[str, Any]) -> dict[str, Any]:
    """``opts`` with a -c file's values filled in wherever the command line gave nothing."""
    if not opts.get("--config"):
        return opts
    from .wgquick import read_gateway_file

    found = read_gateway_file(opts["--config"])
    merged = dict(opts)
    own_key_given = bool(opts.get("--private-key") or opts.get("--private-key-file"))
    for name, value in found.items():
        if not name.startswith("--"):
            continue
        if name == "--private-key" and own_key_given:
            continue
        if merged.get(name) in (None, [], False):
            merged[name] = value
    if merged.get("--bind-ip-port") is None and ("listen_port" in found or "bind_address" in found):
        host = found.get("bind_address", "0.0.0.0")
        host = f"[{host}]" if ":" in host else host
        merged["--bind-ip-port"] = f"{host}:{found.get('listen_port', C.DEFAULT_WG_PORT)}"
    if "preshared_key" in found and not opts.get("--preshared-key-file"):
        merged["preshared_key"] = found["preshared_key"]
    if "allowed_ips" in found:
        merged["allowed_ips"] = tuple(found["allowed_ips"])
    return merged


def state_dir_of(opts: dict[str, Any]) -> S.StateDir:
    return S.StateDir(opts.get("--state-dir") or S.default_state_dir())


def setup_from_options(opts: dict[str, Any]) -> Setup:
    """Options (+ -c file, + state directory for the keys not given) to a :class:`Setup`."""
    opts = _merge_file(opts)
    if opts.get("--private-key") and opts.get("--private-key-file"):
        raise ConfigError("give only one of -k/--private-key and -f/--private-key-file")
    own_given = bool(opts.get("--private-key") or opts.get("--private-key-file"))
    peer_given = bool(opts.get("--peer-key"))
    state = state_dir_of(opts) if (opts.get("--state-dir") or not (own_given and peer_given)) else None
    client_private: str | None = None
    if opts.get("--private-key-file"):
        private_key = read_key_file(opts["--private-key-file"], "--private-key-file")
    elif opts.get("--private-key"):
        private_key = parse_key(opts["--private-key"], "--private-key")
    else:
        assert state is not None
        private_key, _ = state.key(S.GATEWAY_KEY)
    if peer_given:
        peer_key: str | bytes = opts["--peer-key"]
    else:
        assert state is not None
        client_raw, _ = state.key(S.CLIENT_KEY)
        client_private = base64.b64encode(client_raw).decode("ascii")
        peer_key = base64.b64decode(S.pubkey(client_raw))
    pingable, dns = opts.get("--pingable") or [], opts.get("--dns") or []
    if client_private is not None and not pingable and not dns:
        pingable, dns = list(S.DEFAULT_PINGABLE), list(S.DEFAULT_DNS)
    preshared = opts.get("--preshared-key-file")
    extra: dict[str, Any] = {}
    if opts.get("allowed_ips"):
        extra["allowed_ips"] = tuple(opts["allowed_ips"])
    if "--endpoint-file" in opts:  # the option exists (io/endpoint_file.py): default it into the state dir
        extra["endpoint_file"] = opts["--endpoint-file"] or (str(state.file(S.PEER_ENDPOINT)) if state else None)
    config = Config.create(
        private_key=private_key,
        peer_key=peer_key,
        bind=opts.get("--bind-ip-port") or _DEFAULTS["--bind-ip-port"],
        peer_endpoint=opts.get("--peer-endpoint"),
        pingable=pingable,
        dns=dns,
        mtu=int(_number(opts, "--mtu", integer=True)),
        tcp_buffer_size=int(_number(opts, "--tcp-buffer-size", integer=True)),
        congestion=str(opts["--congestion"]).strip().lower(),
        transmit_queue_capacity=int(_number(opts, "--transmit-queue-capacity", integer=True)),
        connect_timeout=_number(opts, "--connect-timeout"),
        tcp_idle_timeout=_number(opts, "--tcp-idle-timeout"),
        udp_idle_timeout=_number(opts, "--udp-idle-timeout"),
        max_udp_bindings=int(_number(opts, "--max-udp-bindings", integer=True)),
        keepalive_interval=_number(opts, "--keepalive-interval") if opts.get("--keepalive-interval") else None,
        allow_loopback=bool(opts.get("--allow-loopback")),
        rules=opts.get("_rules")
        or [("allow", r) for r in opts.get("--allow") or []] + [("deny", r) for r in opts.get("--deny") or []],
        max_tcp_flows=int(_number(opts, "--max-tcp-flows", integer=True)),
        max_pending_connects=int(_number(opts, "--max-pending-connects", integer=True)),
        max_reassembly_bytes=int(_number(opts, "--max-reassembly-bytes", integer=True)),
        max_dns_lookups=int(_number(opts, "--max-dns-lookups", integer=True)),
        preshared_key=(read_key_file(preshared, "--preshared-key-file") if preshared else opts.get("preshared_key")),
        incoming_tcp=opts.get("--incoming-tcp") or (),
        incoming_udp=opts.get("--incoming-udp") or (),
        incoming_port_range=opts.get("--incoming-port-range") or DEFAULT_PORT_RANGE,
        **extra,
    )
    return Setup(config, state, client_private)


def config_from_options(opts: dict[str, Any]) -> Config:
    """Turn docopt's option dict into a validated :class:`Config` (ConfigError on bad input)."""
    return setup_from_options(opts).config


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    from docopt import DocoptExit, docopt

    try:
        opts: dict[str, Any] = docopt(__doc__, argv=list(argv))
    except DocoptExit as e:
        raise ConfigError(_explain_usage_error(argv, str(e))) from None
    rules = _ordered_rules(argv)
    if len(rules) == len(opts.get("--allow") or []) + len(opts.get("--deny") or []):
        opts["_rules"] = rules  # first match wins: keep the command line's order
    return opts


def _ordered_rules(argv: Sequence[str]) -> list[tuple[str, str]]:
    """``--allow``/``--deny`` values in the order given (docopt keeps one list per option)."""
    rules: list[tuple[str, str]] = []
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        name, eq, value = arg.partition("=")
        if name in ("--allow", "--deny"):
            if not eq:
                if i + 1 >= len(args):
                    break
                value = args[i + 1]
            rules.append((name[2:], value))
    return rules


def _explain_usage_error(argv: Sequence[str], docopt_message: str) -> str:
    """One line saying what is wrong with the command line (docopt only says "usage")."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    known = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", __doc__ or ""))
    unknown = sorted(a for a in given if a not in known and not (a[1:2] != "-" and len(a) > 2))
    if unknown:
        return f"unknown option {unknown[0]}; see `wgslirpy --help`"
    words = [a for a in argv if not a.startswith("-")]
    if words and words[0] in ("client-config", "show", "genkey", "pubkey"):
        return f"bad arguments for `wgslirpy {words[0]}`; see `wgslirpy --help`"
    detail = docopt_message.strip().splitlines()[0] if docopt_message.strip() else ""
    if detail.startswith("Usage") or not detail:
        return "bad arguments; see `wgslirpy --help`"
    return f"bad arguments ({detail}); see `wgslirpy --help`"


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = (
        logging.ERROR if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
    )
    logging.basicConfig(level=level, format="wgslirpy: %(levelname)s: %(message)s", stream=sys.stderr)
    if not quiet:
        # "listening on ..." is printed even without -v: it tells where to point the peer.
        logging.getLogger("wgslirpy").setLevel(min(level, logging.INFO))


def _print(text: str) -> int:
    """Print to stdout; a reader that went away (``wgslirpy --help | head``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- nothing more can be written; silence the exit flush
    return 0


# --- the client config ---------------------------------------------------------------------

#: Documentation addresses (RFC 5737, RFC 3849): a UDP socket "connected" to one only asks
#: the kernel which source address its route would use; connect() on UDP sends nothing.
_ROUTE_PROBES = ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1"))


def guess_host_address(bind_host: str) -> tuple[str, str]:
    """(address, how it was found) for the printed Endpoint when --endpoint is not given."""
    if bind_host not in ("0.0.0.0", "::"):
        return bind_host, "the address -b binds"
    for family, probe in _ROUTE_PROBES:
        if family == socket.AF_INET6 and bind_host == "0.0.0.0":
            continue
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                addr = str(s.getsockname()[0])
        except OSError:
            continue
        if addr not in ("0.0.0.0", "::"):
            return addr, "this host's address on its default route"
    return "127.0.0.1", "no default route, so this host's loopback address"


def _format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_advertised_endpoint(text: str) -> str:
    """Check ``--endpoint HOST:PORT`` (a name, IPv4, or [IPv6]); returns it normalised."""
    from .config import parse_port

    s = text.strip()
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or not rest.startswith(":") or not host:
            raise ConfigError(f"--endpoint: {text!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = s.rpartition(":")
        if not sep or not host or ":" in host:
            raise ConfigError(f"--endpoint: {text!r}: expected HOST:PORT (IPv6 as [addr]:PORT)")
    port = parse_port(port_text, "--endpoint")
    if port == 0:
        raise ConfigError("--endpoint: port 0 cannot be dialled")
    return _format_hostport(host, port)


def client_config_text(setup: Setup, endpoint: str) -> str:
    from .wgquick import client_config

    config = setup.config
    assert setup.client_private_key is not None
    return client_config(
        private_key=setup.client_private_key,
        addresses=S.DEFAULT_CLIENT_ADDRESSES,
        dns=[str(ip) for ip, port in config.dns if port == 53],
        mtu=config.mtu,
        peer_public_key=S.pubkey(config.private_key),
        endpoint=endpoint,
        preshared_key=base64.b64encode(config.preshared_key).decode() if config.preshared_key else None,
        keepalive=S.DEFAULT_CLIENT_KEEPALIVE,
    )


def qr_text(text: str) -> str:
    """``text`` as a QR code drawn with block characters (two modules per character row)."""
    try:
        import segno
    except ImportError:
        return "(no QR code: the segno package is not installed)\n"
    import io

    buf = io.StringIO()
    segno.make(text, error="l").terminal(out=buf, compact=True, border=2)
    return buf.getvalue()


def _print_client_config(setup: Setup, opts: dict[str, Any], bound: tuple[str, int]) -> None:
    assert setup.state is not None
    if opts.get("--endpoint"):
        endpoint, note = parse_advertised_endpoint(opts["--endpoint"]), None
    else:
        host, how = guess_host_address(str(setup.config.bind[0]))
        endpoint = _format_hostport(host, bound[1])
        note = (
            f"Endpoint {endpoint} is a guess ({how}). If the client reaches this host under "
            "another name or address, start wgslirpy with --endpoint HOST:PORT (or edit the "
            "Endpoint line)."
        )
    text = client_config_text(setup, endpoint)
    path = setup.state.write_private(S.CLIENT_CONF, text)
    out = [f"# wgslirpy client config (written to {path}; import it in a WireGuard app):", "", text, qr_text(text)]
    if note:
        out.append(note)
    out.append(f"Print it again with: wgslirpy client-config --qr --state-dir {setup.state.path}")
    _print("\n".join(out))


def _client_config_command(opts: dict[str, Any]) -> int:
    state = state_dir_of(opts)
    path = state.file(S.CLIENT_CONF)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(
            f"no client config at {path} ({e.strerror or e}): start `wgslirpy` without key options once to make one"
        ) from None
    return _print(text + (("\n" + qr_text(text)) if opts.get("--qr") else ""))


# --- genkey / pubkey / show -------------------------------------------------------------


def _genkey_command() -> int:
    return _print(S.genkey())


def _pubkey_command() -> int:
    text = sys.stdin.read(4096)
    try:
        raw = parse_key(text, "pubkey")
    except ConfigError:
        print("wgslirpy: Key is not the correct length or format", file=sys.stderr)
        return 1
    return _print(S.pubkey(raw))


def _show_command(opts: dict[str, Any]) -> int:
    import time

    from . import uapi

    if opts.get("--interface"):
        name = opts["--interface"]
        path = uapi_interface_path(name)
    else:
        state = state_dir_of(opts)
        path, name = str(state.file(S.UAPI_SOCKET)), f"wgslirpy ({state.path})"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(b"get=1\n\n")
            data = b""
            while not data.endswith(b"\n\n") and len(data) < uapi.MAX_REQUEST_BYTES:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        print(f"wgslirpy: error: no running gateway answers at {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    try:
        dev = uapi.parse_get(data)
    except uapi.UapiError as e:
        print(f"wgslirpy: error: bad answer from {path}: {e}", file=sys.stderr)
        return 1
    pub = None
    if dev.fields.get("private_key"):
        try:
            pub = S.pubkey(bytes.fromhex(dev.fields["private_key"]))
        except ValueError:
            pub = None
    return _print(uapi.format_show(dev, name=name, now=time.time(), public_key=pub).rstrip("\n"))


_IFNAME = re.compile(r"[A-Za-z0-9_=+.-]{1,15}")


def uapi_interface_path(name: str) -> str:
    """``/var/run/wireguard/NAME.sock`` for a valid interface name (as wg accepts them)."""
    if not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"--interface: {name!r} is not an interface name (1-15 of A-Z a-z 0-9 _ = + . -)")
    return f"/var/run/wireguard/{name}.sock"


# --- run --------------------------------------------------------------------------------


def _log_start(setup: Setup, verbose: int) -> None:
    config = setup.config
    log.info("our public key: %s", S.pubkey(config.private_key))
    if not verbose:
        return
    peer_pub = base64.b64encode(config.peer_public_key).decode()
    ep = (
        f"{config.peer_endpoint[0]}:{config.peer_endpoint[1]}"
        if config.peer_endpoint
        else "not known yet (we wait for it to dial us)"
    )
    log.info(
        "peer: %s, endpoint %s, keepalive %s, allowed source addresses %s",
        peer_pub,
        ep,
        f"every {config.keepalive_interval:g} s" if config.keepalive_interval else "off",
        ", ".join(str(n) for n in config.allowed_ips),
    )
    log.info(
        "tunnel: ping at %s, DNS at %s, MTU %d, loopback %s",
        ", ".join(map(str, config.pingable)) or "(none)",
        ", ".join(_format_hostport(str(ip), port) for ip, port in config.dns) or "(none)",
        config.mtu,
        "allowed" if config.allow_loopback else "refused",
    )
    log.info(
        "limits: TCP buffer %d B, connect timeout %g s, TCP idle %g s, UDP idle %g s, "
        "%d UDP bindings, %d packets queued without a session",
        config.tcp_buffer_size,
        config.connect_timeout,
        config.tcp_idle_timeout,
        config.udp_idle_timeout,
        config.max_udp_bindings,
        config.transmit_queue_capacity,
    )


def main(argv: Sequence[str] | None = None, *, handle_tcp: Any = None, handle_udp: Any = None) -> int:
    """Run the gateway until SIGINT/SIGTERM; return the exit status (0 ok, 2 bad config).

    ``handle_tcp``/``handle_udp`` go to :class:`~wgslirpy.io.server.Gateway` (the scripts in
    ``examples/`` run their handlers with wgslirpy's options this way)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        return _print((__doc__ or "").strip())
    if "--version" in args:
        return _print(f"wgslirpy {__version__}")
    try:
        opts = parse_args(args)
        if opts.get("genkey"):
            return _genkey_command()
        if opts.get("pubkey"):
            return _pubkey_command()
        if opts.get("client-config"):
            return _client_config_command(opts)
        if opts.get("show"):
            return _show_command(opts)
        verbose, quiet = int(opts["--verbose"] or 0), bool(opts["--quiet"])
        _setup_logging(verbose, quiet)
        setup = setup_from_options(opts)
        stats_interval = _number(opts, "--stats-interval")
        interface_path = uapi_interface_path(opts["--interface"]) if opts.get("--interface") else None
        if opts.get("--endpoint"):
            parse_advertised_endpoint(opts["--endpoint"])
        from .io.server import Gateway

        gateway = Gateway(setup.config, handle_tcp=handle_tcp, handle_udp=handle_udp)
    except ConfigError as e:
        print(f"wgslirpy: error: {e}", file=sys.stderr)
        return 2
    _raise_open_file_limit()
    handlers = _install_signal_handlers(gateway)
    services: list[Any] = []
    try:
        _log_start(setup, verbose)
        try:
            gateway.start()
        except ConfigError as e:
            print(f"wgslirpy: error: {e}", file=sys.stderr)
            return 2
        services = _start_services(gateway, setup, opts, interface_path, verbose, stats_interval)
        if setup.client_private_key is not None and not quiet:
            try:
                _print_client_config(setup, opts, gateway.address)
            except ConfigError as e:
                log.warning("%s", e)
        _freeze_startup_objects()
        gateway.serve_forever()
    finally:
        for service in reversed(services):
            service.stop()
        for h in handlers:
            h.cancel()
    return 0


def _start_services(
    gateway: Any, setup: Setup, opts: dict[str, Any], interface_path: str | None, verbose: int, stats_interval: float
) -> list[Any]:
    """The control sockets and the stats reporter that run beside the gateway."""
    from .io.stats import StatsReporter
    from .io.uapi import UapiServer

    services: list[Any] = []
    paths = []
    if setup.state is not None:
        setup.state.ensure()
        paths.append(str(setup.state.file(S.UAPI_SOCKET)))
    if interface_path is not None:
        paths.append(interface_path)
    for path in paths:
        server = UapiServer(gateway, path)
        try:
            server.start()
        except OSError as e:
            log.warning(
                "cannot serve the WireGuard UAPI at %s: %s%s",
                path,
                e.strerror or e,
                " (--interface needs root or a writable /var/run/wireguard)" if path == interface_path else "",
            )
            continue
        log.info(
            "`%s` shows this gateway (UAPI socket %s)",
            f"wg show {opts['--interface']}"
            if path == interface_path
            else f"wgslirpy show --state-dir {setup.state.path if setup.state else ''}",
            path,
        )
        services.append(server)
    if verbose or opts.get("--stats-json"):
        reporter = StatsReporter(
            gateway, interval=stats_interval, log_line=bool(verbose), json_path=opts.get("--stats-json")
        )
        reporter.start()
        services.append(reporter)
    return services


def _freeze_startup_objects() -> None:
    """Move everything alive after start-up (modules, the decoder's tables, gevent's hub) into
    the collector's permanent generation, so that its full collections, which a busy gateway
    triggers several times a second, walk only what the flows made (the command line owns the
    process; a host program embedding the library decides this for itself)."""
    gc.collect()
    gc.freeze()


def _raise_open_file_limit() -> None:
    """Every forwarded flow holds a socket: lift the soft descriptor limit to the hard one
    (the command line owns the process; the library leaves limits to its host program)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.debug("open file limit raised from %d to %d", soft, hard)
    except (ImportError, ValueError, OSError) as e:
        log.debug("cannot raise the open file limit: %s", e)


def _install_signal_handlers(gateway: Any) -> list[Any]:
    """SIGINT/SIGTERM stop the gateway; SIGUSR1 prints its stats (installed before start,
    so a signal that arrives right after "listening on" is never fatal)."""
    import gevent

    def stop() -> None:
        log.info("stopping")
        gateway.request_stop()

    def dump_stats() -> None:
        print(gateway.stats_line(), file=sys.stderr, flush=True)

    return [
        gevent.signal_handler(signal.SIGINT, stop),
        gevent.signal_handler(signal.SIGTERM, stop),
        gevent.signal_handler(signal.SIGUSR1, dump_stats),
    ]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
