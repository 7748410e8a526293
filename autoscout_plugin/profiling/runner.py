"""Run a trial in a child process with a timeout, and never leave orphans, however the tuner stops.

Every command runs under the supervisor in `reaper.py` (see there): it ends the command's whole process
tree, grandchildren that moved to a session of their own included, when the command exits, times out, or
is stopped, and when the tuner dies, even by SIGKILL. `stop_signals()` makes SIGTERM and SIGHUP stop the
tuner the way Ctrl-C does, so the same cleanup runs. The child reports by writing one JSON object to the
file named in `AUTOSCOUT_RESULT`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from ..failures import FAILURE_CLASSES
from ..trial import STATUSES
from .outcome import TrialOutcome
from .reaper import DEFAULT_GRACE_S, KILL_WAIT_S

RESULT_ENV = "AUTOSCOUT_RESULT"
STDERR_TAIL_BYTES = 8000
"""How much of a failed child's stderr is searched for its exception (dynamo's messages are long)."""
GRACE_S = DEFAULT_GRACE_S
"""How long a trial's processes get between SIGTERM (timeout, stop, or left running after the trial) and SIGKILL."""
REAPER = Path(__file__).with_name("reaper.py")
WATCH_S = 0.25
"""How often `run_supervised` calls its `watch` while the command runs."""
_STARTUP_SLACK_S = 30.0
"""Beyond its own timeout and grace, how long a supervisor may take before the tuner kills it (it never should)."""
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_]\w*\.)*\w*(Error|Exception|Failed|Unsupported|Interrupt|Exit)\w*:")

PathLike = str | os.PathLike[str]


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived inside `stop_signals()`: a KeyboardInterrupt, so every path that already
    cleans up after Ctrl-C (trial trees, temp files, the store's open transaction) does so for it too."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def stop_signals(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Inside: `signals` raise `Stopped` in the main thread instead of killing the process on the spot,
    which left the running trial's processes and temp files behind.

    Only the first one raises: later ones are ignored while the cleanup it started runs. A signal ignored on
    entry stays ignored (`nohup` ignores SIGHUP), and off the main thread, where Python cannot set handlers,
    nothing changes. The previous handlers are back on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in signals}
    taken = [signum for signum, handler in previous.items() if handler not in (signal.SIG_IGN, None)]

    def stop(signum: int, frame: FrameType | None) -> None:
        for other in taken:
            signal.signal(other, signal.SIG_IGN)
        raise Stopped(signum)

    for signum in taken:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum in taken:
            signal.signal(signum, previous[signum])


def run_supervised(cmd: Sequence[str], *, timeout_s: float | None = None, grace_s: float = GRACE_S,
                   env: dict[str, str] | None = None, cwd: str | None = None, stdout: int | IO[Any] | None = None,
                   stderr: int | IO[Any] | None = None, cleanup: Sequence[PathLike] = (),
                   watch: Callable[[], None] | None = None) -> int:
    """Run `cmd` under the supervisor and wait for it: its exit status, as `subprocess` gives it (-N when
    signal N killed it). Nothing `cmd` started is left running when this returns or raises.

    `watch`, when given, is called about every `WATCH_S` seconds while `cmd` runs; an exception it raises
    (another node of a multi-node trial failed, or died) stops the tree as a stop signal does and is raised.

    Past `timeout_s` its tree gets SIGTERM, SIGKILL `grace_s` later, and `subprocess.TimeoutExpired` is
    raised. A KeyboardInterrupt while waiting (Ctrl-C, or `Stopped`) is passed on as its signal (SIGINT, or
    the one `Stopped` names), so the tree stops as it would have had that signal reached it; the wait for
    it is bounded (`grace_s` and a few seconds), then the interrupt propagates. The `cleanup` paths are
    removed by the supervisor when it is stopped, by this process or by its death: a tuner killed with
    SIGKILL gets no chance to remove its temp files. A `cmd` that cannot start raises the `OSError` it gave.
    """
    argv = [sys.executable, "-I", "-S", str(REAPER), "--parent", str(os.getpid()), "--grace", str(float(grace_s))]
    if timeout_s is not None:
        argv += ["--timeout", str(float(timeout_s))]
    for path in cleanup:
        argv += ["--cleanup", os.fspath(path)]
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb", buffering=0):  # closes the read end however this ends
        try:
            proc = subprocess.Popen([*argv, "--status", str(write_fd), "--", *cmd], env=env, cwd=cwd, stdout=stdout,
                                    stderr=stderr, start_new_session=True, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)  # the supervisor's copy is the only one left: its reports, then its exit
        backstop = None if timeout_s is None else timeout_s + grace_s + KILL_WAIT_S + _STARTUP_SLACK_S
        try:
            status = _wait(proc, backstop, watch)
        except subprocess.TimeoutExpired:
            _kill_supervisor(proc)
            raise subprocess.TimeoutExpired(list(cmd), timeout_s or 0.0) from None
        except BaseException as exc:
            _pass_on(proc, exc, grace_s)
            raise
        reports = _reports(read_fd)
    if "spawn_error" in reports:
        errno, strerror, filename = reports["spawn_error"]
        raise OSError(errno, strerror, filename)
    if reports.get("timeout"):
        raise subprocess.TimeoutExpired(list(cmd), timeout_s or 0.0)
    return int(reports.get("exit", status))  # no report: the supervisor itself was killed


