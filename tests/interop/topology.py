"""A three-namespace WireGuard test bed: kernel TCP client -> wireguard-go -> gateway -> servers.

Reusable by the interop tests and the benchmark. Everything runs as root in network
namespaces this module creates (named with a unique per-run tag) and is torn down again,
also on failure: only processes spawned here are ever signalled, by PID.

Layout (docs/ARCHITECTURE.md, Testing, explains the machine facts behind the choices)::

    ns client                     ns gw                            ns srv
    wireguard-go wgc<tag>         gateway (wgslirpy or            servers.py serve
      10.202.0.2/32               wireguard-go + forwarding)
      fd00:202::2/128
    veth 10.201.0.1/24  <------>  veth 10.201.0.2/24 :51820
         fd00:201::1/64                fd00:201::2/64
                                  veth 10.203.0.1/24  <------>  veth 10.203.0.2/24
                                       fd00:203::1/64                fd00:203::2/64

Tunnel prefixes routed by the client through wg: 10.202/24 (gateway's own addresses:
.1 ping, .53 DNS), 10.203/24 (servers), 10.204/24 (no route in ns gw: unroutable),
10.205/24 (routed to srv and dropped there: blackhole), 127.0.0.1/32 in allowed-ips
(loopback-policy check through an nftables rewrite), and the same for fd00:20x::/64.

Two gateway kinds share one interface (:class:`Gateway`): :class:`WgSlirpyGateway` (the
tool under test) and :class:`KernelGateway` (wireguard-go plus kernel forwarding, the
baseline). Timeouts bound every command and every wait.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from . import servers

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
SERVERS_PY = HERE / "servers.py"
RELAY_PY = HERE / "relay.py"
PYTHON = sys.executable

# --- addresses -------------------------------------------------------------------------
CLIENT_UNDERLAY_V4 = "10.201.0.1"
CLIENT_UNDERLAY_V6 = "fd00:201::1"
GW_UNDERLAY_V4 = "10.201.0.2"
GW_UNDERLAY_V6 = "fd00:201::2"
GW_SRV_SIDE_V4 = "10.203.0.1"
GW_SRV_SIDE_V6 = "fd00:203::1"
SRV_V4 = "10.203.0.2"
SRV_V6 = "fd00:203::2"
CLIENT_TUNNEL_V4 = "10.202.0.2"
CLIENT_TUNNEL_V6 = "fd00:202::2"
GW_PING_V4 = "10.202.0.1"
GW_PING_V6 = "fd00:202::1"
GW_DNS_V4 = "10.202.0.53"
GW_DNS_V6 = "fd00:202::53"
UNROUTABLE_V4 = "10.204.0.1"
UNROUTABLE_V6 = "fd00:204::1"
BLACKHOLE_V4 = "10.205.0.1"
BLACKHOLE_V6 = "fd00:205::1"
# The client rewrites this stand-in to 127.0.0.1 after routing (see enable_loopback_rewrite).
LOOPBACK_STANDIN_V4 = "10.202.0.127"

GATEWAY_PORT = 51820
CLIENT_WG_PORT = 51821
RELAY_PORT = 51900
TUNNEL_MTU = 1420

CLIENT_ROUTES_V4 = ("10.202.0.0/24", "10.203.0.0/24", "10.204.0.0/24", "10.205.0.0/24")
CLIENT_ROUTES_V6 = ("fd00:202::/64", "fd00:203::/64", "fd00:204::/64", "fd00:205::/64")
# 127.0.0.1/32 lets the rewritten loopback probe (and the gateway's reply from 127.0.0.1)
# pass wireguard-go's cryptokey routing; nothing else routes there.
CLIENT_ALLOWED_IPS = CLIENT_ROUTES_V4 + CLIENT_ROUTES_V6 + ("127.0.0.1/32",)

# servers.py ports in ns srv, re-exported so tests and benchmark agree with the servers.
CLOSED_PORT = servers.CLOSED_PORT
ECHO_PORT = servers.ECHO_PORT
HTTP_PORT = servers.HTTP_PORT
SINK_PORT = servers.SINK_PORT
TALKER_PORT = servers.TALKER_PORT
TALKER_RESULT_PORT = servers.TALKER_RESULT_PORT
UDP_CONE_PORT = servers.UDP_CONE_PORT
UDP_CONE_REPLY_PORT = servers.UDP_CONE_REPLY_PORT
UDP_ECHO_PORT = servers.UDP_ECHO_PORT

# A TCP listener on 127.0.0.1 in ns gw: reachable only if the loopback policy were open.
GW_LOOPBACK_PORT = 9100

HOSTS_NAME = "srv.interop.test"
SOCKET_BUFFER_SIZE = 4 * 1024 * 1024

DEFAULT_TIMEOUT = 30.0


class TopologyError(RuntimeError):
    """A set-up step failed; the message carries the command and its output."""


# --- commands and processes -------------------------------------------------------------
def run(
    cmd: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion within ``timeout`` seconds (killed after that)."""
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.run(list(cmd), input=input, capture_output=True, text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired as e:
        raise TopologyError(f"timed out after {timeout}s: {' '.join(cmd)}") from e
    if check and proc.returncode != 0:
        raise TopologyError(f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stdout}{proc.stderr}".rstrip())
    return proc


class ProcessTracker:
    """Background processes we started; teardown signals exactly these PIDs, nothing else."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        self,
        cmd: Sequence[str],
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout_pipe: bool = False,
    ) -> subprocess.Popen[bytes]:
        log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115 (the child owns it)
        try:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                env=None if env is None else {**os.environ, **env},
                cwd=cwd,
                # Own session: a terminal ^C reaches pytest only, and teardown stops these
                # in order instead of racing them.
                start_new_session=True,
            )
        finally:
            if log_path is not None and not isinstance(log, int):
                log.close()
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Signal one tracked process, escalate to SIGKILL after ``timeout``; return its exit code."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        if proc in self._procs:
            self._procs.remove(proc)
        if proc.stdout is not None:
            proc.stdout.close()
        assert proc.returncode is not None
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc, timeout=3.0)


class Netns:
    """One named network namespace; every command in it goes through ``ip netns exec``."""

    def __init__(self, name: str, tracker: ProcessTracker) -> None:
        self.name = name
        self.tracker = tracker

    def create(self) -> None:
        run(["ip", "netns", "add", self.name])
        self.run(["ip", "link", "set", "lo", "up"])

    def delete(self) -> None:
        run(["ip", "netns", "del", self.name], check=False)
        shutil.rmtree(f"/etc/netns/{self.name}", ignore_errors=True)

    def cmd(self, args: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(
        self,
        args: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run(self.cmd(args), timeout=timeout, check=check, input=input, env=env)

    def spawn(
        self,
        args: Sequence[str],
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout_pipe: bool = False,
    ) -> subprocess.Popen[bytes]:
        return self.tracker.spawn(self.cmd(args), log_path=log_path, env=env, cwd=cwd, stdout_pipe=stdout_pipe)

    def sysctl(self, key: str, value: str) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def write_etc(self, filename: str, text: str) -> None:
        """Write /etc/netns/<ns>/<filename>; ``ip netns exec`` bind-mounts it over /etc/<filename>."""
        d = Path(f"/etc/netns/{self.name}")
        d.mkdir(parents=True, exist_ok=True)
        (d / filename).write_text(text)

    def udp_port_bound(self, port: int) -> bool:
        out = self.run(["ss", "-Hlun", f"sport = :{port}"], check=False, timeout=5).stdout
        return bool(out.strip())


def wait_until(pred: Any, *, timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() >= deadline:
            raise TopologyError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def genkey() -> tuple[str, str]:
    """A fresh (private, public) base64 key pair from ``wg genkey`` / ``wg pubkey``."""
    priv = run(["wg", "genkey"]).stdout.strip()
    return priv, pubkey(priv)


def pubkey(private: str) -> str:
    return run(["wg", "pubkey"], input=private + "\n").stdout.strip()


# --- host-wide socket buffer sizes -------------------------------------------------------
_SYSCTLS = ("rmem_default", "wmem_default", "rmem_max", "wmem_max")


@contextlib.contextmanager
def raised_socket_buffers(size: int = SOCKET_BUFFER_SIZE) -> Iterator[None]:
    """Raise net.core.{r,w}mem_{default,max} host-wide (never lower them); restore on exit.

    wireguard-go does not size its UDP sockets, and these sysctls are read-only inside a
    namespace (docs/ARCHITECTURE.md, Testing); without this, bulk transfers drop datagrams by the ten thousand.
    """
    old: dict[str, str] = {}
    try:
        for name in _SYSCTLS:
            path = Path("/proc/sys/net/core") / name
            cur = path.read_text().strip()
            if int(cur) < size:
                old[name] = cur
                path.write_text(str(size))
        yield
    finally:
        for name, value in old.items():
            with contextlib.suppress(OSError):
                (Path("/proc/sys/net/core") / name).write_text(value)


# --- wireguard-go -----------------------------------------------------------------------
class WgInterface:
    """A wireguard-go interface in a namespace, configured through ``wg set``."""

    def __init__(self, ns: Netns, ifname: str, private_key: str, workdir: Path) -> None:
        assert len(ifname) <= 15, ifname
        self.ns = ns
        self.ifname = ifname
        self.private_key = private_key
        self.public_key = pubkey(private_key)
        self.key_file = workdir / f"{ifname}.key"
        self.key_file.write_text(private_key + "\n")
        self.key_file.chmod(0o600)
        self.log_path = workdir / f"{ifname}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        # Shared by all namespaces: this is why every ifname carries the run's tag.
        return Path(f"/var/run/wireguard/{self.ifname}.sock")

    def start(self, *, listen_port: int) -> None:
        if self.socket_path.exists():
            raise TopologyError(f"{self.socket_path} exists: interface name clash")
        self.proc = self.ns.spawn(
            ["wireguard-go", self.ifname],
            log_path=self.log_path,
            env={"WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"},
        )
        wait_until(
            lambda: self.socket_path.exists() or self.proc is None or self.proc.poll() is not None,
            timeout=10,
            what=f"wireguard-go {self.ifname}",
        )
        if self.proc.poll() is not None:
            raise TopologyError(f"wireguard-go {self.ifname} exited: {self.log_path.read_text()[-2000:]}")
        self.ns.run(["wg", "set", self.ifname, "private-key", str(self.key_file), "listen-port", str(listen_port)])
        self.ns.run(["ip", "link", "set", self.ifname, "mtu", str(TUNNEL_MTU), "up"])

    def set_peer(
        self,
        public_key: str,
        *,
        endpoint: str | None = None,
        allowed_ips: Sequence[str] = (),
        keepalive: int | None = None,
    ) -> None:
        args = ["wg", "set", self.ifname, "peer", public_key]
        if endpoint is not None:
            args += ["endpoint", endpoint]
        if allowed_ips:
            args += ["allowed-ips", ",".join(allowed_ips)]
        if keepalive is not None:
            args += ["persistent-keepalive", str(keepalive)]
        self.ns.run(args)

    def remove_peer(self, public_key: str) -> None:
        self.ns.run(["wg", "set", self.ifname, "peer", public_key, "remove"])

    def latest_handshake(self, public_key: str) -> int:
        """Unix time of the last completed handshake with that peer (0: none yet)."""
        out = self.ns.run(["wg", "show", self.ifname, "latest-handshakes"]).stdout
        for line in out.splitlines():
            key, _, ts = line.partition("\t")
            if key.strip() == public_key:
                return int(ts.strip() or 0)
        return 0

    def transfer(self, public_key: str) -> tuple[int, int]:
        """(rx bytes, tx bytes) with that peer."""
        out = self.ns.run(["wg", "show", self.ifname, "transfer"]).stdout
        for line in out.splitlines():
            parts = line.split("\t")
            if parts[0].strip() == public_key:
                return int(parts[1]), int(parts[2])
        return 0, 0

    def add_address(self, cidr: str) -> None:
        extra = ["nodad"] if ":" in cidr else []
        self.ns.run(["ip", "addr", "add", cidr, "dev", self.ifname, *extra])

    def add_route(self, prefix: str) -> None:
        self.ns.run(["ip", "route", "add", prefix, "dev", self.ifname])

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = self.ns.tracker.stop(self.proc)
        self.proc = None
        # wireguard-go removes its socket on a clean exit; after SIGKILL it may be left.
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        return code


# --- gateways --------------------------------------------------------------------------
class Gateway(ABC):
    """The thing under test in ns gw: a WireGuard peer of the client that reaches ns srv.

    ``start(initiate_to=...)`` gives the gateway the client's underlay endpoint so it can
    start a handshake itself (used after a restart).
    """

    kind: ClassVar[str]
    #: Serves DNS at 10.202.0.53 / fd00:202::53 and has wgslirpy's policies (loopback, ICMP errors).
    is_wgslirpy: ClassVar[bool]

    def __init__(self, topo: Topology, private_key: str) -> None:
        self.topo = topo
        self.private_key = private_key
        self.public_key = pubkey(private_key)
        self.listen = (GW_UNDERLAY_V4, GATEWAY_PORT)

    @property
    def endpoint(self) -> str:
        return f"{self.listen[0]}:{self.listen[1]}"

    @abstractmethod
    def start(self, *, initiate_to: str | None = None) -> None: ...

    @abstractmethod
    def stop(self, *, timeout: float = 10.0) -> int | None:
        """Stop with SIGTERM (SIGKILL after ``timeout``); return the exit code."""

    def restart(self, *, initiate_to: str | None = None) -> int | None:
        code = self.stop()
        self.start(initiate_to=initiate_to)
        return code

    @property
    @abstractmethod
    def pid(self) -> int | None: ...

    def stats(self, *, timeout: float = 5.0) -> dict[str, Any] | None:
        """The gateway's own counters (None for gateways that have none)."""
        return None

    def fd_count(self) -> int | None:
        pid = self.pid
        if pid is None:
            return None
        try:
            return len(os.listdir(f"/proc/{pid}/fd"))
        except FileNotFoundError:
            return None

    def log_tail(self, chars: int = 4000) -> str:
        return ""


class ProcessGateway(Gateway):
    """A gateway that is one process, ``proc``, which ``start`` spawns with ``topo.gw.spawn``."""

    proc: subprocess.Popen[bytes] | None = None

    def stop(self, *, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        code = self.topo.tracker.stop(self.proc, timeout=timeout)
        self.proc = None
        return code

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


class WgSlirpyGateway(ProcessGateway):
    """``python -m wgslirpy`` in ns gw; stderr goes to ``workdir/wgslirpy.log``."""

    kind = "wgslirpy"
    is_wgslirpy = True
    STATS_PREFIX = "wgslirpy stats: "

    def __init__(self, topo: Topology, private_key: str, extra_args: Sequence[str] = ()) -> None:
        super().__init__(topo, private_key)
        self.extra_args = list(extra_args)
        self.key_file = topo.workdir / "gateway.key"
        self.key_file.write_text(private_key + "\n")
        self.key_file.chmod(0o600)
        self.log_path = topo.workdir / "wgslirpy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0  # log position where the current process's output starts

    def command(self, *, initiate_to: str | None = None) -> list[str]:
        cmd = [
            PYTHON,
            "-m",
            "wgslirpy",
            "-f",
            str(self.key_file),
            "-K",
            self.topo.client_wg.public_key,
            "-b",
            self.endpoint,
            "-P",
            GW_PING_V4,
            "-P",
            GW_PING_V6,
            "-D",
            GW_DNS_V4,
            "-D",
            GW_DNS_V6,
        ]
        if initiate_to is not None:
            cmd += ["-p", initiate_to]
        return cmd + self.extra_args

    def start(self, *, initiate_to: str | None = None, timeout: float = 20.0) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)}
        self.proc = self.topo.gw.spawn(
            self.command(initiate_to=initiate_to), log_path=self.log_path, env=env, cwd=REPO_ROOT
        )
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                return True
            return "listening on" in self._current_log() or self.topo.gw.udp_port_bound(GATEWAY_PORT)

        wait_until(ready, timeout=timeout, interval=0.1, what="wgslirpy to listen")
        if proc.poll() is not None:
            raise TopologyError(f"wgslirpy exited with {proc.returncode}:\n{self.log_tail()}")

    def _current_log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stats(self, *, timeout: float = 5.0) -> dict[str, Any] | None:
        """Send SIGUSR1 and parse the ``wgslirpy stats: {json}`` line it logs."""
        pid = self.pid
        if pid is None:
            raise TopologyError("wgslirpy is not running")
        before = self._current_log().count(self.STATS_PREFIX)
        os.kill(pid, signal.SIGUSR1)
        result: list[dict[str, Any]] = []

        def got() -> bool:
            lines = [line for line in self._current_log().splitlines() if self.STATS_PREFIX in line]
            if len(lines) <= before:
                return False
            text = lines[-1].split(self.STATS_PREFIX, 1)[1]
            try:
                result.append(json.loads(text))
            except ValueError:
                return False  # partly written line: read again
            return True

        wait_until(got, timeout=timeout, what="a wgslirpy stats line after SIGUSR1")
        return result[0]

    def log_tail(self, chars: int = 4000) -> str:
        return self._current_log()[-chars:]


