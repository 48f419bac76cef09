"""Sample a running Python gateway with py-spy and say where its time goes.

``record()`` attaches py-spy to a PID for a fixed duration and writes a speedscope JSON
(open it at https://www.speedscope.app). ``summarize()`` turns that file into a folded-stack
file (the input format of flamegraph.pl, inferno and speedscope's importer) and a short
text report: the functions with the most samples on top of the stack (self) and anywhere
in it (total). py-spy samples without pausing the target (--nonblocking) so the profile
perturbs the measured transfer as little as possible.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def find_py_spy() -> str | None:
    """py-spy next to this interpreter (the venv) or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


def start_record(
    py_spy: str, pid: int, out: Path, *, duration: float, rate: int = 200, log: Path
) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` on ``pid`` for ``duration`` seconds; wait() on the result."""
    cmd = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(duration))),
        "--rate",
        str(rate),
        "--nonblocking",
        "--function",  # aggregate lines per function
        "--format",
        "speedscope",
        "--output",
        str(out),
    ]
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True)


def _frame_name(frame: dict[str, object]) -> str:
    file = str(frame.get("file") or "?")
    # Keep the package-relative part of a path (wgslirpy/net/stack.py, gevent/hub.py):
    # enough to find the code, short enough to read.
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    elif "/wgslirpy/" in file:
        file = "wgslirpy/" + file.rsplit("/wgslirpy/", 1)[1]
    else:
        file = os.path.basename(file)
    return f"{frame.get('name')} ({file}:{frame.get('line')})"


def summarize(speedscope: Path, *, top: int = 20) -> str:
    """Write ``<stem>.folded`` beside the profile and return a top-N text summary."""
    data = json.loads(speedscope.read_text())
    frames = [_frame_name(f) for f in data["shared"]["frames"]]
    self_count: Counter[str] = Counter()
    total_count: Counter[str] = Counter()
    folded: Counter[str] = Counter()  # weights in seconds; scaled to ms when written
    samples = 0.0  # py-spy weighs each sample by the seconds it stands for
    for profile in data.get("profiles", []):
        weights = profile.get("weights") or [1] * len(profile.get("samples", []))
        for stack, weight in zip(profile.get("samples", []), weights):
            if not stack:
                continue
            names = [frames[i] for i in stack]  # speedscope order: root first, leaf last
            samples += weight
            self_count[names[-1]] += weight
            for name in set(names):
                total_count[name] += weight
            folded[";".join([profile.get("name", "thread")] + names)] += weight
    folded_path = speedscope.with_suffix(".folded")
    # Folded-stack tools want integer counts: write milliseconds.
    folded_path.write_text("".join(f"{k} {max(1, round(v * 1000))}\n" for k, v in folded.most_common()))
    if samples <= 0:
        return f"{speedscope.name}: no samples (was the gateway busy?)\n"
    lines = [
        f"{speedscope.name}: {samples:.2f} s sampled (folded stacks: {folded_path.name})",
        f"  top {top} by self time:",
    ]
    lines += [f"    {100 * c / samples:5.1f}%  {n}" for n, c in self_count.most_common(top)]
    lines.append(f"  top {top} by total time (on the stack):")
    lines += [f"    {100 * c / samples:5.1f}%  {n}" for n, c in total_count.most_common(top)]
    return "\n".join(lines) + "\n"
