"""Read a process tree's CPU time and memory from /proc (Linux only).

The gateway is one process (wireguard-go, or python for wgslirpy) but we sum over its
descendants too, so a gateway that forks helpers is still measured whole.
CPU seconds are utime+stime (fields 14 and 15 of /proc/PID/stat, all threads); memory is
VmRSS (now) and VmHWM (peak resident set since the process started) from /proc/PID/status.
"""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 10_000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree, seconds."""
    total = 0
    for p in tree(pid):
        try:
            f = _stat_fields(p)
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # utime, stime (fields 14, 15 counted from 1)
    return total / CLK_TCK


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_bytes(pid: int) -> int:
    """Current resident set of the tree (VmRSS summed)."""
    total = 0
    for p in tree(pid):
        try:
            total += _status_kib(p, "VmRSS")
        except OSError:
            continue
    return total * 1024


def hwm_bytes(pid: int) -> int:
    """Peak resident set (VmHWM) of the tree, summed over its processes."""
    total = 0
    for p in tree(pid):
        try:
            total += _status_kib(p, "VmHWM")
        except OSError:
            continue
    return total * 1024


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def nofile_limit(pid: int) -> tuple[int, int] | None:
    """(soft, hard) RLIMIT_NOFILE of a running process, from /proc/PID/limits."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    except (OSError, ValueError):
        pass
    return None
