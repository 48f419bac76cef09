"""The benchmark scripts do not rot: each one that runs without root runs here in its smallest form.

``benchmarks/`` holds the long runs (micro-benchmarks, the fuzzer, the soak, ``bench.py``); a
script nobody runs breaks silently when the library changes under it. Here every in-process
script runs as a subprocess (this interpreter, the repository root as working directory) with
the smallest arguments that still reach each of its code paths, bounded by a timeout; the test
asserts exit status 0 and that the figure lines appear. Figures are printed, never judged: no
timing is asserted. Every script's ``--help`` runs too, and every import of every script
(including those inside functions, such as the soak's) must resolve.

The scripts that need root and network namespaces (``bench.py``, ``soak.py``, the link section
``links.py``) are run by the interop tests; here only their command lines are checked: the
soak's ``main`` in process with ``run_soak`` replaced, so nothing is started. ``links.py``,
``mitm.py``, ``procstat.py`` and ``profiling.py`` are libraries of ``bench.py``; ``programs.py``
is what ``bench.py`` runs inside its namespaces.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
TIMEOUT = 60.0  # seconds per script; each takes well under one here

NUMBER = r"[\d,.]+"


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<script> args...`` from the repository root; fails on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{script} {' '.join(args)}: exit status {proc.returncode}\n"
        f"--- stdout:\n{proc.stdout}\n--- stderr:\n{proc.stderr}"
    )
    return proc


def assert_lines(output: str, patterns: list[str]) -> None:
    """Each regular expression matches one whole line of ``output``."""
    missing = [p for p in patterns if not re.search(rf"^{p}$", output, re.MULTILINE)]
    assert not missing, f"lines missing: {missing}\n--- output:\n{output}"


@dataclass(frozen=True)
class Case:
    script: str
    args: tuple[str, ...]
    lines: list[str]  # regular expressions, each matching a whole line of stdout

    def __str__(self) -> str:
        return " ".join((self.script, *self.args))


AEAD_LINES = [
    r"1420-byte plaintext; best of 1 x 20 calls; µs per operation",
    r"crypto.py backend: \w+",
    rf"AEAD encrypt +{NUMBER} +{NUMBER} +{NUMBER}x",
    rf"AEAD decrypt +{NUMBER} +{NUMBER} +{NUMBER}x",
    rf"  Keypair.encrypt \(whole message\) +{NUMBER}",
    rf"  endpoint send_ip +{NUMBER}",
    rf"  endpoint receive_datagram +{NUMBER}",
]
REASSEMBLY_ROW = rf" +\d+ +\d+ +{NUMBER} +{NUMBER} +{NUMBER}x"

CASES = [
    Case("micro_aead.py", ("--number", "20", "--repeat", "1"), AEAD_LINES),
    Case(
        "micro_aead.py",
        ("--number", "20", "--repeat", "1", "--backend", "bindings"),
        [*AEAD_LINES, r"per-packet figures below use crypto.py's bindings backend"],
    ),
    Case(
        "micro_aead.py",
        ("--number", "20", "--repeat", "1", "--backend", "cffi"),
        [*AEAD_LINES, r"per-packet figures below use crypto.py's cffi backend"],
    ),
    Case(
        "micro_reassembly.py",
        ("--segments", "10", "--repeat", "1"),
        [rf"{name}{REASSEMBLY_ROW}" for name in ("extend", "reorder", "reorder\\+sack", "gaps", "overlap")]
        + [r"gaps, unbounded queue: \d+ bytes copied for \d+ one-byte segments, \d+ chunk moves, cost \d+ bytes"],
    ),
    Case(
        "micro_tcp.py",
        ("--mib", "1", "--profile"),
        [
            rf"download: gateway side +{NUMBER} us per data segment, +{NUMBER} ms per MB \(\d+ segments, {NUMBER} s\)",
            r"upload: the gateway sent \d+ pure ACKs for \d+ data segments",
            rf"upload  : gateway side +{NUMBER} us per data segment, +{NUMBER} ms per MB \(\d+ segments, {NUMBER} s\)",
            r" +ncalls +tottime +percall +cumtime +percall filename:lineno\(function\)",  # the profile
        ],
    ),
    Case(
        "micro_gateway.py",
        ("--mib", "1", "--profile"),
        [
            rf"download: gateway side +{NUMBER} us per data segment, +{NUMBER} ms per MB \(\d+ segments, {NUMBER} s\)",
            rf"upload  : gateway side +{NUMBER} us per data segment, +{NUMBER} ms per MB \(\d+ segments, {NUMBER} s\)",
            r" +ncalls +tottime +percall +cumtime +percall filename:lineno\(function\)",
        ],
    ),
    Case(
        "micro_udp_batch.py",
        ("--count", "64", "--repeat", "1"),
        [
            r"64 datagrams of 1452 B on loopback; best of 1; µs of CPU per datagram",
            r"kernel: UDP GSO (yes|no), UDP GRO (yes|no)",
            rf"  per datagram \(sendto, recvfrom\) +send +{NUMBER} +receive +{NUMBER} +\(\d+ received\)",
        ],
    ),
    Case(
        "fuzz.py",
        # Samples every 500 inputs: enough of them that the memory check runs on both cores.
        ("--count", "3000", "--sample-every", "500"),
        [
            rf"== outer: WireGuard datagrams -> WireGuardEndpoint: 3,000 inputs in {NUMBER} s \({NUMBER}/s\)",
            rf"== inner: IP packets -> Stack: {NUMBER} inputs in {NUMBER} s \({NUMBER}/s\)",
            r"outcomes: .*",
            r"drops by reason:",
            rf"memory: RSS after warm-up {NUMBER} MB, peak {NUMBER} MB, growth -?{NUMBER} MB",
            r"table sizes \(peak / end\): .*",
            r"exceptions escaped: 0",
            r"uncounted drops: 0",
            r"stack stats: rx_packets [\d,]+, .*",
            r"RESULT: ok",
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_script_runs_and_prints_its_figures(case: Case) -> None:
    proc = run_script(case.script, *case.args)
    assert_lines(proc.stdout, case.lines)
    if case.script == "micro_udp_batch.py":
        gso = "UDP GSO yes" in proc.stdout
        gro = "UDP GRO yes" in proc.stdout
        rows = ["GSO sendmsg to a plain socket"] * gso + ["batched \\(GSO sendmsg, GRO recvmsg\\)"] * (gso and gro)
        assert_lines(
            proc.stdout,
            [rf"  {r} +send +{NUMBER} +receive +{NUMBER} +\(\d+ received\)" for r in rows]
            + [rf"  {r} / per datagram: send {NUMBER}x, receive {NUMBER}x of the CPU" for r in rows],
        )
    if case.script == "fuzz.py":
        assert proc.stdout.count("memory: RSS after warm-up") == 2  # both cores were sampled
        assert_lines(proc.stderr, [rf"  outer +2,500 +{NUMBER}/s", rf"  inner +2,500 +{NUMBER}/s"])  # progress


HELP_SCRIPTS = [
    "micro_aead.py",
    "micro_reassembly.py",
    "micro_tcp.py",
    "micro_gateway.py",
    "micro_udp_batch.py",
    "fuzz.py",
    "soak.py",
    "bench.py",  # imports links, mitm, procstat, profiling and the interop topology
    "programs.py",
]


@pytest.mark.parametrize("script", HELP_SCRIPTS)
def test_help(script: str) -> None:
    proc = run_script(script, "--help")
    assert proc.stdout.startswith(f"usage: {script} ")
    assert "options:" in proc.stdout


# Resolves every import statement of the given files (top level and inside functions) with the
# search path the scripts set up for themselves; prints what does not resolve.
_RESOLVE_IMPORTS = """
import ast, importlib, sys
from pathlib import Path
repo = Path.cwd()
sys.path[:0] = [str(repo), str(repo / "benchmarks"), str(repo / "tests" / "interop")]
bad = []
for path in sys.argv[1:]:
    for node in ast.walk(ast.parse(Path(path).read_text(), path)):
        try:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            raise ImportError(f"cannot import name {alias.name!r} from {node.module}") from None
        except Exception as e:
            bad.append(f"{path}:{node.lineno}: {type(e).__name__}: {e}")
