"""Live statistics: a periodic summary log line (``-v``) and a JSON file (``--stats-json``).

:func:`snapshot` is :meth:`Gateway.stats` plus the WireGuard counters (bytes and datagrams
each way, handshakes); :func:`summary_line` turns one into a line a person reads;
:class:`StatsReporter` is the greenlet that does both every ``interval`` seconds. The JSON
file is replaced atomically (written beside it, then ``os.replace``), so a monitoring
reader never sees half a file. SIGUSR1 (``Gateway.stats_line``) is separate and unchanged.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import gevent

from ..atomicfile import write_atomic

log = logging.getLogger("wgslirpy")


def snapshot(gateway: Any) -> dict[str, Any]:
    """The gateway's stats with the WireGuard counters under ``"wireguard"`` and a wall-clock ``"time"``."""
    stats: dict[str, Any] = gateway.stats()
    stats["wireguard"] = gateway.endpoint.stats.as_dict()
    stats["time"] = round(time.time(), 3)
    return stats


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def summary_line(stats: dict[str, Any]) -> str:
    """``stats: 3 TCP flows, 1 UDP binding, ...`` from a :func:`snapshot`."""
    wg = stats.get("wireguard", {})
    drops = stats.get("drops", {})
    drop_text = ", ".join(f"{k} {v}" for k, v in sorted(drops.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"
    return (
        f"stats: {stats.get('tcp_flows', 0)} TCP flows open, {stats.get('udp_bindings', 0)} UDP bindings, "
        f"tunnel in {_size(wg.get('rx_bytes', 0))} / out {_size(wg.get('tx_bytes', 0))}, "
        f"{wg.get('handshakes_completed', 0)} handshakes, "
        f"session {'up' if stats.get('has_session') else 'down'}, drops: {drop_text}"
    )


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON in one step (mode 0644 like any report file)."""
    text = json.dumps(data, default=str, sort_keys=True) + "\n"
    write_atomic(path, text, mode=0o644, fsync=False, prefix=".stats.")


class StatsReporter:
    """Every ``interval`` seconds: log :func:`summary_line` (``log_line``) and/or rewrite ``json_path``."""

    def __init__(self, gateway: Any, *, interval: float, log_line: bool, json_path: str | None) -> None:
        self.gateway = gateway
        self.interval = interval
        self.log_line = log_line
        self.json_path = json_path
        self._greenlet: gevent.Greenlet | None = None
        self._json_failed = False

    def start(self) -> None:
        if self._greenlet is None:
            if self.json_path:
                self.report(log_line=False)  # the file exists from the start
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            greenlet.kill(block=True, timeout=1.0)

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            self.report(log_line=self.log_line)

    def report(self, *, log_line: bool) -> None:
        try:
            stats = snapshot(self.gateway)
        except Exception:  # a bug in a stats function must not stop the reporter
            log.exception("cannot collect stats")
            return
        if log_line:
            log.info("%s", summary_line(stats))
        if self.json_path:
            try:
                write_json_atomic(self.json_path, stats)
                self._json_failed = False
            except OSError as e:
                if not self._json_failed:  # one warning per failure streak
                    log.warning("cannot write --stats-json %s: %s", self.json_path, e.strerror or e)
                self._json_failed = True