class KernelGateway(Gateway):
    """wireguard-go in ns gw with IP forwarding to ns srv: the baseline for comparisons.

    Its wg interface owns 10.202.0.1/24 and fd00:202::1/64 so ping works the same; it has
    no DNS and no loopback policy.
    """

    kind = "kernel"
    is_wgslirpy = False

    def __init__(self, topo: Topology, private_key: str) -> None:
        super().__init__(topo, private_key)
        self.wg = WgInterface(topo.gw, f"wgg{topo.tag}", private_key, topo.workdir)
        self._started = False

    def start(self, *, initiate_to: str | None = None) -> None:
        self.wg.start(listen_port=GATEWAY_PORT)
        # A persistent keepalive makes wireguard-go handshake at once (the restart case).
        self.wg.set_peer(
            self.topo.client_wg.public_key,
            allowed_ips=(f"{CLIENT_TUNNEL_V4}/32", f"{CLIENT_TUNNEL_V6}/128"),
            endpoint=initiate_to,
            keepalive=25 if initiate_to is not None else None,
        )
        self.wg.add_address(f"{GW_PING_V4}/24")
        self.wg.add_address(f"{GW_PING_V6}/64")
        self._started = True

    def stop(self, *, timeout: float = 10.0) -> int | None:
        self._started = False
        return self.wg.stop()

    @property
    def pid(self) -> int | None:
        p = self.wg.proc
        return p.pid if p is not None and p.poll() is None else None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.wg.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


