"""`run_subprocess_trial` against real child processes: results, crashes, hangs, orphans, NaN."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autoscout_plugin.profiling import RESULT_ENV, TrialOutcome, run_subprocess_trial, write_result
from autoscout_plugin.profiling.runner import stderr_evidence

GRACE_S = 3.0
"""`_kill_group`'s SIGTERM -> SIGKILL grace in the runner."""


def _child(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def _alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, not yet reaped by an init that may never reap) is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: trust kill(0)
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _read_pid(path: Path) -> int:
    text = path.read_text().strip()
    assert text, f"the child did not write its grandchild's pid to {path}"
    return int(text)


def _wait_gone(pid: int, timeout_s: float = 20.0) -> bool:
    """True once `pid` is gone; it returns as soon as it is, the limit is room for a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return not _alive(pid)


@pytest.fixture
def reap_leftovers():
    """Kill any grandchild a failing test left behind, so a red test does not leak a `sleep 60`."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_ok_child_reports_its_value_metrics_and_measured_cost() -> None:
    outcome = run_subprocess_trial(_child("""
        import time
        from autoscout_plugin.profiling import TrialOutcome, write_result
        time.sleep(0.2)
        assert write_result(TrialOutcome(value=12.5, peak_mem_mb=321.0, metrics={"step_s": 0.08}))
    """), timeout_s=20)
    assert outcome.status == "ok", outcome.error
    assert outcome.value == 12.5
    assert outcome.peak_mem_mb == 321.0
    assert outcome.metrics == {"step_s": 0.08}
    assert outcome.error is None
    # cost_s is the runner's wall clock, not something the child claims: at least the child's sleep, and
    # seconds, not milliseconds (two Python start-ups: about a second on a quiet machine, more on a loaded one)
    assert outcome.cost_s is not None and 0.2 <= outcome.cost_s < 60


def test_crashing_child_is_an_error_with_the_last_stderr_line() -> None:
    outcome = run_subprocess_trial(_child("""
        import sys
        print("some noise on stderr", file=sys.stderr)
        def step():
            raise RuntimeError("kaboom in step 3")
        step()
    """), timeout_s=20)
    assert outcome.status == "error"
    assert outcome.value is None
    assert outcome.error is not None
    assert "exit code 1" in outcome.error
    assert "RuntimeError: kaboom in step 3" in outcome.error
    assert "some noise" not in outcome.error  # the last line, not the whole stream
    assert outcome.cost_s is not None and outcome.cost_s > 0


def test_child_reporting_nan_is_a_nan_failure() -> None:
    outcome = run_subprocess_trial(_child("""
        from autoscout_plugin.profiling import TrialOutcome, write_result
        write_result(TrialOutcome(value=float("nan"), metrics={"loss": float("nan")}))
    """), timeout_s=20)
    assert outcome.status == "nan"
    assert outcome.value is None
    assert outcome.error and "nan" in outcome.error.lower()


def test_child_reporting_a_failure_status_keeps_it() -> None:
    outcome = run_subprocess_trial(_child("""
        from autoscout_plugin.profiling import TrialOutcome, write_result
        write_result(TrialOutcome(status="oom", error="CUDA out of memory at micro_batch_size=64"))
    """), timeout_s=20)
    assert outcome.status == "oom"
    assert outcome.error == "CUDA out of memory at micro_batch_size=64"


def test_corrupt_result_file_is_an_error_not_a_crash_of_the_tuner() -> None:
    outcome = run_subprocess_trial(_child("""
        import os
        with open(os.environ["AUTOSCOUT_RESULT"], "w") as fh:
            fh.write('{"status": "ok", "val')  # killed mid-write
    """), timeout_s=20)
    assert outcome.status == "error"
    assert outcome.error and "result" in outcome.error


def test_unknown_status_in_result_is_an_error() -> None:
    outcome = run_subprocess_trial(_child("""
        import json, os
        with open(os.environ["AUTOSCOUT_RESULT"], "w") as fh:
            json.dump({"status": "great", "value": 3.0}, fh)
    """), timeout_s=20)
    assert outcome.status == "error"
    assert outcome.error and "great" in outcome.error


