"""No trial process outlives the tuner, however it stops: real tuner processes, real process trees (a plain
grandchild, one in a session of its own, a daemon whose parent is gone), real signals; every assertion is on
the recorded pids and on /proc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin.profiling import Stopped, run_subprocess_trial, run_supervised, stop_signals
from autoscout_plugin.profiling.reaper import SPAWN_FAILED_EXIT, TIMEOUT_EXIT
from autoscout_plugin.profiling.runner import GRACE_S, REAPER

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guarantees are Linux's (prctl)")

ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 20.0
"""How long the tests wait for a process to be gone. The guarantee is GRACE_S + about 0.5 s after the stop
(SIGKILL follows SIGTERM after GRACE_S); the rest is room for a loaded test machine."""
STARTED_WITHIN_S = 60.0
MARKER_ENV = "AUTOSCOUT_TEST_MARKER"

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
STUBBORN = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            " print(flush=True); time.sleep(600)"]
"""Deaf to SIGTERM, and says so (a line on stdout) once it is."""

TREE = f"""
import json, os, subprocess, sys, time
out, how = sys.argv[1], sys.argv[2]
sleeper = {SLEEPER!r}
pids = {{"child": os.getpid(), "plain": subprocess.Popen(sleeper).pid}}
# In a session (and group) of its own: a process-group kill misses it. "stubborn": deaf to SIGTERM.
if how == "stubborn":
    own = subprocess.Popen({STUBBORN!r}, start_new_session=True, stdout=subprocess.PIPE)
    own.stdout.readline()
else:
    own = subprocess.Popen(sleeper, start_new_session=True)
pids["own_session"] = own.pid
# A daemon: its own session, and its parent gone before anyone could kill it.
middle = subprocess.run([sys.executable, "-c", "import subprocess, sys; print(subprocess.Popen(sys.argv[1:],"
                         " start_new_session=True, stdout=subprocess.DEVNULL).pid)", *sleeper],
                        stdout=subprocess.PIPE, text=True, check=True)
pids["daemon"] = int(middle.stdout)
result = os.environ.get("AUTOSCOUT_RESULT")
if result and how != "finish":
    with open(result + ".partial", "w") as fh:  # as if stopped while writing its result
        fh.write("{{")
with open(out + ".tmp", "w") as fh:
    json.dump({{"pids": pids, "result": result}}, fh)
os.replace(out + ".tmp", out)
if how == "finish":  # a trial that reports and ends, its helpers still running
    from autoscout_plugin.profiling import TrialOutcome, write_result
    write_result(TrialOutcome(value=5.0))
    sys.exit(0)
time.sleep(600)
"""

TUNER = """
import json, signal, sys, tempfile
from contextlib import nullcontext
from autoscout_plugin.profiling import run_subprocess_trial, run_supervised, stop_signals

signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal, even when the tests run under nohup
mode, guard, cmd, scratch_dir = sys.argv[1], sys.argv[2] == "guarded", json.loads(sys.argv[3]), sys.argv[4]
scratch = tempfile.mkdtemp(prefix="autoscout-scratch-", dir=scratch_dir)  # a temp folder the trial uses
with stop_signals() if guard else nullcontext():
    try:
        if mode == "trial":
            run_subprocess_trial(cmd, timeout_s=600, cleanup=[scratch])
        else:  # the launcher's real run: no timeout
            run_supervised(cmd, cleanup=[scratch])
    except KeyboardInterrupt as exc:
        sys.exit(128 + getattr(exc, "signum", signal.SIGINT))
"""


def tree_command(out: Path, how: str = "plain") -> list[str]:
    """The trial's command: TREE, which records its pids in `out`; `how`: plain, stubborn or finish."""
    return [sys.executable, "-c", TREE, str(out), how]


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, not yet reaped) is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")