print("\\n".join(bad))
sys.exit(1 if bad else 0)
"""


def test_every_import_of_every_script_resolves() -> None:
    """Also the imports the root-only scripts make inside functions (never run without root here)."""
    scripts = sorted(str(p.relative_to(REPO)) for p in BENCHMARKS.glob("*.py"))
    assert "benchmarks/soak.py" in scripts
    proc = subprocess.run(
        [sys.executable, "-c", _RESOLVE_IMPORTS, *scripts],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, f"imports that do not resolve:\n{proc.stdout}{proc.stderr}"


# --- the soak's command line, in process (the soak itself needs root: the interop tests run it) ---


@pytest.fixture
def soak(monkeypatch: pytest.MonkeyPatch) -> Any:
    """benchmarks/soak.py as a module; its sys.path additions are undone afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("wgslirpy_bench_soak", BENCHMARKS / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)

    def no_soak(*args: object, **kwargs: object) -> None:
        pytest.fail("the soak was started")

    monkeypatch.setattr(module, "run_soak", no_soak)
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # as root: only the arguments stop it
    return module


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--minutes", "0"], "--minutes must be more than 0"),
        (["--sample", "-1"], "--sample must be more than 0 seconds"),
        (["--warmup", "1"], "--warmup is a fraction of the run"),
        (["--intensity", "0"], "--intensity must be more than 0"),
        (["--only", "dns", "--only", "pnig"], "--only 'pnig' matches no workload; the workloads: talker"),
    ],
    ids=["minutes", "sample", "warmup", "intensity", "only"],
)
def test_soak_refuses_bad_arguments_before_it_starts(
    soak: Any, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        soak.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_soak_needs_root(soak: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert soak.main(["--minutes", "1"]) == 2
    assert "soak: needs root" in capsys.readouterr().err


@pytest.mark.parametrize("growth", [False, True])
def test_soak_command_line_runs_the_soak_and_writes_its_json(
    soak: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, growth: bool
) -> None:
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []
    sample = soak.Sample(t=1.0, rss=1 << 20, fds=10, greenlets=3, tcp_flows=0, udp_bindings=0)

    def fake_soak(*args: object, **kwargs: object) -> Any:
        calls.append((args, kwargs))
        return soak.Result([sample, sample], sample, sample, {"dns udp": {"runs": 1, "ok": 1}}, {"rss": "ok"}, growth)

    monkeypatch.setattr(soak, "run_soak", fake_soak)
    out = tmp_path / "soak.json"
    argv = ["--minutes", "0.5", "--sample", "2", "--warmup", "0.1", "--intensity", "2", "--only", "dns"]
    assert soak.main([*argv, "--json", str(out)]) == (1 if growth else 0)
    assert calls == [((0.5,), {"sample_every": 2.0, "warmup": 0.1, "intensity": 2.0, "only": ["dns"]})]
    written = json.loads(out.read_text())
    assert written["samples"] == [sample.__dict__] * 2
    assert written["idle_end"] == sample.__dict__
    assert written["workloads"] == {"dns udp": {"runs": 1, "ok": 1}}
    assert written["growth"] is growth
