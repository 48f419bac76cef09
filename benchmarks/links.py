"""The benchmark's link section: TCP through an impaired WireGuard underlay, one run, interleaved.

The client's WireGuard endpoint points at tests/interop/relay.py in ns gw, which delays,
drops, reorders and duplicates the underlay datagrams with seeded choices (the same seed
for every gateway, so each gateway sees the same impairment). One topology per gateway is
built once and kept for the whole section; then, per repeat and per profile, each gateway
in turn (baseline, wgslirpy, mitmproxy) gets a fresh relay with the profile's settings and
moves one download (HTTP GET of the pattern, sha256 of what arrived checked) and one upload
(to the link sink, which checks it). A transfer ends at its size or at its time cap;
its rate is bytes / time from the request to the last byte. Every gap of more than 1 s
between arrivals is a stall.

For wgslirpy, the gateway's SIGUSR1 stats line is read before and after each transfer and
the difference of the TCP recovery counters is reported (``rto``, ``retransmitted_bytes``,
``spurious_undone``; found wherever they sit in the stats, ``n/a`` while the gateway has none).

Before the profiles, the baseline moves the same transfers without the relay and through the
relay with no impairment, and the relay's own counters (datagrams/s, CPU) say what it can carry.
"""

from __future__ import annotations

import json
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import procstat
from mitm import MitmproxyGateway, mitmdump_version

from tests.interop import topology as topo_mod
from tests.interop.topology import PYTHON, SRV_V4, Topology

HERE = Path(__file__).resolve().parent
PROGRAMS_PY = HERE / "programs.py"
GATEWAYS = ("kernel", "wgslirpy", "mitmproxy")  # interleaving order within a profile
NAMES = {"kernel": "baseline", "wgslirpy": "wgslirpy", "mitmproxy": "mitmproxy"}
COUNTERS = ("rto", "retransmitted_bytes", "spurious_undone")
STALL_S = 1.0


@dataclass(frozen=True)
class Profile:
    key: str
    label: str
    relay: dict[str, float]  # Topology.start_relay keywords (both directions)
    size_mb: int  # about 4 s at the baseline's rate here
    target: float | None = None  # ratio wgslirpy/baseline, both ways
    target_text: str = ""


PROFILES = (
    Profile("relay", "no impairment (relay only)", {}, 300),
    Profile("20ms", "20 ms each way, no loss", {"delay_ms": 20}, 160, 0.7, ">= 0.7x"),
    Profile("50ms-1pct", "50 ms each way, 1 % loss each way", {"delay_ms": 50, "loss": 0.01}, 40, 0.5, ">= 0.5x"),
    Profile(
        "lossy",
        "2 ms, 5 % loss, 10 % reorder, 1 % dup each way",
        {"delay_ms": 2, "loss": 0.05, "reorder": 0.10, "reorder_ms": 5, "dup": 0.01},
        120,
        0.5,
        ">= 0.5x",
    ),
)
TARGETS_TEXT = (
    "link profiles (ratio wgslirpy/baseline through the same relay, both ways): "
    + "; ".join(f"{p.label}: {p.target_text}" for p in PROFILES if p.target)
    + "; any profile: no transfer stalls for more than 1 s"
)


@dataclass(frozen=True)
class LinkSizes:
    scale: float = 1.0  # of Profile.size_mb
    cap_s: float = 12.0  # a transfer stops after this long
    seed: int = 20


LINKS_QUICK = LinkSizes(scale=0.25, cap_s=5.0)


def find_counters(tree: Any) -> dict[str, float] | None:
    """The TCP recovery counters wherever the stats hold them: the shallowest dicts that have a
    ``retransmitted_bytes`` key (a name no other figure uses), summed over that depth
    (e.g. one folded ``"tcp"`` total, or per-connection ``counters``)."""
    level: list[Any] = [tree]
    for _ in range(8):
        found = [v for v in level if isinstance(v, dict) and "retransmitted_bytes" in v]
        if found:
            out: dict[str, float] = {}
            for name in COUNTERS:
                vals = [
                    v[name]
                    for v in found
                    if isinstance(v.get(name), (int, float)) and not isinstance(v.get(name), bool)
                ]
                if vals:
                    out[name] = float(sum(vals))
            return out
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, dict):
                nxt += list(v.values())
            elif isinstance(v, list):
                nxt += v
        if not nxt:
            return None
        level = nxt
    return None