def wait_gone(pids: list[int], within_s: float = GONE_WITHIN_S) -> list[int]:
    """The pids still running after `within_s`."""
    deadline = time.monotonic() + within_s
    while (running := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return running


def marked(marker: str, within_s: float = GONE_WITHIN_S) -> list[int]:
    """Live processes with `marker` in their environment after `within_s` (everything the tuner started,
    the supervisor included, inherits it)."""
    deadline = time.monotonic() + within_s
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        found = [pid for pid in found if alive(pid)]
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def wait_started(out: Path, proc: subprocess.Popen[bytes] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + STARTED_WITHIN_S
    while not out.exists():
        assert proc is None or proc.poll() is None, f"the tuner exited early ({proc.returncode})"
        assert time.monotonic() < deadline, "the trial never started its processes"
        time.sleep(0.05)
    return json.loads(out.read_text())


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids a failing test may have left running: killed afterwards, so a red test leaks nothing."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- the tuner stopped by a signal


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("mode", "signum", "guard", "exit_code"), [
    ("trial", signal.SIGINT, "plain", 130),                   # Ctrl-C: KeyboardInterrupt
    ("trial", signal.SIGTERM, "guarded", 143),                # stop_signals(): cleaned up like Ctrl-C
    ("trial", signal.SIGHUP, "guarded", 129),
    ("trial", signal.SIGTERM, "plain", -signal.SIGTERM),      # the tuner dies at once: its parent-death signal
    ("trial", signal.SIGHUP, "plain", -signal.SIGHUP),
    ("trial", signal.SIGKILL, "plain", -signal.SIGKILL),
    ("run", signal.SIGTERM, "guarded", 143),                  # a real run: the signal is passed on
    ("run", signal.SIGINT, "plain", 130),
    ("run", signal.SIGKILL, "plain", -signal.SIGKILL),
])
def test_a_stopped_or_killed_tuner_leaves_no_process_and_no_temp_file(
        mode: str, signum: int, guard: str, exit_code: int, tmp_path: Path, leftovers: list[int]) -> None:
    out, scratch, temp = tmp_path / "tree.json", tmp_path / "scratch", tmp_path / "tmp"
    scratch.mkdir()
    temp.mkdir()
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER_ENV: marker, "TMPDIR": str(temp)}  # the trial's result file goes to TMPDIR
    tuner = subprocess.Popen([sys.executable, "-c", TUNER, mode, guard, json.dumps(tree_command(out)), str(scratch)],
                             env=env, cwd=ROOT)
    try:
        started = wait_started(out, tuner)
        pids = list(started["pids"].values())
        leftovers += pids
        assert all(alive(pid) for pid in pids)
        assert len(list(scratch.iterdir())) == 1
        if mode == "trial":
            result = Path(str(started["result"]))
            assert result.parent == temp and Path(f"{result}.partial").exists()
        os.kill(tuner.pid, signum)
        assert tuner.wait(timeout=60) == exit_code
    finally:
        if tuner.poll() is None:
            tuner.kill()
    assert wait_gone(pids) == [], "processes of the trial outlived the tuner"
    assert marked(marker) == []
    # the supervisor's cleanup runs after its sweep: give it the same deadline
    deadline = time.monotonic() + GONE_WITHIN_S
    while (left := list(scratch.iterdir()) + list(temp.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], "temp files of the trial were left behind"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_processes_deaf_to_sigterm_get_sigkill_after_the_grace(tmp_path: Path, leftovers: list[int]) -> None:
    """The tuner is SIGKILLed; its trial's grandchild in its own session ignores SIGTERM: it is SIGKILLed."""
    out = tmp_path / "tree.json"
    tuner = subprocess.Popen([sys.executable, "-c", TUNER, "trial", "plain",
                              json.dumps(tree_command(out, "stubborn")), str(tmp_path)], cwd=ROOT)
    pids = list(wait_started(out, tuner)["pids"].values())
    leftovers += pids
    stubborn = pids[2]
    killed = time.monotonic()  # before the kill: a late clock on a loaded machine would shorten the grace seen
    tuner.kill()
    tuner.wait(timeout=60)
    assert wait_gone(pids) == []
    # it did ignore SIGTERM: it went only with the SIGKILL that follows the grace
    assert time.monotonic() - killed >= GRACE_S - 0.5, f"{stubborn} went before the grace was over"


# ---------------------------------------------------------------- timeouts and the trial's own end


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_timeout_ends_grandchildren_in_a_session_of_their_own(tmp_path: Path, leftovers: list[int]) -> None:
    out = tmp_path / "tree.json"
    timeout_s = 15.0  # the tree (5 Pythons) is up in about a second, under load in a few: the timeout hits it whole
    start = time.monotonic()
    outcome = run_subprocess_trial(tree_command(out, "stubborn"), timeout_s=timeout_s)
    elapsed = time.monotonic() - start
    started = wait_started(out)
    pids = list(started["pids"].values())
    leftovers += pids
    assert outcome.status == "timeout"
    assert timeout_s <= elapsed < timeout_s + GRACE_S + 10
    assert [pid for pid in pids if alive(pid)] == []  # gone when it returned, not later
    assert not Path(str(started["result"])).exists() and not Path(f"{started['result']}.partial").exists()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_trial_that_ends_takes_its_detached_grandchildren_with_it(tmp_path: Path, leftovers: list[int]) -> None:
    out = tmp_path / "tree.json"
    outcome = run_subprocess_trial(tree_command(out, "finish"), timeout_s=120, cwd=str(ROOT))
    pids = list(wait_started(out)["pids"].values())
    leftovers += pids
    assert outcome.status == "ok" and outcome.value == 5.0, outcome.error
    assert [pid for pid in pids if alive(pid)] == []


def test_without_the_supervisor_a_group_kill_misses_grandchildren_in_other_sessions(
        tmp_path: Path, leftovers: list[int]) -> None:
    """Why the supervisor exists, and proof these tests can fail: the old way (the trial in its own
    process group, the group killed) leaves the grandchild in its own session and the daemon running."""
    out = tmp_path / "tree.json"
    proc = subprocess.Popen(tree_command(out), start_new_session=True)
    pids = wait_started(out, proc)["pids"]
    leftovers += list(pids.values())
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert wait_gone([pids["child"], pids["plain"]]) == []
    assert alive(pids["own_session"]) and alive(pids["daemon"])


# ---------------------------------------------------------------- the supervisor itself


def reaper(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-I", "-S", str(REAPER), *args], capture_output=True, timeout=60)


@pytest.mark.timeout(60)
def test_the_supervisor_exits_like_a_shell(tmp_path: Path) -> None:
    assert reaper("--", sys.executable, "-c", "raise SystemExit(3)").returncode == 3
    assert reaper("--", sys.executable, "-c", "import os; os.kill(os.getpid(), 9)").returncode == 128 + 9
    assert reaper("--timeout", "0.2", "--", *SLEEPER).returncode == TIMEOUT_EXIT
    missing = reaper("--", str(tmp_path / "no-such-program"))
    assert missing.returncode == SPAWN_FAILED_EXIT and b"no-such-program" in missing.stderr
    assert reaper("--", sys.executable, "-c", "print('hi')").stdout == b"hi\n"  # its output is the command's


@pytest.mark.timeout(60)
def test_a_supervisor_whose_parent_is_already_gone_starts_nothing(tmp_path: Path) -> None:
    """The parent can die before the supervisor asks for its parent-death signal: it checks, and then
    neither starts the command nor keeps the caller's temp files."""
    ran, temp = tmp_path / "ran", tmp_path / "autoscout-temp"
    temp.mkdir()
    done = reaper("--parent", "1", "--cleanup", str(temp), "--", sys.executable, "-c", f"open({str(ran)!r}, 'w')")
    assert done.returncode == 128 + signal.SIGTERM
    assert not ran.exists() and not temp.exists()


@pytest.mark.timeout(60)
def test_run_supervised_gives_the_commands_status_and_errors() -> None:
    assert run_supervised([sys.executable, "-c", "raise SystemExit(4)"]) == 4
    assert run_supervised([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"]) == -signal.SIGKILL
    with pytest.raises(subprocess.TimeoutExpired):
        run_supervised(SLEEPER, timeout_s=0.2)
    with pytest.raises(FileNotFoundError, match="no-such-program"):
        run_supervised(["/nonexistent/no-such-program"])
    with pytest.raises(FileNotFoundError):  # a missing working directory, as subprocess reports it
        run_supervised([sys.executable, "-c", "pass"], cwd="/nonexistent/folder")


# ---------------------------------------------------------------- stop_signals


@pytest.mark.timeout(60)
def test_stop_signals_turns_sigterm_into_a_keyboard_interrupt_once_then_restores() -> None:
    hup = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal, even when the tests run under nohup
    try:
        _stop_signals_once_then_restored()
    finally:
        signal.signal(signal.SIGHUP, hup)


def _stop_signals_once_then_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as info, stop_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler interrupts this
    assert isinstance(info.value, KeyboardInterrupt) and info.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    with stop_signals():  # a second signal during the first one's cleanup is ignored
        with pytest.raises(Stopped):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(30)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.timeout(60)
def test_stop_signals_keeps_an_ignored_signal_ignored_and_leaves_other_threads_alone() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with stop_signals():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.2)
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    errors: list[BaseException] = []
    before = signal.getsignal(signal.SIGTERM)

    def off_main() -> None:
        try:
            with stop_signals():
                pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=off_main)
    worker.start()
    worker.join(timeout=30)
    assert errors == [] and signal.getsignal(signal.SIGTERM) is before