def test_a_child_reports_its_failure_class_and_an_unknown_class_is_an_error() -> None:
    outcome = run_subprocess_trial(_child("""
        import json, os
        with open(os.environ["AUTOSCOUT_RESULT"], "w") as fh:
            json.dump({"status": "error", "error": "boom", "failure": "unsupported"}, fh)
    """), timeout_s=20)
    assert (outcome.status, outcome.failure) == ("error", "unsupported")
    outcome = run_subprocess_trial(_child("""
        import json, os
        with open(os.environ["AUTOSCOUT_RESULT"], "w") as fh:
            json.dump({"status": "error", "failure": "gremlins"}, fh)
    """), timeout_s=20)
    assert outcome.status == "error" and "unknown failure class 'gremlins'" in (outcome.error or "")


def test_the_exception_line_is_found_behind_the_hints_a_traceback_ends_with() -> None:
    tail = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
            "torch._dynamo.exc.Unsupported: generic_jump TensorVariable()\n\nfrom user code:\n   File \"y\"\n\n"
            "Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace\n")
    assert stderr_evidence(tail) == ("torch._dynamo.exc.Unsupported: generic_jump TensorVariable() | Set"
                                     " TORCHDYNAMO_VERBOSE=1 for the internal stack trace")
    assert stderr_evidence("just a line\n") == "just a line" and stderr_evidence("") == ""


def test_hanging_child_times_out_and_its_grandchild_is_killed(tmp_path: Path,
                                                              reap_leftovers: list[int]) -> None:
    pid_file = tmp_path / "grandchild.pid"
    # The child must be up and have written its grandchild's pid before the limit, however loaded the
    # machine (two Python start-ups); its 60 s sleep is what the limit ends.
    timeout_s = 5.0
    start = time.monotonic()
    outcome = run_subprocess_trial(_child(f"""
        import subprocess, time
        grandchild = subprocess.Popen(["sleep", "60"])
        with open({str(pid_file)!r}, "w") as fh:
            fh.write(str(grandchild.pid))
        time.sleep(60)
    """), timeout_s=timeout_s)
    elapsed = time.monotonic() - start
    grandchild = _read_pid(pid_file)
    reap_leftovers.append(grandchild)
    assert outcome.status == "timeout"
    assert outcome.value is None
    assert outcome.error and "killed" in outcome.error
    assert timeout_s <= elapsed < timeout_s + GRACE_S + 10  # stopped at the limit, not after the 60 s sleep
    assert outcome.cost_s is not None and outcome.cost_s >= timeout_s
    assert _wait_gone(grandchild), f"grandchild {grandchild} outlived the timed-out trial"


def test_timeout_kills_a_grandchild_that_ignores_sigterm(tmp_path: Path, reap_leftovers: list[int]) -> None:
    """The child dies on SIGTERM at once; its grandchild shrugs SIGTERM off and needs SIGKILL."""
    pid_file = tmp_path / "grandchild.pid"
    timeout_s = 5.0  # room to start up and write the pid first, as above
    start = time.monotonic()
    outcome = run_subprocess_trial(_child(f"""
        import signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)      # inherited by the exec'd sleep
        grandchild = subprocess.Popen(["sleep", "60"])
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with open({str(pid_file)!r}, "w") as fh:
            fh.write(str(grandchild.pid))
        time.sleep(60)
    """), timeout_s=timeout_s)
    elapsed = time.monotonic() - start
    grandchild = _read_pid(pid_file)
    reap_leftovers.append(grandchild)
    assert outcome.status == "timeout"
    assert elapsed < timeout_s + 2 * GRACE_S + 10  # SIGKILL after the grace, not the 60 s sleeps
    assert _wait_gone(grandchild), f"grandchild {grandchild} (ignoring SIGTERM) survived the timeout"


def test_finished_child_leaves_no_straggler(tmp_path: Path, reap_leftovers: list[int]) -> None:
    """A child that reports and exits while a SIGTERM-proof helper still runs: the helper is killed."""
    pid_file = tmp_path / "grandchild.pid"
    start = time.monotonic()
    outcome = run_subprocess_trial(_child(f"""
        import signal, subprocess
        from autoscout_plugin.profiling import TrialOutcome, write_result
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen(["sleep", "60"])
        with open({str(pid_file)!r}, "w") as fh:
            fh.write(str(grandchild.pid))
        write_result(TrialOutcome(value=4.0))
    """), timeout_s=20)
    elapsed = time.monotonic() - start
    grandchild = _read_pid(pid_file)
    reap_leftovers.append(grandchild)
    assert outcome.status == "ok" and outcome.value == 4.0
    assert elapsed < 20
    assert _wait_gone(grandchild), f"grandchild {grandchild} was left running after the trial"