@dataclass
class Bed:
    """One gateway's topology for the whole section."""

    kind: str
    topo: Topology | None = None
    broken: str | None = None  # why this gateway cannot be measured

    def transfer(self, direction: str, size: int, cap: float) -> dict[str, Any]:
        assert self.topo is not None
        cmd = "link-get" if direction == "down" else "link-put"
        try:
            proc = self.topo.client.run(
                [PYTHON, str(PROGRAMS_PY), cmd, SRV_V4, "--size", str(size), "--cap", str(cap)],
                timeout=cap + 60,
                check=False,
            )
        except topo_mod.TopologyError as e:
            return {"ok": False, "error": str(e)[:200]}
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if not lines:
            return {"ok": False, "error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-200:]}"}
        res: dict[str, Any] = json.loads(lines[-1])
        return res

    def stats(self) -> dict[str, Any] | None:
        assert self.topo is not None
        if not self.topo.gateway.is_wgslirpy:
            return None
        try:
            return self.topo.gateway.stats(timeout=5)
        except topo_mod.TopologyError:
            return None


def counters_between(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, float | None]:
    a = find_counters(after) if after is not None else None
    b = (find_counters(before) if before is not None else None) or {}
    return {name: None if a is None or name not in a else a[name] - b.get(name, 0.0) for name in COUNTERS}


def build_bed(kind: str, gateway_args: list[str], mitmdump: Path | None) -> Bed:
    bed = Bed(kind)
    try:
        if kind == "mitmproxy":
            assert mitmdump is not None
            topo = Topology("wgslirpy", gateway_factory=lambda t, key: MitmproxyGateway(t, key, mitmdump))
        else:
            topo = Topology(kind, gateway_args=gateway_args if kind == "wgslirpy" else ())
        topo.up()
        bed.topo = topo
        # No per-destination TCP metrics (ssthresh, RTT) carried from one profile's
        # connections to the next: each transfer starts from the same state.
        for ns in (topo.client, topo.srv):
            ns.sysctl("net.ipv4.tcp_no_metrics_save", "1")
        proc = topo.srv.spawn(
            [PYTHON, str(PROGRAMS_PY), "serve"], log_path=topo.workdir / "bench-serve.log", stdout_pipe=True
        )
        topo_mod._wait_ready(proc, "benchmarks/programs.py serve")
        check = bed.transfer("down", 100_000, 15)
        if not check.get("ok"):
            raise topo_mod.TopologyError(f"no TCP through the gateway: {check.get('error')}")
    except Exception as e:
        bed.broken = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
        if bed.topo is not None:
            tail = bed.topo.gateway.log_tail(300).strip().splitlines()[-2:]
            bed.broken += f" ({' | '.join(tail)})" if tail else ""
    return bed


def run_profile(bed: Bed, prof: Profile, sizes: LinkSizes, seed: int) -> dict[str, Any]:
    """One gateway through one profile: download, upload, recovery counters, relay counters."""
    topo = bed.topo
    assert topo is not None
    size = max(1 << 20, int(prof.size_mb * sizes.scale * 1e6))
    out: dict[str, Any] = {}
    relay = topo.start_relay(seed=seed, **prof.relay)  # type: ignore[arg-type]
    try:
        topo.set_client_endpoint(relay.address)
        if relay.proc.poll() is not None:
            raise topo_mod.TopologyError("relay exited")
        for direction in ("down", "up"):
            before = bed.stats()
            t0 = time.monotonic()
            res = bed.transfer(direction, size, sizes.cap_s)
            res["wall"] = time.monotonic() - t0
            res["counters"] = counters_between(before, bed.stats())
            out[direction] = res
    finally:
        counts = relay.stop()
        topo.set_client_endpoint(topo.gateway.endpoint)
    out["relay"] = counts
    return out


