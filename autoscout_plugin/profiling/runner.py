"""Run a trial in a child process with a timeout, and never leave orphans.

The child runs in its own session (process group); on timeout the whole group gets SIGTERM, then
SIGKILL. The child reports by writing one JSON object to the file named in `AUTOSCOUT_RESULT`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ..failures import FAILURE_CLASSES
from ..trial import STATUSES
from .outcome import TrialOutcome

RESULT_ENV = "AUTOSCOUT_RESULT"
STDERR_TAIL_BYTES = 8000
"""How much of a failed child's stderr is searched for its exception (dynamo's messages are long)."""
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_]\w*\.)*\w*(Error|Exception|Failed|Unsupported|Interrupt|Exit)\w*:")


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float = 3.0) -> None:
    """SIGTERM the child's whole process group, then SIGKILL whatever is still running after `grace_s`.

    The group outlives its leader: a grandchild that ignores SIGTERM is still there after the child
    has exited, so the wait is on the group, not on `proc`.
    """
    pgid = proc.pid  # start_new_session=True: the child leads its own group
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            proc.poll()
            return
        deadline = time.monotonic() + grace_s
        while True:
            proc.poll()  # reap the leader, or it counts as a member forever
            if not _group_running(pgid):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)


def _group_running(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies do not count: init may never reap them)."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def run_subprocess_trial(cmd: Sequence[str], *, timeout_s: float, env: dict[str, str] | None = None,
                         cwd: str | None = None) -> TrialOutcome:
    """Run `cmd` as one trial; its JSON result (a `TrialOutcome`'s fields) is read back.

    A child that exits non-zero without a result is an `error` (its stderr tail is kept); one that
    runs past `timeout_s` is a `timeout` and its whole process group is killed.
    """
    if not timeout_s > 0:  # also refuses NaN
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    fd, result_path = tempfile.mkstemp(prefix="autoscout-trial-", suffix=".json")
    os.close(fd)
    child_env = dict(os.environ if env is None else env)
    child_env[RESULT_ENV] = result_path
    start = time.perf_counter()
    try:
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(list(cmd), env=child_env, cwd=cwd, stdout=subprocess.DEVNULL,
                                    stderr=stderr, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return TrialOutcome(
                    status="timeout", cost_s=time.perf_counter() - start,
                    error=f"no result after {timeout_s:g} s; the trial's processes were killed")
            finally:
                _kill_group(proc, grace_s=1.0)  # stragglers the child left in its group
            stderr.seek(0, os.SEEK_END)
            stderr.seek(max(stderr.tell() - STDERR_TAIL_BYTES, 0))
            tail = stderr.read().decode(errors="replace")
        return _read_result(Path(result_path), code, tail, time.perf_counter() - start)
    finally:
        Path(result_path).unlink(missing_ok=True)
        Path(f"{result_path}.partial").unlink(missing_ok=True)  # see write_result


def _read_result(path: Path, code: int, stderr_tail: str, wall_s: float) -> TrialOutcome:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if not text.strip():
        killed = code in (-signal.SIGKILL, 137)  # what the kernel's OOM killer leaves
        status = "oom" if killed or "out of memory" in stderr_tail.lower() else "error"
        error = f"exit code {code}; {stderr_evidence(stderr_tail)}"
        return TrialOutcome(status=status, cost_s=wall_s, error=error[:300])
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        status = data.get("status", "ok")
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; use one of {STATUSES}")
        failure = data.get("failure")
        if failure is not None and failure not in FAILURE_CLASSES:
            raise ValueError(f"unknown failure class {failure!r}; use one of {FAILURE_CLASSES}")
        outcome = TrialOutcome(status=status, value=data.get("value"), cost_s=wall_s,
                               peak_mem_mb=data.get("peak_mem_mb"), error=data.get("error"),
                               metrics=dict(data.get("metrics") or {}), failure=failure)
        return outcome.checked()
    except (TypeError, ValueError) as exc:  # a damaged result is the trial's failure, not the tuner's
        return TrialOutcome(status="error", cost_s=wall_s,
                            error=f"exit code {code}; unreadable trial result: {exc}"[:300])


def stderr_evidence(stderr_tail: str) -> str:
    """The exception a dead child printed last (`torch._dynamo.exc.Unsupported: ...`), else its last
    line: tracebacks end with hints ("Set TORCHDYNAMO_VERBOSE=1 ...") after the line that matters."""
    lines = [ln.strip() for ln in stderr_tail.splitlines() if ln.strip()]
    found = [ln for ln in lines if _EXCEPTION_LINE.match(ln)]
    if found:
        return found[-1] if found[-1] == lines[-1] else f"{found[-1]} | {lines[-1]}"
    return lines[-1] if lines else ""


def write_result(outcome: TrialOutcome) -> bool:
    """In a child started by `run_subprocess_trial`: write the outcome; False when not in a trial."""
    target = os.environ.get(RESULT_ENV)
    if not target:
        return False
    data = {"status": outcome.status, "value": outcome.value, "peak_mem_mb": outcome.peak_mem_mb,
            "error": outcome.error, "metrics": outcome.metrics, "failure": outcome.failure}
    # Write then rename, so a child killed mid-write leaves no half-written result behind.
    partial = Path(f"{target}.partial")
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, target)
    return True


def report_and_exit(outcome: TrialOutcome, *, rank_zero: bool) -> None:
    """In a trial's child process: rank 0 writes the result, then every rank leaves at once (at the same
    step, so none waits in a collective for a peer that left)."""
    if rank_zero:
        write_result(outcome)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port() -> int:
    """A TCP port free on this host now, for a child's process group (`MASTER_PORT`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
