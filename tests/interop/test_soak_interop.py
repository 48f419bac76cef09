"""The soak, short: two minutes of ``benchmarks/soak.py``'s mixed load through the real client;
the gateway's RSS, open fds and greenlets must not grow after the warm-up, and fds, greenlets
and flows must return to idle after the load. Marked ``soak`` (``pytest -m soak``); the long
run is ``sudo python3 benchmarks/soak.py --minutes 20``. ``WGSLIRPY_SOAK_MINUTES`` overrides
the length here."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import gateway_kind

pytestmark = [pytest.mark.interop, pytest.mark.soak]

SOAK_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def _load_soak() -> Any:
    spec = importlib.util.spec_from_file_location("wgslirpy_soak", SOAK_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_soak_nothing_grows(socket_buffers: None, measure: Callable[[str], None]) -> None:
    if gateway_kind() != "wgslirpy":
        pytest.skip("the soak samples wgslirpy's own counters")
    soak = _load_soak()
    minutes = float(os.environ.get("WGSLIRPY_SOAK_MINUTES", "2"))
    lines: list[str] = []
    # Half the short run is warm-up: TIME-WAIT (30 s) and the allocator's pools fill first.
    result = soak.run_soak(minutes, warmup=0.5, log=lines.append)
    first, last = result.samples[0], result.samples[-1]
    measure(
        f"{minutes:g} min: RSS {first.rss / 2**20:.1f} -> {last.rss / 2**20:.1f} MiB, "
        f"fds {result.idle_start.fds} -> {result.idle_end.fds}, "
        f"greenlets {result.idle_start.greenlets} -> {result.idle_end.greenlets} (idle before/after)"
    )
    failed = {n: c for n, c in result.workloads.items() if c["ok"] == 0}
    assert not failed, f"workloads that never succeeded: {failed}\n" + "\n".join(lines)
    assert not result.growth, "\n".join(lines)