def _wait(proc: subprocess.Popen[bytes], backstop: float | None, watch: Callable[[], None] | None) -> int:
    """`proc.wait(backstop)`, calling `watch` between looks when given."""
    if watch is None:
        return proc.wait(timeout=backstop)
    deadline = None if backstop is None else time.monotonic() + backstop
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        try:
            return proc.wait(timeout=WATCH_S if left is None else max(min(left, WATCH_S), 0.0))
        except subprocess.TimeoutExpired:
            if left is not None and left <= WATCH_S:
                raise
        watch()


def _pass_on(proc: subprocess.Popen[bytes], exc: BaseException, grace_s: float) -> None:
    """Hand an interrupt to the supervisor as its signal, and wait while it ends the tree and removes the
    temp paths; one that takes longer than it ever should is killed with its group."""
    if isinstance(exc, Stopped):
        signum = exc.signum
    elif isinstance(exc, KeyboardInterrupt):
        signum = signal.SIGINT
    else:  # anything else that ends the wait (SystemExit from a handler of the caller's): a plain stop
        signum = signal.SIGTERM
    proc.send_signal(signum)
    try:
        proc.wait(timeout=grace_s + KILL_WAIT_S + 5.0)
    except subprocess.TimeoutExpired:
        _kill_supervisor(proc)


def _kill_supervisor(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # on Linux its group holds the command too
    proc.wait()


def _reports(fd: int) -> dict[str, Any]:
    """What the exited supervisor wrote to its status pipe. Read without blocking: a process forked by
    another thread of this one in the instant the write end was open would hold it open too."""
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            data += chunk
    merged: dict[str, Any] = {}
    for line in data.splitlines():
        merged.update(json.loads(line))
    return merged


def run_subprocess_trial(cmd: Sequence[str], *, timeout_s: float, env: dict[str, str] | None = None,
                         cwd: str | None = None, cleanup: Sequence[PathLike] = (),
                         watch: Callable[[], None] | None = None) -> TrialOutcome:
    """Run `cmd` as one trial; its JSON result (a `TrialOutcome`'s fields) is read back.

    A child that exits non-zero without a result is an `error` (its stderr tail is kept); one that runs
    past `timeout_s` is a `timeout`. Either way its whole process tree is ended (`run_supervised`), and the
    result file and the caller's `cleanup` paths (temp files the trial uses) are removed even when the
    tuner is stopped or killed meanwhile. An exception `watch` raises stops the trial (`run_supervised`)
    and is raised.
    """
    if not timeout_s > 0:  # also refuses NaN
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    fd, result_path = tempfile.mkstemp(prefix="autoscout-trial-", suffix=".json")
    os.close(fd)
    partial = f"{result_path}.partial"  # see write_result
    child_env = dict(os.environ if env is None else env)
    child_env[RESULT_ENV] = result_path
    start = time.perf_counter()
    try:
        with tempfile.TemporaryFile() as stderr:
            try:
                code = run_supervised(cmd, timeout_s=timeout_s, env=child_env, cwd=cwd, stdout=subprocess.DEVNULL,
                                      stderr=stderr, cleanup=[result_path, partial, *cleanup], watch=watch)
            except subprocess.TimeoutExpired:
                return TrialOutcome(
                    status="timeout", cost_s=time.perf_counter() - start,
                    error=f"no result after {timeout_s:g} s; the trial's processes were killed")
            stderr.seek(0, os.SEEK_END)
            stderr.seek(max(stderr.tell() - STDERR_TAIL_BYTES, 0))
            tail = stderr.read().decode(errors="replace")
        return _read_result(Path(result_path), code, tail, time.perf_counter() - start)
    finally:
        Path(result_path).unlink(missing_ok=True)
        Path(partial).unlink(missing_ok=True)


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
    step, so none waits in a collective for a peer that left). Where the launcher says which rank is
    first on this machine (`LOCAL_RANK`), that one writes: each node of a multi-node trial reports its own
    measurement to its own launcher."""
    local = os.environ.get("LOCAL_RANK", "")
    if local == "0" or (not local and rank_zero):
        write_result(outcome)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port() -> int:
    """A TCP port free on this host now, for a child's process group (`MASTER_PORT`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