def test_result_file_is_removed_afterwards(tmp_path: Path) -> None:
    record = tmp_path / "where.txt"
    run_subprocess_trial(_child(f"""
        import os
        from autoscout_plugin.profiling import TrialOutcome, write_result
        open({str(record)!r}, "w").write(os.environ["AUTOSCOUT_RESULT"])
        write_result(TrialOutcome(value=1.0))
    """), timeout_s=20)
    result_path = Path(record.read_text())
    assert result_path.name.startswith("autoscout-trial-")
    assert not result_path.exists()


def test_write_result_outside_a_trial_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESULT_ENV, raising=False)
    assert write_result(TrialOutcome(value=1.0)) is False


def test_write_result_inside_a_trial_writes_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    monkeypatch.setenv(RESULT_ENV, str(target))
    assert write_result(TrialOutcome(value=2.5, metrics={"loss": 1.25})) is True
    data = json.loads(target.read_text())
    assert data["value"] == 2.5 and data["status"] == "ok" and data["metrics"] == {"loss": 1.25}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left


@pytest.mark.parametrize("timeout_s", [0, -1.0, math.nan])
def test_non_positive_timeout_is_refused(timeout_s: float) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        run_subprocess_trial([sys.executable, "-c", "pass"], timeout_s=timeout_s)


def test_missing_program_raises_before_anything_runs() -> None:
    with pytest.raises(FileNotFoundError):
        run_subprocess_trial(["/nonexistent/autoscout-child"], timeout_s=5)


def test_env_is_passed_and_result_env_added() -> None:
    outcome = run_subprocess_trial(_child("""
        import os
        from autoscout_plugin.profiling import TrialOutcome, write_result
        write_result(TrialOutcome(value=float(os.environ["AUTOSCOUT_TEST_VALUE"])))
    """), timeout_s=20, env={**os.environ, "AUTOSCOUT_TEST_VALUE": "7.25"})
    assert outcome.status == "ok" and outcome.value == 7.25


def test_killed_child_without_result_reads_as_oom() -> None:
    """SIGKILL with no result is what the kernel's OOM killer does."""
    outcome = run_subprocess_trial(_child("""
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
    """), timeout_s=20)
    assert outcome.status == "oom"
    assert outcome.error and str(-signal.SIGKILL) in outcome.error



class _OtherNodeFailed(Exception):
    pass


def test_an_exception_from_watch_stops_the_trial_tree_and_is_raised(tmp_path: Path,
                                                                   reap_leftovers: list[int]) -> None:
    """`watch` (a multi-node trial: another machine failed or died) ends the running trial at once."""
    pid_file = tmp_path / "grandchild.pid"
    calls = []

    def watch() -> None:
        calls.append(time.monotonic())
        if pid_file.exists() and pid_file.read_text().strip():
            raise _OtherNodeFailed("machine rank 1 failed")

    start = time.monotonic()
    with pytest.raises(_OtherNodeFailed, match="machine rank 1"):
        run_subprocess_trial(_child(f"""
            import subprocess, time
            grandchild = subprocess.Popen(["sleep", "60"])
            with open({str(pid_file)!r}, "w") as fh:
                fh.write(str(grandchild.pid))
            time.sleep(60)
        """), timeout_s=120, watch=watch)
    grandchild = _read_pid(pid_file)
    reap_leftovers.append(grandchild)
    assert time.monotonic() - start < 40  # long before the 60 s sleep or the 120 s limit
    assert calls  # polled while the trial ran
    assert _wait_gone(grandchild), f"grandchild {grandchild} outlived the stopped trial"


def test_watch_that_never_raises_leaves_the_outcome_alone() -> None:
    calls = []
    outcome = run_subprocess_trial(_child("""
        import json, os, time
        time.sleep(0.6)
        open(os.environ["AUTOSCOUT_RESULT"], "w").write(json.dumps({"status": "ok", "value": 3.0}))
    """), timeout_s=60, watch=lambda: calls.append(1))
    assert outcome.status == "ok" and outcome.value == 3.0 and calls


def test_each_nodes_local_rank_zero_reports_its_own_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine other than the first, global rank 2 is that machine's local rank 0: it writes the result
    its own launcher reads; local rank 1 does not."""
    for local, written in (("0", True), ("1", False)):
        target = tmp_path / f"result{local}.json"
        code = subprocess.run(_child("""
            from autoscout_plugin.profiling import TrialOutcome, report_and_exit
            report_and_exit(TrialOutcome(value=2.0), rank_zero=False)
        """), env={**os.environ, RESULT_ENV: str(target), "RANK": "2", "LOCAL_RANK": local}, timeout=60).returncode
        assert code == 0 and target.exists() == written
