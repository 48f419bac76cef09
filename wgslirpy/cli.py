"""wgslirpy: give a WireGuard peer network access through this host's ordinary sockets.

The peer's TCP and UDP flows are terminated in userspace and relayed through OS sockets
(SLiRP for WireGuard); no root, no TUN device.

Usage:
  wgslirpy (-k KEY | -f FILE) -K KEY [options] [-v...] [-P IP]... [-D ADDR]... [--allow RULE]... [--deny RULE]...
  wgslirpy -h | --help
  wgslirpy --version

Options:
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
  -b ADDR, --bind-ip-port ADDR     Where to bind our WireGuard UDP socket
                                   [default: 0.0.0.0:51820].
  -D ADDR, --dns ADDR              Answer DNS (A and AAAA from this host's resolver, over
                                   UDP and TCP) at this tunnel address (IP or IP:PORT,
                                   port 53 by default). May be given more than once.
  -P IP, --pingable IP             Answer ICMP echo at this tunnel address. May be given
                                   more than once (e.g. one IPv4 and one IPv6).
  --mtu N                          Tunnel MTU [default: 1420].
  --tcp-buffer-size N              Most bytes buffered per TCP connection in each
                                   direction; buffers start at 64 KiB and grow with
                                   the path [default: 4194304].
  --congestion NAME                TCP congestion control: bbr (rate-based, paced:
                                   random loss is not congestion), cubic or newreno
                                   [default: bbr].
  --transmit-queue-capacity N      Packets held for the peer while no session is up
                                   [default: 256].
  --connect-timeout SECS           How long to wait for a TCP destination to answer
                                   before the peer gets ICMP unreachable [default: 10].
  --tcp-idle-timeout SECS          Close TCP connections silent for this long
                                   [default: 7200].
  --udp-idle-timeout SECS          Close UDP bindings silent for this long [default: 92].
  --max-udp-bindings N             Most UDP bindings at once; the least recently used
                                   goes first [default: 4096].
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
  --preshared-key-file FILE        Read a WireGuard preshared key from FILE.
  -v, --verbose                    More logging; twice for debug output.
  -q, --quiet                      Log only errors.
  -h, --help                       Show this help.
  --version                        Show the version.

Signals: SIGINT and SIGTERM stop the gateway (exit status 0); SIGUSR1 writes one line
"wgslirpy stats: {json}" to standard error.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from typing import Any, Sequence

from . import __version__
from .config import Config, parse_key, read_key_file
from .errors import ConfigError

log = logging.getLogger("wgslirpy")


def _number(opts: dict[str, Any], name: str, *, integer: bool = False) -> float:
    text = str(opts[name])
    try:
        value = float(int(text, 10)) if integer else float(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a {'whole ' if integer else ''}number") from None
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name}: must be a positive number, got {text}")
    return value


def config_from_options(opts: dict[str, Any]) -> Config:
    """Turn docopt's option dict into a validated :class:`Config` (ConfigError on bad input)."""
    if opts["--private-key-file"] is not None:
        private_key = read_key_file(opts["--private-key-file"], "--private-key-file")
    else:
        private_key = parse_key(opts["--private-key"], "--private-key")
    preshared = opts.get("--preshared-key-file")
    config = Config.create(
        private_key=private_key,
        peer_key=opts["--peer-key"],
        bind=opts["--bind-ip-port"],
        peer_endpoint=opts["--peer-endpoint"],
        pingable=opts["--pingable"],
        dns=opts["--dns"],
        mtu=int(_number(opts, "--mtu", integer=True)),
        tcp_buffer_size=int(_number(opts, "--tcp-buffer-size", integer=True)),
        congestion=str(opts["--congestion"]).strip().lower(),
        transmit_queue_capacity=int(_number(opts, "--transmit-queue-capacity", integer=True)),
        connect_timeout=_number(opts, "--connect-timeout"),
        tcp_idle_timeout=_number(opts, "--tcp-idle-timeout"),
        udp_idle_timeout=_number(opts, "--udp-idle-timeout"),
        max_udp_bindings=int(_number(opts, "--max-udp-bindings", integer=True)),
        keepalive_interval=_number(opts, "--keepalive-interval") if opts["--keepalive-interval"] else None,
        allow_loopback=bool(opts["--allow-loopback"]),
        rules=opts.get("_rules") or [("allow", r) for r in opts.get("--allow") or []]
        + [("deny", r) for r in opts.get("--deny") or []],
        max_tcp_flows=int(_number(opts, "--max-tcp-flows", integer=True)),
        max_pending_connects=int(_number(opts, "--max-pending-connects", integer=True)),
        max_reassembly_bytes=int(_number(opts, "--max-reassembly-bytes", integer=True)),
        max_dns_lookups=int(_number(opts, "--max-dns-lookups", integer=True)),
        preshared_key=read_key_file(preshared, "--preshared-key-file") if preshared else None,
    )
    return config


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
    keys = given & {"-k", "--private-key", "-f", "--private-key-file"}
    if not keys:
        return "give our private key with -k/--private-key or -f/--private-key-file"
    if keys & {"-k", "--private-key"} and keys & {"-f", "--private-key-file"}:
        return "give only one of -k/--private-key and -f/--private-key-file"
    if not given & {"-K", "--peer-key"}:
        return "give the peer's public key with -K/--peer-key"
    known = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", __doc__ or ""))
    unknown = sorted(a for a in given if a not in known and not (a[1:2] != "-" and len(a) > 2))
    if unknown:
        return f"unknown option {unknown[0]}; see `wgslirpy --help`"
    detail = docopt_message.strip().splitlines()[0] if docopt_message.strip() else ""
    if detail.startswith("Usage") or not detail:
        return "bad arguments; see `wgslirpy --help`"
    return f"bad arguments ({detail}); see `wgslirpy --help`"


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="wgslirpy: %(levelname)s: %(message)s", stream=sys.stderr)
    if not quiet:
        # "listening on ..." is printed even without -v: it tells where to point the peer.
        logging.getLogger("wgslirpy").setLevel(min(level, logging.INFO))


def _print(text: str) -> int:
    """Print to stdout; a reader that went away (``wgslirpy --help | head``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # nothing more can be written; silence the exit flush
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gateway until SIGINT/SIGTERM; return the exit status (0 ok, 2 bad config)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        return _print(__doc__.strip())
    if "--version" in args:
        return _print(f"wgslirpy {__version__}")
    try:
        opts = parse_args(args)
        _setup_logging(int(opts["--verbose"] or 0), bool(opts["--quiet"]))
        config = config_from_options(opts)
        from .io.server import Gateway

        gateway = Gateway(config)
    except ConfigError as e:
        print(f"wgslirpy: error: {e}", file=sys.stderr)
        return 2
    _raise_open_file_limit()
    handlers = _install_signal_handlers(gateway)
    try:
        try:
            gateway.start()
        except ConfigError as e:
            print(f"wgslirpy: error: {e}", file=sys.stderr)
            return 2
        gateway.serve_forever()
    finally:
        for h in handlers:
            h.cancel()
    return 0


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
