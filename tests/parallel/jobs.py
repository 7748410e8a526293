"""Trial jobs for the executor tests: tiny Python children that follow the child protocol (a result JSON in
`AUTOSCOUT_RESULT`), and record when they ran, so a test can count how many ran at once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from autoscout_plugin.parallel import TrialJob

CHILD = r"""
import json, os, sys, time
log, value, seconds, mode = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
start = time.time()
with open(os.path.join(log, f"start-{os.getpid()}"), "w") as f:
    f.write(json.dumps({"value": value, "t": start, "pid": os.getpid()}))
if mode == "crash":
    raise SystemExit("segfault-like crash of the trial")
if mode == "hang":
    time.sleep(600)
if mode == "transient":
    raise SystemExit("RuntimeError: The server socket has failed to listen on any local network address."
                     " port: 29500, useIPv6: 0, code: -98, name: EADDRINUSE, message: address already in use")
time.sleep(seconds)
with open(os.path.join(log, f"end-{os.getpid()}"), "w") as f:
    f.write(json.dumps({"t": time.time()}))
with open(os.environ["AUTOSCOUT_RESULT"], "w") as f:
    json.dump({"status": "ok", "value": value}, f)
"""


def job(log: Path, value: float, *, seconds: float = 0.5, mode: str = "ok", timeout_s: float = 60) -> TrialJob:
    return TrialJob(command=(sys.executable, "-c", CHILD, str(log), str(value), str(seconds), mode),
                    timeout_s=timeout_s, label=f"{value}")


def intervals(log: Path) -> list[tuple[float, float]]:
    """(start, end) of each finished child."""
    out = []
    for start in log.glob("start-*"):
        end = log / start.name.replace("start-", "end-")
        if end.exists():
            out.append((json.loads(start.read_text())["t"], json.loads(end.read_text())["t"]))
    return out


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak
