"""mitmproxy's WireGuard mode as a third gateway for the benchmark (never a wgslirpy dependency).

:func:`ensure_mitmdump` installs mitmproxy 12 by package name with pip into its own venv
under ``benchmarks/out/mitmproxy-venv`` (once; later runs reuse it), with the first Python
>= 3.12 it finds: ``$WGSLIRPY_BENCH_PYTHON``, ``python3.13``/``python3.12``/``python3`` on
PATH, or a pyenv 3.12+. It returns the ``mitmdump`` path, or a reason why there is none
(the benchmark then says so in the mitmproxy column and runs the rest).

:class:`MitmproxyGateway` runs ``mitmdump --mode wireguard:KEYFILE@10.201.0.2:51820
--ignore-hosts '.*'`` in ns gw: a plain relay (no interception), KEYFILE being the JSON
``{"server_key": <gateway private key>, "client_key": <the client's private key>}`` that
mitmproxy's WireGuard mode reads (both private keys). Its configuration directory (CA
certificates it creates on start) lives in the topology's work directory.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.interop.topology import (
    GATEWAY_PORT,
    GW_UNDERLAY_V4,
    ProcessGateway,
    Topology,
    TopologyError,
    wait_until,
)

HERE = Path(__file__).resolve().parent
VENV = HERE / "out" / "mitmproxy-venv"
REQUIREMENT = "mitmproxy>=12,<13"


def _python_ok(exe: str) -> bool:
    try:
        out = subprocess.run(
            [exe, "-c", "import sys, venv; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out == "True"


def find_python312() -> str | None:
    candidates = [os.environ.get("WGSLIRPY_BENCH_PYTHON", "")]
    candidates += [shutil.which(n) or "" for n in ("python3.13", "python3.12", "python3")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3")), reverse=True)
    for c in candidates:
        if c and _python_ok(c):
            return c
    return None


def ensure_mitmdump(log: Path) -> Path | str:
    """The ``mitmdump`` of the benchmark's venv (installed if needed), or why there is none."""
    mitmdump = VENV / "bin" / "mitmdump"
    if mitmdump.exists():
        try:
            if subprocess.run([str(mitmdump), "--version"], capture_output=True, timeout=60).returncode == 0:
                return mitmdump
        except (OSError, subprocess.TimeoutExpired):
            pass
    py = find_python312()
    if py is None:
        return "not installable here: mitmproxy 12 needs Python >= 3.12 (with venv), none found"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        try:
            for cmd in (
                [py, "-m", "venv", "--clear", str(VENV)],
                [str(VENV / "bin" / "pip"), "install", "--quiet", REQUIREMENT],
            ):
                f.write(f"$ {' '.join(cmd)}\n")
                f.flush()
                proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=900)
                if proc.returncode != 0:
                    return f"not installable here: `{' '.join(cmd[-3:])}` failed (see {log.name})"
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"not installable here: {e}"
    return mitmdump if mitmdump.exists() else "not installable here: no mitmdump after pip install"


def mitmdump_version(mitmdump: Path) -> str:
    try:
        out = subprocess.run([str(mitmdump), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.splitlines()[0].strip() if out.strip() else "?"


class MitmproxyGateway(ProcessGateway):
    """mitmdump's WireGuard mode in ns gw, relaying TCP and UDP to ns srv untouched."""

    kind = "mitmproxy"
    is_wgslirpy = False

    def __init__(self, topo: Topology, private_key: str, mitmdump: Path) -> None:
        super().__init__(topo, private_key)
        self.mitmdump = mitmdump
        self.key_file = topo.workdir / "mitmproxy-wireguard.json"
        self.confdir = topo.workdir / "mitmproxy-conf"
        self.log_path = topo.workdir / "mitmproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, initiate_to: str | None = None, timeout: float = 60.0) -> None:
        self.key_file.write_text(
            json.dumps({"server_key": self.private_key, "client_key": self.topo.client_wg.private_key})
        )
        self.key_file.chmod(0o600)
        self.confdir.mkdir(exist_ok=True)
        self.proc = self.topo.gw.spawn(
            [
                str(self.mitmdump),
                "--mode",
                f"wireguard:{self.key_file}@{GW_UNDERLAY_V4}:{GATEWAY_PORT}",
                "--ignore-hosts",
                ".*",
                "--set",
                f"confdir={self.confdir}",
                "--quiet",
            ],
            log_path=self.log_path,
            env={"HOME": str(self.topo.workdir)},
        )
        proc = self.proc
        wait_until(
            lambda: proc.poll() is not None or self.topo.gw.udp_port_bound(GATEWAY_PORT),
            timeout=timeout,
            interval=0.2,
            what="mitmdump to listen",
        )
        if proc.poll() is not None:
            raise TopologyError(f"mitmdump exited with {proc.returncode}: {self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""