def relay_capacity(bed: Bed, sizes: LinkSizes) -> dict[str, Any]:
    """The baseline without the relay (the relay-only profile then measures it through the relay)."""
    size = int(PROFILES[0].size_mb * sizes.scale * 1e6)
    return {d: bed.transfer(d, size, sizes.cap_s) for d in ("down", "up")}


def run_links(
    kinds: list[str],
    repeat: int,
    sizes: LinkSizes,
    gateway_args: list[str],
    deadline: float,
    mitmdump: Path | str | None,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """The whole section; never raises. Returns the raw results for :func:`render_links`.

    ``mitmdump``: the mitmproxy gateway's program, why there is none, or None (not asked for).
    """
    result: dict[str, Any] = {
        "kinds": [],
        "runs": [],
        "direct": [],
        "notes": [],
        "mitmproxy": None,
        "sizes": {"scale": sizes.scale, "cap_s": sizes.cap_s, "seed": sizes.seed},
    }
    order = [k for k in GATEWAYS if k in kinds]
    if isinstance(mitmdump, Path):
        result["mitmproxy"] = mitmdump_version(mitmdump)
    elif mitmdump is not None:
        result["mitmproxy"] = mitmdump
    mitm_prog = mitmdump if isinstance(mitmdump, Path) else None
    result["kinds"] = order
    beds: dict[str, Bed] = {}
    try:
        for kind in order:
            if kind == "mitmproxy" and mitm_prog is None:
                beds[kind] = Bed(kind, broken=f"skipped: mitmproxy {result['mitmproxy']}")
                continue
            progress(f"links: {NAMES[kind]} topology ... ")
            beds[kind] = build_bed(kind, gateway_args, mitm_prog)
            progress((beds[kind].broken or "up") + "\n")
        for rep in range(repeat):
            run: dict[str, Any] = {}
            base = beds.get("kernel")
            if base is not None and base.broken is None:
                result["direct"].append(relay_capacity(base, sizes))
            for prof in PROFILES:
                run[prof.key] = {}
                for kind in order:
                    bed = beds[kind]
                    if bed.broken is not None:
                        run[prof.key][kind] = {"error": bed.broken}
                        continue
                    if time.monotonic() > deadline:
                        run[prof.key][kind] = {"error": "skipped: time budget exhausted"}
                        continue
                    progress(f"[{rep + 1}/{repeat}] {prof.key} {NAMES[kind]} ... ")
                    t0 = time.monotonic()
                    try:
                        run[prof.key][kind] = run_profile(bed, prof, sizes, sizes.seed + rep)
                    except Exception as e:
                        traceback.print_exc()
                        run[prof.key][kind] = {"error": f"failed: {type(e).__name__}: {str(e)[:200]}"}
                    r = run[prof.key][kind]
                    progress(
                        f"{time.monotonic() - t0:.0f}s "
                        + " ".join(f"{d} {r[d].get('mbps', 0):.1f} MB/s" for d in ("down", "up") if d in r)
                        + "\n"
                    )
                    if bed.topo is not None and bed.topo.gateway.pid is None:
                        bed.broken = f"failed: gateway exited ({bed.topo.gateway.log_tail(200).strip()[-200:]})"
            result["runs"].append(run)
    finally:
        for bed in beds.values():
            if bed.topo is not None:
                try:
                    if bed.kind == "wgslirpy" and bed.topo.gateway.pid is not None:
                        result.setdefault("rss_mb", procstat.rss_bytes(bed.topo.gateway.pid) / 1e6)
                except OSError:
                    pass
                bed.topo.down()
    return result


# --- report --------------------------------------------------------------------------------
def _rate(r: dict[str, Any] | None) -> float | None:
    if not r or "mbps" not in r or not r.get("sha_ok", r.get("ok")):
        return None
    return float(r["mbps"])


def _fmt(vals: list[float]) -> str:
    if not vals:
        return "-"
    text = f"{statistics.median(vals):.1f}" if statistics.median(vals) < 100 else f"{statistics.median(vals):.0f}"
    if len(vals) > 1:
        text += f" [{min(vals):.1f}-{max(vals):.1f}]"
    return text


def _ratio_text(ratios: dict[str, list[float]], kind: str) -> str:
    return f"{statistics.median(ratios[kind]):.2f}x" if ratios.get(kind) else "-"


def _ctext(vals: list[float], measured: bool, scale: float = 1.0, fmt: str = "{:.0f}") -> str:
    """A wgslirpy counter cell: '-' without a transfer, 'n/a' without counters in the stats."""
    if not measured:
        return "-"
    return fmt.format(statistics.median(vals) / scale) if vals else "n/a"


def render_links(result: dict[str, Any]) -> list[str]:
    kinds: list[str] = result["kinds"]
    runs: list[dict[str, Any]] = result["runs"]
    lines: list[str] = []
    notes: list[str] = []
    stalls: list[str] = []
    header = ["link profile", "dir", "baseline MB/s", "wgslirpy MB/s", "ratio", "target", ""]
    if "mitmproxy" in kinds:
        header += ["mitmproxy MB/s", "ratio"]
    initials = "/".join(NAMES[k][0] for k in kinds)
    header += ["wgslirpy RTOs", "retrans MB", "spurious undone", f"longest gap s ({initials})"]
    table: list[list[str]] = []
    for prof in PROFILES:
        for d in ("down", "up"):
            cells: dict[str, list[float]] = {k: [] for k in kinds}
            ratios: dict[str, list[float]] = {k: [] for k in kinds}
            gaps: dict[str, list[float]] = {k: [] for k in kinds}
            ctr: dict[str, list[float]] = {c: [] for c in COUNTERS}
            for i, run in enumerate(runs):
                per = run.get(prof.key, {})
                base = _rate(per.get("kernel", {}).get(d))
                for k in kinds:
                    entry = per.get(k, {})
                    if "error" in entry:
                        notes.append(f"{NAMES[k]}, {prof.label}: {entry['error']}")
                        continue
                    r = entry.get(d, {})
                    v = _rate(r)
                    if v is None:
                        notes.append(
                            f"{NAMES[k]}, {prof.label}, {d} (run {i + 1}): {r.get('error') or 'sha256 mismatch'}"
                        )
                        continue
                    cells[k].append(v)
                    if base:
                        ratios[k].append(v / base)
                    gaps[k].append(float(r.get("max_gap", 0.0)))
                    if r.get("max_gap", 0.0) > STALL_S:
                        stalls.append(
                            f"{NAMES[k]}, {prof.label}, {d} (run {i + 1}): "
                            f"{r.get('stalls', 1)} stall(s), longest {r['max_gap']:.1f} s"
                        )
                    if not r.get("complete", True):
                        notes.append(
                            f"{NAMES[k]}, {prof.label}, {d} (run {i + 1}): hit the "
                            f"{result['sizes']['cap_s']:.0f} s cap after {r.get('bytes', 0) / 1e6:.1f} MB"
                        )
                    if k == "wgslirpy":
                        for c in COUNTERS:
                            cv = (r.get("counters") or {}).get(c)
                            if cv is not None:
                                ctr[c].append(float(cv))

            verdict = ""
            if prof.target is not None and ratios.get("wgslirpy"):
                verdict = "ok" if statistics.median(ratios["wgslirpy"]) >= prof.target else "MISS"
            row = [
                prof.label if d == "down" else "",
                d,
                _fmt(cells.get("kernel", [])),
                _fmt(cells.get("wgslirpy", [])),
                _ratio_text(ratios, "wgslirpy") if "wgslirpy" in kinds else "-",
                prof.target_text,
                verdict,
            ]
            if "mitmproxy" in kinds:
                row += [_fmt(cells["mitmproxy"]), _ratio_text(ratios, "mitmproxy")]

            measured = bool(cells.get("wgslirpy"))
            row += [
                _ctext(ctr["rto"], measured),
                _ctext(ctr["retransmitted_bytes"], measured, 1e6, "{:.2f}"),
                _ctext(ctr["spurious_undone"], measured),
                "/".join(f"{max(gaps[k]):.1f}" if gaps[k] else "-" for k in kinds),
            ]
            table.append(row)
    widths = [max(len(r[i]) for r in table + [header]) for i in range(len(header))]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines.append("")
    lines += capacity_lines(result)
    lines.append("stalls (no data for more than 1 s): " + ("none" if not stalls else ""))
    lines += [f"  {s}" for s in stalls]
    lines += explain_links(result)
    if notes:
        lines.append("link notes:")
        lines += [f"  {n}" for n in dict.fromkeys(notes)]
    return lines


def capacity_lines(result: dict[str, Any]) -> list[str]:
    """What the relay carried: baseline with and without it, datagrams/s, CPU per datagram."""
    direct = result.get("direct", [])
    through = [run.get("relay", {}).get("kernel", {}) for run in result["runs"]]
    out: list[str] = []
    parts = []
    for d in ("down", "up"):
        a = [v for v in (_rate(x.get(d)) for x in direct) if v is not None]
        b = [v for v in (_rate(x.get(d)) for x in through) if v is not None]
        if a and b:
            parts.append(
                f"{d} {statistics.median(a):.1f} MB/s without it, {statistics.median(b):.1f} "
                f"through it ({statistics.median(b) / statistics.median(a):.2f}x)"
            )
    relays = [
        run.get(p.key, {}).get(k, {}).get("relay") or {}
        for run in result["runs"]
        for p in PROFILES
        for k in result["kinds"]
    ]
    relays = [r for r in relays if r]
    engine = sorted({str(r.get("engine", "?")) for r in relays})
    peak = max((int(r.get("peak_dps", 0)) for r in relays), default=0)
    out.append(
        f"impairment relay (engine {'/'.join(engine) or '?'}): baseline "
        + ("; ".join(parts) if parts else "with/without the relay not measured")
    )
    # CPU per datagram where the relay worked hardest: the unimpaired baseline.
    busy = [r.get("relay") or {} for r in through]
    dgrams = sum(int(r.get("to_upstream", 0)) + int(r.get("to_client", 0)) for r in busy)
    cpu = sum(float(r.get("cpu_s", 0.0)) for r in busy)
    if dgrams and cpu > 0:
        per = cpu / dgrams * 1e6
        out.append(
            f"  it used {per:.1f} us CPU per datagram carrying the unimpaired baseline, i.e. it could carry "
            f"~{1e6 / per:,.0f} datagrams/s on one core: {1e6 / per / max(peak, 1):.1f}x the busiest "
            f"second it had in any profile ({peak:,} datagrams/s)"
        )
    if "python" in engine:
        out.append("  WARNING: the Python relay engine ran (no C compiler?): it may cap the baseline's figures")
    held = [r for r in relays if r.get("pool_full") or r.get("send_errors") or r.get("queue_dropped")]
    if held:
        out.append(f"  relay trouble: {len(held)} relay run(s) with pool_full/send_errors/queue drops")
    return out


def explain_links(result: dict[str, Any]) -> list[str]:
    s = result["sizes"]
    return [
        "Link profiles: each gateway in turn through a fresh tests/interop/relay.py (same seed per profile)",
        "on the underlay; impairments apply to each direction. A transfer is an HTTP download or an upload",
        f"of about {s['scale']:g} x the profile's size, stopped at {s['cap_s']:.0f} s; MB/s = bytes / time from",
        "request to last byte, median over repeats [min-max]; ratio = median of per-repeat ratios to the",
        "baseline. RTOs, retransmitted MB and spurious retransmissions undone: wgslirpy's TCP counters",
        "(SIGUSR1 stats) over the transfer, n/a while the gateway does not report them. Longest gap: the",
        "longest time without data arriving, per gateway (b/w/m: baseline/wgslirpy/mitmproxy).",
    ]