GATEWAY_KINDS = ("wgslirpy", "kernel")


# --- the whole bed ---------------------------------------------------------------------
class Topology:
    """Build with :meth:`up` (or ``with Topology(...) as t``); :meth:`down` undoes everything."""

    def __init__(
        self,
        gateway_kind: str = "wgslirpy",
        *,
        gateway_args: Sequence[str] = (),
        client_keepalive: int | None = None,
        start_servers: bool = True,
        keep_workdir: bool = False,
        gateway_factory: Callable[[Topology, str], Gateway] | None = None,
    ) -> None:
        """``gateway_factory(topology, private_key)``, if given, builds another userspace
        gateway (the benchmark's third peer) in place of wgslirpy; ns gw is set up as for wgslirpy."""
        if gateway_kind not in GATEWAY_KINDS:
            raise ValueError(f"gateway kind must be one of {GATEWAY_KINDS}, not {gateway_kind!r}")
        self.gateway_kind = gateway_kind
        self.gateway_args = list(gateway_args)
        self.client_keepalive = client_keepalive
        self.start_servers_flag = start_servers
        self.keep_workdir = keep_workdir
        self.tag = secrets.token_hex(3)  # 6 hex: ifnames stay <= 15 chars
        self.workdir = Path(tempfile.mkdtemp(prefix=f"wgsi-{self.tag}-"))
        self.tracker = ProcessTracker()
        prefix = f"wgsi{self.tag}"
        self.client = Netns(f"{prefix}-client", self.tracker)
        self.gw = Netns(f"{prefix}-gw", self.tracker)
        self.srv = Netns(f"{prefix}-srv", self.tracker)
        self.client_wg = WgInterface(self.client, f"wgc{self.tag}", genkey()[0], self.workdir)
        gw_priv = genkey()[0]
        self.gateway: Gateway
        if gateway_factory is not None and gateway_kind != "kernel":
            self.gateway = gateway_factory(self, gw_priv)
        elif gateway_kind == "kernel":
            self.gateway = KernelGateway(self, gw_priv)
        else:
            self.gateway = WgSlirpyGateway(self, gw_priv, self.gateway_args)
        self.servers_proc: subprocess.Popen[bytes] | None = None
        self.gw_local_proc: subprocess.Popen[bytes] | None = None
        self._created: list[Netns] = []
        self._is_up = False

    # -- lifecycle --
    def __enter__(self) -> Topology:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        atexit.register(self.down)
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        self._is_up = True

    def _build(self) -> None:
        for ns in (self.client, self.gw, self.srv):
            ns.create()
            self._created.append(ns)
        self._veth(
            self.client,
            f"vcg{self.tag}",
            CLIENT_UNDERLAY_V4,
            CLIENT_UNDERLAY_V6,
            self.gw,
            f"vgc{self.tag}",
            GW_UNDERLAY_V4,
            GW_UNDERLAY_V6,
        )
        self._veth(
            self.gw, f"vgs{self.tag}", GW_SRV_SIDE_V4, GW_SRV_SIDE_V6, self.srv, f"vsg{self.tag}", SRV_V4, SRV_V6
        )
        # Blackhole: ns gw routes 10.205/24 to srv, which drops it silently.
        self.gw.run(["ip", "route", "add", "10.205.0.0/24", "via", SRV_V4])
        self.gw.run(["ip", "-6", "route", "add", "fd00:205::/64", "via", SRV_V6])
        self.srv.run(
            ["nft", "-f", "-"],
            input=(
                "table inet wgsi_blackhole {\n"
                " chain in { type filter hook prerouting priority -300; policy accept;\n"
                "  ip daddr 10.205.0.0/24 drop\n  ip6 daddr fd00:205::/64 drop\n }\n}\n"
            ),
        )
        if self.gateway_kind == "kernel":
            self.gw.sysctl("net.ipv4.ip_forward", "1")
            self.gw.sysctl("net.ipv6.conf.all.forwarding", "1")
            self.srv.run(["ip", "route", "add", "10.202.0.0/24", "via", GW_SRV_SIDE_V4])
            self.srv.run(["ip", "-6", "route", "add", "fd00:202::/64", "via", GW_SRV_SIDE_V6])
        else:
            self._gw_local_services()
        if self.start_servers_flag:
            self.start_servers()
        self.client_wg.start(listen_port=CLIENT_WG_PORT)
        self.client_wg.add_address(f"{CLIENT_TUNNEL_V4}/32")
        self.client_wg.add_address(f"{CLIENT_TUNNEL_V6}/128")
        for prefix in CLIENT_ROUTES_V4 + CLIENT_ROUTES_V6:
            self.client_wg.add_route(prefix)
        self.gateway.start()
        self.client_wg.set_peer(
            self.gateway.public_key,
            endpoint=self.gateway.endpoint,
            allowed_ips=CLIENT_ALLOWED_IPS,
            keepalive=self.client_keepalive,
        )

    def _veth(self, a: Netns, a_if: str, a4: str, a6: str, b: Netns, b_if: str, b4: str, b6: str) -> None:
        run(["ip", "link", "add", a_if, "netns", a.name, "type", "veth", "peer", "name", b_if, "netns", b.name])
        for ns, ifname, v4, v6 in ((a, a_if, a4, a6), (b, b_if, b4, b6)):
            ns.run(["ip", "addr", "add", f"{v4}/24", "dev", ifname])
            ns.run(["ip", "addr", "add", f"{v6}/64", "dev", ifname, "nodad"])
            ns.run(["ip", "link", "set", ifname, "up"])

    def _gw_local_services(self) -> None:
        """Hosts file, a local NXDOMAIN resolver and a loopback listener for wgslirpy's ns gw.

        The resolver keeps name lookups inside the namespace and deterministic (every
        name not in the hosts file is NXDOMAIN at once); nothing tries the host's DNS.
        """
        self.gw.write_etc(
            "hosts",
            (
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                f"{SRV_V4}\t{HOSTS_NAME}\n{SRV_V6}\t{HOSTS_NAME}\n"
            ),
        )
        self.gw.write_etc("resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        self.gw_local_proc = self.gw.spawn(
            [PYTHON, str(SERVERS_PY), "gw-local", "--loopback-port", str(GW_LOOPBACK_PORT)],
            log_path=self.workdir / "gw-local.log",
            stdout_pipe=True,
        )
        _wait_ready(self.gw_local_proc, "gw-local")

    def start_servers(self) -> None:
        self.servers_proc = self.srv.spawn(
            [PYTHON, str(SERVERS_PY), "serve"], log_path=self.workdir / "servers.log", stdout_pipe=True
        )
        _wait_ready(self.servers_proc, "servers.py serve")

    def down(self) -> None:
        atexit.unregister(self.down)
        try:
            self.gateway.stop(timeout=5.0)
        except Exception:
            pass
        with contextlib.suppress(Exception):
            self.client_wg.stop()
        self.tracker.stop_all()
        for ns in reversed(self._created):
            ns.delete()
        self._created.clear()
        for wg in (self.client_wg, getattr(self.gateway, "wg", None)):
            if isinstance(wg, WgInterface):
                with contextlib.suppress(FileNotFoundError):
                    wg.socket_path.unlink()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._is_up = False

    # -- operations used by tests and the benchmark --
    def set_client_endpoint(self, endpoint: str) -> None:
        self.client_wg.set_peer(self.gateway.public_key, endpoint=endpoint)

    def reset_client_peer(self, endpoint: str | None = None) -> None:
        """Forget the session (remove and re-add the peer): the next packet starts a handshake."""
        self.client_wg.remove_peer(self.gateway.public_key)
        self.client_wg.set_peer(
            self.gateway.public_key,
            endpoint=endpoint or self.gateway.endpoint,
            allowed_ips=CLIENT_ALLOWED_IPS,
            keepalive=self.client_keepalive,
        )

    def wait_for_ping(self, host: str, *, timeout: float = 10.0) -> float | None:
        """Seconds until a single ping to ``host`` succeeds (None: not within ``timeout``)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            left = timeout - (time.monotonic() - t0)
            _, rx, _ = self.ping(host, count=1, wait=max(1.0, min(2.0, left)), timeout=left + 5)
            if rx:
                return time.monotonic() - t0
        return None

    def client_initiate_endpoint(self) -> str:
        """Where a gateway can reach the client's wireguard-go (for ``-p``)."""
        return f"{CLIENT_UNDERLAY_V4}:{CLIENT_WG_PORT}"

    def ping(
        self,
        host: str,
        *,
        count: int = 10,
        interval: float = 0.2,
        wait: float = 2.0,
        size: int | None = None,
        timeout: float | None = None,
    ) -> tuple[int, int, str]:
        """(transmitted, received, output) of ``ping`` from the client."""
        args = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(wait)]
        if size is not None:
            args += ["-s", str(size)]
        t = timeout if timeout is not None else count * interval + wait + 10
        out = self.client.run(args + [host], check=False, timeout=t).stdout
        tx = rx = 0
        for line in out.splitlines():
            if "packets transmitted" in line:
                parts = line.split(",")
                tx = int(parts[0].split()[0])
                rx = int(parts[1].split()[0])
        return tx, rx, out

    def probe(self, name: str, *args: str, timeout: float = 60.0) -> dict[str, Any]:
        """Run ``servers.py <name> args`` in ns client; return its JSON result line."""
        proc = self.client.run([PYTHON, str(SERVERS_PY), name, *args], timeout=timeout, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise TopologyError(f"probe {name} {args} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def start_relay(
        self,
        *,
        seed: int = 1,
        loss: float = 0.0,
        dup: float = 0.0,
        reorder: float = 0.0,
        delay_ms: float = 0.0,
        record: Path | None = None,
        jitter_ms: float = 0.0,
        reorder_ms: float = 5.0,
        rate_mbit: float = 0.0,
        queue_kb: float = 0.0,
        up: Mapping[str, float] | None = None,
        down: Mapping[str, float] | None = None,
        engine: str | None = None,
    ) -> RelayProcess:
        """A relay in ns gw at 10.201.0.2:51900 in front of the gateway (point the client at it).

        The keyword impairments apply to both directions; ``up`` (client -> gateway) and
        ``down`` (gateway -> client) override single fields (relay.py's ``LinkSpec`` names).
        ``engine``: relay.py's ``--engine``; default ``$WGSLIRPY_RELAY_ENGINE`` or ``auto``.
        """
        engine = engine or os.environ.get("WGSLIRPY_RELAY_ENGINE", "auto")
        args = [
            PYTHON,
            str(RELAY_PY),
            "relay",
            "--listen",
            f"{GW_UNDERLAY_V4}:{RELAY_PORT}",
            "--upstream",
            self.gateway.endpoint,
            "--seed",
            str(seed),
            "--loss",
            str(loss),
            "--dup",
            str(dup),
            "--reorder",
            str(reorder),
            "--delay-ms",
            str(delay_ms),
            "--jitter-ms",
            str(jitter_ms),
            "--reorder-ms",
            str(reorder_ms),
            "--rate-mbit",
            str(rate_mbit),
            "--queue-kb",
            str(queue_kb),
            "--engine",
            engine,
        ]
        for name, spec in (("--up", up), ("--down", down)):
            if spec:
                args += [name, ",".join(f"{k}={v}" for k, v in spec.items())]
        if record is not None:
            args += ["--record", str(record)]
        proc = self.gw.spawn(args, log_path=self.workdir / "relay.log", stdout_pipe=True)
        _wait_ready(proc, "relay")
        return RelayProcess(self, proc, f"{GW_UNDERLAY_V4}:{RELAY_PORT}")

    def send_datagrams(self, *args: str, timeout: float = 30.0) -> dict[str, Any]:
        """Run ``relay.py <args>`` (garbage / replay) in ns client; return its JSON result."""
        proc = self.client.run([PYTHON, str(RELAY_PY), *args], timeout=timeout)
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result

    def enable_loopback_rewrite(self) -> None:
        """Make the client's packets to 10.202.0.127 leave through wg addressed to 127.0.0.1.

        Linux never routes 127.0.0.1 out of an interface, so the client sends to a stand-in
        and rewrites the destination statelessly *after* routing (postrouting); replies
        from 127.0.0.1 are rewritten back *before* routing (prerouting, ahead of conntrack
        and the martian-source check). nftables fixes the IP and TCP checksums.
        IPv6 cannot be done this way: ip6_rcv drops a ::1 source arriving on a
        non-loopback device before any netfilter hook runs.
        """
        self.client.run(
            ["nft", "-f", "-"],
            input=(
                "table ip wgsi_loopback {\n"
                " chain out { type filter hook postrouting priority 300; policy accept;\n"
                f"  ip daddr {LOOPBACK_STANDIN_V4} ip daddr set 127.0.0.1\n }}\n"
                " chain in { type filter hook prerouting priority -300; policy accept;\n"
                f"  ip saddr 127.0.0.1 ip saddr set {LOOPBACK_STANDIN_V4}\n }}\n"
                "}\n"
            ),
        )


class RelayProcess:
    """A running ``relay.py relay``; :meth:`counters` reads its counters, :meth:`stop` the final ones."""

    def __init__(self, topo: Topology, proc: subprocess.Popen[bytes], address: str) -> None:
        self.topo = topo
        self.proc = proc
        self.address = address

    def counters(self, *, timeout: float = 5.0) -> dict[str, Any]:
        """The relay's counters now (SIGUSR1; it prints a JSON line and keeps relaying)."""
        assert self.proc.stdout is not None
        if self.proc.poll() is not None:
            raise TopologyError(f"relay exited with {self.proc.returncode}")
        import selectors

        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    break
                line = self.proc.stdout.readline().decode(errors="replace")
                if not line:
                    break
                if line.startswith("{"):
                    result: dict[str, Any] = json.loads(line)
                    return result
        raise TopologyError(f"no counters from the relay within {timeout}s")

    def stop(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.topo.tracker.stop(self.proc, sig=signal.SIGKILL)
            return {}
        self.topo.tracker.stop(self.proc)
        lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
        result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        return result


def _wait_ready(proc: subprocess.Popen[bytes], what: str, timeout: float = 15.0) -> None:
    """Wait for the child's first stdout line, ``ready ...`` (it has bound its sockets)."""
    assert proc.stdout is not None
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise TopologyError(f"{what} not ready after {timeout}s")
        line = proc.stdout.readline().decode(errors="replace")
    finally:
        sel.close()
    if not line.startswith("ready"):
        proc.poll()
        raise TopologyError(f"{what} failed to start (exit {proc.returncode}): {line!r}")
